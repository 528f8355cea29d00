#!/usr/bin/env bash
# Relay CPU per burst, split by thread: a master, the relay (dist/, its defaults plus RELAY_YAML), one redis-server
# replica of the relay, then BURSTS bursts of issue 15's workload (redis-benchmark -t set -d 1024 -P 32 -r 100000
# -n 500000, 535 MB of stream; WORKLOAD replaces those arguments). After each burst, once the replica has the
# master's offset, it prints the relay's CPU seconds per GB in, and how they split between the main thread and the
# others (libuv's thread pool: disk writes; V8's: compilation, concurrent marking); the benchmark's own time and the
# master's CPU per GB (at N = 1 the master's speed is the forwarder's throughput: bench/README.md). Burst 1 is what a
# fresh relay pays; the later ones, a warm one.
#   npm run build && bash bench/bursts.sh [BURSTS]
#   RELAY_YAML=$'log:\n  disk: 0\n' bash bench/bursts.sh 3         # the same without the disk log
#   INTERMEDIATE=redis bash bench/bursts.sh 3                       # a redis-server in the relay's place
#   NODE_ARGS=--perf-basic-prof bash bench/bursts.sh                # then: perf record -g -p <relay pid>
#   WORKLOAD='-t set -d 16 -P 32 -r 100000 -n 3000000' bash bench/bursts.sh   # another redis-benchmark load
set -euo pipefail
BURSTS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/procs.sh
source "$ROOT/bench/lib/procs.sh"
scratch psync-bursts

offset() { redis-cli -p "$1" info replication | tr -d '\r' | sed -n 's/^master_repl_offset://p'; }
ticks() { awk '{print $14 + $15}' "$1"; }
now() { date +%s.%N; }
# "<tid> <ticks>" for every thread of $1, main thread first.
threads() { for t in /proc/"$1"/task/*; do echo "$(basename "$t") $(ticks "$t/stat")"; done; }

MP=$(port); RP=$(port); SP=$(port)
mkdir -p "$D/master" "$D/replica"
redis-server --port "$MP" --bind 127.0.0.1 --dir "$D/master" --save '' --appendonly no --repl-backlog-size 64mb \
  --client-output-buffer-limit 'replica 0 0 0' --repl-ping-replica-period 3600 --logfile "$D/master.log" &
MPID=$!
pids+=("$MPID")
until redis-cli -p "$MP" ping >/dev/null 2>&1; do sleep 0.1; done
if [ "${INTERMEDIATE:-relay}" = redis ]; then
  mkdir -p "$D/intermediate"
  redis-server --port "$RP" --bind 127.0.0.1 --dir "$D/intermediate" --save '' --appendonly no --replicaof 127.0.0.1 "$MP" \
    --repl-timeout 3600 --repl-backlog-size 64mb --client-output-buffer-limit 'replica 0 0 0' \
    --logfile "$D/intermediate.log" &
else
  printf 'upstream:\n  timeout: 3600\nreplication:\n  replica-timeout: 3600\n%s' "${RELAY_YAML:-}" > "$D/relay.yaml"
  # shellcheck disable=SC2086 # NODE_ARGS is a list of flags
  node ${NODE_ARGS:-} "$ROOT/dist/main.js" --config "$D/relay.yaml" --upstream "127.0.0.1:$MP" --port "$RP" \
    --dir "$D/data" --web-port 0 --log-level warn > "$D/relay.log" 2>&1 &
fi
RPID=$!
pids+=("$RPID")
until redis-cli -p "$RP" info replication 2>/dev/null | grep -q master_link_status:up; do sleep 0.1; done
redis-server --port "$SP" --bind 127.0.0.1 --dir "$D/replica" --save '' --appendonly no --replicaof 127.0.0.1 "$RP" \
  --repl-timeout 3600 --logfile "$D/replica.log" &
pids+=($!)
until redis-cli -p "$SP" info replication 2>/dev/null | grep -q master_link_status:up; do sleep 0.1; done
echo "${INTERMEDIATE:-relay} pid $RPID"

for b in $(seq 1 "$BURSTS"); do
  threads "$RPID" > "$D/t0"
  m0=$(ticks /proc/"$MPID"/stat)
  o0=$(offset "$MP")
  t0=$(now)
  # shellcheck disable=SC2086 # WORKLOAD is a list of redis-benchmark arguments
  redis-benchmark -p "$MP" ${WORKLOAD:--t set -d 1024 -P 32 -r 100000 -n 500000} -q > /dev/null
  t1=$(now)
  o1=$(offset "$MP")
  until [ "$(offset "$SP")" = "$o1" ]; do sleep 0.05; done
  threads "$RPID" > "$D/t1"
  m1=$(ticks /proc/"$MPID"/stat)
  join "$D/t0" "$D/t1" | awk -v pid="$RPID" -v bytes=$((o1 - o0)) -v b="$b" -v hz="$(getconf CLK_TCK)" \
    -v who="${INTERMEDIATE:-relay}" -v bench="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" -v master=$((m1 - m0)) '
    { d = ($3 - $2) / hz; all += d; if ($1 == pid) main += d; else rest += d }
    END { gb = bytes / 1e9; printf "burst %d: %.0f MB in, %s CPU %.2f s/GB (main thread %.2f, other threads %.2f); benchmark %.2f s, master CPU %.2f s/GB\n", b, bytes / 1e6, who, all / gb, main / gb, rest / gb, bench, master / hz / gb }'
  cp "$D/relay.log" /tmp/trace-burst-$b.log
done
