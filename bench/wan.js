// WAN bench: a chain across a slow link, psync-relay (compressed relay-to-relay stream) vs redis-server.
//   relay chain: master → relay A → [throttle proxy] → relay B
//   redis chain: master → redis R1 → [throttle proxy] → redis R2
// The proxy (bench/lib/throttle-proxy.js) is the WAN: a token bucket per direction (default 50 Mbit/s) and a
// one-way delay (default 20 ms), with backpressure. For each workload (bench/lib/workloads.js) and chain:
//   live:     the workload at a steady rate for --live seconds; bytes on the link vs stream bytes
//   cut:      the link is cut (connections dropped, new ones refused) for --cut seconds while the workload goes
//             on, then restored; catch-up = restore → the far end holds everything written during the cut
// And the CPU cost of compressing for many replicas: relay A with N = 1, 10, 100 downstream connections that ask
// for compression (or not), a JSON stream as fast as the master takes it (bench/wan-sink.js).
//   node bench/wan.js [--quick] [--only link,cpu] [--workloads random,json,counters] [--chains redis,relay,relay-plain]
//                     [--mbit 50] [--delay-ms 20] [--live S] [--cut S] [--n 1,10,100] [--level 1] [--no-save]
//                     [--no-wait-quiet] [--report results/<file>.json]
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nowMs, sleep } from './lib/clock.js';
import { cleanupAll, cpuSeconds, forkHelper, memorySampler, rssBytes, startRedis, startRelay, waitQuiet } from './lib/procs.js';
import { NO_REPLICA_LIMIT, waitOffsetOf } from './lib/topology.js';
import { fmt, table } from './lib/report.js';
import { WORKLOAD_LABEL } from './lib/workloads.js';
import { list, parseArgs } from './lib/args.js';

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH);

const { argv, flag, opt } = parseArgs({
  flags: ['--quick', '--no-save', '--no-wait-quiet'],
  opts: ['--only', '--workloads', '--chains', '--mbit', '--delay-ms', '--live', '--cut', '--n', '--level', '--report'],
  usage: `node bench/wan.js [--quick] [--only link,cpu] [--workloads random,json,counters] [--chains redis,relay,relay-plain]
                  [--mbit 50] [--delay-ms 20] [--live S] [--cut S] [--n 1,10,100] [--level 1] [--no-save]
                  [--report results/<file>.json]
See bench/README.md.`,
});
const QUICK = flag('--quick');
const SECTIONS = list(opt('--only') ?? 'link,cpu');
const WORKLOADS = list(opt('--workloads') ?? 'random,json,counters');
const CHAINS = list(opt('--chains') ?? 'redis,relay');
const MBIT = Number(opt('--mbit') ?? 50);
const DELAY_MS = Number(opt('--delay-ms') ?? 20);
const LIVE_S = Number(opt('--live') ?? (QUICK ? 5 : 20));
const CUT_S = Number(opt('--cut') ?? (QUICK ? 10 : 60));
const CPU_NS = list(opt('--n') ?? '1,10,100').map(Number);
const LEVEL = Number(opt('--level') ?? 1);
/** Stream MB written per CPU run, by N (the relay compresses N times that). */
const CPU_MB = QUICK ? { 1: 20, 10: 10, 100: 4 } : { 1: 100, 10: 50, 100: 20 };
/** Stream bytes per second the workload writes (under the link's 6.25 MB/s, so both chains can keep up when it is up). */
const RATE_MB = { random: 3, json: 3, counters: 1 };
const QUIET_MS = flag('--no-wait-quiet') ? 0 : QUICK ? 10000 : 60000;
const log = (...a) => console.log(...a);

/** Every redis-server here: no replica output limit (a replica catching up over the slow link is never dropped) and a backlog that holds a whole cut. */
const REDIS_WAN = [...NO_REPLICA_LIMIT, '--repl-backlog-size', '1gb'];

/** Relay config: long timeouts as in the other scenarios; reconnect at most 1 s apart, as a Redis replica's cron does. */
function relayYaml({ compression = 'on', level = LEVEL } = {}) {
  return `upstream:\n  timeout: 3600\n  backoff-min: 100ms\n  backoff-max: 1s\n  compression: ${compression}\n  compression-level: ${level}\nreplication:\n  replica-timeout: 3600\n`;
}

const CHAIN_LABEL = { redis: 'redis chain', relay: 'relay chain', 'relay-plain': 'relay chain, compression off' };

