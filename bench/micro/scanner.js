// StreamScanner.scan (dist/resp/stream-scanner.js) over a redis-benchmark-like SET stream cut into socket-sized
// chunks, with decodeArgs off (what the relay does while nobody subscribes to /stream) and on.
//   node bench/micro/scanner.js [--quick] [--json]
import { StreamScanner } from '../../dist/resp/stream-scanner.js';
import { isWord } from '../../dist/resp/command-names.js';
import { performance } from 'node:perf_hooks';
import { QUICK, chunksOf, medianSeconds, report, setStream } from './common.js';

const MB = 1e6;
const total = QUICK ? 32 * MB : 128 * MB;
const rounds = QUICK ? 3 : 5;
const results = [];
// As the relay's upstream link scans: without decodeArgs, args[1] only for REPLCONF (GETACK).
const AS_LINK = { secondArg: (name) => isWord(name, 'REPLCONF') };

// First: one pass in this fresh process, chunks of varying size as socket reads come, before V8 has optimized scan():
// what a relay that just started pays (feedback collection, compiles, and any deoptimization on the way).
{
  const stream = setStream(total, 1024);
  const chunks = [];
  for (let p = 0, x = 7; p < stream.length; ) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const n = 1000 + (x % 262144);
    chunks.push(stream.subarray(p, Math.min(stream.length, p + n)));
    p += n;
  }
  let commands = 0;
  const scanner = new StreamScanner(() => commands++, AS_LINK);
  const t = performance.now();
  for (const c of chunks) if (scanner.scan(c).error !== null) throw new Error('scan failed');
  const seconds = (performance.now() - t) / 1000;
  results.push({ case: 'SET -d 1024, 1-257 KiB chunks, first pass', mbps: stream.length / MB / seconds, opsPerSec: commands / seconds, note: `${commands} commands, fresh process` });
}

for (const valueSize of [1024, 64]) {
  const stream = setStream(total, valueSize);
  for (const chunkSize of [64 * 1024, 1460]) {
    if (chunkSize !== 64 * 1024 && valueSize !== 1024) continue;
    const chunks = chunksOf(stream, chunkSize);
    for (const decode of [false, true]) {
      let commands = 0;
      let argBytes = 0;
      const scanner = new StreamScanner((cmd) => {
        commands++;
        argBytes += cmd.args.length;
      }, AS_LINK);
      const seconds = await medianSeconds(rounds, () => {
        scanner.reset(0);
        scanner.decodeArgs = decode;
        commands = 0;
        for (const c of chunks) {
          const r = scanner.scan(c);
          if (r.error !== null) throw new Error(r.error);
        }
      });
      results.push({
        case: `SET -d ${valueSize}, ${chunkSize} B chunks, decodeArgs ${decode ? 'on' : 'off'}`,
        mbps: stream.length / MB / seconds,
        opsPerSec: commands / seconds,
        note: `${commands} commands`,
      });
      if (argBytes < 0) console.log(argBytes); // keep the callback's work observable
    }
  }
}
report('StreamScanner.scan', results);
