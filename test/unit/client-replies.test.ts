import t from 'tap';
import { ClientConnection } from '../../src/downstream/client.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import { loopbackPair } from '../helpers/raw.js';
import { waitFor } from '../helpers/wait.js';
import { unlimitedTurn } from '../helpers/downstream-input.js';

t.test('the replies to commands that arrived together leave in one socket write', async (t) => {
  const { server: socket, client: peer } = await loopbackPair(t);
  // What reaches the socket's implementation: one call per write or writev it makes.
  let writes = 0;
  const s = socket as unknown as { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
  const write = s._write.bind(socket);
  const writev = s._writev.bind(socket);
  s._write = (...a) => (writes++, write(...a));
  s._writev = (...a) => (writes++, writev(...a));
  new ClientConnection(socket, createLogger('silent'), new Telemetry('client-replies-test'), { maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 20 }, {
    dispatch: (client) => client.reply(Buffer.from('+PONG\r\n')),
    closed: () => undefined,
    // One write per turn is what this checks; on a loaded machine the shared 5 ms could end the turn after a PING.
    turn: unlimitedTurn,
  }, false);
  let got = '';
  peer.on('data', (d: Buffer) => (got += d.toString('latin1')));
  // A replica's handshake sent at once, as many clients pipeline it.
  peer.write('PING\r\nPING\r\nPING\r\nPING\r\n');
  await waitFor(() => got === '+PONG\r\n'.repeat(4) || undefined, { what: 'four replies' });
  t.equal(writes, 1, 'four replies, one write');
});

t.test('a pipeline of slow commands yields to the event loop once the turn has had its time, not after 128 of them', async (t) => {
  const { server: socket, client: peer } = await loopbackPair(t);
  let ran = 0;
  let beforeTheLoopWentOn = -1;
  new ClientConnection(socket, createLogger('silent'), new Telemetry('client-replies-test'), { maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 20 }, {
    dispatch: (client) => {
      // An INFO-like command costing a millisecond.
      const end = performance.now() + 1;
      while (performance.now() < end);
      // What else was waiting in this turn (the upstream link, the fan-out) runs once the client yields.
      if (ran++ === 0) setImmediate(() => (beforeTheLoopWentOn = ran));
      client.reply(Buffer.from('+PONG\r\n'));
    },
    closed: () => undefined,
  }, false);
  let got = '';
  peer.on('data', (d: Buffer) => (got += d.toString('latin1')));
  peer.write('PING\r\n'.repeat(200));
  await waitFor(() => got === '+PONG\r\n'.repeat(200) || undefined, { what: '200 replies, in order' });
  t.ok(beforeTheLoopWentOn >= 1 && beforeTheLoopWentOn < 128, `the event loop went on after ${beforeTheLoopWentOn} of the commands (the 5 ms budget), not 128`);
});

t.test('a large bulk reply is written by reference, between the replies before and after it, whole and in order', async (t) => {
  const { server: socket, client: peer } = await loopbackPair(t);
  const payload = Buffer.alloc(1 << 20, 0x61);
  let written: Buffer[] = [];
  const s = socket as unknown as { _writev: (chunks: Array<{ chunk: Buffer }>, cb: () => void) => void };
  const writev = s._writev.bind(socket);
  s._writev = (chunks, cb) => ((written = chunks.map((c) => c.chunk)), writev(chunks, cb));
  new ClientConnection(socket, createLogger('silent'), new Telemetry('client-replies-test'), { maxBulkLen: 1 << 21, maxQueryBuffer: 1 << 22 }, {
    dispatch: (client, args) => (args.length > 1 ? client.replyBulk(payload) : client.reply(Buffer.from('+PONG\r\n'))),
    closed: () => undefined,
    turn: unlimitedTurn,
  }, false);
  const chunks: Buffer[] = [];
  peer.on('data', (d: Buffer) => chunks.push(d));
  const expected = Buffer.concat([Buffer.from(`+PONG\r\n$${payload.length}\r\n`), payload, Buffer.from('\r\n+PONG\r\n')]);
  peer.write('PING\r\nECHO x\r\nPING\r\n');
  await waitFor(() => Buffer.concat(chunks).length >= expected.length || undefined, { what: 'the three replies' });
  t.ok(Buffer.concat(chunks).equals(expected), 'PONG, the bulk, PONG');
  t.ok(written.includes(payload), 'the payload went to the socket itself, not a copy of it');
});
