/**
 * PitrService.open() against the real History, SnapshotStore and ReplicaServer: what happens when the history
 * changes, or the relay shuts down, while a point-in-time listener is still binding its port or while its snapshot
 * is being leased. The hook into "the listener is binding" is the ReplicaServer's 'listening for replicas' log
 * record: it is written from the net server's listen callback, after the socket is bound and before listen()
 * resolves, so an action taken there lands exactly in the window open() awaits. The moment before the bind is
 * reached through dns.lookup, which net.Server.listen() calls (asynchronously, even for an IP literal) before binding.
 */
import t, { type Test } from 'tap';
import { promises as fsp } from 'node:fs';
import dns from 'node:dns';
import { connect } from 'node:net';
import { History } from '../../src/backlog/history.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';
import { validateConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import { PitrService } from '../../src/pitr/service.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait.js';

const REPLID_A = 'a'.repeat(40);
const REPLID_B = 'b'.repeat(40);

interface LogRecord {
  readonly msg: string;
  readonly component?: string;
  readonly port?: number;
}

interface Setup {
  readonly history: History;
  readonly service: PitrService;
  /** Runs `fn` once, at the first log record for which `when` holds. */
  once(when: (rec: LogRecord) => boolean, fn: (rec: LogRecord) => void): void;
  /**
   * Receives a full sync from upstream (a new history at `offset` of `replid`); the function it resolves with lands
   * it. History.fullSync switches the epoch and runs its onNewHistory callbacks synchronously, before its first await.
   */
  receiveFullSync(replid: string, offset: number): Promise<() => Promise<unknown>>;
}

/** A History with one snapshot (offset 0 of REPLID_A, epoch 1) and a PitrService over it; closed with `t`. */
async function setup(t: Test): Promise<Setup> {
  // Not t.testdir(): tap removes that before this test's teardown, whose History.close() still writes the state file.
  const dir = tempDir('pitr-service-');
  let hooks: { when: (rec: LogRecord) => boolean; fn: (rec: LogRecord) => void }[] = [];
  const logger = createLogger('info', {
    write(line: string) {
      const rec = JSON.parse(line) as LogRecord;
      const due = hooks.filter((h) => h.when(rec));
      hooks = hooks.filter((h) => !due.includes(h));
      for (const h of due) h.fn(rec);
    },
  });
  const telemetry = new Telemetry('pitr-service-test');
  const history = new History({ dir, memory: 1 << 20, disk: 0, diskQueue: 1 << 20, diskDirect: false, refreshHold: 1 << 20, logger, telemetry });
  await history.recover();
  const receiveFullSync = async (replid: string, offset: number) => {
    const tmp = history.store.tempPath();
    await fsp.writeFile(tmp, emptyRdb(10));
    return () => history.fullSync(tmp, replid, offset);
  };
  await (await receiveFullSync(REPLID_A, 0))();
  const config = validateConfig({ listen: { bind: '127.0.0.1' } }, null);
  const service = new PitrService({
    history,
    listen: config.listen,
    logger,
    telemetry,
    idleTimeoutMs: 60_000,
    maxListeners: 4,
    replicaTimeoutMs: 60_000,
    maxLag: 1 << 20,
  });
  t.teardown(async () => {
    service.closeAll();
    await history.close();
  });
  return { history, service, once: (when, fn) => hooks.push({ when, fn }), receiveFullSync };
}

/** The point-in-time server binding its port (the net server's listen callback, before listen() resolves). */
const binding = (rec: LogRecord): boolean => rec.msg === 'listening for replicas' && rec.component === 'pitr';

/** Resolves once nothing accepts connections on `port` any more (polled, with a deadline). */
function refused(port: number): Promise<true> {
  return waitFor(
    () =>
      new Promise<true | undefined>((resolve) => {
        const s = connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(undefined);
        });
        s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED' || undefined));
      }),
    { timeoutMs: 5000, what: `port ${port} refusing connections` },
  );
}

