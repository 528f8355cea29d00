// The probe: a separate process that, during a whole scenario run, sends PING and INFO to the forwarder (the
// relay or the redis intermediate) on their own connections at a fixed schedule, and samples the master's
// replication offset (ROLE) for the lag computation and its output buffer for the forwarder (CLIENT LIST: how much
// of the stream waits in the master because the forwarder has not read it). Driven by bench/run.js over IPC like
// the sink.
//
// One request at a time per connection, sent every `period` ms (or as soon as the previous reply arrives when
// that took longer). A reply that took longer than the period stands for the requests a client would have sent
// meanwhile, which would have waited too: for a round trip of R ms, samples R - period, R - 2 period, ... are
// added (HdrHistogram's coordinated-omission correction). So a 1 s stall shows as a 1 s max and its share in
// p99, while a server that is merely slow to build an INFO does not pile up a queue of pipelined requests. A
// request still unanswered when the probe stops counts with its age so far. Samples are kept per phase
// (connect, load, ...).
import net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { nowMs } from './lib/clock.js';
import { Incomplete, encodeCommand, parseReply } from './lib/resp.js';

class Prober {
  #sock;
  #buf = Buffer.alloc(0);
  #cmd;
  #sentAt = 0;
  #pending = false;
  #onReply;
  error = null;

  constructor(port, args, onReply) {
    this.#cmd = encodeCommand(args);
    this.#onReply = onReply;
    this.#sock = net.connect({ port, host: '127.0.0.1' });
    this.#sock.setNoDelay(true);
    this.#sock.on('data', (d) => this.#onData(d));
    this.#sock.on('error', (err) => (this.error = err.message));
    this.#sock.on('close', () => (this.error ??= 'closed'));
  }

  /** Whether a request is out; send() does nothing then. */
  get busy() {
    return this.#pending;
  }

