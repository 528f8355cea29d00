/**
 * UpstreamLink against a scripted upstream, with a host whose snapshot commit the test holds open: what happens when
 * the link drops while the relay commits a full sync's RDB.
 */
import t from 'tap';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { UpstreamLink, LinkState, type LinkHost } from '../../src/upstream/link.js';
import { createLogger } from '../../src/log.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { recordTelemetry } from '../helpers/telemetry.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait.js';

const REPLID = 'c'.repeat(40);

t.test('a full sync whose commit completes after the link was torn down (REPLICAOF meanwhile) is counted and logged', async (t) => {
  const rdb = emptyRdb(10);
  const fake = await startFakeMaster((socket: Socket, attempt) => {
    if (attempt === 0) socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${REPLID} 1000\r\n$${rdb.length}\r\n`), rdb]));
    else socket.write(`+CONTINUE ${REPLID}\r\n`);
  });
  t.teardown(() => fake.close());
  const { telemetry, messages, close } = recordTelemetry();
  t.teardown(close);
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('info', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });

  let link: UpstreamLink | null = null;
  let committed = false;
  let commitDone = false;
  const dir = tempDir('upstream-link-');
  const host: LinkHost = {
    psyncTarget: () => (committed ? { replid: REPLID, offset: 1001 } : { replid: '?', offset: -1 }),
    ackOffset: (held) => held,
    masterReplOffset: () => (committed ? 1000 : 0),
    tempSnapshotPath: () => join(dir, 'temp.rdb'),
    // REPLICAOF (here: the same upstream) while the relay is still committing: the link starts over meanwhile.
    commitFullSync: async () => {
      // As History.fullSync: the new history is in place at once, its files published after.
      committed = true;
      link!.setUpstream('127.0.0.1', fake.port);
      // The commit (its fsyncs) outlasts the new connection's handshake.
      await waitFor(() => link!.state === LinkState.Connected || undefined, { what: 'the new connection to continue the history' });
      commitDone = true;
    },
    discardTemp: async () => undefined,
    continued: async () => undefined,
    cannotResume: () => undefined,
    readStream: () => null,
    appendStream: () => undefined,
  };
  link = new UpstreamLink(
    {
      host: '127.0.0.1',
      port: fake.port,
      user: null,
      password: null,
      listeningPort: 0,
      announceIp: null,
      timeoutMs: 10_000,
      connectTimeoutMs: 5_000,
      backoffMinMs: 60_000,
      backoffMaxMs: 60_000,
      log,
      telemetry,
    },
    host,
  );
  link.start();
  t.teardown(() => link!.stop());

  await waitFor(() => commitDone || undefined, { what: 'the commit to complete' });
  t.same(fake.psyncs[1], ['PSYNC', REPLID, '1001'], 'the next PSYNC continues it');
  // The new connection continued while the commit ran: its partial sync is counted first.
  t.same(
    messages('upstream.sync').map((m) => [m.kind, m.replid, m.offset]),
    [
      ['partial', REPLID, 1000],
      ['full', REPLID, 1000],
    ],
    'the committed full sync is counted, as is the partial one that continued it',
  );
  t.ok(
    lines.some((l) => l['msg'] === 'rdb received, snapshot committed'),
    'and logged as committed',
  );
});
