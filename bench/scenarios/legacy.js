// The earlier sections of this bench, kept runnable with --only latency,frozen,fullsync (not in the default run):
// added latency at a fixed write rate, a frozen replica against the 256mb limits, and full-sync fan-out. They use
// the 256mb replica limits of bench/lib/procs.js (REDIS_LIMITS), not the issue-15 "no limit" setting.
import { join } from 'node:path';
import { nowMs, sleep } from '../lib/clock.js';
import { cpuSeconds, memorySampler, rssBytes, runCommand } from '../lib/procs.js';
import { fmt, table } from '../lib/report.js';
import { LABEL, redisBenchmark, topology, waitMiddleCaughtUp, warmUp } from '../lib/topology.js';

const MB = 1e6;
const mib = (b) => fmt(b / 1048576, 1);
const label = (r) => `${LABEL[r.topology]}${r.busyBefore >= 0.15 ? ' *' : ''}`;

// ---------------------------------------------------------------- 2: added latency
export async function latencyRun(ctx, kind, n) {
  const { sink } = ctx;
  const CONFIG = ctx.cfg.legacy;
  const topo = await topology(kind, { root: ctx.root });
  try {
    const ids = await sink.call('connect', { port: topo.target.port, count: n, latency: true });
    await sink.call('waitOnline', { ids, timeoutMs: 120000 });
    await warmUp(topo, sink, ids);
    await sink.call('latencyReset');
    const fwd = topo.middle ?? topo.master;
    const cpu0 = cpuSeconds(fwd.pid);
    const sink0 = cpuSeconds(sink.pid);
    const out = await runCommand(
      process.execPath,
      [join(ctx.bench, 'latency-writer.js'), String(topo.master.port), String(CONFIG.latencyRate), String(CONFIG.latencyMs), '64'],
      CONFIG.latencyMs + 60000,
    );
    const writer = JSON.parse(out.trim().split('\n').pop());
    const target = await topo.master.offset();
    await sink.call('waitOffset', { target, ids, timeoutMs: 60000 });
    const stats = await sink.call('latencyStats');
    const r = {
      topology: kind,
      n,
      writesPerSecond: writer.rate,
      writes: writer.sent,
      samples: stats.count,
      expectedSamples: writer.sent * n,
      latencyUs: { p50: stats.p50, p90: stats.p90, p99: stats.p99, p999: stats.p999, max: stats.max, mean: stats.mean },
      forwarderCpuPercent: ((cpuSeconds(fwd.pid) - cpu0) / (writer.elapsedMs / 1000)) * 100,
      sinkCpuPercent: ((cpuSeconds(sink.pid) - sink0) / (writer.elapsedMs / 1000)) * 100,
    };
    if (stats.count !== writer.sent * n) r.error = `saw ${stats.count} markers, expected ${writer.sent * n}`;
    return r;
  } finally {
    await sink.call('closeAll');
    await topo.stop();
  }
}

// ---------------------------------------------------------------- 3b: a frozen replica
export async function frozenRun(ctx, kind) {
  const { sink } = ctx;
  const CONFIG = ctx.cfg.legacy;
  const n = CONFIG.frozenN;
  const topo = await topology(kind, { root: ctx.root });
  try {
    const ids = await sink.call('connect', { port: topo.target.port, count: n });
    await sink.call('waitOnline', { ids, timeoutMs: 120000 });
    await warmUp(topo, sink, ids);
    const watched = topo.forwarder;
    const frozenId = ids[0];
    const others = ids.slice(1);
    await sink.call('freeze', { id: frozenId });
    const idleRss = rssBytes(watched.pid);
    const sampler = memorySampler([watched.pid], [watched]);
    const start = await topo.master.offset();
    // The frozen socket is paused, so the sink never sees it closed: watch connected_slaves on the server.
    let droppedAt = null;
    let watching = true;
    const watcher = (async () => {
      while (watching && droppedAt === null) {
        const i = await watched.info('replication');
        if (Number(i.connected_slaves) < n) droppedAt = nowMs();
        else await sleep(100);
      }
    })();
    const t0 = nowMs();
    await redisBenchmark(topo.master.port, CONFIG.frozenRequests);
    const target = await topo.master.offset();
    const done = await sink.call('waitOffset', { target, ids: others, timeoutMs: 300000 });
    // The relay checks the lag of a blocked replica once a second; Redis when it appends to the buffer.
    const deadline = nowMs() + 3000;
    while (droppedAt === null && nowMs() < deadline) await sleep(50);
    watching = false;
    await watcher;
    const [frozen] = await sink.call('snapshot', { ids: [frozenId] });
    const mem = sampler.stop();
    const rssAtDrop = rssBytes(watched.pid);
    await sleep(2000);
    const bytes = target - start;
    const seconds = (done.reachedAt - t0) / 1000;
    const r = {
      topology: kind,
      n,
      streamBytes: bytes,
      othersComplete: done.conns.filter((c) => c.state === 'stream' && c.offset === target).length,
      othersDropped: done.conns.filter((c) => c.state === 'closed').length,
      othersPerReplicaMBps: done.conns.some((c) => c.state === 'stream' && c.offset === target) ? bytes / MB / seconds : null,
      frozenDisconnected: droppedAt !== null,
      frozenDisconnectedAfterSeconds: droppedAt !== null ? (droppedAt - t0) / 1000 : null,
      frozenBytesRead: frozen.offset - start,
      rss: { idle: idleRss, peak: mem.peakRss[watched.pid], end: rssAtDrop, end2s: rssBytes(watched.pid) },
      usedMemory: { peak: mem.peakUsedMemory[watched.port] ?? null, end2s: Number((await watched.info('memory')).used_memory) },
    };
    if (watched.kind === 'relay') {
      const i = await watched.info();
      r.relay = {
        droppedLag: Number(i.relay_replicas_dropped_lag),
        logMemoryBytesEnd2s: Number(i.relay_log_memory_bytes ?? i.repl_backlog_histlen),
        logDiskBytesEnd2s: Number(i.relay_log_disk_bytes ?? 0),
        diskReadBytes: Number(i.relay_disk_read_bytes ?? 0),
      };
    }
    return r;
  } finally {
    await sink.call('closeAll');
    await topo.stop();
  }
}

