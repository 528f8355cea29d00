// psync-relay benchmark: the relay vs a redis-server intermediate replica doing the same job in the same run,
// with one sink process as the downstream replicas and a probe process timing PING/INFO. See bench/README.md.
//   node bench/run.js [--quick] [--only fanout,drain,idle,micro|latency,frozen,fullsync|all] [--n 1,10,100,1000]
//                     [--repeats K] [--requests R] [--topologies redis,relay,relay-mem,direct,c-ref] [--profile]
//                     [--warm] [--no-raw] [--no-probe] [--no-save] [--no-wait-quiet] [--report results/<file>.json]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nowMs } from './lib/clock.js';
import { CREF_CFLAGS, buildCRef, cleanupAll, forkHelper, runCommand, waitQuiet } from './lib/procs.js';
import { findProfile, topSelfTime } from './lib/profile.js';
import { drainTable, fanoutTable, fmt, idleTable, microTable, table, targetsTable } from './lib/report.js';
import { LABEL, TOPOLOGY_KINDS, isRelay } from './lib/topology.js';
import { drainRun } from './scenarios/drain.js';
import { fanoutRun, rawRecord, rawRun } from './scenarios/fanout.js';
import { idleRun } from './scenarios/idle.js';
import { frozenRun, frozenTable, fullSyncRun, fullSyncTable, latencyRun, latencyTable } from './scenarios/legacy.js';
import { list, parseArgs } from './lib/args.js';

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(BENCH);

// ---------------------------------------------------------------- options
const { argv, flag, opt } = parseArgs({
  flags: ['--quick', '--profile', '--warm', '--no-raw', '--no-probe', '--no-save', '--no-wait-quiet'],
  opts: ['--only', '--n', '--repeats', '--requests', '--topologies', '--report'],
  usage: `node bench/run.js [--quick] [--only fanout,drain,idle,micro|latency,frozen,fullsync|all] [--n 1,10,100,1000]
                  [--repeats K] [--requests R] [--topologies redis,relay,relay-mem,direct,c-ref] [--profile]
                  [--warm] [--no-raw] [--no-probe] [--no-save] [--no-wait-quiet] [--report results/<file>.json]
--topologies: default redis,relay. c-ref = bench/c-ref/relay.c (built with gcc at start), a minimal C relay as the
ceiling for fanout, drain and idle (not the latency/frozen/fullsync sections): no disk, the whole stream in memory,
no partial resync, no parsing of the stream. A benchmark reference, not a product.
See bench/README.md.`,
});
const QUICK = flag('--quick');
const DEFAULT_SECTIONS = ['fanout', 'drain', 'idle', 'micro'];
const LEGACY_SECTIONS = ['latency', 'frozen', 'fullsync'];
const onlyOpt = opt('--only');
const SECTIONS = !onlyOpt ? DEFAULT_SECTIONS : onlyOpt === 'all' ? [...DEFAULT_SECTIONS, ...LEGACY_SECTIONS] : list(onlyOpt);
for (const s of SECTIONS) if (![...DEFAULT_SECTIONS, ...LEGACY_SECTIONS].includes(s)) throw new Error(`unknown section ${s}`);

// Stream sizes: issue 15's 500,000 SETs of 1 KiB (~535 MB); a smaller stream at N = 1,000 (20,000: ~21 MB).
const CFG = QUICK
  ? {
      fanout: { ns: [1, 10, 100, 1000], requests: { 1: 100000, 10: 100000, 100: 20000, 1000: 5000 } },
      drain: { ns: [1, 10, 100], requests: 30000 },
      idle: { n: 1000 },
      repeats: 1,
    }
  : {
      fanout: { ns: [1, 10, 100, 1000], requests: { 1: 500000, 10: 500000, 100: 500000, 1000: 20000 } },
      drain: { ns: [1, 10, 100], requests: 200000 },
      idle: { n: 1000 },
      repeats: 2,
    };
