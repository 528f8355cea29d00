import type { Logger } from '../log.js';
import type { ListenConfig } from '../config/types.js';
import type { History } from '../backlog/history.js';
import type { ReplLog } from '../backlog/repl-log.js';
import type { SnapshotLease } from '../backlog/snapshot-store.js';
import type { Telemetry } from '../observability/telemetry.js';
import { ReplicaServer } from '../downstream/server.js';
import type { ListenerTls } from '../downstream/listener-tls.js';
import { DownstreamReplication } from '../downstream/replication.js';
import { PubSub } from '../downstream/pubsub.js';
import { ReplicaState } from '../downstream/replica-session.js';
import type { CommandHost } from '../downstream/commands.js';
import type { ClientConnection } from '../downstream/client.js';
import type { ClientMemory } from '../downstream/client-memory.js';
import { PitrError, PitrPlanner, type PitrPlan, type PitrTarget } from './planner.js';
import type { HistoryView, PitrAnswer, PitrApi } from './api.js';

export interface PitrServiceOptions {
  readonly history: History;
  /** The main listener's settings: a point-in-time listener binds the same address with the same auth. */
  readonly listen: ListenConfig;
  readonly logger: Logger;
  readonly telemetry: Telemetry;
  /** history.pitr-idle-timeout */
  readonly idleTimeoutMs: number;
  /** history.pitr-max-listeners (0: off) */
  readonly maxListeners: number;
  /** replication.replica-timeout */
  readonly replicaTimeoutMs: number;
  /** replication.replica-max-lag */
  readonly maxLag: number;
  /** listen.max-clients-memory's budget, shared with the main listener: each listener had one of its own (5x the cap). */
  readonly clientMemory?: ClientMemory;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/** The log no longer holds the stream a plan needs: what is missing, and the limit that dropped it. */
interface StreamLost {
  /** The first offset the plan needs (the snapshot's next byte). */
  readonly needOffset: number;
  /** The first offset the log holds. */
  readonly firstOffset: number;
  /** The setting that bounds the log: log.disk, or log.memory without an active disk log. */
  readonly limit: 'log.disk' | 'log.memory';
}

/**
 * Whether the log still holds the stream from `plan`'s snapshot up to its offset (null: it does). A plan at its
 * snapshot's own offset needs no stream: the snapshot is the whole dataset.
 */
function streamLost(log: ReplLog, plan: PitrPlan): StreamLost | null {
  const need = plan.snapshot.offset + 1;
  if (plan.offset < need || log.holds(need)) return null;
  return { needOffset: need, firstOffset: log.firstOffset, limit: log.disk?.active ? 'log.disk' : 'log.memory' };
}

const lostText = (l: StreamLost): string => `retention (${l.limit}) dropped the stream it needs: offset ${l.needOffset} on, the log starts at ${l.firstOffset}`;

/**
 * Point-in-time replicas. Each request gets a listener of its own: a replica pointed at it receives the chosen
 * snapshot, the stream up to the chosen offset, and nothing after it (the session then holds it there with
 * newlines). The listener keeps its snapshot file open (a lease) so that retention cannot delete it under a replica;
 * the log bytes it needs are read like any lagging replica's, and retention (log.disk) may still drop them: the
 * listener then can serve no replica, and closes itself (within a second, or at once when a replica asks), its
 * replicas with it, saying why; open() refuses a point whose stream went while it was being opened. A new history
 * from upstream closes every listener (their offsets belong to the old one), those still binding their port too:
 * open() then fails.
 */
export class PitrService implements PitrApi {
  #opts: PitrServiceOptions;
  #planner: PitrPlanner;
  /** Open listeners, by port. */
  #listeners = new Map<number, PitrListener>();
  /** Listeners still binding their port (no port yet, not listed): a new history or closeAll() closes them too. */
  #binding = new Set<PitrListener>();
  #opening = 0;
  /** closeAll() ran: no listener opens any more. */
  #closed = false;
  #unsubscribe: () => void;

  constructor(opts: PitrServiceOptions) {
    this.#opts = opts;
    const h = opts.history;
    this.#planner = new PitrPlanner({ log: h.log, marks: h.marks, snapshots: () => h.snapshots() });
    this.#unsubscribe = h.onNewHistory(() => this.#closeEvery('a new history from upstream replaced the one it was taken from'));
  }

