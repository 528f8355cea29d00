#!/usr/bin/env bash
# Replica lag under a flood of costly client commands: a master, the relay (dist/, its defaults), one redis-server
# replica of it, four clients pipelining INFO to the relay without pause, then BURSTS bursts of
# redis-benchmark -t set -d 1024 -P 32 -r 100000 -n 100000 (107 MB of stream) on the master. After each burst it
# prints how long the replica took to reach the master's offset (the turn budget of clients' commands,
# src/downstream/turn-budget.ts, is what keeps this short).
#   npm run build && bash bench/info-flood.sh [BURSTS]
#   ROOT=/path/to/another/checkout bash bench/info-flood.sh    # the same against another build's dist/
set -euo pipefail
BURSTS=${1:-3}
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
D=$(mktemp -d "${TMPDIR:-/tmp}/psync-info-flood.XXXXXX"); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
offset() { redis-cli -p "$1" info replication | tr -d '\r' | sed -n 's/^master_repl_offset://p'; }
MP=$(port); RP=$(port); SP=$(port); mkdir -p $D/m $D/r
redis-server --port $MP --dir $D/m --save '' --repl-backlog-size 256mb --client-output-buffer-limit 'replica 0 0 0' --logfile $D/m.log & pids+=($!)
until redis-cli -p $MP ping >/dev/null 2>&1; do sleep 0.1; done
node $ROOT/dist/main.js --upstream 127.0.0.1:$MP --port $RP --dir $D/data --web-port 0 --log-level warn > $D/relay.log 2>&1 & pids+=($!)
until redis-cli -p $RP info replication 2>/dev/null | grep -q master_link_status:up; do sleep 0.1; done
redis-server --port $SP --dir $D/r --save '' --replicaof 127.0.0.1 $RP --logfile $D/r.log & pids+=($!)
until redis-cli -p $SP info replication 2>/dev/null | grep -q master_link_status:up; do sleep 0.1; done
redis-benchmark -p $RP -c 4 -P 128 -n 100000000 info > /dev/null 2>&1 & pids+=($!)
sleep 1 # the flood under way before the first burst
for b in $(seq 1 "$BURSTS"); do
  redis-benchmark -p $MP -t set -d 1024 -P 32 -r 100000 -n 100000 -q > /dev/null
  s1=$(date +%s.%N); o1=$(offset $MP)
  until [ "$(offset $SP)" -ge "$o1" ]; do sleep 0.01; done
  s2=$(date +%s.%N)
  awk -v b="$b" -v a="$s1" -v z="$s2" 'BEGIN { printf "burst %d: the replica had the master'"'"'s offset %.2f s after the benchmark ended\n", b, z - a }'
done