CFG.probe = { pingMs: 10, infoMs: 20, offsetMs: 10, info: ['INFO'] };
// --no-probe: no PING/INFO (to see what probing costs); the master's offset is still sampled for the lag.
if (flag('--no-probe')) Object.assign(CFG.probe, { pingMs: 0, infoMs: 0 });
// --warm: fan-out measures a second burst of the same workload on the same processes (both forwarders warm: JIT
// compiled, log and backlog memory touched once), as a long-running forwarder would meet it.
CFG.warmBurst = flag('--warm');
CFG.legacy = QUICK
  ? { ns: [1, 10], latencyRate: 2000, latencyMs: 3000, latencyRepeats: 1, frozenN: 3, frozenRequests: 300000, fullSyncKeys: 250000, joiners: 10 }
  : { ns: [1, 10, 100], latencyRate: 2000, latencyMs: 4000, latencyRepeats: 3, frozenN: 5, frozenRequests: 400000, fullSyncKeys: 1000000, joiners: 10 };
if (opt('--n')) {
  const ns = list(opt('--n')).map(Number);
  CFG.fanout.ns = ns;
  CFG.drain.ns = ns;
  CFG.idle.n = Math.max(...ns);
  CFG.legacy.ns = ns;
}
if (opt('--repeats')) CFG.repeats = Number(opt('--repeats'));
const requestsFor = (n) => Number(opt('--requests') ?? CFG.fanout.requests[n] ?? (n >= 1000 ? CFG.fanout.requests[1000] : CFG.fanout.requests[1]));
if (opt('--requests')) CFG.drain.requests = Number(opt('--requests'));
const TOPOLOGIES = list(opt('--topologies') ?? 'redis,relay');
for (const k of TOPOLOGIES) {
  if (!TOPOLOGY_KINDS.includes(k)) {
    process.stderr.write(`unknown topology ${k}: one of ${TOPOLOGY_KINDS.join(', ')}\n`);
    process.exit(2);
  }
}
const PROFILE = flag('--profile');

const log = (...a) => console.log(...a);

// ---------------------------------------------------------------- profiling
const STAMP = new Date().toISOString().replace(/[:.]/g, '-');
const PROFILE_DIR = join(BENCH, 'results', 'profiles', STAMP);
let profileSeq = 0;
const profiles = [];
const pendingProfiles = new Map();
/** Text printed after the current step's line (profiles). */
const deferred = [];

/** Node flags for a relay started for `label`: --cpu-prof into its own directory when --profile is on. */
function relayNodeArgs(kind, label) {
  if (!PROFILE || !isRelay(kind)) return [];
  const dir = join(PROFILE_DIR, `${String(++profileSeq).padStart(2, '0')}-${label}`);
  mkdirSync(dir, { recursive: true });
  pendingProfiles.set(label, dir);
  return ['--cpu-prof', `--cpu-prof-dir=${dir}`];
}

/** After the relay of `label` exited: the top 20 self-time functions of its profile, printed. */
function collectProfile(kind, label) {
  const dir = pendingProfiles.get(label);
  if (!dir) return null;
  pendingProfiles.delete(label);
  const file = findProfile(dir);
  if (!file) {
    log(`\n  no .cpuprofile in ${relative(ROOT, dir)} (did the relay exit cleanly?)`);
    return null;
  }
  const p = topSelfTime(file, { root: ROOT });
  const rows = p.top.map((f, i) => [i + 1, f.name, fmt(f.selfMs, 1), fmt(f.selfPct, 1), fmt(f.totalMs, 1), f.where]);
  deferred.push(table(`CPU profile of the relay, ${label}: ${relative(ROOT, file)} (busy ${fmt(p.busyMs / 1000, 2)} s of ${fmt(p.totalMs / 1000, 2)} s; % of busy)`, ['#', 'function', 'self ms', 'self %', 'total ms', 'where'], rows));
  const entry = { label, file: relative(ROOT, file), busyMs: p.busyMs, totalMs: p.totalMs, top: p.top };
  profiles.push(entry);
  return entry;
}

