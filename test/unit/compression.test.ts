import t, { type Test } from 'tap';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { constants, createInflateRaw, deflateRawSync, inflateRawSync } from 'node:zlib';
import { Z1, compressionCapa, parseCompressionCapa, psyncReplyLine } from '../../src/compression.js';
import { CompressedWriter, sampledBitsPerByte } from '../../src/downstream/compressed-writer.js';
import { payloadSource } from '../../src/upstream/decompress-stream.js';
import { HandshakeState as S, psyncReply, step, type HandshakeContext } from '../../src/upstream/handshake.js';
import { byteByByte, mulberry32, randomSplit } from '../helpers/chunks.js';
import { loopbackPair } from '../helpers/raw.js';
import { waitFor } from '../helpers/wait.js';

const REPLID = 'a'.repeat(40);

function resp(...args: (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

function jsonDoc(i: number): Buffer {
  const doc = {
    id: i,
    uuid: randomBytes(16).toString('hex'),
    user: { name: `user ${i % 97}`, email: `user${i % 97}@example.com`, city: ['Berlin', 'Lisbon', 'Osaka', 'Lima'][i % 4] },
    created: new Date(1.7e12 + i * 7919).toISOString(),
    orders: Array.from({ length: 1 + (i % 4) }, (_, k) => ({ sku: `SKU-${(i * 31 + k) % 5000}`, qty: 1 + k, price: ((i * 17 + k) % 10000) / 100 })),
  };
  return resp('SET', `doc:${i}`, JSON.stringify(doc));
}
const randomCmd = (i: number, size = 1024): Buffer => resp('SET', `rnd:${i}`, randomBytes(size));
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A connected TCP pair on loopback: `writer` side (the relay's socket to a replica) and `reader` side. */
async function socketPair(t: Test): Promise<{ writer: Socket; reader: Socket; received: () => Buffer; ended: Promise<void> }> {
  const { server: writer, client: reader } = await loopbackPair(t);
  const chunks: Buffer[] = [];
  reader.on('data', (d: Buffer) => chunks.push(d));
  const ended = new Promise<void>((resolve) => reader.once('end', () => resolve()));
  return { writer, reader, received: () => Buffer.concat(chunks), ended };
}

/** Everything received so far, inflated (it ends on a sync flush when the writer is idle). */
const inflated = (b: Buffer): Buffer => inflateRawSync(b, { finishFlush: constants.Z_SYNC_FLUSH });

t.test('the capa value carries the level; only psync-relay values parse', async (t) => {
  t.equal(compressionCapa(6), 'psync-relay-z1:6');
  t.equal(parseCompressionCapa('psync-relay-z1:6'), 6);
  t.equal(parseCompressionCapa('PSYNC-RELAY-Z1:3'), 3, 'capa values are case-insensitive, as Redis compares them');
  t.equal(parseCompressionCapa('psync-relay-z1'), 1, 'bare: the default level');
  for (const v of ['eof', 'psync2', 'psync-relay-z1:0', 'psync-relay-z1:10', 'psync-relay-z2', 'psync-relay-z1:x', '']) t.equal(parseCompressionCapa(v), null, v);
  t.equal(psyncReplyLine(`+FULLRESYNC ${REPLID} 7`, true), `+FULLRESYNC ${REPLID} 7 ${Z1}\r\n`);
  t.equal(psyncReplyLine('+CONTINUE', false), '+CONTINUE\r\n');
});

t.test('handshake: the capa is announced only when asked, and the reply token is read only when announced', async (t) => {
  const ctx = (compression: number | null): HandshakeContext => ({
    user: null, password: null, listeningPort: 6380, announceIp: null, rdbOnly: false, psyncReplid: '?', psyncOffset: -1, compression,
  });
  t.same(step(S.ReceivePong, { type: 'reply', line: '+PONG' }, ctx(4)).send?.[1], ['REPLCONF', 'capa', 'eof', 'capa', 'psync2', 'capa', 'psync-relay-z1:4']);
  t.same(step(S.ReceivePong, { type: 'reply', line: '+PONG' }, ctx(null)).send?.[1], ['REPLCONF', 'capa', 'eof', 'capa', 'psync2']);
  const marked = `+FULLRESYNC ${REPLID} 42 ${Z1}`;
  t.same(step(S.ReceivePsync, { type: 'reply', line: marked }, ctx(1)).outcome, { kind: 'full', replid: REPLID, offset: 42, compressed: true });
  t.same(psyncReply(`+FULLRESYNC ${REPLID} 42`, true).outcome, { kind: 'full', replid: REPLID, offset: 42 }, 'a plain reply to a relay that asked: plain');
  t.same(psyncReply(`+CONTINUE ${REPLID} ${Z1}`, true).outcome, { kind: 'continue', replid: REPLID, compressed: true });
  t.equal(psyncReply(marked, false).error?.code, 'RELAY_ERR_HANDSHAKE', 'a token nobody asked for is an error, not a guess');
  t.equal(psyncReply(`+CONTINUE ${Z1}`, true).error?.code, 'RELAY_ERR_HANDSHAKE', 'a marked +CONTINUE always names the replid');
});

t.test('the byte histogram tells random data from text', async (t) => {
  t.ok(sampledBitsPerByte(randomBytes(1 << 20)) > 7.8, 'random: ~8 bits per byte');
  t.ok(sampledBitsPerByte(Buffer.concat(Array.from({ length: 300 }, (_, i) => jsonDoc(i)))) < 6.5, 'JSON: well under');
  t.ok(sampledBitsPerByte(Buffer.alloc(10_000, 'x')) === 0, 'one byte value: 0 bits');
});

t.test('each batch is flushed: what has arrived inflates to every byte written so far', async (t) => {
  const { writer, received } = await socketPair(t);
  const w = new CompressedWriter(writer, { level: 1 });
  const written: Buffer[] = [];
  for (let i = 0; i < 20; i++) {
    const cmd = i % 3 === 0 ? randomCmd(i, 64) : jsonDoc(i);
    t.ok(w.write(cmd), 'under the high-water mark');
    written.push(cmd);
    const expect = Buffer.concat(written);
    await waitFor(() => {
      const got = received();
      return got.length > 0 && inflated(got).equals(expect);
    }, { what: `command ${i} to arrive whole`, intervalMs: 2 });
  }
  const got = received();
  t.same([...got.subarray(got.length - 4)], [0x00, 0x00, 0xff, 0xff], 'the last batch ends with a sync flush marker');
});

t.test('the compressed stream inflates to exactly the bytes written, fed whole, byte by byte and in random splits', async (t) => {
  const { writer, received, ended } = await socketPair(t);
  const w = new CompressedWriter(writer, { level: 1 });
  const parts: Buffer[] = [];
  for (let i = 0; i < 400; i++) {
    const cmd = i % 5 === 0 ? randomCmd(i, 300) : i % 5 === 1 ? resp('INCR', `counter:${i % 10}`) : jsonDoc(i);
    parts.push(cmd);
    w.write(cmd.subarray(0, 10));
    w.write(cmd.subarray(10));
    if (i % 7 === 0) await turn();
  }
  w.end();
  await ended;
  const raw = Buffer.concat(parts);
  const wire = received();
  t.ok(inflateRawSync(wire).equals(raw), 'whole (and the stream is finished: Z_FINISH accepted)');
  for (const [how, chunks] of [
    ['random splits', randomSplit(wire, mulberry32(7))],
    ['byte by byte', byteByByte(wire.subarray(0, 4096))],
  ] as const) {
    const inflate = createInflateRaw();
    const out: Buffer[] = [];
    inflate.on('data', (d: Buffer) => out.push(d));
    for (const c of chunks) inflate.write(c);
    await new Promise<void>((resolve) => inflate.flush(constants.Z_SYNC_FLUSH, () => resolve()));
    const got = Buffer.concat(out);
    t.ok(got.length > 0 && raw.subarray(0, got.length).equals(got), `${how}: ${got.length} bytes, a prefix of what was written`);
    if (how === 'random splits') t.equal(got.length, raw.length, 'random splits: all of it');
  }
});

t.test('random bytes grow the link by at most 2%: large incompressible batches switch to stored blocks, then compressible data compresses again', async (t) => {
  const { writer, received } = await socketPair(t);
  const phase = { raw: 0, wire: 0 };
  const w = new CompressedWriter(writer, { level: 1, onBatch: (raw, wire) => ((phase.raw += raw), (phase.wire += wire)) });
  let stored = false;
  let raw = 0;
  for (let i = 0; i < 4096; i++) {
    const cmd = randomCmd(i);
    raw += cmd.length;
    w.write(cmd);
    if (i % 64 === 63) {
      await turn();
      stored ||= w.storing;
    }
  }
  await waitFor(() => phase.raw === raw, { what: 'the random part compressed' });
  t.ok(stored, 'the writer stored incompressible data');
  t.ok(phase.wire <= raw * 1.02, `random: ${phase.wire} bytes on the wire for ${raw}`);
  t.equal(received().length <= phase.wire, true, 'the wire count is what the socket got');
  // JSON after random: after the stored span (1 MiB) it compresses again.
  Object.assign(phase, { raw: 0, wire: 0 });
  let json = 0;
  for (let i = 0; i < 6000; i++) {
    const cmd = jsonDoc(i);
    json += cmd.length;
    w.write(cmd);
    if (i % 100 === 99) await turn();
  }
  await waitFor(() => phase.raw === json, { what: 'the JSON part compressed' });
  t.notOk(w.storing, 'compressing again');
  t.ok(phase.wire < json * 0.5, `JSON after random: ${phase.wire} bytes for ${json}`);
});

t.test('random commands sent one batch each grow the link by at most 2%', async (t) => {
  const { writer } = await socketPair(t);
  const total = { raw: 0, wire: 0, batches: 0 };
  let sent = (): void => undefined;
  const w = new CompressedWriter(writer, {
    level: 1,
    onBatch: (raw, wire) => {
      Object.assign(total, { raw: total.raw + raw, wire: total.wire + wire, batches: total.batches + 1 });
      sent();
    },
  });
  for (let i = 0; i < 300; i++) {
    const out = new Promise<void>((resolve) => (sent = resolve));
    w.write(randomCmd(i));
    await out;
  }
  t.equal(total.batches, 300, 'one batch per command');
  t.ok(total.wire <= total.raw * 1.02, `${total.wire} bytes on the wire for ${total.raw}`);
});

t.test('JSON-like documents at level 1 take less than 40% of their size', async (t) => {
  const { writer } = await socketPair(t);
  const total = { raw: 0, wire: 0 };
  const w = new CompressedWriter(writer, { level: 1, onBatch: (raw, wire) => ((total.raw += raw), (total.wire += wire)) });
  let raw = 0;
  for (let i = 0; i < 3000; i++) {
    const cmd = jsonDoc(i);
    raw += cmd.length;
    w.write(cmd);
    if (i % 32 === 31) await turn();
  }
  await waitFor(() => total.raw === raw, { what: 'everything compressed' });
  t.ok(total.wire < raw * 0.4, `${total.wire} bytes on the wire for ${raw}`);
});

t.test('twenty compressors sharing the zlib slots each deliver every byte, in order', async (t) => {
  const pairs = await Promise.all(Array.from({ length: 20 }, () => socketPair(t)));
  const expected: Buffer[][] = pairs.map(() => []);
  const writers = pairs.map((p) => new CompressedWriter(p.writer, { level: 1 }));
  for (let round = 0; round < 30; round++) {
    writers.forEach((w, k) => {
      const cmd = (round + k) % 4 === 0 ? randomCmd(round, 4096) : jsonDoc(round * 20 + k);
      expected[k]!.push(cmd);
      w.write(cmd);
    });
    await turn();
  }
  await waitFor(() => pairs.every((p, k) => inflated(p.received()).length === Buffer.concat(expected[k]!).length), { what: 'every stream complete' });
  t.ok(pairs.every((p, k) => inflated(p.received()).equals(Buffer.concat(expected[k]!))), 'each replica got exactly its bytes');
});

t.test('write() returns false past the high-water mark, and drain comes once the reader takes the bytes', async (t) => {
  const { writer, reader, received } = await socketPair(t);
  reader.pause();
  const w = new CompressedWriter(writer, { level: 1, highWaterMark: 64 * 1024 });
  const parts: Buffer[] = [];
  let full = false;
  // Random data so the kernel's socket buffers fill with as many bytes as were written.
  for (let i = 0; i < 4000 && !full; i++) {
    const cmd = randomCmd(i, 16 * 1024);
    parts.push(cmd);
    full = !w.write(cmd);
    if (i % 8 === 7) await turn();
  }
  t.ok(full, 'write() said stop');
  t.ok(w.writableLength >= 64 * 1024, 'with at least the high-water mark waiting');
  const drained = once(w, 'drain');
  reader.resume();
  await drained;
  t.ok(w.writableLength < 64 * 1024, 'drain: below the high-water mark');
  const raw = Buffer.concat(parts);
  await waitFor(() => inflated(received()).length === raw.length, { what: 'every byte to arrive' });
  t.ok(inflated(received()).equals(raw), 'nothing lost or reordered');
});

t.test('a socket closed while a level switch is in zlib releases the compressor without an error', async (t) => {
  const { writer } = await socketPair(t);
  let first = true;
  const w: CompressedWriter = new CompressedWriter(writer, {
    level: 1,
    onBatch: () => {
      if (!first) return;
      first = false;
      // The batch was incompressible: the next one starts a switch to level 0; the socket goes meanwhile.
      w.write(randomCmd(1, 64 * 1024));
      writer.destroy();
    },
  });
  w.write(randomCmd(0, 64 * 1024));
  await waitFor(() => w.destroyed, { what: 'the compressor to be released' });
  t.notOk(w.write(Buffer.from('more')), 'writes after the close are refused');
});

t.test('payloadSource reads a marked connection through an inflater and an unmarked one as it is', async (t) => {
  const raw = Buffer.concat(Array.from({ length: 200 }, (_, i) => jsonDoc(i)));
  const wire = deflateRawSync(raw, { finishFlush: constants.Z_SYNC_FLUSH });
  const { writer, reader } = await socketPair(t);
  reader.pause();
  const plain = payloadSource({ socket: reader, outcome: { kind: 'full', replid: REPLID, offset: 0 }, rest: Buffer.from('x') });
  t.equal(plain.source, reader, 'unmarked: the socket itself');
  t.equal(plain.rest.toString(), 'x', 'with the bytes already read');
  const { source, rest } = payloadSource({ socket: reader, outcome: { kind: 'full', replid: REPLID, offset: 0, compressed: true }, rest: wire.subarray(0, 100) });
  t.equal(rest.length, 0, 'what was already read went into the inflater');
  const out: Buffer[] = [];
  source.on('data', (d: Buffer) => out.push(d));
  writer.write(wire.subarray(100));
  await waitFor(() => Buffer.concat(out).length === raw.length, { what: 'the inflated bytes' });
  t.ok(Buffer.concat(out).equals(raw), 'exactly the bytes compressed');
});

t.test('a corrupt compressed stream is an error of the source and closes the connection', async (t) => {
  const { reader } = await socketPair(t);
  const { source } = payloadSource({ socket: reader, outcome: { kind: 'continue', replid: REPLID, compressed: true }, rest: Buffer.alloc(16, 0xff) });
  const [err] = (await once(source, 'error')) as [NodeJS.ErrnoException];
  t.equal(err.code, 'Z_DATA_ERROR');
  await waitFor(() => reader.destroyed, { what: 'the socket to be closed' });
});

/**
 * A compressed connection whose upstream sends `docs` JSON documents, flushed and never finished (as an upstream
 * relay sends its stream), cut after `fraction` of the wire bytes: what the source yielded and its errors, once closed.
 */
async function closedAfter(t: Test, docs: number, fraction: number): Promise<{ raw: Buffer; got: Buffer; errors: string[]; reader: Socket }> {
  const raw = Buffer.concat(Array.from({ length: docs }, (_, i) => jsonDoc(i)));
  const wire = deflateRawSync(raw, { finishFlush: constants.Z_SYNC_FLUSH });
  const { writer, reader } = await socketPair(t);
  const { source } = payloadSource({ socket: reader, outcome: { kind: 'continue', replid: REPLID, compressed: true }, rest: Buffer.alloc(0) });
  const out: Buffer[] = [];
  const errors: string[] = [];
  source.on('data', (d: Buffer) => out.push(d));
  source.on('error', (err: Error) => errors.push(err.message));
  writer.end(wire.subarray(0, Math.floor(wire.length * fraction)));
  await once(source, 'close');
  return { raw, got: Buffer.concat(out), errors, reader };
}

t.test('an upstream that closes its compressed connection ends the source without an error, after every byte it inflated', async (t) => {
  // The stream is flushed per batch and never finished: ended by the socket's end, the inflater failed with
  // Z_BUF_ERROR 'unexpected end of file', and the link logged a clean close as a corrupt stream.
  const { raw, got, errors, reader } = await closedAfter(t, 50, 1);
  t.strictSame(errors, [], 'no error');
  t.ok(got.equals(raw), 'every byte sent before the close, inflated');
  await waitFor(() => reader.destroyed, { what: 'the socket to be closed' });
});

t.test('a compressed connection cut in the middle of a block ends the source without an error, with a prefix of the bytes', async (t) => {
  const { raw, got, errors } = await closedAfter(t, 50, 0.5);
  t.strictSame(errors, [], 'no error');
  t.ok(got.equals(raw.subarray(0, got.length)), `what came out (${got.length} bytes) is a prefix of the bytes sent`);
});

t.test('bytes inflated before the upstream closed, not yet read (the reader paused), are all read after it', async (t) => {
  // The RDB's last bytes, waiting while the relay wrote the ones before them, were dropped when the close destroyed
  // the inflater: an RDB that had arrived whole was taken as cut, and the relay full-synced again.
  const raw = Buffer.concat(Array.from({ length: 20 }, (_, i) => jsonDoc(i)));
  const wire = deflateRawSync(raw, { finishFlush: constants.Z_SYNC_FLUSH });
  const { writer, reader } = await socketPair(t);
  const { source } = payloadSource({ socket: reader, outcome: { kind: 'continue', replid: REPLID, compressed: true }, rest: Buffer.alloc(0) });
  const errors: Error[] = [];
  source.on('error', (err: Error) => errors.push(err));
  source.pause();
  writer.end(wire);
  await waitFor(() => (reader.readableEnded && (source.destroyed || source.readableLength === raw.length)) || undefined, { what: 'the close, and the bytes inflated or dropped' });
  const out: Buffer[] = [];
  source.on('data', (d: Buffer) => out.push(d));
  source.resume();
  await waitFor(() => source.destroyed || undefined, { what: 'the source to close' });
  t.strictSame(errors.map((e) => e.message), [], 'no error');
  t.equal(Buffer.concat(out).length, raw.length, 'every byte inflated');
  t.ok(Buffer.concat(out).equals(raw));
});
