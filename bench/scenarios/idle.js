// Idle replicas (issue 15): RSS of the forwarder with 0 replicas, then with N idle online replicas (full sync
// done, a few warm-up writes, then 2 s of quiet): (RSS_N - RSS_0) / N = bytes per idle replica. used_memory
// (redis: allocator count; relay: V8 heap used + external) the same way. PING/INFO are probed throughout,
// including while the N replicas connect and full-sync.
import { nowMs, sleep } from '../lib/clock.js';
import { rssBytes } from '../lib/procs.js';
import { topology } from '../lib/topology.js';
import { attachReplicas, probeSummary, startProbe } from './fanout.js';

export async function idleRun(ctx, kind, n) {
  const label = `idle-N${n}-${kind}`;
  const topo = await topology(kind, { root: ctx.root, unlimited: true, relayNodeArgs: ctx.relayNodeArgs(kind, label) });
  let probe = null;
  try {
    const fwd = topo.forwarder;
    const usedMemory = async () => Number((await fwd.info('memory')).used_memory);
    // A few writes so the stream has flowed once through the forwarder before the baseline.
    for (let i = 0; i < 10; i++) await topo.master.call(['SET', 'bench:idle', String(i)]);
    await startProbe(ctx, topo, 'idle0');
    await sleep(1500);
    const rss0 = rssBytes(fwd.pid);
    const used0 = await usedMemory();
    await ctx.probe.call('phase', { name: 'connect' });
    const t = nowMs();
    const { onlineSeconds } = await attachReplicas(ctx, topo, n);
    const connectSeconds = (nowMs() - t) / 1000;
    await ctx.probe.call('phase', { name: 'idle' });
    await sleep(2000);
    const rssN = rssBytes(fwd.pid);
    const usedN = await usedMemory();
    probe = await ctx.probe.call('stop');
    return {
      scenario: 'idle',
      topology: kind,
      n,
      onlineSeconds,
      connectSeconds,
      rss: { zero: rss0, n: rssN },
      usedMemory: { zero: used0, n: usedN },
      rssPerReplicaBytes: (rssN - rss0) / n,
      usedMemoryPerReplicaBytes: (usedN - used0) / n,
      probe: probeSummary(probe),
    };
  } finally {
    if (!probe) await ctx.probe.call('stop').catch(() => {});
    await ctx.sink.call('closeAll');
    await topo.stop();
    ctx.collectProfile(kind, label);
  }
}