// ---------------------------------------------------------------- 5: full-sync fan-out
export async function fullSyncRun(ctx, kind) {
  const { sink } = ctx;
  const CONFIG = ctx.cfg.legacy;
  const t00 = nowMs();
  const topo = await topology(kind, { root: ctx.root, populate: CONFIG.fullSyncKeys });
  try {
    const setupSeconds = (nowMs() - t00) / 1000;
    await waitMiddleCaughtUp(topo);
    const stat = async (node) => {
      if (!node) return null;
      const i = await node.info('stats');
      return { forks: Number(i.total_forks), syncFull: Number(i.sync_full) };
    };
    const m0 = await stat(topo.master);
    const x0 = await stat(topo.middle);
    const joins = [];
    const t0 = nowMs();
    for (let i = 0; i < CONFIG.joiners; i++) {
      const ids = await sink.call('connect', { port: topo.target.port, count: 1 });
      const [c] = await sink.call('waitOnline', { ids, timeoutMs: 180000 });
      joins.push({ seconds: (c.onlineAt - c.connectStartAt) / 1000, rdbBytes: c.rdbBytes });
    }
    const total = (nowMs() - t0) / 1000;
    const m1 = await stat(topo.master);
    const x1 = await stat(topo.middle);
    const secs = joins.map((j) => j.seconds);
    return {
      topology: kind,
      keys: CONFIG.fullSyncKeys,
      joiners: CONFIG.joiners,
      rdbBytes: joins[0].rdbBytes,
      setupSeconds,
      allOnlineSeconds: total,
      joinSeconds: { min: Math.min(...secs), max: Math.max(...secs), mean: secs.reduce((a, b) => a + b, 0) / secs.length },
      master: { forks: m1.forks - m0.forks, syncFull: m1.syncFull - m0.syncFull },
      middle: x1 ? { forks: x1.forks - x0.forks, syncFull: x1.syncFull - x0.syncFull } : null,
    };
  } finally {
    await sink.call('closeAll');
    await topo.stop();
  }
}

// ---------------------------------------------------------------- tables
export function latencyTable(list) {
  const us = (v) => fmt(v / 1000, 2);
  const rows = list.map((r) => [
    label(r),
    r.n,
    fmt(r.writesPerSecond, 0),
    `${r.samples}/${r.expectedSamples}`,
    us(r.latencyUs.p50),
    us(r.latencyUs.p90),
    us(r.latencyUs.p99),
    us(r.latencyUs.p999),
    us(r.latencyUs.max),
    fmt(r.forwarderCpuPercent, 0),
    fmt(r.sinkCpuPercent, 0),
  ]);
  return table(
    'Latency: master write -> arrival at a downstream replica (ms), 64-byte SETs at a fixed rate',
    ['topology', 'N', 'writes/s', 'samples', 'p50', 'p90', 'p99', 'p99.9', 'max', 'fwd cpu %', 'sink cpu %'],
    rows,
  );
}

export function frozenTable(list) {
  const rows = list.map((r) => [
    label(r),
    `${r.n - 1}+1`,
    `${r.othersComplete}/${r.n - 1}${r.othersDropped ? `, ${r.othersDropped} dropped` : ''}`,
    fmt(r.othersPerReplicaMBps, 0),
    r.frozenDisconnected ? `yes, ${fmt(r.frozenDisconnectedAfterSeconds, 2)} s` : 'no',
    mib(r.rss.idle),
    mib(r.rss.peak),
    mib(r.rss.end2s),
    r.usedMemory ? mib(r.usedMemory.peak) : '-',
    r.usedMemory ? mib(r.usedMemory.end2s) : '-',
    r.relay ? `${mib(r.relay.logMemoryBytesEnd2s)} / ${mib(r.relay.logDiskBytesEnd2s)}` : '-',
  ]);
  return table(
    `Frozen replica: one of ${list[0]?.n} stops reading; ${fmt((list[0]?.streamBytes ?? 0) / MB, 0)} MB written (limit 256mb)`,
    ['topology', 'N', 'others done', 'others MB/s', 'frozen dropped', 'RSS idle MiB', 'RSS peak MiB', 'RSS end+2s MiB', 'used_mem peak MiB', 'used_mem end+2s MiB', 'relay log mem/disk MiB'],
    rows,
  );
}

export function fullSyncTable(list) {
  const rows = list.map((r) => [
    label(r),
    r.joiners,
    mib(r.rdbBytes),
    fmt(r.allOnlineSeconds, 2),
    fmt(r.joinSeconds.mean, 2),
    fmt(r.joinSeconds.max, 2),
    r.master.forks,
    r.master.syncFull,
    r.middle ? r.middle.forks : '-',
    r.middle ? r.middle.syncFull : '-',
  ]);
  return table(
    `Full-sync fan-out: ${list[0]?.joiners} replicas join one after another (each after the previous is online), ${list[0]?.keys} keys (DEBUG POPULATE)`,
    ['topology', 'joiners', 'RDB MiB', 'all online s', 'join mean s', 'join max s', 'master forks', 'master sync_full', 'middle forks', 'middle sync_full'],
    rows,
  );
}
