// Live fan-out (issue 15): N replicas online on the forwarder, the workload against the master; measures
// throughput until the last replica caught up, max lag, forwarder CPU per GB in, RSS, and PING/INFO round trips
// to the forwarder during the whole run. Plus the raw reference: the same bytes from the simplest server.
import { join } from 'node:path';
import { nowMs, sleep } from '../lib/clock.js';
import { lagStats } from '../lib/lag.js';
import { cpuSeconds, forkHelper, memorySampler, rssBytes } from '../lib/procs.js';
import { dropReasons, outcome, redisBenchmark, topology, warmUp } from '../lib/topology.js';

const MB = 1e6;
const GB = 1e9;

/** Connects `n` replicas to the topology's target and waits until they stream; returns ids and seconds. */
export async function attachReplicas(ctx, topo, n) {
  const t = nowMs();
  const ids = await ctx.sink.call('connect', { port: topo.target.port, count: n });
  await ctx.sink.call('waitOnline', { ids, timeoutMs: 300000 }, 330000);
  const onlineSeconds = (nowMs() - t) / 1000;
  await warmUp(topo, ctx.sink, ids);
  return { ids, onlineSeconds };
}

/** --warm: the same workload once, unmeasured, until every replica has it (the measured run is the second burst). */
async function warmBurst(ctx, topo, ids, requests) {
  await ctx.probe.call('phase', { name: 'warm' });
  await redisBenchmark(topo.master.port, requests);
  const target = await topo.master.offset();
  await ctx.sink.call('waitOffset', { target, ids, timeoutMs: 600000 }, 630000);
}

/** Starts the PING/INFO probe on the forwarder and the master-offset sampler. */
export function startProbe(ctx, topo, phase) {
  return ctx.probe.call('start', { port: topo.forwarder.port, masterPort: topo.master.port, phase, ...ctx.cfg.probe });
}

/** What the probe saw, without the (large) master series. */
export function probeSummary(p) {
  if (!p) return null;
  const { master, ...rest } = p;
  return { ...rest, masterSamples: master.length };
}

