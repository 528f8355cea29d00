#!/usr/bin/env bash
# npm run demo: a local master, the relay and a downstream redis-server replica, all on loopback.
# Installs what it needs (redis-server via apt, npm packages), builds, writes some keys, prints where to look,
# then keeps running until Ctrl-C. `npm run demo -- --once` checks the replica and exits (used by CI).
set -euo pipefail
cd "$(dirname "$0")/.."

MASTER_PORT=${DEMO_MASTER_PORT:-16379}
RELAY_PORT=${DEMO_RELAY_PORT:-16380}
REPLICA_PORT=${DEMO_REPLICA_PORT:-16381}
WEB_PORT=${DEMO_WEB_PORT:-18080}
ONCE=0
[ "${1:-}" = "--once" ] && ONCE=1

bash scripts/install-redis.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent

WORK=$(mktemp -d -t psync-relay-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_ping() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "demo: nothing answers on port $1" >&2
  return 1
}

redis-server --port "$MASTER_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --repl-diskless-sync-delay 0 --enable-debug-command yes --logfile "$WORK/master.log" &
pids+=($!)
wait_ping "$MASTER_PORT"
redis-cli -p "$MASTER_PORT" debug populate 10000 demo:key 32 >/dev/null 2>&1 || \
  redis-cli -p "$MASTER_PORT" set demo:key:0 value >/dev/null

node dist/main.js --upstream "127.0.0.1:$MASTER_PORT" --port "$RELAY_PORT" --web-port "$WEB_PORT" \
  --dir "$WORK/relay-data" --log-level info >"$WORK/relay.log" 2>&1 &
pids+=($!)
wait_ping "$RELAY_PORT"

redis-server --port "$REPLICA_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --replicaof 127.0.0.1 "$RELAY_PORT" --enable-debug-command yes --logfile "$WORK/replica.log" &
pids+=($!)
wait_ping "$REPLICA_PORT"

for i in $(seq 1 100); do redis-cli -p "$MASTER_PORT" set "demo:live:$i" "$i" >/dev/null; done
redis-cli -p "$MASTER_PORT" hset demo:hash a 1 b 2 >/dev/null

ok=0
for _ in $(seq 1 100); do
  m=$(redis-cli -p "$MASTER_PORT" debug digest)
  r=$(redis-cli -p "$REPLICA_PORT" debug digest 2>/dev/null || true)
  if [ "$m" = "$r" ]; then ok=1; break; fi
  sleep 0.2
done

echo
echo "psync-relay demo"
echo "  master   redis-cli -p $MASTER_PORT        (writes go here)"
echo "  relay    redis-cli -p $RELAY_PORT info replication"
echo "  replica  redis-cli -p $REPLICA_PORT       (a redis-server replica of the relay)"
echo "  stream   redis-cli -p $RELAY_PORT --replica"
echo "  web      http://127.0.0.1:$WEB_PORT/  (dashboard)  /status  /metrics"
echo "  logs     $WORK/relay.log  (npx pino-pretty < $WORK/relay.log)"
echo
if [ "$ok" = 1 ]; then
  echo "replica digest equals master digest: $m"
else
  echo "demo: the replica did not converge; see $WORK/relay.log" >&2
  exit 1
fi
redis-cli -p "$RELAY_PORT" info replication | grep -E '^(master_link_status|connected_slaves|master_repl_offset|slave0)' || true

if [ "$ONCE" = 1 ]; then exit 0; fi
echo
echo "running; Ctrl-C to stop"
while sleep 1; do
  redis-cli -p "$MASTER_PORT" incr demo:ticks >/dev/null
done
