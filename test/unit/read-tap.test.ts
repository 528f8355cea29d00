import t, { type Test } from 'tap';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { ReadTap } from '../../src/upstream/read-tap.js';
import { waitFor } from '../helpers/wait.js';

/** A server whose first connection is handed over; the client socket reads through a ReadTap. */
async function pair(t: Test): Promise<{ server: Socket; client: Socket; tap: ReadTap }> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  const tap = new ReadTap();
  const client = connect({ host: '127.0.0.1', port, onread: tap.onread });
  tap.socket = client;
  const [server] = (await once(srv, 'connection')) as [Socket];
  t.teardown(() => {
    client.destroy();
    server.destroy();
    srv.close();
  });
  return { server, client, tap };
}

t.test('read tap: before a sink, reads are emitted as data in buffers of their own', async (t) => {
  const { server, client } = await pair(t);
  const got: Buffer[] = [];
  client.on('data', (b: Buffer) => got.push(b));
  server.write('hello');
  await waitFor(() => got.length > 0 || undefined, { what: 'data' });
  t.equal(Buffer.concat(got).toString(), 'hello');
  server.write('world');
  await waitFor(() => Buffer.concat(got).length >= 10 || undefined, { what: 'more data' });
  t.not(got[0]!.buffer, got[got.length - 1]!.buffer, 'each read has its own buffer (a consumer may keep it)');
});

t.test('read tap: with a sink, reads land in the sink\'s space; returning false pauses until resume()', async (t) => {
  const { server, client, tap } = await pair(t);
  const data: string[] = [];
  client.on('data', (b: Buffer) => data.push(b.toString()));
  server.write('before');
  await waitFor(() => data.length > 0 || undefined, { what: 'data before the sink' });
  const store = Buffer.alloc(1 << 16);
  let used = 0;
  const arrived: string[] = [];
  let pause = false;
  tap.sink = {
    space: () => store.subarray(used),
    arrived: (space, n) => {
      t.equal(space.buffer, store.buffer, 'the read went into the sink\'s space');
      t.equal(space.byteOffset, store.byteOffset + used);
      arrived.push(space.toString('latin1', 0, n));
      used += n;
      return !pause;
    },
  };
  // The buffer already armed for the next read is a 'data' one: that read is still emitted as data.
  server.write('armed');
  await waitFor(() => data.length > 1 || undefined, { what: 'the armed read' });
  t.same(data, ['before', 'armed']);
  server.write('in place');
  await waitFor(() => arrived.length > 0 || undefined, { what: 'a read into the sink' });
  t.same(arrived, ['in place']);
  pause = true;
  server.write('one');
  await waitFor(() => arrived.length > 1 || undefined, { what: 'the read that pauses' });
  t.equal((client as unknown as { _handle: { reading: boolean } })._handle.reading, false, 'paused: the socket no longer reads');
  server.write('two');
  t.same(arrived, ['in place', 'one']);
  pause = false;
  client.resume();
  await waitFor(() => arrived.length > 2 || undefined, { what: 'reads after resume' });
  t.same(arrived, ['in place', 'one', 'two']);
  t.equal(store.toString('latin1', 0, used), 'in placeonetwo', 'contiguous in the sink\'s space');
  t.same(data, ['before', 'armed'], 'no data events once the sink reads');
});
