// psync-relay benchmark: the relay vs a redis-server intermediate replica vs replicas attached to the master,
// on the same workload, with a sink process as the downstream replicas. See bench/README.md.
//   node bench/run.js [--quick] [--only throughput,latency,frozen,fullsync] [--n 1,10,100] [--topologies direct,redis,relay]
//                     [--no-save] [--no-wait-quiet]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nowMs, sleep } from './lib/clock.js';
import { cleanupAll, cpuSeconds, forkHelper, memorySampler, rssBytes, runCommand, startRedis, startRelay, waitQuiet } from './lib/procs.js';

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH);
const MB = 1e6;
const GB = 1e9;

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const opt = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = flag('--quick');
const CONFIG = QUICK
  ? { ns: [1, 10], requests: 100000, extraThroughput: [], latencyRate: 2000, latencyMs: 3000, latencyRepeats: 1, frozenN: 3, frozenRequests: 300000, fullSyncKeys: 250000, joiners: 10 }
  : {
      ns: [1, 10, 100],
      requests: 500000,
      // A stream smaller than the 256mb replica limit: nobody can be dropped, so N=100 gets a throughput number.
      extraThroughput: [{ n: 100, requests: 200000 }],
      latencyRate: 2000,
      latencyMs: 4000,
      latencyRepeats: 3,
      frozenN: 5,
      frozenRequests: 400000,
      fullSyncKeys: 1000000,
      joiners: 10,
    };
if (opt('--n')) CONFIG.ns = opt('--n').split(',').map(Number);
const SECTIONS = (opt('--only') ?? 'throughput,latency,frozen,fullsync').split(',');
// relay = the relay's defaults (memory log + 1gb disk log); relay-mem = log.disk 0 (memory only, like redis).
const ALL = ['direct', 'redis', 'relay', 'relay-mem'];
const SECTION_TOPOLOGIES = {
  throughput: ALL,
  latency: QUICK ? ['direct', 'redis', 'relay'] : ALL,
  frozen: ALL,
  fullsync: ['direct', 'redis', 'relay'],
};
const only = opt('--topologies')?.split(',').filter(Boolean);
const topologiesFor = (section) => SECTION_TOPOLOGIES[section].filter((k) => !only || only.includes(k));
const LABEL = { raw: 'raw reference', direct: 'direct (master)', redis: 'redis intermediate', relay: 'psync-relay', 'relay-mem': 'psync-relay mem-only' };
const isRelay = (k) => k === 'relay' || k === 'relay-mem';
const benchArgs = (port, n) => ['-h', '127.0.0.1', '-p', String(port), '-t', 'set', '-d', '1024', '-P', '32', '-n', String(n), '-r', '100000', '-q'];

const log = (...a) => console.log(...a);
const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? '-' : Number(v).toFixed(d));
const mib = (b) => fmt(b / 1048576, 1);

// ---------------------------------------------------------------- topologies
/** master [+ intermediate redis-server | relay]; `target` is where the sinks connect. */
async function topology(kind, { populate = 0 } = {}) {
  const master = await startRedis('master');
  if (populate > 0) await master.call(['DEBUG', 'POPULATE', String(populate)], 300000);
  let middle = null;
  if (kind === 'redis') middle = await startRedis('intermediate', ['--replicaof', '127.0.0.1', String(master.port)]);
  if (isRelay(kind)) middle = await startRelay(master.port, ROOT, { disk: kind === 'relay-mem' ? 0 : null });
  if (middle) await middle.waitLinkUp();
  return {
    kind,
    master,
    middle,
    target: middle ?? master,
    async stop() {
      await middle?.stop();
      await master.stop();
    },
  };
}

async function redisBenchmark(port, n) {
  const out = await runCommand('redis-benchmark', benchArgs(port, n), 600000);
  const m = /SET: ([\d.]+) requests per second/.exec(out.replace(/\r/g, '\n'));
  return m ? Number(m[1]) : NaN;
}

/**
 * Writes a key now and then until every sink receives each write promptly (3 in a row within 20 ms). A
 * redis-server that sent a replica a diskless (EOF-marked) RDB starts streaming to it only after it has reaped the
 * RDB child and then received the replica's next REPLCONF ACK: ~0.5 s here, which would land in the measurement.
 */
