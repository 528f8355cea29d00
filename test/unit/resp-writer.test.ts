import t from 'tap';
import {
  encodeCommand, simpleString, errorReply, integerReply, bulkReply, arrayReply, nullArray, OK, PONG,
} from '../../src/resp/writer.js';

const s = (b: Buffer) => b.toString('latin1');

t.test('encodeCommand writes a multibulk of strings, buffers and numbers', async (t) => {
  t.equal(s(encodeCommand(['SET', Buffer.from('k'), 'vé'])), '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\xc3\xa9\r\n');
  t.equal(s(encodeCommand(['REPLCONF', 'ACK', 12345])), '*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$5\r\n12345\r\n');
  t.equal(s(encodeCommand(['PSYNC', '?', -1])), '*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n');
});

t.test('encodeCommand keeps binary args byte for byte, CRLF included', async (t) => {
  const bin = Buffer.from([0, 13, 10, 255]);
  const out = encodeCommand(['X', bin]);
  t.same(out, Buffer.concat([Buffer.from('*2\r\n$1\r\nX\r\n$4\r\n'), bin, Buffer.from('\r\n')]));
});

t.test('encodeCommand encodes an empty arg list and empty args', async (t) => {
  t.equal(s(encodeCommand([])), '*0\r\n');
  t.equal(s(encodeCommand([''])), '*1\r\n$0\r\n\r\n');
});

t.test('reply encoders write RESP2 replies', async (t) => {
  t.equal(s(simpleString('FULLRESYNC abc 0')), '+FULLRESYNC abc 0\r\n');
  t.equal(s(errorReply('ERR unknown command')), '-ERR unknown command\r\n');
  t.equal(s(integerReply(42)), ':42\r\n');
  t.equal(s(integerReply(-1)), ':-1\r\n');
  t.equal(s(integerReply(2n ** 63n - 1n)), ':9223372036854775807\r\n');
  t.equal(s(bulkReply('héllo')), '$6\r\nh\xc3\xa9llo\r\n');
  t.equal(s(bulkReply(Buffer.from([1, 2]))), '$2\r\n\x01\x02\r\n');
  t.equal(s(bulkReply('')), '$0\r\n\r\n');
  t.equal(s(bulkReply(null)), '$-1\r\n');
  t.equal(s(arrayReply([bulkReply('a'), integerReply(1), nullArray()])), '*3\r\n$1\r\na\r\n:1\r\n*-1\r\n');
  t.equal(s(arrayReply([])), '*0\r\n');
  t.equal(s(nullArray()), '*-1\r\n');
  t.equal(s(OK), '+OK\r\n');
  t.equal(s(PONG), '+PONG\r\n');
});
