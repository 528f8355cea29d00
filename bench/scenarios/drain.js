// Drain (issue 15): N replicas online, then paused (their sockets stop reading and acknowledging) while the
// workload's stream arrives at the forwarder; once the forwarder holds all of it, every replica resumes at once.
// Measured: time from the resume until every replica holds the master's offset, and the held bytes delivered in
// that time (MB/s total). The redis intermediate gets `client-output-buffer-limit replica 0 0 0` (see
// NO_REPLICA_LIMIT), otherwise it would drop paused replicas at 256mb; the relay keeps its defaults (its disk
// log holds the stream; paused replicas read it back from there).
import { nowMs, sleep } from '../lib/clock.js';
import { cpuSeconds, memorySampler, rssBytes } from '../lib/procs.js';
import { dropReasons, outcome, redisBenchmark, topology, waitOffsetOf } from '../lib/topology.js';
import { attachReplicas, probeSummary, startProbe } from './fanout.js';

const MB = 1e6;
const GB = 1e9;

export async function drainRun(ctx, kind, n, requests) {
  const label = `drain-N${n}-${kind}`;
  const topo = await topology(kind, { root: ctx.root, unlimited: true, relayNodeArgs: ctx.relayNodeArgs(kind, label) });
  let probe = null;
  try {
    await startProbe(ctx, topo, 'connect');
    const { ids, onlineSeconds } = await attachReplicas(ctx, topo, n);
    const fwd = topo.forwarder;
    const sampler = memorySampler([fwd.pid]);
    const rssBefore = rssBytes(fwd.pid);
    await ctx.probe.call('phase', { name: 'arrive' });
    await ctx.sink.call('freeze', { ids });
    const start = await topo.master.offset();
    const t0 = nowMs();
    await redisBenchmark(topo.master.port, requests);
    const target = await topo.master.offset();
    const heldAt = await waitOffsetOf(fwd, target);
    const rssHeld = rssBytes(fwd.pid);
    await ctx.probe.call('phase', { name: 'drain' });
    const cpu0 = cpuSeconds(fwd.pid);
    const { at, offsets } = await ctx.sink.call('unfreeze', { ids });
    const done = await ctx.sink.call('waitOffset', { target, ids, timeoutMs: 600000 }, 630000);
    const cpuFwd = cpuSeconds(fwd.pid) - cpu0;
    await sleep(100);
    probe = await ctx.probe.call('stop');
    const mem = sampler.stop();
    const o = outcome(done.conns, target, start, t0);
    const held = offsets.map((off) => target - off);
    const heldBytes = held.reduce((a, b) => a + b, 0);
    const drainSeconds = o.complete ? (done.reachedAt - at) / 1000 : null;
    const r = {
      scenario: 'drain',
      topology: kind,
      n,
      requests,
      streamBytes: target - start,
      complete: o.complete,
      dropped: o.dropped,
      onlineSeconds,
      arriveSeconds: (heldAt - t0) / 1000,
      // Bytes each replica still had to receive at the resume (the kernel's socket buffers took some before).
      heldBytes: { total: heldBytes, minEach: Math.min(...held), meanEach: heldBytes / n },
      drainSeconds,
      aggregateMBps: drainSeconds ? heldBytes / MB / drainSeconds : null,
      cpu: { forwarderDrainSeconds: cpuFwd, perGBOut: cpuFwd / (heldBytes / GB) },
      rss: { before: rssBefore, held: rssHeld, peak: mem.peakRss[fwd.pid] },
      probe: probeSummary(probe),
    };
    if (o.drops) r.drops = { ...o.drops, reasons: dropReasons(topo.master, topo.middle) };
    if (o.dropped) r.error = `${o.dropped} of ${n} replicas were disconnected`;
    return r;
  } finally {
    if (!probe) await ctx.probe.call('stop').catch(() => {});
    await ctx.sink.call('closeAll');
    await topo.stop();
    ctx.collectProfile(kind, label);
  }
}
