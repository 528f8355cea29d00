/**
 * Redis 7's limits before AUTH (processMultibulkBuffer with authRequired): at most 10 arguments and 16 KiB per
 * bulk, refused at the header, before anything is kept; fed whole and byte by byte. They lift when the client logs in.
 */
import t from 'tap';
import { RequestParser, ARG_OVERHEAD } from '../../src/resp/request-parser.js';
import { CHUNK_OVERHEAD } from '../../src/resp/chunk-list.js';
import { ProtocolError } from '../../src/errors.js';
import { encodeCommand } from '../../src/resp/writer.js';

const OPTS = { maxBulkLen: 512 * 1024 * 1024, maxQueryBuffer: 1024 * 1024 * 1024 };

function feed(parser: RequestParser, input: Buffer, byteByByte: boolean): Buffer[][] {
  const out: Buffer[][] = [];
  const chunks = byteByByte ? [...input].map((b) => Buffer.from([b])) : [input];
  for (const c of chunks) {
    parser.push(c);
    for (let args = parser.next(); args; args = parser.next()) out.push(args);
  }
  return out;
}

for (const byteByByte of [false, true]) {
  const how = byteByByte ? 'byte by byte' : 'whole';
  t.test(`unauthenticated limits (${how})`, async (t) => {
    const cases: Array<[string, Buffer, string, string]> = [
      ['11 arguments', Buffer.from('*11\r\n'), 'Protocol error: unauthenticated multibulk length', 'unauthenticated-multibulk-len'],
      ['a million arguments', Buffer.from('*1048576\r\n$0\r\n\r\n'), 'Protocol error: unauthenticated multibulk length', 'unauthenticated-multibulk-len'],
      ['a 16385-byte bulk', Buffer.from('*2\r\n$4\r\nECHO\r\n$16385\r\n'), 'Protocol error: unauthenticated bulk length', 'unauthenticated-bulk-len'],
    ];
    for (const [what, input, message, limit] of cases) {
      const p = new RequestParser(OPTS);
      p.unauthenticated = true;
      t.throws(() => feed(p, input, byteByByte), { message, limit }, what);
      t.throws(() => p.next(), ProtocolError, `${what}: stays failed`);
      t.ok(p.memory < 1024, `${what}: refused before anything is kept (${p.memory} bytes)`);
    }
    const p = new RequestParser(OPTS);
    p.unauthenticated = true;
    const edge = Buffer.concat([encodeCommand(Array.from({ length: 10 }, () => 'a')), encodeCommand(['ECHO', 'x'.repeat(16384)])]);
    t.equal(feed(p, edge, byteByByte).length, 2, '10 arguments and a 16 KiB bulk are fine');
    p.unauthenticated = false;
    t.equal(feed(p, encodeCommand(['ECHO', 'y'.repeat(20_000), ...Array.from({ length: 20 }, () => 'b')]), byteByByte).length, 1, 'after AUTH: the usual limits');
  });
}

t.test('memory counts the unfinished input and each argument object', async (t) => {
  const p = new RequestParser(OPTS);
  p.push(Buffer.from('*4\r\n$1\r\na\r\n$1\r\nb\r\n$3\r\nc'));
  t.equal(p.next(), undefined);
  t.equal(p.memory, p.buffered + CHUNK_OVERHEAD + 2 * ARG_OVERHEAD, 'the bytes, the chunk they came in, the arguments');
});