// ---------------------------------------------------------------- micro
async function microRun() {
  const out = [];
  for (const script of ['scanner.js', 'log.js', 'request-parser.js']) {
    const stdout = await runCommand(process.execPath, [join(BENCH, 'micro', script), '--json', ...(QUICK ? ['--quick'] : [])], 600000);
    out.push(JSON.parse(stdout.trim().split('\n').pop()));
  }
  return out;
}

function meta() {
  /** What a command printed, trimmed; null when it failed. */
  const output = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8' }).trim();
    } catch {
      return null;
    }
  };
  const git = (args) => output('git', args);
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    command: `node bench/run.js ${argv.join(' ')}`.trim(),
    mode: QUICK ? 'quick' : onlyOpt || opt('--n') || CFG.warmBurst ? 'partial' : 'full',
    machine: { cpus: cpus.length, cpuModel: cpus[0]?.model ?? '?', memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1), kernel: os.release(), arch: os.arch(), loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)) },
    node: process.version,
    redis: execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim(),
    relay: { version: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version, commit: git(['rev-parse', '--short', 'HEAD']), srcDirty: (git(['status', '--porcelain', 'src']) ?? '') !== '' },
    config: { ...CFG, topologies: TOPOLOGIES, sections: SECTIONS, profile: PROFILE },
    ...(TOPOLOGIES.includes('c-ref') ? { cref: { source: 'bench/c-ref/relay.c', gcc: output('gcc', ['--version'])?.split('\n')[0] ?? null, cflags: CREF_CFLAGS.join(' ') } } : {}),
    limits: {
      issue15: 'master and redis intermediate: client-output-buffer-limit replica 0 0 0; relay: defaults (log.memory 64mb, log.disk 1gb); repl-backlog-size 64mb',
      legacy: 'backlog / log.memory 64mb; client-output-buffer-limit replica 256mb 256mb 0 / replica-max-lag 256mb',
      everywhere: 'repl-diskless-sync-delay 0, repl-ping-replica-period 3600, repl-timeout 3600 (relay: upstream.timeout, replica-timeout 3600)',
    },
  };
}

/** Everything printed for a result object (also used by --report to reprint a saved file). */
function printReport(res, { sections = true } = {}) {
  const text = [];
  const repeats = res.meta?.config?.repeats;
  if (!sections) {
    // The section tables were printed as each section ended.
  } else if (res.fanout?.length) text.push(fanoutTable([...(res.fanoutRaw ?? []), ...res.fanout].sort((a, b) => a.n - b.n), { repeats }));
  if (sections) {
    if (res.drain?.length) text.push(drainTable(res.drain, { repeats }));
    if (res.idle?.length) text.push(idleTable(res.idle));
    if (res.micro?.length) text.push(microTable(res.micro));
    if (res.latency?.length) text.push(latencyTable(res.latency));
    if (res.frozen?.length) text.push(frozenTable(res.frozen));
    if (res.fullSync?.length) text.push(fullSyncTable(res.fullSync));
  }
  for (const kind of ['relay', 'relay-mem']) {
    const t = targetsTable(res, kind);
    if (t) text.push(t);
  }
  const notes = [];
  const runs = [...(res.fanout ?? []), ...(res.drain ?? []), ...(res.idle ?? [])];
  for (const r of runs) {
    if (r.error) notes.push(`NOTE ${r.scenario} ${LABEL[r.topology]} N=${r.n}: ${r.error}${r.drops ? `; reasons: ${r.drops.reasons.join(' | ')}` : ''}`);
    if (r.probe?.errors?.length) notes.push(`NOTE ${r.scenario} ${LABEL[r.topology]} N=${r.n}: probe: ${r.probe.errors.join('; ')}`);
  }
  // The probe's own 2 ms timer firing late means the probe was starved of CPU: its round trips are inflated.
  const late = runs.filter((r) => r.probe?.probeTimerLateMaxMs > 50);
  if (late.length) {
    const worst = Math.max(...late.map((r) => r.probe.probeTimerLateMaxMs));
    notes.push(`NOTE the probe itself was starved of CPU in ${late.length} of ${runs.length} runs (its timer up to ${fmt(worst, 0)} ms late): PING/INFO times there include that much of the probe's own delay`);
  }
  const q = res.meta?.quietCheck;
  if (q?.stepsStartedBusy) notes.push(`WARNING: ${q.stepsStartedBusy} of ${q.steps} steps started on a busy machine (rows marked *): their numbers are skewed`);
  const out = [...text, ...(notes.length ? ['', ...notes] : [])].join('\n');
  log(out);
  return out;
}