  send() {
    if (this.error !== null || this.#pending) return false;
    this.#pending = true;
    this.#sentAt = nowMs();
    this.#sock.write(this.#cmd);
    return true;
  }

  #onData(chunk) {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    let v, next;
    try {
      [v, next] = parseReply(this.#buf, 0);
    } catch (err) {
      if (err instanceof Incomplete) return;
      this.error = err.message;
      this.#sock.destroy();
      return;
    }
    this.#buf = next === this.#buf.length ? Buffer.alloc(0) : this.#buf.subarray(next);
    this.#pending = false;
    const now = nowMs();
    this.#onReply(now - this.#sentAt, v, now);
  }

  /** Age (ms) of the request still unanswered, or null. */
  pendingAge(now) {
    return this.#pending ? now - this.#sentAt : null;
  }

  close() {
    this.#sock.destroy();
  }
}

/** A round trip of `ms` with requests due every `period` ms: the sample and the ones a stall hid. */
function record(list, ms, period) {
  list.push(ms);
  for (let missed = ms - period; missed > period; missed -= period) list.push(missed);
}

function summarize(values) {
  const n = values.length;
  if (n === 0) return { count: 0 };
  const s = Float64Array.from(values).sort();
  const q = (x) => s[Math.min(n - 1, Math.floor(x * n))];
  let over = 0;
  for (const v of s) if (v > 100) over++;
  return { count: n, p50: q(0.5), p99: q(0.99), max: s[n - 1], over100ms: over };
}

let run = null;

const ops = {
  /**
   * port: the forwarder; masterPort: the master (its offset every offsetMs, its replica output buffers every
   * obufMs; 0 = none). pingMs / infoMs: request period on each connection (0 = none). info: the INFO arguments.
   */
  async start({ port, masterPort = 0, pingMs = 10, infoMs = 20, offsetMs = 10, obufMs = 50, info = ['INFO'], phase = 'run' }) {
    if (run) ops.stop();
    const r = {
      phase,
      samples: { ping: {}, info: {} },
      master: [],
      masterObufMax: 0,
      probes: [],
      timer: null,
      lateMax: 0,
      lastTick: nowMs(),
      loop: monitorEventLoopDelay({ resolution: 5 }),
      startedAt: nowMs(),
    };
    const add = (kind, period) => (ms) => record((r.samples[kind][r.phase] ??= []), ms, period);
    const schedule = (period, prober) => ({ period, prober, next: nowMs() + period });
    if (pingMs > 0) r.probes.push({ kind: 'ping', ...schedule(pingMs, new Prober(port, ['PING'], add('ping', pingMs))) });
    if (infoMs > 0) r.probes.push({ kind: 'info', ...schedule(infoMs, new Prober(port, info, add('info', infoMs))) });
    if (masterPort > 0 && offsetMs > 0) {
      const onRole = (_ms, v, now) => {
        // ROLE on a master: ['master', offset, replicas]. The time is the reply's arrival: the master's offset
        // was at least this then (so lag computed from it is never overstated).
        if (Array.isArray(v) && typeof v[1] === 'number') r.master.push([+now.toFixed(2), v[1]]);
      };
      r.probes.push({ kind: 'role', ...schedule(offsetMs, new Prober(masterPort, ['ROLE'], onRole)) });
    }
    if (masterPort > 0 && obufMs > 0) {
      // The master's only replica is the forwarder: omem is the stream the master holds for it, unread.
      const onList = (_ms, v) => {
        for (const m of String(v).matchAll(/ omem=(\d+)/g)) r.masterObufMax = Math.max(r.masterObufMax, Number(m[1]));
      };
      r.probes.push({ kind: 'obuf', ...schedule(obufMs, new Prober(masterPort, ['CLIENT', 'LIST', 'TYPE', 'replica'], onList)) });
    }
    r.loop.enable();
    r.timer = setInterval(() => {
      const now = nowMs();
      // How late the probe's own 2 ms timer fired: large values mean the probe itself was starved of CPU.
      r.lateMax = Math.max(r.lateMax, now - r.lastTick - 2);
      r.lastTick = now;
      for (const p of r.probes) {
        if (now < p.next || p.prober.busy) continue;
        if (p.prober.send()) p.next = Math.max(p.next + p.period, now);
      }
    }, 2);
    run = r;
    return true;
  },
  phase({ name }) {
    if (run) run.phase = name;
    return true;
  },
  /** Ends the run: summaries per phase and overall, the master's offset series, probe health. */
  stop() {
    const r = run;
    if (!r) return null;
    run = null;
    clearInterval(r.timer);
    r.loop.disable();
    const now = nowMs();
    const out = { seconds: (now - r.startedAt) / 1000, ping: {}, info: {}, master: r.master, masterObufMax: r.masterObufMax, errors: [] };
    for (const p of r.probes) {
      const age = p.prober.pendingAge(now);
      if ((p.kind === 'ping' || p.kind === 'info') && age !== null) record((r.samples[p.kind][r.phase] ??= []), age, p.period);
      if (p.prober.error !== null && p.prober.error !== 'closed') out.errors.push(`${p.kind}: ${p.prober.error}`);
      p.prober.close();
    }
    for (const kind of ['ping', 'info']) {
      const all = [];
      for (const [phase, list] of Object.entries(r.samples[kind])) {
        out[kind][phase] = summarize(list);
        all.push(...list);
      }
      out[kind].all = summarize(all);
    }
    // How late the probe's own timer fired (ms): large values mean the probe itself was starved of CPU.
    out.probeTimerLateMaxMs = +r.lateMax.toFixed(1);
    out.probeLoopDelayMaxMs = +(r.loop.max / 1e6).toFixed(1);
    return out;
  },
};

process.on('message', async (msg) => {
  try {
    process.send({ id: msg.id, ok: true, result: await ops[msg.op](msg.args ?? {}) });
  } catch (err) {
    process.send({ id: msg.id, ok: false, error: err.message });
  }
});
process.on('disconnect', () => process.exit(0));
