// Writes SETs at a fixed rate to the master; each value carries the send time (µs, CLOCK_MONOTONIC) after a
// marker, which the sink finds in the replication stream. argv: port rate durationMs valueSize
import net from 'node:net';
import { nowMs, nowUs } from './lib/clock.js';
import { LAT_MARKER } from './lib/replica-conn.js';

const [port, rate, durationMs, valueSize] = process.argv.slice(2).map(Number);
const sock = net.connect({ port, host: '127.0.0.1' });
sock.setNoDelay(true);
let replies = 0;
sock.on('data', (d) => {
  for (let i = 0; i < d.length; i++) if (d[i] === 10) replies++;
});
sock.on('error', (err) => {
  console.error(`latency-writer: ${err.message}`);
  process.exit(1);
});

const pad = 'x'.repeat(Math.max(0, valueSize - LAT_MARKER.length - 16));
function command(seq) {
  const key = `lat:${seq % 1024}`;
  const value = `${LAT_MARKER}${String(nowUs()).padStart(16, '0')}${pad}`;
  return `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n${value}\r\n`;
}

sock.on('connect', () => {
  const t0 = nowMs();
  let sent = 0;
  let maxBatch = 0;
  const total = Math.round((rate * durationMs) / 1000);
  const tick = () => {
    const due = Math.min(total, Math.floor(((nowMs() - t0) * rate) / 1000)) - sent;
    if (due > 0) {
      let out = '';
      for (let i = 0; i < due; i++) out += command(sent + i);
      sock.write(out);
      sent += due;
      if (due > maxBatch) maxBatch = due;
    }
    if (sent < total) setTimeout(tick, 1);
    else {
      const elapsed = nowMs() - t0;
      const deadline = nowMs() + 10000;
      const done = () => {
        if (replies >= sent || nowMs() > deadline) {
          process.stdout.write(JSON.stringify({ sent, replies, elapsedMs: elapsed, rate: (sent * 1000) / elapsed, maxBatch }) + '\n');
          sock.end();
          process.exit(0);
        } else setTimeout(done, 5);
      };
      done();
    }
  };
  tick();
});
