// Idle replicas (issue 15): RSS of the forwarder with 0 replicas, then with N idle online replicas (full sync
// done, a few warm-up writes, then 3 s of quiet: the median RSS of its last 2 s); (RSS_N - RSS_0) / N = bytes
// per idle replica. used_memory (redis: allocator count; relay: V8 heap used + external) the same way.
// PING/INFO are probed throughout, including while the N replicas connect and full-sync.
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
    // RSS sampled every 100 ms over 3 s of quiet; the median of the last 2 s.
    const samples = [];
    for (let i = 0; i < 30; i++) {
      await sleep(100);
      samples.push(rssBytes(fwd.pid));
    }
    const tail = samples.slice(10).sort((a, b) => a - b);
    const rssN = tail[tail.length >> 1];
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
