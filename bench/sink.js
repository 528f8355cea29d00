// The sink: one Node process holding many downstream replica connections (bench/lib/replica-conn.js) that
// discard what they receive. Driven by bench/run.js over IPC ({id, op, args} -> {id, ok, result | error}).
import { ReplicaConn, Samples } from './lib/replica-conn.js';
import { nowMs, sleep } from './lib/clock.js';

const conns = new Map();
let nextId = 1;
const latency = new Samples(1 << 20);

// REPLCONF ACK once a second per connection, as Redis replicas do, spread over the second (a tenth of the
// connections every 100 ms) so that 1,000 connections do not send 1,000 ACKs in one burst.
let ackTick = 0;
setInterval(() => {
  const slot = ackTick++ % 10;
  for (const c of conns.values()) if (c.id % 10 === slot) c.ack();
}, 100);

/**
 * Lag sampling: every `intervalMs`, the lowest offset among the selected connections that are streaming (a
 * frozen or closed one counts with the offset it stopped at), with the time (CLOCK_MONOTONIC ms). The
 * orchestrator sets it against the master's offsets sampled by bench/probe.js.
 */
let lag = null;
function lagSample() {
  let min = Infinity;
  for (const c of lag.list) if (c.offset >= 0 && c.offset < min) min = c.offset;
  if (min === Infinity) return;
  if (lag.n === lag.t.length) {
    const grow = (a) => {
      const b = new Float64Array(a.length * 2);
      b.set(a);
      return b;
    };
    lag.t = grow(lag.t);
    lag.off = grow(lag.off);
  }
  lag.t[lag.n] = nowMs();
  lag.off[lag.n] = min;
  lag.n++;
}

async function until(pred, timeoutMs, what) {
  const deadline = nowMs() + timeoutMs;
  for (;;) {
    const r = pred();
    if (r) return r;
    if (nowMs() > deadline) throw new Error(`sink: timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

function select(ids) {
  return ids ? ids.map((i) => conns.get(i)).filter(Boolean) : [...conns.values()];
}

function summary(c) {
  return {
    id: c.id,
    state: c.state,
    offset: c.offset,
    startOffset: c.startOffset,
    streamBytes: c.streamBytes,
    rdbBytes: c.rdbBytes,
    frozen: c.frozen,
    connectStartAt: c.connectStartAt,
    fullresyncAt: c.fullresyncAt,
    onlineAt: c.onlineAt,
    lastDataAt: c.lastDataAt,
    closedAt: c.closedAt,
    closeReason: c.closeReason,
    markersSeen: c.markersSeen,
  };
}

const ops = {
  connect({ port, host = '127.0.0.1', count, latency: lat = false }) {
    const ids = [];
    for (let i = 0; i < count; i++) {
      const id = nextId++;
      conns.set(id, new ReplicaConn({ id, host, port, latency: lat ? latency : null }));
      ids.push(id);
    }
    return ids;
  },
  async waitOnline({ ids, timeoutMs = 60000 }) {
    const list = select(ids);
    await until(
      () => {
        const dead = list.find((c) => c.state === 'closed');
        if (dead) throw new Error(`sink: connection ${dead.id} closed before it was online: ${dead.closeReason}`);
        return list.every((c) => c.state === 'stream');
      },
      timeoutMs,
      `${list.length} connections to come online`,
    );
    return list.map(summary);
  },
  /** Waits until every live, unfrozen connection holds `target`; reachedAt = the latest last-byte arrival. */
  async waitOffset({ target, ids, timeoutMs = 120000 }) {
    const list = select(ids).filter((c) => !c.frozen);
    await until(() => list.every((c) => c.state === 'closed' || c.offset >= target), timeoutMs, `offset ${target}`);
    let reachedAt = 0;
    for (const c of list) if (c.state !== 'closed' && c.lastDataAt > reachedAt) reachedAt = c.lastDataAt;
    return { reachedAt, conns: list.map(summary) };
  },
  snapshot({ ids }) {
    return select(ids).map(summary);
  },
  freeze({ id, ids }) {
    for (const c of select(ids ?? [id])) c.freeze();
    return true;
  },
  /** Resumes reading on frozen connections; returns their offsets at that moment and the time. */
  unfreeze({ ids }) {
    const list = select(ids);
    const at = nowMs();
    const offsets = list.map((c) => c.offset);
    for (const c of list) c.unfreeze();
    return { at, offsets };
  },
  lagStart({ ids, intervalMs = 10 }) {
    if (lag) clearInterval(lag.timer);
    lag = { list: select(ids), t: new Float64Array(4096), off: new Float64Array(4096), n: 0, timer: null };
    lagSample();
    lag.timer = setInterval(lagSample, intervalMs);
    return true;
  },
  /** Stops lag sampling; returns [[t, minOffset], ...]. */
  lagStop() {
    if (!lag) return [];
    clearInterval(lag.timer);
    lagSample();
    const out = [];
    for (let i = 0; i < lag.n; i++) out.push([+lag.t[i].toFixed(2), lag.off[i]]);
    lag = null;
    return out;
  },
  latencyReset() {
    latency.reset();
    for (const c of conns.values()) c.markersSeen = 0;
    return true;
  },
  latencyStats() {
    return latency.summary();
  },
  closeAll() {
    if (lag) clearInterval(lag.timer);
    lag = null;
    for (const c of conns.values()) c.destroy();
    conns.clear();
    return true;
  },
  cpu() {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  },
};

process.on('message', async (msg) => {
  try {
    const result = await ops[msg.op](msg.args ?? {});
    process.send({ id: msg.id, ok: true, result });
  } catch (err) {
    process.send({ id: msg.id, ok: false, error: err.message });
  }
});
process.on('disconnect', () => process.exit(0));