export async function fanoutRun(ctx, kind, n, requests) {
  const label = `fanout-N${n}-${kind}`;
  const topo = await topology(kind, { root: ctx.root, unlimited: true, relayNodeArgs: ctx.relayNodeArgs(kind, label) });
  let probe = null;
  let profile = null;
  try {
    await startProbe(ctx, topo, 'connect');
    const { ids, onlineSeconds } = await attachReplicas(ctx, topo, n);
    if (ctx.cfg.warmBurst) await warmBurst(ctx, topo, ids, requests);
    await sleep(200);
    const fwd = topo.forwarder;
    const idleRss = rssBytes(fwd.pid);
    const start = await topo.master.offset();
    await ctx.probe.call('phase', { name: 'load' });
    await ctx.sink.call('lagStart', { ids, intervalMs: ctx.cfg.probe.offsetMs });
    const pids = [topo.master.pid, ctx.sink.pid, fwd.pid];
    const cpu0 = pids.map(cpuSeconds);
    const sampler = memorySampler([fwd.pid]);
    const t0 = nowMs();
    const rps = await redisBenchmark(topo.master.port, requests);
    const tb = nowMs();
    const target = await topo.master.offset();
    // Replicas dropped on the way count as finished here; they are reported as dropped.
    const done = await ctx.sink.call('waitOffset', { target, ids, timeoutMs: 600000 }, 630000);
    const [cpuMaster, cpuSink, cpuFwd] = pids.map((p, i) => cpuSeconds(p) - cpu0[i]);
    const lagSeries = await ctx.sink.call('lagStop');
    await ctx.probe.call('phase', { name: 'end' });
    await sleep(100);
    probe = await ctx.probe.call('stop');
    const mem = sampler.stop();
    const bytes = target - start;
    const o = outcome(done.conns, target, start, t0);
    const seconds = o.complete ? (done.reachedAt - t0) / 1000 : null;
    const delivered = done.conns.reduce((a, c) => a + (c.offset - start), 0);
    const r = {
      scenario: 'fanout',
      topology: kind,
      n,
      requests,
      warm: ctx.cfg.warmBurst,
      streamBytes: bytes,
      complete: o.complete,
      dropped: o.dropped,
      onlineSeconds,
      benchmarkRps: rps,
      benchmarkSeconds: (tb - t0) / 1000,
      masterMBps: bytes / MB / ((tb - t0) / 1000),
      seconds,
      catchUpSeconds: seconds === null ? null : Math.max(0, (done.reachedAt - tb) / 1000),
      perReplicaMBps: seconds === null ? null : bytes / MB / seconds,
      aggregateMBps: seconds === null ? null : (bytes * o.complete) / MB / seconds,
      lag: lagStats(probe.master, lagSeries, { from: t0 }),
      cpu: {
        forwarderSeconds: cpuFwd,
        masterSeconds: fwd === topo.master ? null : cpuMaster,
        sinkSeconds: cpuSink,
        perGBIn: cpuFwd / (bytes / GB),
        perGBOut: cpuFwd / (delivered / GB),
        sinkPerGBOut: cpuSink / (delivered / GB),
      },
      rss: { idle: idleRss, peak: mem.peakRss[fwd.pid] },
      probe: probeSummary(probe),
    };
    if (o.drops) r.drops = { ...o.drops, reasons: dropReasons(topo.master, topo.middle) };
    if (o.dropped) r.error = `${o.dropped} of ${n} replicas were disconnected`;
    return r;
  } finally {
    if (!probe) await ctx.probe.call('stop').catch(() => {});
    await ctx.sink.call('closeAll');
    await topo.stop();
    profile = ctx.collectProfile(kind, label);
    if (profile) ctx.lastProfile = profile;
  }
}

// ---------------------------------------------------------------- the raw reference
/** Records the workload's stream from a master once; returns the raw-ref helper, serving it. */
export async function rawRecord(ctx, requests) {
  const raw = forkHelper(join(ctx.bench, 'raw-ref.js'));
  const topo = await topology('direct', { root: ctx.root, unlimited: true });
  try {
    await raw.call('record', { port: topo.master.port });
    await redisBenchmark(topo.master.port, requests);
    const target = await topo.master.offset();
    const rec = await raw.call('recordStop', { target });
    return { raw, bytes: rec.bytes };
  } catch (err) {
    await raw.stop();
    throw err;
  } finally {
    await topo.stop();
  }
}

/** The recorded bytes to N sink connections in one write each: the most the sink can take. */
export async function rawRun(ctx, raw, n, requests) {
  const { port, bytes } = await raw.call('serve');
  const ids = await ctx.sink.call('connect', { port, count: n });
  await ctx.sink.call('waitOnline', { ids, timeoutMs: 60000 });
  const cpu0 = cpuSeconds(ctx.sink.pid);
  const { t0 } = await raw.call('go', { count: n });
  const done = await ctx.sink.call('waitOffset', { target: bytes, ids, timeoutMs: 300000 });
  const seconds = (done.reachedAt - t0) / 1000;
  const alive = done.conns.filter((c) => c.offset === bytes).length;
  const sinkCpu = cpuSeconds(ctx.sink.pid) - cpu0;
  await ctx.sink.call('closeAll');
  await raw.call('closeClients');
  return {
    scenario: 'fanout',
    topology: 'raw',
    n,
    requests,
    streamBytes: bytes,
    complete: alive,
    dropped: n - alive,
    seconds,
    perReplicaMBps: bytes / MB / seconds,
    aggregateMBps: (bytes * alive) / MB / seconds,
    cpu: { sinkSeconds: sinkCpu, sinkPerGBOut: sinkCpu / ((bytes * alive) / GB) },
  };
}
