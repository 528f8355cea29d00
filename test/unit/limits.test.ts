/**
 * Limits and the ack policy, in process: replica lag limits (hard, soft over time, none with a disk log), the
 * downstream handshake timeout, and the ack policy's arithmetic.
 */
import t from 'tap';
import { SocketStandIn } from '../helpers/fake-socket.js';
import type { Socket } from 'node:net';
import { ReplLog } from '../../src/backlog/repl-log.js';
import { DiskLog } from '../../src/backlog/disk-log.js';
import { ReplicaSession, ReplicaState } from '../../src/downstream/replica-session.js';
import { Fanout } from '../../src/downstream/fanout.js';
import { ClientConnection } from '../../src/downstream/client.js';
import { policyAckOffset, formatAckPolicy } from '../../src/downstream/ack-policy.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { fakeNow } from '../helpers/clock.js';
import { waitFor } from '../helpers/wait.js';
import { recordTelemetry, type TelemetryRecorder } from '../helpers/telemetry.js';
import { unlimitedTurn } from '../helpers/downstream-input.js';
import { TurnBudget } from '../../src/downstream/turn-budget.js';

const logger = createLogger('silent');
/** One turn of the event loop: the fan-out pass an append or a drain scheduled has run. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A socket that takes `room` bytes, then reports itself full (write() returns false) and never drains. */
class StuckSocket extends SocketStandIn {
  constructor(readonly room: number) {
    super();
  }
  write(buf: Buffer | string): boolean {
    if (this.destroyed) return false;
    this.written += buf.length;
    this.writableLength = Math.max(0, this.written - this.room);
    return this.written <= this.room;
  }
}

/** A StuckSocket that records whether its reading is paused. */
class PausingSocket extends StuckSocket {
  paused = false;
  override pause(): this {
    this.paused = true;
    return this;
  }
  override resume(): this {
    this.paused = false;
    return this;
  }
}

async function session(log: ReplLog, opts: { maxLag: number; softLag?: number; softLagMs?: number }, events?: TelemetryRecorder, log2 = logger) {
  const socket = new StuckSocket(1000);
  const fanout = new Fanout();
  let closed = false;
  const s = new ReplicaSession({
    fanout,
    socket: socket as unknown as Socket,
    log,
    logger: log2,
    telemetry: events?.telemetry ?? new Telemetry('test'),
    caps: { psync2: true, eof: true, rdbOnly: false, rdbFilterEmpty: false, plainSync: false },
    onClose: () => (closed = true),
    ...opts,
  });
  s.continueFrom(log.endOffset + 1);
  // What DownstreamReplication does on every append.
  log.onAppend(() => fanout.appended());
  // The first block fills the socket (a block is handed over whole): from here on it lags.
  log.append(Buffer.alloc(5000, 9));
  await turn();
  return { s, socket, closed: () => closed };
}

t.test('hard lag limit: a replica whose socket is full is dropped as soon as it is further behind', async (t) => {
  const log = new ReplLog(16 * 1024);
  const events = recordTelemetry();
  t.teardown(() => events.close());
  const { s, socket, closed } = await session(log, { maxLag: 10_000 }, events);
  log.append(Buffer.alloc(6000, 1));
  await turn();
  t.equal(s.state, ReplicaState.Online);
  t.equal(s.lagBytes, 6000, 'it lags: its socket is full');
  log.append(Buffer.alloc(6000, 2));
  await turn();
  t.equal(s.state, ReplicaState.Closed, 'dropped in the fan-out pass after the append that took it past replica-max-lag');
  t.ok(closed() && socket.destroyed);
  t.match(events.messages('replica.dropped'), [{ reason: 'lag', peer: '127.0.0.1:50000', detail: /replica-max-lag/ }], 'one replica.dropped (lag) message');
  t.equal(log.readers.size, 0, 'its cursor no longer holds the log');
});

