/**
 * UpstreamLink against a real redis-server, with a host whose snapshot commit the test holds open: what happens when
 * the link is torn down while the relay commits a full sync's RDB.
 */
import t from 'tap';
import { join } from 'node:path';
import { UpstreamLink, LinkState, type LinkHost } from '../../src/upstream/link.js';
import { createLogger } from '../../src/log.js';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { recordTelemetry } from '../helpers/telemetry.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

t.test('a full sync whose commit completes after the link was torn down (REPLICAOF meanwhile) is counted and logged', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('SET', 'k', 'v');
  const { telemetry, messages, close } = recordTelemetry();
  t.teardown(close);
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('info', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });

  let link: UpstreamLink | null = null;
  let committed: { replid: string; offset: number } | null = null;
  let commitDone = false;
  const dir = tempDir('upstream-link-');
  const host: LinkHost = {
    psyncTarget: () => (committed ? { replid: committed.replid, offset: committed.offset + 1 } : { replid: '?', offset: -1 }),
    ackOffset: (held) => held,
    masterReplOffset: () => committed?.offset ?? 0,
    tempSnapshotPath: () => join(dir, 'temp.rdb'),
    // REPLICAOF (here: the same upstream) while the relay is still committing: the link starts over meanwhile.
    commitFullSync: async (_path, id, off) => {
      // As History.fullSync: the new history is in place at once, its files published after.
      committed = { replid: id!, offset: off };
      link!.setUpstream('127.0.0.1', master.port);
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
      port: master.port,
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
  const stats = await m.info('stats');
  t.same([stats['sync_full'], stats['sync_partial_ok']], ['1', '1'], 'the master served one full sync, then continued it');
  const { replid, offset } = committed!;
  t.equal(replid, (await m.info('replication'))['master_replid'], "the master's history was committed");
  // The new connection continued while the commit ran: its partial sync is counted first.
  t.same(
    messages('upstream.sync').map((e) => [e.kind, e.replid, e.offset]),
    [
      ['partial', replid, offset],
      ['full', replid, offset],
    ],
    'the committed full sync is counted, as is the partial one that continued it',
  );
  t.ok(
    lines.some((l) => l['msg'] === 'rdb received, snapshot committed'),
    'and logged as committed',
  );
});
