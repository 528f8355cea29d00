// RequestParser.next (dist/resp/request-parser.js), what every client's input goes through, over reads of 64 KiB:
// a pipeline of small commands (replicas' REPLCONF ACKs, PINGs), a command of many tiny arguments past what the
// relay keeps (argsKept, as the RESP port's clients have it), and one large bulk.
//   node bench/micro/request-parser.js [--quick] [--json]
import { RequestParser } from '../../dist/resp/request-parser.js';
import { argsKept } from '../../dist/downstream/commands.js';
import { QUICK, chunksOf, medianSeconds, report } from './common.js';

const MB = 1e6;
const total = QUICK ? 16 * MB : 64 * MB;
const rounds = QUICK ? 3 : 5;
const OPTS = { maxBulkLen: 512 * 1024 * 1024, maxQueryBuffer: 1024 * 1024 * 1024, argsKept };
const results = [];

const repeat = (one) => Buffer.from(one.repeat(Math.ceil(total / one.length)), 'latin1');
const ack = '*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$9\r\n123456789\r\n';
const many = Math.min(1024 * 1024 - 1, Math.floor(total / 7)); // at most the multibulk length Redis 6 allows
const cases = [
  ['REPLCONF ACK pipeline', repeat(ack)],
  ['PING pipeline (inline)', repeat('PING\r\n')],
  [`PING with ${many} one-byte arguments`, Buffer.from(`*${many + 1}\r\n$4\r\nPING\r\n` + '$1\r\na\r\n'.repeat(many), 'latin1')],
  ['ECHO of one large bulk', Buffer.concat([Buffer.from(`*2\r\n$4\r\nECHO\r\n$${total}\r\n`), Buffer.alloc(total, 120), Buffer.from('\r\n')])],
];
for (const [name, input] of cases) {
  const chunks = chunksOf(input, 64 * 1024).map((c) => Buffer.from(c)); // reads are Buffers of their own
  let commands = 0;
  const seconds = await medianSeconds(rounds, () => {
    const parser = new RequestParser(OPTS);
    commands = 0;
    for (const c of chunks) {
      parser.push(c);
      while (parser.next() !== undefined) commands++;
    }
  });
  results.push({ case: name, mbps: input.length / MB / seconds, opsPerSec: commands / seconds, note: `${commands} commands` });
}
report('RequestParser.next', results);