t.test('soft lag limit: dropped only after being over it continuously for replica-soft-seconds', async (t) => {
  const clock = fakeNow(t);
  const log = new ReplLog(16 * 1024);
  const events = recordTelemetry();
  t.teardown(() => events.close());
  const { s } = await session(log, { maxLag: 1 << 30, softLag: 4000, softLagMs: 300 }, events);
  log.append(Buffer.alloc(6000, 1));
  await turn();
  t.equal(s.state, ReplicaState.Online, 'over the soft limit: the clock starts');
  clock.advance(150);
  s.checkLag();
  t.equal(s.state, ReplicaState.Online, 'not yet after 150 ms');
  clock.advance(149);
  s.checkLag();
  t.equal(s.state, ReplicaState.Online, 'not yet after 299 ms');
  clock.advance(1);
  s.checkLag();
  t.equal(s.state, ReplicaState.Closed, 'over it for replica-soft-seconds (300 ms)');
  t.match(events.messages('replica.dropped'), [{ reason: 'lag', detail: /replica-soft-lag/ }], 'one replica.dropped (lag) message');

  // Dipping under the soft limit restarts the clock.
  const log2 = new ReplLog(16 * 1024);
  const socket = new StuckSocket(1 << 30);
  const fanout = new Fanout();
  const s2 = new ReplicaSession({
    fanout,
    socket: socket as unknown as Socket,
    log: log2,
    logger,
    telemetry: events.telemetry,
    maxLag: 1 << 30,
    softLag: 4000,
    softLagMs: 300,
    caps: { psync2: true, eof: true, rdbOnly: false, rdbFilterEmpty: false, plainSync: false },
    onClose: () => undefined,
  });
  s2.continueFrom(1);
  log2.onAppend(() => fanout.appended());
  // Lag counts the bytes not yet handed to the socket: the first block fills it, the second waits.
  socket.written = 1 << 30; // full from now on
  log2.append(Buffer.alloc(5000, 1));
  await turn();
  log2.append(Buffer.alloc(5000, 2));
  await turn();
  t.equal(s2.lagBytes, 5000, 'over the soft limit: the clock starts');
  clock.advance(200);
  socket.written = 0;
  socket.emit('drain'); // it catches up
  await turn();
  t.equal(s2.lagBytes, 0);
  s2.checkLag(); // the periodic check sees it under the limit: the clock stops
  socket.written = 1 << 30;
  log2.append(Buffer.alloc(5000, 3));
  await turn();
  log2.append(Buffer.alloc(5000, 4));
  await turn();
  t.equal(s2.lagBytes, 5000, 'over again, 200 ms after it first went over');
  clock.advance(299);
  s2.checkLag();
  t.equal(s2.state, ReplicaState.Online, 'the clock restarted: 499 ms since it first went over, 299 since it went over again');
  clock.advance(1);
  s2.checkLag();
  t.equal(s2.state, ReplicaState.Closed, 'and the restarted clock runs out 300 ms after it went over again');
});

t.test('a replica dropped at a lag limit is logged with the limit, its value and the lag', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const capture = createLogger('warn', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const logs = [new ReplLog(16 * 1024), new ReplLog(16 * 1024)];
  const events = recordTelemetry();
  t.teardown(() => events.close());
  const hard = await session(logs[0]!, { maxLag: 1000 }, events, capture);
  const soft = await session(logs[1]!, { maxLag: 1 << 30, softLag: 1000, softLagMs: 0 }, events, capture);
  for (const log of logs) log.append(Buffer.alloc(5000, 1));
  await turn();
  soft.s.checkLag();
  t.equal(hard.s.state, ReplicaState.Closed);
  t.equal(soft.s.state, ReplicaState.Closed);
  t.match(lines, [
    { msg: 'closing replica', limit: 'replication.replica-max-lag', value: 1000, lag: Number },
    { msg: 'closing replica', limit: 'replication.replica-soft-lag', value: 1000, seconds: 0, lag: Number },
  ]);
});

