#!/usr/bin/env bash
# WAIT latency under replication.ack-policy min: a master, the relay (ack-policy min, its defaults otherwise: the
# disk log on), one redis-server replica of it; ROUNDS rounds of `SET` + `WAIT 1 1000` on the master, one at a time;
# prints p50 / p99 / max and how many WAITs timed out. By hand:
#   npm run build && bash bench/wait-latency.sh [relay-root]   (relay-root: another build to compare; default this one)
set -euo pipefail
R=${1:-$(cd "$(dirname "$0")/.." && pwd)}
ROUNDS=${ROUNDS:-300}
# shellcheck source=lib/procs.sh
source "$(dirname "$0")/lib/procs.sh"
scratch psync-wait
linked() { redis-cli -p "$1" info replication 2>/dev/null | grep -q master_link_status:up; }

MP=$(port); RP=$(port); SP=$(port)
mkdir -p "$D/m" "$D/r"
redis-server --port "$MP" --bind 127.0.0.1 --dir "$D/m" --save '' --logfile "$D/m.log" &
pids+=($!)
until redis-cli -p "$MP" ping >/dev/null 2>&1; do sleep 0.1; done
printf 'replication:\n  ack-policy: min\n' > "$D/relay.yaml"
node "$R/dist/main.js" --config "$D/relay.yaml" --upstream "127.0.0.1:$MP" --port "$RP" --dir "$D/data" --web-port 0 --log-level warn > "$D/relay.log" 2>&1 &
pids+=($!)
until linked "$RP"; do sleep 0.1; done
redis-server --port "$SP" --bind 127.0.0.1 --dir "$D/r" --save '' --replicaof 127.0.0.1 "$RP" --logfile "$D/r.log" &
pids+=($!)
until linked "$SP"; do sleep 0.1; done

PORT=$MP ROUNDS=$ROUNDS node -e '
const net = require("net");
const rounds = Number(process.env.ROUNDS);
const s = net.connect(Number(process.env.PORT), "127.0.0.1");
const lat = [];
let buf = "", t0 = 0n, timeouts = 0;
const cmd = (...a) => `*${a.length}\r\n` + a.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join("");
const next = () => {
  t0 = process.hrtime.bigint();
  s.write(cmd("SET", "k", String(lat.length)) + cmd("WAIT", "1", "1000"));
};
s.on("data", (d) => {
  buf += d;
  const m = /\+OK\r\n:(\d+)\r\n/.exec(buf);
  if (!m) return;
  buf = "";
  if (m[1] === "0") timeouts++;
  lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  if (lat.length < rounds) return next();
  lat.sort((a, b) => a - b);
  const at = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))].toFixed(2);
  console.log(`WAIT ms p50 ${at(0.5)} p99 ${at(0.99)} max ${at(1)} timeouts ${timeouts}`);
  s.end();
});
s.on("connect", next);
'