async function warmUp(topo, sink, ids, maxMs = 10000) {
  const deadline = nowMs() + maxMs;
  let fast = 0;
  let rounds = 0;
  while (fast < 3 && nowMs() < deadline) {
    await topo.master.call(['SET', 'bench:warmup', String(rounds++)]);
    const target = await topo.master.offset();
    const t = nowMs();
    await sink.call('waitOffset', { target, ids, timeoutMs: maxMs });
    fast = nowMs() - t < 20 ? fast + 1 : 0;
    await sleep(20);
  }
  return rounds;
}

async function waitMiddleCaughtUp(topo, timeoutMs = 60000) {
  if (!topo.middle) return;
  const target = await topo.master.offset();
  const deadline = nowMs() + timeoutMs;
  while ((await topo.middle.offset()) < target) {
    if (nowMs() > deadline) throw new Error(`${topo.kind} did not catch up with the master`);
    await sleep(20);
  }
}

// ---------------------------------------------------------------- 1, 3, 4: fan-out throughput, memory, CPU
/**
 * Why replicas were dropped, from the logs of the master and the forwarder (relay pino JSON, redis-server
 * warnings): an output limit on the forwarder, or the master dropping the forwarder's own link (then the
 * forwarder re-syncs and disconnects its replicas).
 */
