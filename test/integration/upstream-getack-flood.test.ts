/**
 * An upstream that floods `REPLCONF GETACK *` and never reads what the relay sends back. Each GETACK asks for an
 * ACK; queued one per GETACK, the ACKs would grow the relay's socket buffer without limit (about as many bytes as the
 * flood itself). The relay queues at most a bounded amount and, once upstream reads again, still acknowledges the
 * whole stream.
 */
import t from 'tap';
import { startRelay } from '../helpers/relay.js';
import { startScriptedMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';

const A = '0123456789abcdef0123456789abcdef0123456a';
const RDB = emptyRdb(10);
const GETACK = encodeCommand(['REPLCONF', 'GETACK', '*']);
const PER_WRITE = 10_000;
const WRITES = 200; // 2,000,000 GETACKs: 74 MB of stream
/** Generous for the kernel's socket buffers (a few MB on loopback); without a bound the ACKs are ~80 MB. */
const MAX_QUEUED = 16 * 1024 * 1024;

t.test('a GETACK flood from an upstream that does not read: ACKs are not queued without limit, the stream is still acknowledged', async (t) => {
  const block = Buffer.concat(Array.from({ length: PER_WRITE }, () => GETACK));
  const end = WRITES * block.length;
  const master = await startScriptedMaster((conn) => {
    const s = conn.socket;
    s.pause(); // reads nothing more: every ACK stays with the relay, or in the kernel
    s.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${A} 0\r\n$${RDB.length}\r\n`), RDB]));
    let n = 0;
    const pump = (): void => {
      while (n < WRITES) {
        n++;
        if (!s.write(block)) return void s.once('drain', pump);
      }
    };
    pump();
  });
  t.teardown(() => master.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const client = await relay.client();
  t.teardown(() => client.close());

  await waitFor(async () => (await client.info('replication'))['master_repl_offset'] === String(end), { what: `the relay to hold offset ${end}`, timeoutMs: 120_000 });
  const conn = master.connections[0]!;
  let queued = 0;
  conn.socket.on('data', (b: Buffer) => (queued += b.length));
  conn.socket.resume();
  await waitFor(() => conn.acked(end).then(() => true), { what: `REPLCONF ACK ${end}`, timeoutMs: 20_000 });
  t.ok(queued < MAX_QUEUED, `ACK bytes the relay had queued while upstream did not read: ${queued} < ${MAX_QUEUED}`);
});