// ---------------------------------------------------------------- main
async function main() {
  if (opt('--report')) {
    printReport(JSON.parse(readFileSync(opt('--report'), 'utf8')));
    return;
  }
  if (!existsSync(join(ROOT, 'dist/main.js'))) throw new Error('dist/main.js missing: run `npm run build` first (npm run bench does)');
  const started = nowMs();
  // The C reference is compiled before anything runs (a compile error fails the run at once, not mid-way).
  if (TOPOLOGIES.includes('c-ref')) await buildCRef();
  const res = { meta: meta() };
  log(`psync-relay benchmark (${res.meta.mode}${PROFILE ? ', relay profiled' : ''}): ${res.meta.machine.cpus} cores ${res.meta.machine.cpuModel}, ${res.meta.node}, ${res.meta.redis.split(' ').slice(0, 3).join(' ')}, relay ${res.meta.relay.commit}${res.meta.relay.srcDirty ? ' (src modified)' : ''}`);
  log(`sections ${SECTIONS.join(',')}; topologies ${TOPOLOGIES.join(',')}; ${CFG.repeats} run(s) each`);
  const sink = forkHelper(join(BENCH, 'sink.js'));
  const probe = forkHelper(join(BENCH, 'probe.js'));
  const ctx = { root: ROOT, bench: BENCH, sink, probe, cfg: CFG, relayNodeArgs, collectProfile };
  // Other work on the machine skews everything: before each step, wait (bounded) until the CPUs are idle.
  // Bounded per step and in total (quick: 10 s / 20 s, full: 60 s / 180 s).
  let quietBudgetMs = flag('--no-wait-quiet') ? 0 : QUICK ? 20000 : 180000;
  const maxQuietWaitMs = QUICK ? 10000 : 60000;
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
      for (const text of deferred.splice(0)) log(text);
      if (r && typeof r === 'object' && !Array.isArray(r) && !r.raw) r.busyBefore = q.busyBefore;
      return r;
    } catch (err) {
      log('FAILED');
      throw err;
    }
  };
  const repeat = async (name, kinds, fn) => {
    const out = [];
    // Repeats run round-robin over the topologies, so a burst of outside load hits one repeat, not one topology.
    for (let rep = 1; rep <= CFG.repeats; rep++) {
      for (const k of kinds) {
        const r = await step(`${name} ${k}${CFG.repeats > 1 ? ` #${rep}` : ''}`, () => fn(k));
        r.rep = rep;
        out.push(r);
      }
    }
    return out;
  };
  try {
    if (SECTIONS.includes('fanout')) {
      res.fanout = [];
      res.fanoutRaw = [];
      // The raw reference per stream size: record once, then serve it at each N of that size.
      if (!flag('--no-raw')) {
        const bySize = new Map();
        for (const n of CFG.fanout.ns) bySize.set(requestsFor(n), [...(bySize.get(requestsFor(n)) ?? []), n]);
        for (const [requests, ns] of bySize) {
          const { raw } = await step(`recording -n ${requests} for the raw reference`, () => rawRecord(ctx, requests));
          try {
            for (const n of ns) res.fanoutRaw.push(await step(`fanout raw N=${n}`, () => rawRun(ctx, raw, n, requests)));
          } finally {
            await raw.stop();
          }
        }
      }
      for (const n of CFG.fanout.ns) res.fanout.push(...(await repeat(`fanout N=${n} -n ${requestsFor(n)}`, TOPOLOGIES, (k) => fanoutRun(ctx, k, n, requestsFor(n)))));
      log(fanoutTable([...res.fanoutRaw, ...res.fanout].sort((a, b) => a.n - b.n), { repeats: CFG.repeats }));
    }
    if (SECTIONS.includes('drain')) {
      res.drain = [];
      for (const n of CFG.drain.ns) res.drain.push(...(await repeat(`drain N=${n} -n ${CFG.drain.requests}`, TOPOLOGIES.filter((k) => k !== 'direct'), (k) => drainRun(ctx, k, n, CFG.drain.requests))));
      log(drainTable(res.drain, { repeats: CFG.repeats }));
    }
    if (SECTIONS.includes('idle')) {
      res.idle = [];
      res.idle.push(...(await repeat(`idle N=${CFG.idle.n}`, TOPOLOGIES, (k) => idleRun(ctx, k, CFG.idle.n))));
      log(idleTable(res.idle));
    }
    if (SECTIONS.includes('micro')) {
      res.micro = await step('microbenchmarks (scanner, log, request parser)', microRun);
      log(microTable(res.micro));
    }
    const legacyKinds = (all) => all.filter((k) => !opt('--topologies') || TOPOLOGIES.includes(k));
    if (SECTIONS.includes('latency')) {
      res.latency = [];
      for (const n of CFG.legacy.ns) {
        const runs = new Map(legacyKinds(['direct', 'redis', 'relay', 'relay-mem']).map((k) => [k, []]));
        for (let rep = 1; rep <= CFG.legacy.latencyRepeats; rep++) {
          for (const k of runs.keys()) runs.get(k).push(await step(`latency ${k} N=${n} #${rep}`, () => latencyRun(ctx, k, n)));
        }
        // Each row is the repeat with the median p99 (all repeats are in the JSON).
        for (const [, l] of runs) {
          const sorted = [...l].sort((a, b) => a.latencyUs.p99 - b.latencyUs.p99);
          res.latency.push({ ...sorted[Math.floor((sorted.length - 1) / 2)], repeats: l.map((r) => ({ latencyUs: r.latencyUs, samples: r.samples, busyBefore: r.busyBefore })) });
        }
      }
    }
    if (SECTIONS.includes('frozen')) {
      res.frozen = [];
      for (const k of legacyKinds(['direct', 'redis', 'relay', 'relay-mem'])) res.frozen.push(await step(`frozen replica ${k}`, () => frozenRun(ctx, k)));
    }
    if (SECTIONS.includes('fullsync')) {
      res.fullSync = [];
      for (const k of legacyKinds(['direct', 'redis', 'relay'])) res.fullSync.push(await step(`full-sync fan-out ${k}`, () => fullSyncRun(ctx, k)));
    }
    if (res.latency) log(latencyTable(res.latency));
    if (res.frozen) log(frozenTable(res.frozen));
    if (res.fullSync) log(fullSyncTable(res.fullSync));
  } finally {
    await sink.stop();
    await probe.stop();
  }
  if (profiles.length) res.profiles = profiles;
  res.meta.totalSeconds = (nowMs() - started) / 1000;
  res.meta.quietCheck = {
    stepsStartedBusy: quietness.filter((q) => !q.quiet).length,
    steps: quietness.length,
    maxBusyBefore: Math.max(0, ...quietness.map((q) => q.busyBefore)),
    waitedSeconds: quietness.reduce((a, q) => a + q.waitedSeconds, 0),
    loadavgAtEnd: os.loadavg().map((x) => +x.toFixed(2)),
  };
  printReport(res, { sections: false });
  if (!flag('--no-save')) {
    const dir = join(BENCH, 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${STAMP}-${res.meta.mode}${PROFILE ? '-profile' : ''}.json`);
    const json = JSON.stringify(res, (k, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(6)) : v), 1) + '\n';
    writeFileSync(`${file}.tmp`, json);
    renameSync(`${file}.tmp`, file);
    log(`\nresults: ${relative(process.cwd(), file)} (${fmt(res.meta.totalSeconds, 0)} s)`);
  } else log(`\n(${fmt(res.meta.totalSeconds, 0)} s)`);
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