  #closeEvery(reason: string): void {
    for (const l of [...this.#binding, ...this.#listeners.values()]) l.close(reason);
  }

  /** Why a listener for a point of history `epoch` (serving `plan`) must not open now (null: it may). */
  #refusal(epoch: number, plan: PitrPlan | null = null): string | null {
    if (this.#closed) return 'the relay is shutting down: no new point-in-time listeners';
    if (this.#opts.history.epoch !== epoch) return 'a new history from upstream began while the point-in-time listener was being opened: ask again';
    const lost = plan && streamLost(this.#opts.history.log, plan);
    if (lost) return `while the point-in-time listener was being opened, ${lostText(lost)}: ask again`;
    return null;
  }

  history(): HistoryView {
    const w = this.#planner.window();
    const marks = this.#opts.history.marks;
    return {
      replid: this.#opts.history.ids.replid,
      firstOffset: w.firstOffset,
      lastOffset: w.snapshots.length === 0 ? -1 : w.lastOffset,
      firstTime: iso(w.firstMs),
      lastTime: iso(w.lastMs),
      snapshots: w.snapshots.map((s) => ({ replid: s.replid, offset: s.offset, time: iso(marks.timeOf(s.offset) ?? s.createdAt)!, bytes: s.size })),
      listeners: [...this.#listeners.values()].map((l) => l.answer),
    };
  }

  async open(target: PitrTarget): Promise<PitrAnswer> {
    const max = this.#opts.maxListeners;
    if (max === 0) throw new PitrError('point-in-time replicas are off (history.pitr-max-listeners is 0)');
    if (this.#closed) throw new PitrError(this.#refusal(this.#opts.history.epoch)!);
    if (this.#listeners.size + this.#opening >= max) {
      throw new PitrError(`${this.#listeners.size} point-in-time listeners are open, history.pitr-max-listeners is ${max}: close one first (RELAY PITR CLOSE <port>)`);
    }
    this.#opening++;
    try {
      const h = this.#opts.history;
      const epoch = h.epoch;
      const plan = await this.#planner.plan(target);
      let lease: SnapshotLease;
      try {
        lease = await h.store.lease(plan.snapshot);
      } catch (err) {
        // A prune (a newer snapshot beyond history.keep-snapshots) or a new history took it while the planner read the log.
        if (!h.store.all.includes(plan.snapshot)) {
          throw new PitrError(`the snapshot at offset ${plan.snapshot.offset} was removed while the point was chosen: ask again`);
        }
        throw err;
      }
      const refused = this.#refusal(epoch, plan);
      if (refused !== null) {
        await lease.release();
        throw new PitrError(refused);
      }
      const listener = new PitrListener(plan, lease, this.#opts, (l) => this.#listeners.delete(l.port));
      // Closed with the others while it binds: a new history or closeAll() must not miss it.
      this.#binding.add(listener);
      let open: boolean;
      try {
        open = await listener.listen();
      } catch (err) {
        listener.close('listen failed');
        throw err;
      } finally {
        this.#binding.delete(listener);
      }
      if (!open) throw new PitrError(this.#refusal(epoch) ?? `the point-in-time listener was closed while it was being opened (${listener.closeReason})`);
      // The log may have dropped the stream while the port was being bound.
      const late = this.#refusal(epoch, plan);
      if (late !== null) {
        listener.close(late);
        throw new PitrError(late);
      }
      this.#listeners.set(listener.port, listener);
      return listener.answer;
    } finally {
      this.#opening--;
    }
  }

  close(port: number): boolean {
    const l = this.#listeners.get(port);
    if (!l) return false;
    l.close('closed on request');
    return true;
  }

  /**
   * SIGHUP: listeners serving TLS (those of a relay with no plain port) serve `tls` to new connections from now on,
   * those still binding their port too; returns how many. Listeners opened later read the files themselves.
   */
  setSecureContext(tls: ListenerTls): number {
    let n = 0;
    for (const l of [...this.#binding, ...this.#listeners.values()]) if (l.setSecureContext(tls)) n++;
    return n;
  }

  /** Shutdown: closes every listener, those still binding their port too; open() is refused from now on. */
  closeAll(): void {
    this.#closed = true;
    this.#unsubscribe();
    this.#closeEvery('relay shutting down');
  }
}

/** One point-in-time listener: its own RESP server and replication, serving one plan. */
class PitrListener {
  readonly #plan: PitrPlan;
  readonly #lease: SnapshotLease;
  readonly #logger: Logger;
  readonly #server: ReplicaServer;
  readonly #downstream: DownstreamReplication;
  readonly #onClosed: (l: PitrListener) => void;
  readonly #idleTimeoutMs: number;
  readonly #log: ReplLog;
  /** The replid its replicas are told. */
  readonly #replid: string;
  #port = 0;
  #idleSince = Date.now();
  #timer: NodeJS.Timeout;
  #closed = false;
  #closeReason: string | null = null;

  constructor(plan: PitrPlan, lease: SnapshotLease, opts: PitrServiceOptions, onClosed: (l: PitrListener) => void) {
    this.#plan = plan;
    this.#lease = lease;
    this.#onClosed = onClosed;
    this.#idleTimeoutMs = opts.idleTimeoutMs;
    this.#logger = opts.logger.child({ component: 'pitr', offset: plan.offset });
    const log = opts.history.log;
    this.#log = log;
    // The ids of the history held, as the main port answers with them (a copy: later failovers do not move it): a
    // replica is told our replid, and continued only where our ids vouch for its own. With the snapshot's id alone,
    // a replica of the old master past a failover (split brain: writes the new master never had) was continued over
    // a stream that is not its own, and held a dataset of neither (the PITR audit).
    const ids = opts.history.ids.copy();
    this.#replid = ids.replid;
    this.#downstream = new DownstreamReplication({
      source: {
        ids,
        log,
        usableSnapshot: () => plan.snapshot,
        lease: (snap) => opts.history.store.lease(snap),
        snapshotFailed: (_snap, err) => this.#logger.error({ err }, 'point-in-time snapshot unreadable'),
        needSnapshot: () => {},
        epoch: () => plan.snapshot.epoch,
        upstreamDownMs: () => 0,
        upstreamFullSync: () => null,
      },
      telemetry: opts.telemetry,
      logger: this.#logger,
      // Behind the memory tail without a disk log, it pins memory like any replica: the same limit applies.
      maxLag: opts.maxLag,
      replicaTimeoutMs: opts.replicaTimeoutMs,
      compression: false,
      until: plan.offset,
    });
    const downstream = this.#downstream;
    const host: CommandHost = {
      password: opts.listen.password,
      users: opts.listen.users,
      pubsub: new PubSub(),
      info: () =>
        ['# Replication', 'role:master', `connected_slaves:${downstream.sessions.size}`, `master_replid:${ids.replid}`, `master_repl_offset:${plan.offset}`, 'psync_relay_pitr:1', ''].join('\r\n'),
      // A master's ROLE, as its INFO says role:master (it answered as a replica of `?`).
      role: () => ({
        offset: plan.offset,
        replicas: [...this.#server.clients]
          .filter((c) => c.replica?.state === ReplicaState.Online)
          .map((c) => ({ ip: c.replconf.ipAddress || c.ip, port: c.replconf.listeningPort, offset: c.replica!.ackOffset })),
      }),
      startSync: (c: ClientConnection, replid: string | null, offset: number) => {
        // Closing closes the server, this connection with it: it is not served a snapshot the log no longer follows.
        if (this.#closeIfStreamLost()) return;
        this.#idleSince = Date.now();
        downstream.startSync(c, replid, offset);
      },
      replicaOf: () => 'ERR a point-in-time listener has no upstream',
      clients: () => this.#server.clients,
      configRewrite: () => 'ERR not on a point-in-time listener',
      shutdown: () => 'ERR not on a point-in-time listener (RELAY PITR CLOSE <port> closes it)',
      resetStats: () => {}, // its INFO has no counters
      pitr: null,
    };
    this.#server = new ReplicaServer(opts.listen, this.#logger, opts.telemetry, host, { ephemeral: true, ...(opts.clientMemory ? { memory: opts.clientMemory } : {}) });
    this.#timer = setInterval(() => {
      if (this.#closeIfStreamLost()) return;
      if (this.#downstream.sessions.size > 0) this.#idleSince = Date.now();
      else if (Date.now() - this.#idleSince >= this.#idleTimeoutMs) this.close(`no replica for history.pitr-idle-timeout (${this.#idleTimeoutMs} ms)`);
    }, Math.min(1000, this.#idleTimeoutMs));
    this.#timer.unref();
  }

  get port(): number {
    return this.#port;
  }

  get answer(): PitrAnswer {
    return { port: this.#port, offset: this.#plan.offset, time: iso(this.#plan.ms), replid: this.#replid, snapshotOffset: this.#plan.snapshot.offset };
  }

  /** Why close() ran; null while open. */
  get closeReason(): string | null {
    return this.#closeReason;
  }

  /**
   * Binds the port; false when close() ran meanwhile. A server still binding cannot be closed then (ReplicaServer
   * closes only a listening one): it is closed here once bound, so no port is left open.
   */
  async listen(): Promise<boolean> {
    const port = await this.#server.listen();
    if (this.#closed) {
      await this.#server.close();
      return false;
    }
    this.#port = port;
    this.#logger.info({ port: this.#port, snapshotOffset: this.#plan.snapshot.offset, time: iso(this.#plan.ms) }, 'point-in-time listener open');
    return true;
  }

  /** Its TLS listener, when it has one, serves `tls` to new connections (ReplicaServer.setSecureContext). */
  setSecureContext(tls: ListenerTls): boolean {
    return this.#server.setSecureContext(tls);
  }

  /**
   * Closes the listener when the log no longer holds the stream its point needs (retention dropped it): no replica
   * can be served any more, and one pointed here would only be dropped and reconnect, every second, forever.
   */
  #closeIfStreamLost(): boolean {
    if (this.#closed) return true;
    const lost = streamLost(this.#log, this.#plan);
    if (lost === null) return false;
    this.close(lostText(lost), { snapshotOffset: this.#plan.snapshot.offset, needOffset: lost.needOffset, firstOffset: lost.firstOffset, limit: lost.limit });
    return true;
  }

  /** Stops accepting and disconnects its replicas with `reason`; logged at warn when `fields` say more (not asked for). */
  close(reason: string, fields?: Record<string, unknown>): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    clearInterval(this.#timer);
    this.#downstream.disconnectAll(reason, true);
    this.#downstream.close();
    void this.#server.close();
    void this.#lease.release();
    if (fields) this.#logger.warn({ port: this.#port, reason, ...fields }, 'point-in-time listener closed');
    else this.#logger.info({ port: this.#port, reason }, 'point-in-time listener closed');
    this.#onClosed(this);
  }
}