t.test('soft limit 0 is off; seconds 0 drops on the second check over it', async (t) => {
  const log = new ReplLog(16 * 1024);
  const off = await session(log, { maxLag: 1 << 30, softLag: 0, softLagMs: 0 });
  const now = await session(log, { maxLag: 1 << 30, softLag: 100, softLagMs: 0 });
  log.append(Buffer.alloc(6000, 1));
  await turn();
  off.s.checkLag();
  now.s.checkLag();
  t.equal(off.s.state, ReplicaState.Online);
  t.equal(now.s.state, ReplicaState.Closed);
  off.s.close('test done');
});

t.test('with a disk log neither lag limit applies: a lagging replica holds no memory', async (t) => {
  const log = new ReplLog(16 * 1024);
  const disk = await DiskLog.open({ dir: t.testdir(), maxBytes: 1 << 30, segmentBytes: 1 << 20, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger });
  t.teardown(() => disk.close());
  log.attachDisk(disk);
  const { s } = await session(log, { maxLag: 1000, softLag: 500, softLagMs: 0 });
  // Whole commands, so that the disk log knows where they end.
  const cmd = (i: number) => Buffer.concat([Buffer.from('*1\r\n$7992\r\n'), Buffer.alloc(7992, 97 + i), Buffer.from('\r\n')]);
  for (let i = 0; i < 10; i++) log.append(cmd(i), log.endOffset + cmd(i).length);
  await waitFor(() => disk.writtenOffset === log.endOffset || undefined, { what: 'the disk holds the stream' });
  log.trim();
  t.ok(log.size <= 32 * 1024, `memory trimmed to log.memory although the replica read nothing (${log.size})`);
  s.checkLag();
  s.checkLag();
  t.equal(s.state, ReplicaState.Online, 'still online, far past both limits');
  t.ok(s.lagBytes > 50_000);
  s.close('test done');
});

t.test('an ACK that raises the replica offset is reported once', async (t) => {
  const log = new ReplLog(16 * 1024);
  let acks = 0;
  const s = new ReplicaSession({
    socket: new StuckSocket(1 << 20) as unknown as Socket,
    log,
    logger,
    telemetry: new Telemetry('test'),
    maxLag: 1 << 20,
    caps: { psync2: true, eof: true, rdbOnly: false, rdbFilterEmpty: false, plainSync: false },
    onClose: () => undefined,
    onAck: () => acks++,
  });
  s.acknowledged(10);
  s.acknowledged(10);
  s.acknowledged(12);
  s.acknowledged(11);
  t.equal(s.ackOffset, 12, 'never lowered');
  t.equal(acks, 2);
});

t.test('ack policy arithmetic', async (t) => {
  t.equal(policyAckOffset({ kind: 'self' }, [1, 2]), null);
  t.equal(policyAckOffset({ kind: 'min' }, []), null, 'min with no replica: nothing new');
  t.equal(policyAckOffset({ kind: 'min' }, [30, 10, 20]), 10);
  t.equal(policyAckOffset({ kind: 'quorum', n: 1 }, [30, 10, 20]), 30, 'quorum:1 = the most advanced replica');
  t.equal(policyAckOffset({ kind: 'quorum', n: 2 }, [30, 10, 20]), 20);
  t.equal(policyAckOffset({ kind: 'quorum', n: 3 }, [30, 10, 20]), 10, 'quorum:N with N replicas = min');
  t.equal(policyAckOffset({ kind: 'quorum', n: 4 }, [30, 10, 20]), null, 'too few replicas: nothing new');
  t.equal(formatAckPolicy({ kind: 'quorum', n: 2 }), 'quorum:2');
  t.equal(formatAckPolicy({ kind: 'min' }), 'min');
});

