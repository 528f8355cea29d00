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
import { encodeCommand } from '../../src/resp/writer.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait.js';

const REPLID_A = 'a'.repeat(40);
const REPLID_B = 'b'.repeat(40);

interface LogRecord {
  readonly msg: string;
  readonly component?: string;
  readonly port?: number;
  readonly [field: string]: unknown;
}

interface Setup {
  readonly history: History;
  readonly service: PitrService;
  /** Every log record written, in order. */
  readonly records: LogRecord[];
  /** Runs `fn` once, at the first log record for which `when` holds. */
  once(when: (rec: LogRecord) => boolean, fn: (rec: LogRecord) => void): void;
  /**
   * Receives a full sync from upstream (a new history at `offset` of `replid`); the function it resolves with lands
   * it. History.fullSync switches the epoch and runs its onNewHistory callbacks synchronously, before its first await.
   */
  receiveFullSync(replid: string, offset: number): Promise<() => Promise<unknown>>;
}

/**
 * A History with one snapshot (offset 0 of REPLID_A, epoch 1) and a PitrService over it; closed with `t`. The log
 * is memory-only (1 MiB) unless `log` says otherwise (log.memory, log.disk).
 */
async function setup(t: Test, log: { memory?: number; disk?: number } = {}): Promise<Setup> {
  // Not t.testdir(): tap removes that before this test's teardown, whose History.close() still writes the state file.
  const dir = tempDir('pitr-service-');
  let hooks: { when: (rec: LogRecord) => boolean; fn: (rec: LogRecord) => void }[] = [];
  const records: LogRecord[] = [];
  const logger = createLogger('info', {
    write(line: string) {
      const rec = JSON.parse(line) as LogRecord;
      records.push(rec);
      const due = hooks.filter((h) => h.when(rec));
      hooks = hooks.filter((h) => !due.includes(h));
      for (const h of due) h.fn(rec);
    },
  });
  const telemetry = new Telemetry('pitr-service-test');
  const history = new History({ dir, memory: log.memory ?? 1 << 20, disk: log.disk ?? 0, diskQueue: 64 << 20, diskDirect: false, refreshHold: 1 << 20, logger, telemetry });
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
  return { history, service, records, once: (when, fn) => hooks.push({ when, fn }), receiveFullSync };
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

/** Appends `n` whole SET commands of about 1 KiB each to the log, as the upstream link does. */
function appendStream(history: History, n: number): void {
  const value = 'x'.repeat(1000);
  for (let i = 0; i < n; i++) {
    const cmd = encodeCommand(['SET', `key:${i}`, value]);
    history.log.append(cmd, history.log.endOffset + cmd.length);
  }
}

/** A replica of `port` (PSYNC ? -1, reading whatever comes); `closed` settles when the relay drops it. */
async function replicaOf(t: Test, port: number): Promise<{ closed: Promise<void> }> {
  const s = connect(port, '127.0.0.1');
  t.teardown(() => void s.destroy());
  s.on('error', () => {});
  s.on('data', () => {});
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  await new Promise<void>((resolve) => s.once('connect', () => resolve()));
  s.write(encodeCommand(['PSYNC', '?', '-1']));
  return { closed };
}

/** A point-in-time replica at `offset` has its whole stream and is held there. */
const held =
  (offset: number) =>
  (rec: LogRecord): boolean =>
    rec.msg === 'point-in-time replica has the stream up to its target; held there' && rec['offset'] === offset;

t.test('log.disk retention drops the stream a point-in-time listener needs: it closes itself, says why, and its port and replica go', async (t) => {
  // 64 KiB of memory, 1 MiB of disk log (segments of 128 KiB): the stream after the snapshot soon lives on disk only.
  const { history, service, records, once } = await setup(t, { memory: 64 * 1024, disk: 1 << 20 });
  appendStream(history, 32);
  const target = history.log.lastBoundary;
  const answer = await service.open({ kind: 'offset', offset: target });
  t.match(answer, { offset: target, snapshotOffset: 0 });
  // A listener at its snapshot's own offset needs no stream: retention takes nothing from it.
  const atSnapshot = await service.open({ kind: 'offset', offset: 0 });

  let parked = false;
  once(held(target), () => (parked = true));
  const replica = await replicaOf(t, answer.port);
  await waitFor(() => parked || undefined, { timeoutMs: 5000, what: 'the replica holding the stream up to the target' });

  // The stream goes on: past log.disk the oldest segments are dropped, the stream right after the snapshot with them.
  await waitFor(
    async () => {
      if (!history.log.holds(1)) return true;
      appendStream(history, 256);
      // Retention drops what the disk holds: let it take these first.
      await waitFor(() => history.log.disk?.writtenOffset === history.log.endOffset || undefined, { what: 'the disk log caught up' });
      return undefined;
    },
    { timeoutMs: 5000, what: 'log.disk retention dropping offset 1' },
  );
  t.ok(history.log.firstOffset > 1, 'the log no longer holds the stream after the snapshot');

  await waitFor(() => !service.history().listeners.some((l) => l.port === answer.port) || undefined, {
    timeoutMs: 3000,
    what: 'the listener gone from RELAY HISTORY',
  });
  t.ok(await refused(answer.port), 'its port accepts no replica');
  await replica.closed; // the replica disconnected; the log below says why
  const closed = records.find((r) => r.msg === 'point-in-time listener closed' && r.port === answer.port);
  t.match(closed, { level: 40, port: answer.port, offset: target, snapshotOffset: 0, reason: /retention \(log\.disk\) dropped the stream it needs/ }, 'the reason is logged');
  t.ok(typeof closed?.['firstOffset'] === 'number' && (closed['firstOffset'] as number) > 1, 'with the first offset the log holds');
  t.match(
    records.find((r) => r.msg === 'closing replica' && r['offset'] === target),
    { reason: /retention \(log\.disk\)/ },
    'the replica is told why in the log',
  );

  t.same(
    service.history().listeners.map((l) => l.port),
    [atSnapshot.port],
    'the listener at its snapshot stays',
  );
  let served = false;
  once(held(0), () => (served = true));
  await replicaOf(t, atSnapshot.port);
  await waitFor(() => served || undefined, { timeoutMs: 5000, what: 'a replica of the listener at its snapshot served' });
  t.equal(history.store.leases, 1, 'only the remaining listener holds its snapshot');
  await t.rejects(service.open({ kind: 'offset', offset: target }), { code: 'RELAY_ERR_PITR' }, 'the dropped point cannot be opened again');
});

t.test('the log drops the stream a point needs while its listener binds: open() says ask again, nothing stays open', async (t) => {
  // Memory-only (1 MiB), and no replica reading: an append past the limit drops the head at once.
  const { history, service, once } = await setup(t);
  appendStream(history, 32);
  const target = history.log.lastBoundary;
  let port = 0;
  once(binding, (rec) => {
    port = rec.port ?? 0;
    appendStream(history, 2048);
    t.notOk(history.log.holds(1), 'the stream after the snapshot was dropped while the listener was binding');
  });
  await t.rejects(service.open({ kind: 'offset', offset: target }), { code: 'RELAY_ERR_PITR', message: /log\.memory.*ask again/ });
  t.same(service.history().listeners, []);
  t.not(port, 0);
  t.ok(await refused(port), 'its port was closed');
  t.equal(history.store.leases, 0);
});

t.test('a replica asking a listener whose stream the log dropped gets nothing: the listener closes at once', async (t) => {
  const { history, service, records } = await setup(t);
  appendStream(history, 32);
  const target = history.log.lastBoundary;
  const answer = await service.open({ kind: 'offset', offset: target });
  appendStream(history, 2048); // memory-only, no replica reading: the head goes at once
  t.notOk(history.log.holds(1));
  const s = connect(answer.port, '127.0.0.1');
  t.teardown(() => void s.destroy());
  s.on('error', () => {});
  const got: Buffer[] = [];
  s.on('data', (b: Buffer) => got.push(b));
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  s.write(encodeCommand(['PSYNC', '?', '-1']));
  await closed;
  t.equal(Buffer.concat(got).toString('latin1'), '', 'no +FULLRESYNC, no snapshot: it could not be followed by its stream');
  t.same(service.history().listeners, []);
  t.match(records.find((r) => r.msg === 'point-in-time listener closed'), { level: 40, port: answer.port, limit: 'log.memory', reason: /retention \(log\.memory\)/ });
  t.ok(await refused(answer.port));
  t.equal(history.store.leases, 0);
});