async function chain(kind, proxy) {
  const master = await startRedis('master', REDIS_WAN);
  const nodes = [master];
  try {
    const mid = kind === 'redis' ? await startRedis('R1', ['--replicaof', '127.0.0.1', String(master.port), ...REDIS_WAN]) : await startRelay(master.port, ROOT, { yaml: relayYaml() });
    nodes.push(mid);
    await mid.waitLinkUp();
    const { port } = await proxy.call('start', { targetPort: mid.port, mbit: MBIT, delayMs: DELAY_MS });
    const far =
      kind === 'redis'
        ? await startRedis('R2', ['--replicaof', '127.0.0.1', String(port), ...REDIS_WAN])
        : await startRelay(port, ROOT, { yaml: relayYaml({ compression: kind === 'relay' ? 'on' : 'off' }) });
    nodes.push(far);
    await far.waitLinkUp();
    return { master, mid, far, stop: () => Promise.all(nodes.reverse().map((n) => n.stop())) };
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw err;
  }
}

async function linkRun(workload, kind) {
  const quiet = await waitQuiet(QUIET_MS);
  const load0 = os.loadavg()[0];
  const proxy = forkHelper(join(BENCH, 'lib/throttle-proxy.js'));
  const writer = forkHelper(join(BENCH, 'wan-writer.js'));
  let topo = null;
  try {
    topo = await chain(kind, proxy);
    const { master, mid, far } = topo;
    const rateBps = RATE_MB[workload] * 1e6;
    // Live: the link is up, the workload runs at its rate.
    const c0 = await proxy.call('counters');
    const off0 = await master.offset();
    await writer.call('start', { port: master.port, workload, rateBps });
    await sleep(LIVE_S * 1000);
    await writer.call('stop');
    const offLive = await master.offset();
    await waitOffsetOf(far, offLive, 300000);
    const c1 = await proxy.call('counters');
    // Cut: writes go on; the link is down for CUT_S, then restored.
    await writer.call('start', { port: master.port, workload, rateBps, seed: 7 });
    await proxy.call('cut');
    const cutAt = await master.offset();
    await sleep(CUT_S * 1000);
    const target = await master.offset();
    const c2 = await proxy.call('counters');
    const cpu0 = { mid: cpuSeconds(mid.pid), far: cpuSeconds(far.pid) };
    await proxy.call('restore');
    const t0 = nowMs();
    await waitOffsetOf(far, target, 1800000);
    const catchUpSeconds = (nowMs() - t0) / 1000;
    const c3 = await proxy.call('counters');
    const cpu = { mid: cpuSeconds(mid.pid) - cpu0.mid, far: cpuSeconds(far.pid) - cpu0.far };
    await writer.call('stop');
    const end = await master.offset();
    await waitOffsetOf(far, end, 1800000);
    return {
      workload,
      kind,
      busyBefore: quiet?.busyBefore ?? null,
      loadavg: [load0, os.loadavg()[0]],
      live: { seconds: LIVE_S, streamBytes: offLive - off0, down: c1.down - c0.down, up: c1.up - c0.up },
      cut: { seconds: CUT_S, backlogBytes: target - cutAt, catchUpSeconds, down: c3.down - c2.down, up: c3.up - c2.up, cpu },
      endOffsetsEqual: (await far.offset()) === end,
    };
  } finally {
    await topo?.stop();
    await proxy.stop();
    await writer.stop();
  }
}