const DROP_RE = /closing replica|output buffer|replica-max-lag|fell behind|new history|upstream link failed|lost|full resync|Disconnecting/i;
function dropReasons(...nodes) {
  const out = [];
  for (const node of nodes.filter(Boolean)) {
    const lines = node.log().split('\n').filter((l) => DROP_RE.test(l));
    const reasons = lines
      .map((l) => {
        const redis = /^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [*#-] (.*)$/.exec(l);
        if (redis) return redis[1];
        try {
          const j = JSON.parse(l);
          return `${j.msg}${j.reason ? `: ${j.reason}` : ''}${j.err?.message ? `: ${j.err.message}` : ''}`;
        } catch {
          return null; // a line cut by the log tail
        }
      })
      .filter((r) => r !== null);
    const uniq = [...new Set(reasons.map((r) => r.replace(/id=\d+ addr=\S+ .*(?= scheduled)/, 'id=.. (replica)').replace(/\d{4,}/g, 'N')))];
    if (uniq.length) out.push(`${node.kind}: ${uniq.slice(0, 3).join(' / ')}${lines.length > 1 ? ` (${lines.length} lines)` : ''}`);
  }
  return out;
}

async function throughputRun(sink, kind, n, requests = CONFIG.requests) {
  const topo = await topology(kind);
  try {
    const ids = await sink.call('connect', { port: topo.target.port, count: n });
    await sink.call('waitOnline', { ids, timeoutMs: 120000 });
    await warmUp(topo, sink, ids);
    await sleep(200);
    const watched = topo.middle ?? topo.master;
    const idleRss = rssBytes(watched.pid);
    // used_memory: redis-server's allocator count; the relay reports V8 heap used + external (Buffers).
    const idleUsed = Number((await watched.info('memory')).used_memory);
    const start = await topo.master.offset();
    const pids = [topo.master.pid, sink.pid, ...(topo.middle ? [topo.middle.pid] : [])];
    const cpu0 = Object.fromEntries(pids.map((p) => [p, cpuSeconds(p)]));
    const sampler = memorySampler(pids, [watched]);
    const t0 = nowMs();
    const rps = await redisBenchmark(topo.master.port, requests);
    const tb = nowMs();
    const target = await topo.master.offset();
    // Replicas the forwarder drops (output limit) count as finished here; they are reported as dropped.
    const done = await sink.call('waitOffset', { target, ids, timeoutMs: 300000 });
    const cpu1 = Object.fromEntries(pids.map((p) => [p, cpuSeconds(p)]));
    await sleep(300);
    const mem = sampler.stop();
    const afterRss = rssBytes(watched.pid);
    const complete = done.conns.filter((c) => c.state === 'stream' && c.offset === target);
    const dropped = done.conns.filter((c) => c.state === 'closed');
    const bytes = target - start;
    const delivered = done.conns.reduce((a, c) => a + (c.offset - start), 0);
    const seconds = complete.length ? (done.reachedAt - t0) / 1000 : null;
    const cpu = (pid) => cpu1[pid] - cpu0[pid];
    const r = {
      topology: kind,
      n,
      requests,
      streamBytes: bytes,
      replicasComplete: complete.length,
      replicasDropped: dropped.length,
      benchmarkRps: rps,
      benchmarkSeconds: (tb - t0) / 1000,
      seconds,
      catchUpSeconds: seconds === null ? null : Math.max(0, (done.reachedAt - tb) / 1000),
      perReplicaMBps: seconds === null ? null : bytes / MB / seconds,
      aggregateMBps: seconds === null ? null : (bytes * complete.length) / MB / seconds,
      masterMBps: bytes / MB / ((tb - t0) / 1000),
      rss: { idle: idleRss, peak: mem.peakRss[watched.pid], after: afterRss },
      usedMemory: { idle: idleUsed, peak: mem.peakUsedMemory[watched.port] ?? null },
      cpuSeconds: { master: cpu(topo.master.pid), middle: topo.middle ? cpu(topo.middle.pid) : null, sink: cpu(sink.pid) },
      deliveredBytes: delivered,
    };
    if (dropped.length) {
      const first = Math.min(...dropped.map((c) => c.closedAt));
      const last = Math.max(...dropped.map((c) => c.closedAt));
      r.drops = {
        firstAfterSeconds: (first - t0) / 1000,
        lastAfterSeconds: (last - t0) / 1000,
        meanBytesBeforeDrop: dropped.reduce((a, c) => a + (c.offset - start), 0) / dropped.length,
        reasons: dropReasons(topo.master, topo.middle),
      };
      r.error = `${dropped.length} of ${n} replicas were disconnected`;
    }
    const forwarder = topo.middle ? r.cpuSeconds.middle : r.cpuSeconds.master;
    r.cpuSecondsPerGBOut = forwarder / (delivered / GB);
    r.cpuSecondsPerGBIn = forwarder / (bytes / GB);
    r.sinkCpuSecondsPerGB = r.cpuSeconds.sink / (delivered / GB);
    return r;
  } finally {
    await sink.call('closeAll');
    await topo.stop();
  }
}

async function rawRecord() {
  const raw = forkHelper(join(BENCH, 'raw-ref.js'));
  const topo = await topology('direct');
  try {
    await raw.call('record', { port: topo.master.port });
    const t0 = nowMs();
    const rps = await redisBenchmark(topo.master.port, CONFIG.requests);
    const seconds = (nowMs() - t0) / 1000;
    const target = await topo.master.offset();
    const rec = await raw.call('recordStop', { target });
    await raw.call('serve');
    return { raw, recorded: { bytes: rec.bytes, benchmarkRps: rps, benchmarkSeconds: seconds } };
  } catch (err) {
    await raw.stop();
    throw err;
  } finally {
    await topo.stop();
  }
}

async function rawRun(sink, raw, n) {
  const { port, bytes } = await raw.call('serve');
  const ids = await sink.call('connect', { port, count: n });
  await sink.call('waitOnline', { ids, timeoutMs: 30000 });
  const cpu0 = cpuSeconds(sink.pid);
  const cpuRaw0 = cpuSeconds(raw.pid);
  const { t0 } = await raw.call('go', { count: n });
  const done = await sink.call('waitOffset', { target: bytes, ids, timeoutMs: 300000 });
  const seconds = (done.reachedAt - t0) / 1000;
  const alive = done.conns.filter((c) => c.offset === bytes).length;
  const sinkCpu = cpuSeconds(sink.pid) - cpu0;
  const rawCpu = cpuSeconds(raw.pid) - cpuRaw0;
  await sink.call('closeAll');
  await raw.call('closeClients');
  return {
    topology: 'raw',
    n,
    streamBytes: bytes,
    replicasComplete: alive,
    seconds,
    perReplicaMBps: bytes / MB / seconds,
    aggregateMBps: (bytes * alive) / MB / seconds,
    cpuSeconds: { sink: sinkCpu, raw: rawCpu },
    sinkCpuSecondsPerGB: sinkCpu / ((bytes * alive) / GB),
  };
}

// ---------------------------------------------------------------- 2: added latency
async function latencyRun(sink, kind, n) {
  const topo = await topology(kind);
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
      [join(BENCH, 'latency-writer.js'), String(topo.master.port), String(CONFIG.latencyRate), String(CONFIG.latencyMs), '64'],
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
async function frozenRun(sink, kind) {
  const n = CONFIG.frozenN;
  const topo = await topology(kind);
  try {
    const ids = await sink.call('connect', { port: topo.target.port, count: n });
    await sink.call('waitOnline', { ids, timeoutMs: 120000 });
    await warmUp(topo, sink, ids);
    const watched = topo.middle ?? topo.master;
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
async function fullSyncRun(sink, kind) {
  const t00 = nowMs();
  const topo = await topology(kind, { populate: CONFIG.fullSyncKeys });
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

// ---------------------------------------------------------------- report
function table(title, headers, rows) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  ');
  const out = [`\n${title}`, line(headers), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)];
  log(out.join('\n'));
  return out.join('\n');
}

/** The row label; `*` marks a step that started while other processes kept the machine busy. */
const label = (r) => `${LABEL[r.topology]}${r.busyBefore >= 0.15 ? ' *' : ''}`;

function ratio(a, b) {
  return a !== undefined && b !== undefined && a !== null && b !== null && b !== 0 ? a / b : null;
}

function ratios(res) {
  const out = { note: 'each value = topology / redis intermediate, same run' };
  // The main runs only (not the extra smaller-stream runs).
  const by = (list, kind, n) => list?.find((r) => r.topology === kind && (n === undefined || r.n === n) && (r.requests === undefined || r.requests === CONFIG.requests));
  if (res.throughput) {
    out.throughputAggregate = {};
    out.cpuPerGB = {};
    out.peakRss = {};
    // Per N, the first workload (main, then the smaller extra one) that both rows completed without drops.
    out.throughputRequests = {};
    const find = (k, n, req) => res.throughput.find((r) => r.topology === k && r.n === n && (k === 'raw' || r.requests === req));
    for (const n of CONFIG.ns) {
      const sizes = [CONFIG.requests, ...CONFIG.extraThroughput.filter((x) => x.n === n).map((x) => x.requests)];
      for (const k of ['raw', 'direct', 'relay', 'relay-mem']) {
        for (const req of k === 'raw' ? [CONFIG.requests] : sizes) {
          const red = find('redis', n, req);
          const x = find(k, n, req);
          if (!x || !red || red.replicasDropped || x.replicasDropped) continue;
          (out.throughputAggregate[k] ??= {})[n] = ratio(x.aggregateMBps, red.aggregateMBps);
          if (k !== 'raw') {
            (out.cpuPerGB[k] ??= {})[n] = ratio(x.cpuSecondsPerGBOut, red.cpuSecondsPerGBOut);
            (out.peakRss[k] ??= {})[n] = ratio(x.rss.peak, red.rss.peak);
            (out.throughputRequests[k] ??= {})[n] = req;
          }
          break;
        }
      }
    }
  }
  if (res.latency) {
    out.latencyP50 = {};
    out.latencyP99 = {};
    for (const n of CONFIG.ns) {
      const red = by(res.latency, 'redis', n);
      for (const k of ['direct', 'relay', 'relay-mem']) {
        const x = by(res.latency, k, n);
        if (!x || !red) continue;
        (out.latencyP50[k] ??= {})[n] = ratio(x.latencyUs.p50, red.latencyUs.p50);
        (out.latencyP99[k] ??= {})[n] = ratio(x.latencyUs.p99, red.latencyUs.p99);
      }
    }
  }
  if (res.fullSync) {
    const red = by(res.fullSync, 'redis');
    out.fullSyncAllOnline = {};
    for (const k of ['direct', 'relay']) {
      const x = by(res.fullSync, k);
      if (x && red) out.fullSyncAllOnline[k] = ratio(x.allOnlineSeconds, red.allOnlineSeconds);
    }
  }
  return out;
}

function report(res) {
  const text = [];
  if (res.throughput) {
    const rows = res.throughput.map((r) => [
      label(r),
      r.n,
      fmt(r.streamBytes / MB, 0),
      r.replicasDropped ? `${r.replicasComplete}/${r.n}, ${r.replicasDropped} dropped at ${fmt(r.drops.firstAfterSeconds, 1)}-${fmt(r.drops.lastAfterSeconds, 1)} s` : `${r.replicasComplete}/${r.n}`,
      fmt(r.seconds, 2),
      fmt(r.perReplicaMBps, 0),
      fmt(r.aggregateMBps, 0),
      r.masterMBps ? fmt(r.masterMBps, 0) : '-',
      fmt(r.catchUpSeconds, 2),
      r.topology === 'raw' ? '-' : fmt(r.cpuSecondsPerGBOut, 2),
      r.topology === 'raw' ? '-' : mib(r.rss.idle),
      r.topology === 'raw' ? '-' : mib(r.rss.peak),
      r.usedMemory?.peak ? mib(r.usedMemory.peak) : '-',
      fmt(r.sinkCpuSecondsPerGB, 2),
    ]);
    text.push(
      table(
        `Fan-out throughput: redis-benchmark -t set -d 1024 -P 32 -r 100000 -n ${[CONFIG.requests, ...CONFIG.extraThroughput.map((x) => x.requests)].join(' / ')}; time = benchmark start -> every replica at the master's offset`,
        ['topology', 'N', 'stream MB', 'done', 'time s', 'MB/s each', 'MB/s total', 'master MB/s', 'catch-up s', 'cpu s/GB out', 'RSS idle MiB', 'RSS peak MiB', 'used_mem peak MiB', 'sink cpu s/GB'],
        rows,
      ),
    );
  }
  if (res.latency) {
    const us = (v) => fmt(v / 1000, 2);
    const rows = res.latency.map((r) => [
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
    text.push(
      table(
        'Latency: master write -> arrival at a downstream replica (ms), 64-byte SETs at a fixed rate',
        ['topology', 'N', 'writes/s', 'samples', 'p50', 'p90', 'p99', 'p99.9', 'max', 'fwd cpu %', 'sink cpu %'],
        rows,
      ),
    );
  }
  if (res.frozen) {
    const rows = res.frozen.map((r) => [
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
    text.push(
      table(
        `Frozen replica: one of ${CONFIG.frozenN} stops reading; ${fmt(res.frozen[0].streamBytes / MB, 0)} MB written (limit 256mb)`,
        ['topology', 'N', 'others done', 'others MB/s', 'frozen dropped', 'RSS idle MiB', 'RSS peak MiB', 'RSS end+2s MiB', 'used_mem peak MiB', 'used_mem end+2s MiB', 'relay log mem/disk MiB'],
        rows,
      ),
    );
  }
  if (res.fullSync) {
    const rows = res.fullSync.map((r) => [
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
    text.push(
      table(
        `Full-sync fan-out: ${CONFIG.joiners} replicas join one after another (each after the previous is online), ${CONFIG.fullSyncKeys} keys (DEBUG POPULATE)`,
        ['topology', 'joiners', 'RDB MiB', 'all online s', 'join mean s', 'join max s', 'master forks', 'master sync_full', 'middle forks', 'middle sync_full'],
        rows,
      ),
    );
  }
  const rt = ratios(res);
  const rows = [];
  const names = { throughputAggregate: 'fan-out MB/s (higher is better)', cpuPerGB: 'CPU s per GB out (lower is better)', peakRss: 'peak RSS under load', latencyP50: 'latency p50', latencyP99: 'latency p99' };
  for (const [metric, label] of Object.entries(names)) {
    for (const [k, perN] of Object.entries(rt[metric] ?? {})) {
      const req = metric.startsWith('latency') ? undefined : rt.throughputRequests?.[k];
      const note = (n) => (req?.[n] && req[n] !== CONFIG.requests ? ` (-n ${req[n]})` : '');
      rows.push([label, LABEL[k], ...CONFIG.ns.map((n) => (perN[n] == null ? '-' : `${fmt(perN[n], 2)}x${note(n)}`))]);
    }
  }
  for (const [k, v] of Object.entries(rt.fullSyncAllOnline ?? {})) rows.push(['full-sync fan-out, time to all online', LABEL[k], `${fmt(v, 2)}x`, ...CONFIG.ns.slice(1).map(() => '')]);
  if (rows.length) text.push(table('Ratios: topology / redis intermediate, same run', ['metric', 'topology', ...CONFIG.ns.map((n) => `N=${n}`)], rows));
  return { ratios: rt, text: text.join('\n') };
}

function meta() {
  const git = (args) => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
    } catch {
      return null;
    }
  };
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    command: `node bench/run.js ${argv.join(' ')}`.trim(),
    mode: QUICK ? 'quick' : 'full',
    machine: { cpus: cpus.length, cpuModel: cpus[0]?.model ?? '?', memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1), kernel: os.release(), arch: os.arch() },
    node: process.version,
    redis: execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim(),
    relay: { version: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version, commit: git(['rev-parse', '--short', 'HEAD']), srcDirty: (git(['status', '--porcelain', 'src']) ?? '') !== '' },
    config: CONFIG,
    limits: { backlog: '64mb (relay log.memory)', replicaOutputLimit: 'replica 256mb 256mb 0 (relay replica-max-lag 256mb)', replDisklessSyncDelay: 0, replPingReplicaPeriod: 3600 },
  };
}

// ---------------------------------------------------------------- main
async function main() {
  if (!existsSync(join(ROOT, 'dist/main.js'))) throw new Error('dist/main.js missing: run `npm run build` first (npm run bench does)');
  const started = nowMs();
  const res = { meta: meta() };
  log(`psync-relay benchmark (${res.meta.mode}): ${res.meta.machine.cpus} cores ${res.meta.machine.cpuModel}, ${res.meta.node}, ${res.meta.redis.split(' ').slice(0, 3).join(' ')}`);
  const sink = forkHelper(join(BENCH, 'sink.js'));
  // Other work on the machine skews everything: before each step, wait (bounded) until the CPUs are idle.
  // Bounded per step and in total (quick: 10 s / 20 s, full: 120 s / 600 s).
  let quietBudgetMs = flag('--no-wait-quiet') ? 0 : QUICK ? 20000 : 600000;
  const maxQuietWaitMs = QUICK ? 10000 : 120000;
  const quietness = [];
  const step = async (what, fn) => {
    const q = await waitQuiet(Math.min(maxQuietWaitMs, quietBudgetMs));
    quietBudgetMs = Math.max(0, quietBudgetMs - q.waitedSeconds * 1000);
    quietness.push(q);
    const t = nowMs();
    process.stdout.write(`  ${what} ${q.quiet ? '' : `(machine ${fmt(q.busyBefore * 100, 0)}% busy before it!) `}... `);
    try {
      const r = await fn();
      log(`${fmt((nowMs() - t) / 1000, 1)} s`);
      if (r && typeof r === 'object' && !r.raw) r.busyBefore = q.busyBefore;
      return r;
    } catch (err) {
      log('FAILED');
      throw err;
    }
  };
  try {
    if (SECTIONS.includes('throughput')) {
      res.throughput = [];
      const { raw, recorded } = await step(`recording the workload stream for the raw reference`, rawRecord);
      res.rawRecording = recorded;
      try {
        for (const n of CONFIG.ns) {
          res.throughput.push(await step(`throughput raw N=${n}`, () => rawRun(sink, raw, n)));
          for (const k of topologiesFor('throughput')) res.throughput.push(await step(`throughput ${k} N=${n}`, () => throughputRun(sink, k, n)));
        }
      } finally {
        await raw.stop();
      }
      for (const { n, requests } of CONFIG.extraThroughput.filter((x) => CONFIG.ns.includes(x.n))) {
        for (const k of topologiesFor('throughput')) {
          res.throughput.push(await step(`throughput ${k} N=${n} -n ${requests}`, () => throughputRun(sink, k, n, requests)));
        }
      }
      const ns = CONFIG.ns;
      if (ns.length > 1) {
        res.perReplicaMemory = {};
        for (const k of topologiesFor('throughput')) {
          const a = res.throughput.find((r) => r.topology === k && r.n === ns[0]);
          const b = res.throughput.find((r) => r.topology === k && r.n === ns[ns.length - 1]);
          if (!a || !b) continue;
          res.perReplicaMemory[k] = {
            idleRssBytesPerReplica: (b.rss.idle - a.rss.idle) / (b.n - a.n),
            peakRssBytesPerReplica: (b.rss.peak - a.rss.peak) / (b.n - a.n),
            usedMemoryIdleBytesPerReplica: a.usedMemory && b.usedMemory ? (b.usedMemory.idle - a.usedMemory.idle) / (b.n - a.n) : null,
          };
        }
      }
    }
    if (SECTIONS.includes('latency')) {
      res.latency = [];
      // Repeats run round-robin over the topologies, so a burst of outside load hits one repeat, not one topology;
      // each row is the repeat with the median p99 (all repeats are in the JSON).
      for (const n of CONFIG.ns) {
        const runs = new Map(topologiesFor('latency').map((k) => [k, []]));
        for (let rep = 1; rep <= CONFIG.latencyRepeats; rep++) {
          for (const k of runs.keys()) {
            runs.get(k).push(await step(`latency ${k} N=${n}${CONFIG.latencyRepeats > 1 ? ` #${rep}` : ''}`, () => latencyRun(sink, k, n)));
          }
        }
        for (const [, list] of runs) {
          const sorted = [...list].sort((a, b) => a.latencyUs.p99 - b.latencyUs.p99);
          const pick = { ...sorted[Math.floor((sorted.length - 1) / 2)] };
          if (list.length > 1) pick.repeats = list.map((r) => ({ latencyUs: r.latencyUs, samples: r.samples, forwarderCpuPercent: r.forwarderCpuPercent, busyBefore: r.busyBefore }));
          res.latency.push(pick);
        }
      }
    }
    if (SECTIONS.includes('frozen')) {
      res.frozen = [];
      for (const k of topologiesFor('frozen')) res.frozen.push(await step(`frozen replica ${k}`, () => frozenRun(sink, k)));
    }
    if (SECTIONS.includes('fullsync')) {
      res.fullSync = [];
      for (const k of topologiesFor('fullsync')) res.fullSync.push(await step(`full-sync fan-out ${k}`, () => fullSyncRun(sink, k)));
    }
  } finally {
    await sink.stop();
  }
  res.meta.totalSeconds = (nowMs() - started) / 1000;
  res.meta.quietCheck = {
    stepsStartedBusy: quietness.filter((q) => !q.quiet).length,
    steps: quietness.length,
    maxBusyBefore: Math.max(0, ...quietness.map((q) => q.busyBefore)),
    waitedSeconds: quietness.reduce((a, q) => a + q.waitedSeconds, 0),
    loadavgAtEnd: os.loadavg().map((x) => +x.toFixed(2)),
  };
  if (res.meta.quietCheck.stepsStartedBusy) log(`WARNING: ${res.meta.quietCheck.stepsStartedBusy} of ${quietness.length} steps started on a busy machine (other processes; rows marked *); their numbers are skewed`);
  const { ratios: rt, text } = report(res);
  res.ratios = rt;
  if (res.perReplicaMemory) {
    log('\nPer-replica memory (from N=' + CONFIG.ns[0] + ' to N=' + CONFIG.ns[CONFIG.ns.length - 1] + '), KiB per replica:');
    for (const [k, v] of Object.entries(res.perReplicaMemory)) {
      log(`  ${LABEL[k].padEnd(20)} RSS idle ${fmt(v.idleRssBytesPerReplica / 1024, 0)}, RSS peak under load ${fmt(v.peakRssBytesPerReplica / 1024, 0)}${v.usedMemoryIdleBytesPerReplica !== null ? `, used_memory idle ${fmt(v.usedMemoryIdleBytesPerReplica / 1024, 0)}` : ''}`);
    }
  }
  const errors = [...(res.throughput ?? []), ...(res.latency ?? [])].filter((r) => r.error);
  for (const r of res.throughput ?? []) if (r.drops) r.error = `${r.error}; reasons: ${r.drops.reasons.join(' | ')}`;
  for (const e of errors) log(`NOTE ${e.topology} N=${e.n}${e.requests && e.requests !== CONFIG.requests ? ` -n ${e.requests}` : ''}: ${e.error}`);
  if (!flag('--no-save')) {
    const dir = join(BENCH, 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${res.meta.date.replace(/[:.]/g, '-')}-${res.meta.mode}.json`);
    const json = JSON.stringify(res, (k, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(6)) : v), 1) + '\n';
    writeFileSync(`${file}.tmp`, json);
    renameSync(`${file}.tmp`, file);
    log(`\nresults: ${relative(process.cwd(), file)} (${fmt(res.meta.totalSeconds, 0)} s)`);
  }
}

main().then(
  () => {
    cleanupAll();
    process.exit(0);
  },
  (err) => {
    console.error(`\nbench failed: ${err.stack ?? err}`);
    cleanupAll();
    process.exit(1);
  },
);