t.test('handshake timeout: silent or unauthenticated connections are closed, others are not', async (t) => {
  const open = (needsAuth: boolean) => {
    const socket = new StuckSocket(1 << 20);
    const c = new ClientConnection(
      socket as unknown as Socket,
      logger,
      new Telemetry('test'),
      { maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 20, handshakeTimeoutMs: 100 },
      {
        dispatch: (client, args) => {
          if (args[0]!.toString().toLowerCase() === 'auth') client.authenticated = true;
        },
        closed: () => undefined,
      },
      needsAuth,
    );
    return { c, socket };
  };
  const silent = open(false);
  const spoke = open(false);
  const unauth = open(true);
  const authed = open(true);
  const off = new ClientConnection(
    new StuckSocket(1) as unknown as Socket,
    logger,
    new Telemetry('test'),
    { maxBulkLen: 1, maxQueryBuffer: 1, handshakeTimeoutMs: 0 },
    { dispatch: () => undefined, closed: () => undefined },
    true,
  );
  spoke.socket.emit('data', encodeCommand(['PING']));
  unauth.socket.emit('data', encodeCommand(['PING']));
  authed.socket.emit('data', encodeCommand(['AUTH', 'secret']));
  // An ordering, not a pause: timers of the same duration fire in the order they were set, so once the timeout of a
  // connection opened after all the others has fired, theirs have fired too (or were cleared).
  const witness = open(false);
  await waitFor(() => witness.socket.destroyed, { what: 'the last connection opened to reach its handshake timeout', intervalMs: 10 });
  t.ok(silent.socket.destroyed, 'a connection that sent nothing is closed');
  t.ok(unauth.socket.destroyed, 'a connection that did not authenticate is closed');
  t.notOk(spoke.socket.destroyed, 'a connection that spoke (no auth) stays');
  t.notOk(authed.socket.destroyed, 'an authenticated connection stays');
  t.notOk(off.socket.destroyed, 'handshake-timeout 0 = off: a silent, unauthenticated connection stays');
});

t.test("one client's input runs a turn at a time: past 128 commands or 64 KiB read in a turn, its reading pauses until the next", async (t) => {
  const open = () => {
    const socket = new PausingSocket(1 << 30);
    const ran: string[] = [];
    new ClientConnection(
      socket as unknown as Socket,
      logger,
      new Telemetry('test'),
      { maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 20 },
      // Counts and bytes per turn are what this checks: no time limit on top (turn-budget.ts has its own test).
      { dispatch: (_c, args) => void ran.push(args[0]!.toString()), closed: () => undefined, turn: unlimitedTurn },
      false,
    );
    return { socket, ran };
  };

  const pipeline = open();
  pipeline.socket.emit('data', Buffer.from('PING\r\n'.repeat(300)));
  t.equal(pipeline.ran.length, 128, '128 of 300 pipelined commands run in the turn of their read');
  t.ok(pipeline.socket.paused, 'and reading pauses');
  await turn();
  t.equal(pipeline.ran.length, 256, '128 more in the next turn');
  await turn();
  t.equal(pipeline.ran.length, 300, 'then the rest');
  t.notOk(pipeline.socket.paused, 'reading goes on');

  // Empty lines are no command, but parsing them costs: a busy socket's reads in one turn (up to 32 of 64 KiB).
  const blank = open();
  blank.socket.emit('data', Buffer.alloc(64 * 1024, 10));
  t.ok(blank.socket.paused, 'a read of 64 KiB of empty lines pauses reading');
  blank.socket.emit('data', Buffer.from('\n\nPING\r\n'));
  t.strictSame(blank.ran, [], 'what a read already brought waits for the next turn');
  await turn();
  t.strictSame(blank.ran, ['PING'], 'and runs then');
  t.notOk(blank.socket.paused);
});

/**
 * `n` clients sharing a 5 ms turn budget on a clock of the test's, each command a millisecond of it; `ran` lists the
 * client (its index) of each command run, in order. Their sockets never pause (what a turn runs is the budget's call).
 */
function budgetedClients(n: number): { clients: StuckSocket[]; ran: number[] } {
  class UnpausedSocket extends StuckSocket {
    override pause(): this {
      return this;
    }
  }
  let now = 0;
  const budget = new TurnBudget(5, () => now);
  const ran: number[] = [];
  const clients = Array.from({ length: n }, (_, i) => {
    const socket = new UnpausedSocket(1 << 30);
    new ClientConnection(
      socket as unknown as Socket,
      logger,
      new Telemetry('test'),
      { maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 20 },
      {
        dispatch: () => {
          now += 1;
          ran.push(i);
        },
        closed: () => undefined,
        turn: budget,
      },
      false,
    );
    return socket;
  });
  return { clients, ran };
}