async function cpuRun(n, level) {
  const quiet = await waitQuiet(QUIET_MS);
  const master = await startRedis('master', REDIS_WAN);
  const a = await startRelay(master.port, ROOT, { yaml: relayYaml() });
  const sink = forkHelper(join(BENCH, 'wan-sink.js'));
  const writer = forkHelper(join(BENCH, 'wan-writer.js'));
  try {
    await a.waitLinkUp();
    const { compressed } = await sink.call('connect', { port: a.port, n, level });
    // Time PINGs to A during the run: its event loop must stay responsive while it compresses.
    const probe = { max: 0, stop: false };
    const probing = (async () => {
      while (!probe.stop) {
        const t = nowMs();
        await a.call(['PING']);
        probe.max = Math.max(probe.max, nowMs() - t);
        await sleep(20);
      }
    })();
    const w0 = await sink.call('counters');
    const rss0 = rssBytes(a.pid);
    const mem = memorySampler([a.pid]);
    const cpu0 = cpuSeconds(a.pid);
    const t0 = nowMs();
    const mb = CPU_MB[n] ?? CPU_MB[100];
    await writer.call('start', { port: master.port, workload: 'json', maxBytes: mb * 1e6 });
    await writer.call('done', {}, 1800000);
    const target = await master.offset();
    const { at } = await sink.call('waitOffset', { target }, 1800000);
    const cpu = cpuSeconds(a.pid) - cpu0;
    const rssPeak = mem.stop().peakRss[a.pid];
    probe.stop = true;
    await probing;
    const w1 = await sink.call('counters');
    const seconds = (at - t0) / 1000;
    const stream = (w1.raw - w0.raw) / n;
    return { n, level, compressed, busyBefore: quiet?.busyBefore ?? null, streamBytes: stream, seconds, cpuSeconds: cpu, wireBytes: (w1.wire - w0.wire) / n, pingMaxMs: probe.max, rssBefore: rss0, rssPeak };
  } finally {
    await sink.call('close').catch(() => {});
    await sink.stop();
    await writer.stop();
    await a.stop();
    await master.stop();
  }
}

// ---------------------------------------------------------------- tables
const MB = 1e6;
const ratio = (a, b) => (a && b ? a / b : null);
const x = (v) => (v === null ? '-' : `${fmt(v, 2)}x`);
const busy = (r) => (r.busyBefore !== null && r.busyBefore >= 0.15 ? ' *' : '');

function linkTables(runs) {
  const rows = [];
  for (const w of WORKLOADS) {
    const redis = runs.find((r) => r.workload === w && r.kind === 'redis');
    for (const r of runs.filter((q) => q.workload === w)) {
      rows.push([
        w,
        `${CHAIN_LABEL[r.kind]}${busy(r)}`,
        fmt(r.live.streamBytes / MB, 1),
        fmt(r.live.down / MB, 2),
        fmt(r.live.down / r.live.streamBytes, 3),
        r.kind === 'redis' || !redis ? '-' : x(ratio(r.live.down / r.live.streamBytes, redis.live.down / redis.live.streamBytes)),
        fmt(r.cut.backlogBytes / MB, 1),
        fmt(r.cut.down / MB, 1),
        fmt(r.cut.catchUpSeconds, 1),
        r.kind === 'redis' ? '-' : x(ratio(redis?.cut.catchUpSeconds, r.cut.catchUpSeconds)),
        fmt(r.cut.cpu.mid, 1),
        fmt(r.cut.cpu.far, 1),
        r.endOffsetsEqual ? 'yes' : 'NO',
      ]);
    }
  }
  return table(
    `WAN link: ${MBIT} Mbit/s each way, ${DELAY_MS} ms one-way delay; live ${LIVE_S} s, then a ${CUT_S} s cut with the workload going on (rates: ${WORKLOADS.map((w) => `${w} ${RATE_MB[w]} MB/s`).join(', ')})`,
    ['workload', 'chain', 'live stream MB', 'link MB', 'link/stream', 'vs redis', 'cut backlog MB', 'catch-up link MB', 'catch-up s', 'sooner', 'CPU s sender', 'CPU s receiver', 'offsets equal'],
    rows,
  );
}

function targetsTable(runs) {
  const get = (w, k) => runs.find((r) => r.workload === w && r.kind === k);
  const rows = [];
  const check = (label, w, value, target, ok) => rows.push([label, w, value === null ? '-' : x(value), target, value === null ? '' : ok(value) ? 'ok' : 'MISS']);
  // Per byte of stream (the two chains' writers produce nearly, not exactly, the same stream).
  const live = (r) => r.live.down / r.live.streamBytes;
  const cut = (r) => r.cut.down / r.cut.backlogBytes;
  if (get('json', 'redis') && get('json', 'relay')) check('bytes on the link per stream byte, live: relay / redis', 'json', ratio(live(get('json', 'relay')), live(get('json', 'redis'))), '<= 0.4x', (v) => v <= 0.4);
  if (get('random', 'redis') && get('random', 'relay')) {
    check('bytes on the link per stream byte, live: relay / redis', 'random', ratio(live(get('random', 'relay')), live(get('random', 'redis'))), '<= 1.02x', (v) => v <= 1.02);
    check('bytes on the link per stream byte, catch-up: relay / redis', 'random', ratio(cut(get('random', 'relay')), cut(get('random', 'redis'))), '<= 1.02x', (v) => v <= 1.02);
  }
  for (const w of ['json', 'counters', 'random']) {
    const r = get(w, 'relay');
    const d = get(w, 'redis');
    if (r && d) check(`catch-up after a ${CUT_S} s cut: redis s / relay s`, w, ratio(d.cut.catchUpSeconds, r.cut.catchUpSeconds), w === 'random' ? '(none)' : '>= 2x', (v) => w === 'random' || v >= 2);
  }
  return table('WAN targets (relay chain vs redis chain, same run)', ['check', 'workload', 'ratio', 'target', 'result'], rows);
}