t.test('a new history from upstream while a point-in-time listener binds: it is closed and open() says ask again', async (t) => {
  const { history, service, once, receiveFullSync } = await setup(t);
  const land = await receiveFullSync(REPLID_B, 5000);
  let port = 0;
  let synced: Promise<unknown> | null = null;
  once(binding, (rec) => {
    port = rec.port ?? 0;
    synced = land();
    t.equal(history.epoch, 2, 'the new history began while the listener was binding');
  });
  await t.rejects(service.open({ kind: 'offset', offset: 0 }), { code: 'RELAY_ERR_PITR', message: /ask again/ }, 'open() fails: the point belongs to the replaced history');
  t.not(synced, null, 'the full sync landed while the listener was binding');
  await synced;
  t.equal(history.epoch, 2, 'the new history is current');
  t.same(service.history().listeners, [], 'no listener of the old history is listed');
  t.not(port, 0);
  t.ok(await refused(port), 'the old history\'s listener accepts no replica');
  t.equal(history.store.leases, 0, 'its snapshot lease was released');
});

t.test('closeAll() (shutdown) while a point-in-time listener binds: it is closed, not leaked', async (t) => {
  const { history, service, once } = await setup(t);
  let port = 0;
  once(binding, (rec) => {
    port = rec.port ?? 0;
    service.closeAll();
  });
  await t.rejects(service.open({ kind: 'offset', offset: 0 }), { code: 'RELAY_ERR_PITR', message: /shutting down/ }, 'open() fails: the relay is shutting down');
  t.same(service.history().listeners, []);
  t.not(port, 0);
  t.ok(await refused(port), 'its port is closed');
  t.equal(history.store.leases, 0, 'its snapshot lease was released');
});

/** Runs `fn` once, when the next net.Server.listen() looks up `host`: before its socket is bound. */
function beforeBind(t: Test, host: string, fn: () => void): void {
  const lookup = dns.lookup;
  t.teardown(() => void (dns.lookup = lookup));
  dns.lookup = ((...args: Parameters<typeof lookup>) => {
    if (args[0] === host) {
      dns.lookup = lookup;
      fn();
    }
    return (lookup as (...a: unknown[]) => unknown)(...args);
  }) as typeof lookup;
}

for (const what of ['a new history from upstream', 'closeAll() (shutdown)'] as const) {
  t.test(`${what} before a point-in-time listener's port is bound: the port is closed once bound`, async (t) => {
    const { history, service, once, receiveFullSync } = await setup(t);
    const land = await receiveFullSync(REPLID_B, 5000);
    let synced: Promise<unknown> = Promise.resolve();
    beforeBind(t, '127.0.0.1', () => {
      if (what === 'closeAll() (shutdown)') service.closeAll();
      else synced = land();
    });
    let port = 0;
    once(binding, (rec) => (port = rec.port ?? 0));
    await t.rejects(service.open({ kind: 'offset', offset: 0 }), { code: 'RELAY_ERR_PITR', message: what === 'closeAll() (shutdown)' ? /shutting down/ : /ask again/ });
    await synced;
    t.same(service.history().listeners, []);
    t.not(port, 0, 'the server did bind');
    t.ok(await refused(port), 'and its port was closed');
    t.equal(history.store.leases, 0);
  });
}

t.test('open() after closeAll() is refused', async (t) => {
  const { history, service } = await setup(t);
  service.closeAll();
  await t.rejects(service.open({ kind: 'offset', offset: 0 }), { code: 'RELAY_ERR_PITR' });
  t.same(service.history().listeners, []);
  t.equal(history.store.leases, 0);
});

t.test('the chosen snapshot removed before it is leased: open() says ask again', async (t) => {
  const { history, service } = await setup(t);
  // Stands in for a prune (a newer snapshot committed, keep-snapshots reached) while the planner scanned the log.
  const lease = history.store.lease.bind(history.store);
  history.store.lease = async (meta) => {
    await history.store.remove(meta);
    return lease(meta);
  };
  await t.rejects(service.open({ kind: 'offset', offset: 0 }), { code: 'RELAY_ERR_PITR', message: /ask again/ });
  t.same(service.history().listeners, []);
  t.equal(history.store.leases, 0);
});

t.test('a listener opened normally is listed and accepts connections until closed', async (t) => {
  const { service } = await setup(t);
  const answer = await service.open({ kind: 'offset', offset: 0 });
  t.match(answer, { offset: 0, replid: REPLID_A, snapshotOffset: 0 });
  t.same(
    service.history().listeners.map((l) => l.port),
    [answer.port],
  );
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect(answer.port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
    { timeoutMs: 5000, what: 'the listener accepting' },
  );
  t.ok(service.close(answer.port));
  t.ok(await refused(answer.port));
});
