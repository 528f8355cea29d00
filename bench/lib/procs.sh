# Shared by the by-hand shell benchmarks (bursts.sh, wait-latency.sh): a temp dir and the processes started in it,
# both gone when the script exits; and a free loopback port.
#   source "$(dirname "$0")/lib/procs.sh"; scratch psync-name   # sets D; append started PIDs to pids
scratch() {
  D=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  pids=()
  trap cleanup EXIT
}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