function cpuTable(runs) {
  return table(
    `Compressing for N replicas: relay A, JSON stream as fast as the master takes it, each replica asking for level ${LEVEL} (or plain)`,
    ['mode', 'N', 'stream MB', 'time s', 'delivered MB/s', 'CPU s', 'CPU s/GB in', 'cores', 'wire/stream', 'PING max ms', 'RSS MiB before / peak'],
    runs.map((r) => [
      `${r.level > 0 ? `z1 level ${r.level}` : 'plain'}${busy(r)}`,
      r.n,
      fmt(r.streamBytes / MB, 1),
      fmt(r.seconds, 1),
      fmt((r.streamBytes * r.n) / MB / r.seconds, 0),
      fmt(r.cpuSeconds, 1),
      fmt(r.cpuSeconds / (r.streamBytes / 1e9), 1),
      fmt(r.cpuSeconds / r.seconds, 2),
      fmt(r.wireBytes / r.streamBytes, 3),
      fmt(r.pingMaxMs, 0),
      r.rssPeak ? `${fmt(r.rssBefore / 1048576, 0)} / ${fmt(r.rssPeak / 1048576, 0)}` : '-',
    ]),
  );
}

function printAll(res) {
  if (res.link?.length) {
    log(linkTables(res.link));
    log(targetsTable(res.link));
  }
  if (res.cpu?.length) log(cpuTable(res.cpu));
  log(`\n* = the machine was busy (>= 15% CPU) before the step. Load average ${res.meta.loadavg.map((l) => fmt(l, 1)).join(' -> ')}.`);
}

// ---------------------------------------------------------------- main
if (opt('--report')) {
  printAll(JSON.parse(readFileSync(opt('--report'), 'utf8')));
  process.exit(0);
}

const started = nowMs();
const res = {
  meta: { date: new Date().toISOString(), quick: QUICK, mbit: MBIT, delayMs: DELAY_MS, liveS: LIVE_S, cutS: CUT_S, level: LEVEL, cpus: os.cpus().length, node: process.version, loadavg: [os.loadavg()[0]] },
  link: [],
  cpu: [],
};
try {
  if (SECTIONS.includes('link')) {
    for (const w of WORKLOADS) {
      for (const kind of CHAINS) {
        log(`link: ${WORKLOAD_LABEL[w] ?? w}, ${CHAIN_LABEL[kind]} ...`);
        const r = await linkRun(w, kind);
        log(`  live ${fmt(r.live.down / MB, 2)} MB on the link for ${fmt(r.live.streamBytes / MB, 1)} MB of stream; catch-up ${fmt(r.cut.catchUpSeconds, 1)} s for ${fmt(r.cut.backlogBytes / MB, 1)} MB`);
        res.link.push(r);
      }
    }
  }
  if (SECTIONS.includes('cpu')) {
    for (const level of [0, LEVEL]) {
      for (const n of CPU_NS) {
        log(`cpu: N = ${n}, ${level > 0 ? `compressed (level ${level})` : 'plain'} ...`);
        const r = await cpuRun(n, level);
        log(`  ${fmt(r.seconds, 1)} s, relay CPU ${fmt(r.cpuSeconds, 1)} s, PING max ${fmt(r.pingMaxMs, 0)} ms`);
        res.cpu.push(r);
      }
    }
  }
} finally {
  cleanupAll();
}
res.meta.loadavg.push(os.loadavg()[0]);
res.meta.seconds = (nowMs() - started) / 1000;
printAll(res);
if (!flag('--no-save')) {
  const dir = join(BENCH, 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${res.meta.date.replace(/[:.]/g, '-')}-wan${QUICK ? '-quick' : ''}.json`);
  writeFileSync(file, JSON.stringify(res, null, 2));
  log(`\nsaved ${relative(ROOT, file)} (${fmt(res.meta.seconds, 0)} s)`);
}
