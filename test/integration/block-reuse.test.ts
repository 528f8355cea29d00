// The log reuses the memory of the blocks it dropped (src/backlog/block-pool.ts), and of the disk chunks it read
// (src/backlog/disk-chunk-cache.ts). A replica that stops reading leaves writes of views of those blocks in flight
// on its socket: they must leave with the bytes they had.
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { info } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { waitFor } from '../helpers/wait.js';
import { freePort } from '../helpers/ports.js';
import { makeCerts } from '../helpers/tls.js';
import { encodeCommand } from '../../src/resp/writer.js';

t.teardown(stopAll);

interface Psync {
  readonly socket: Socket;
  /** Stream bytes received after the +CONTINUE line. */
  stream(): Buffer;
}

/** `PSYNC <replid> <from>` on a plain connection (or TLS, trusting `ca`); collects what follows +CONTINUE. */
async function psync(port: number, replid: string, from: number, ca?: Buffer): Promise<Psync> {
  const socket = ca ? tlsConnect({ port, host: '127.0.0.1', ca, servername: 'localhost' }) : connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  t.teardown(() => socket.destroy());
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  await once(socket, ca ? 'secureConnect' : 'connect');
  // As a replica does: PSYNC only once REPLCONF is answered (Redis refuses PSYNC "with pending output").
  socket.write(encodeCommand(['REPLCONF', 'capa', 'psync2']));
  await waitFor(() => Buffer.concat(chunks).length >= 5 || undefined, { what: `REPLCONF answered on port ${port}` });
  socket.write(encodeCommand(['PSYNC', replid, String(from)]));
  const head = `+OK\r\n+CONTINUE ${replid}\r\n`;
  await waitFor(() => Buffer.concat(chunks).length >= head.length || undefined, { what: `the reply to PSYNC on port ${port}` });
  const got = Buffer.concat(chunks).toString('latin1', 0, head.length);
  if (got !== head) throw new Error(`not continued on port ${port}: ${JSON.stringify(got)}`);
  return {
    socket,
    stream: () => {
      const all = Buffer.concat(chunks);
      chunks.length = 0;
      chunks.push(all);
      return all.subarray(head.length);
    },
  };
}

t.test('replicas that stop reading (plain and TLS) while the log reuses its blocks get the master stream byte for byte', async (t) => {
  const master = await startRedis();
  const certs = makeCerts();
  const tlsPort = await freePort();
  // A small memory tail: 128 KiB read blocks, reused many times over while the replicas are stopped.
  const relay = await startRelay({
    upstream: { host: '127.0.0.1', port: master.port },
    log: { memory: '1mb' },
    listen: { tls: { port: tlsPort, cert: certs.serverCert, key: certs.serverKey } },
  });
  t.teardown(() => relay.stop());
  const rc = await relay.client();
  t.teardown(() => rc.close());
  const mc = await master.client();
  t.teardown(() => mc.close());
  await mc.call('SET', 'warm', 'up');
  const synced = await waitFor(
    async () => {
      const [m, r] = await Promise.all([info(mc), info(rc)]);
      return r['master_link_status'] === 'up' && m['master_repl_offset'] === r['master_repl_offset'] ? m : undefined;
    },
    { what: 'the relay caught up with the master' },
  );
  const replid = synced['master_replid']!;
  const from = Number(synced['master_repl_offset']) + 1;

  // The same stream, straight from the master (read at once) and through the relay (not read for a while).
  const reference = await psync(master.port, replid, from);
  const stopped = await psync(relay.port, replid, from);
  const stoppedTls = await psync(tlsPort, replid, from, readFileSync(certs.ca));
  stopped.socket.pause();
  stoppedTls.socket.pause();
  await benchmarkLoad(master.port, 40000, 1024, 1000);
  const end = Number((await info(mc))['master_repl_offset']);
  const want = end - from + 1;
  t.ok(want > 40 * 1024 * 1024, `${want} stream bytes went by, 40 times the memory tail`);
  await waitFor(() => reference.stream().length >= want || undefined, { what: 'the master stream to its end', timeoutMs: 60_000 });
  const held = await waitFor(
    async () => {
      const r = await info(rc, 'all');
      const line = Object.entries(r).find(([k]) => /^slave\d+$/.test(k))?.[1] ?? '';
      const online = Object.entries(r).filter(([k, v]) => /^slave\d+$/.test(k) && v.includes('state=online')).length;
      return Number(r['master_repl_offset']) >= end && online === 2 ? line : undefined;
    },
    { what: 'the relay has the whole stream', timeoutMs: 60_000 },
  );
  t.match(held, /state=online/, 'the stopped replicas are still connected');

  const a = reference.stream().subarray(0, want);
  for (const [what, r] of [['plain', stopped], ['TLS', stoppedTls]] as const) {
    r.socket.resume();
    await waitFor(() => r.stream().length >= want || undefined, { what: `the relay stream to its end (${what})`, timeoutMs: 60_000 });
    const b = r.stream().subarray(0, want);
    let diff = -1;
    for (let i = 0; i < want; i++) {
      if (a[i] !== b[i]) {
        diff = i;
        break;
      }
    }
    t.equal(diff, -1, `${what}: the first byte that differs (none)`);
  }
  const blocks = relay.relay.status().log;
  // The stopped replica holds only the views it was handed last: the blocks after them are reused meanwhile, so the
  // byte-for-byte checks above ran over reused memory. How many depends on timing (a holder in the way when a block
  // is retired past the pool's cap lets it go to the garbage collector): 74-262 of the ~330 blocks in 8 runs on a
  // quiet machine once, 17-31 in later runs alone, and 12 in a full suite on 2 cores: any reuse at all is the point.
  t.ok(blocks.blocksReused > 0, `blocks were reused (${blocks.blocksReused} reused, ${blocks.blocksAllocated} allocated, ${blocks.blocksDiscarded} discarded)`);
  // Resumed 40 MB behind a 1 MB tail, the replicas read the stream back from the disk log in 1 MiB chunks, the
  // cache keeping 16: the checks above ran over reused chunk blocks too.
  const disk = relay.relay.webSource().log.diskCacheStats;
  t.ok(disk.blocksReused >= 8, `disk chunk blocks were reused (${disk.blocksReused} reused, ${disk.blocksAllocated} allocated, ${disk.reads} reads)`);
});