t.test("many clients' commands share the turn's time: past it a client runs nothing until a later turn, and they run in order of arrival", async (t) => {
  const { clients, ran } = budgetedClients(50);
  // One turn's reads: every client sent one command at the same moment (10,000 clients did, in the audit).
  for (const s of clients) s.emit('data', Buffer.from('PING\r\n'));
  t.ok(ran.length <= 6, `${ran.length} of 50 commands ran in the turn of their reads: the 5 ms and at most one more`);
  const perTurn: number[] = [ran.length];
  for (let i = 0; i < 100 && ran.length < 50; i++) {
    const before = ran.length;
    await turn();
    perTurn.push(ran.length - before);
  }
  t.equal(ran.length, 50, 'every command ran');
  t.ok(Math.max(...perTurn) <= 6, `no turn ran more than its 5 ms and one command (per turn: ${perTurn.join(' ')})`);
  t.strictSame(ran, [...ran].sort((a, b) => a - b), 'in the order the clients sent them');
});

t.test('a client that runs to the end of its input is not held behind clients flooding pipelines: it runs the turn after its read', async (t) => {
  const { clients, ran } = budgetedClients(6);
  const [light, ...flooders] = clients;
  // Five clients pipeline far more than a turn's time each (INFO floods, in the audit).
  for (const s of flooders) s.emit('data', Buffer.from('PING\r\n'.repeat(500)));
  // Each has run once and been cut off by the budget (a new client is taken for a light one until then).
  for (let i = 0; i < 10; i++) await turn();
  t.strictSame(new Set(ran), new Set([1, 2, 3, 4, 5]), 'every flooding client has run');
  const turnsWaited: number[] = [];
  const floodedBefore = ran.length;
  for (let k = 0; k < 10; k++) {
    const before = ran.filter((i) => i === 0).length;
    light!.emit('data', Buffer.from('PING\r\n'));
    let turns = 0;
    while (ran.filter((i) => i === 0).length === before && turns < 100) {
      await turn();
      turns++;
    }
    turnsWaited.push(turns);
  }
  t.ok(Math.max(...turnsWaited) <= 1, `the light client's PING ran within a turn of its read every time (turns waited: ${turnsWaited.join(' ')})`);
  const flooded = ran.slice(floodedBefore).filter((i) => i !== 0);
  t.ok(flooded.length >= 10, `the flooding clients went on meanwhile (${flooded.length} of their commands ran)`);
});

t.test("parsing a command that never ends counts against the turn's time: past it, another client's read waits for a later turn, unparsed", async (t) => {
  // 200 clients each sending 64 KiB reads of a multibulk that never ends (empty arguments): each read's parse went
  // uncharged, since no command ever ran, and a bystander's PING waited up to 490 ms (the security re-audit).
  let now = 0;
  const budget = new TurnBudget(5, () => now);
  const open = () => {
    const socket = new PausingSocket(1 << 30);
    const conn = new ClientConnection(
      socket as unknown as Socket,
      logger,
      new Telemetry('test'),
      { maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 30 },
      { dispatch: () => undefined, closed: () => undefined, turn: budget },
      false,
    );
    return { socket, conn };
  };
  const endless = Buffer.concat([Buffer.from('*1000000\r\n'), Buffer.from('$0\r\n\r\n'.repeat(9000))]);
  const a = open();
  const b = open();
  a.socket.emit('data', endless);
  t.ok(a.conn.argvMemory > 0, 'the first read of the turn is parsed');
  now += 6; // its parse took the turn's time
  b.socket.emit('data', endless);
  t.equal(b.conn.argvMemory, 0, "another client's read in the same turn is not parsed");
  t.ok(b.socket.paused, 'its reading pauses');
  t.equal(b.conn.queryBuffered, endless.length, 'what it read is held');
  await turn();
  t.ok(b.conn.argvMemory > 0, 'it is parsed at a later turn');
  t.notOk(b.socket.paused, 'and reading goes on');
});
