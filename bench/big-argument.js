// One large argument sent in 64 KiB writes (an `ECHO` of `--mb` MB, 200 by default), as a client of the relay: the
// relay's peak RSS over its RSS before, in multiples of the argument's size. The parser gathers an argument of 32 KiB
// or more into one Buffer of its length as it arrives; taken whole at the end, its reads and their copy were held
// together (2.0x). `--relay-root DIR` runs the relay built in another checkout for a before/after in one run;
// `--repeats K` alternates them.
//   node bench/big-argument.js [--mb 200] [--repeats 1] [--relay-root DIR ...]
import net from 'node:net';
import { once } from 'node:events';
import { rssBytes } from './lib/procs.js';
import { compareArgs } from './lib/args.js';
import { floodRuns } from './lib/ping-probe.js';

const { roots, opt } = compareArgs();
const SIZE = Number(opt('mb', 200)) * 1e6;
const REPEATS = Number(opt('repeats', 1));

async function measure(relay) {
  const base = rssBytes(relay.pid);
  let peak = base;
  const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(relay.pid))), 20);
  const socket = net.connect(relay.port, '127.0.0.1');
  await once(socket, 'connect');
  let got = 0;
  const reply = `$${SIZE}\r\n`.length + SIZE + 2;
  const answered = new Promise((resolve) => socket.on('data', (d) => (got += d.length) >= reply && resolve()));
  socket.write(`*2\r\n$4\r\nECHO\r\n$${SIZE}\r\n`);
  const piece = Buffer.alloc(64 * 1024, 0x61);
  for (let sent = 0; sent < SIZE; sent += piece.length) {
    if (!socket.write(piece.subarray(0, Math.min(piece.length, SIZE - sent)))) await once(socket, 'drain');
  }
  socket.write('\r\n');
  await answered;
  clearInterval(sampler);
  socket.destroy();
  return { argumentMB: SIZE / 1e6, rssBeforeMiB: Math.round(base / 2 ** 20), rssPeakMiB: Math.round(peak / 2 ** 20), peakOverArgument: +((peak - base) / SIZE).toFixed(2) };
}

await floodRuns(roots, REPEATS, {}, measure);
