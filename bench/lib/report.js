// Tables for the issue-15 scenarios: repeats combined (medians; maxima for worst-case columns), ratios against
// the redis intermediate of the same run with the issue's target and a pass/miss mark, and a summary of every
// target. Pure functions of the result objects: `node bench/run.js --report <file.json>` reprints a saved run.
import { LABEL } from './topology.js';

const MB = 1e6;

/** Issue 15's targets (relay vs the redis intermediate of the same run). */
export const TARGETS = {
  fanoutRatio: { 1: 1.2, 10: 1.6, 100: 2.4, 1000: 2.0 }, // relay MB/s / redis MB/s, at least
  lagRatio: { 100: 0.4 }, // relay max lag / redis max lag, at most
  cpuPerGBIn: { 1: 1.0 }, // relay CPU seconds per GB of stream in, at most
  drainRatio: { 100: 1.2 }, // relay MB/s / redis MB/s, at least
  probeMaxMs: 100, // every PING and INFO round trip to the relay, at most (every run, up to N = 1,000)
  idleKiBPerReplica: 32, // relay RSS per extra idle replica at N = 1,000, at most (KiB)
  idleN: 1000,
};

export const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) || !Number.isFinite(v) ? '-' : Number(v).toFixed(d));
const mib = (b) => fmt(b / 1048576, 1);
const mark = (ok) => (ok === null ? '' : ok ? 'ok' : 'MISS');
const ratioCell = (v) => (v === null ? '-' : `${fmt(v, 2)}x`);

export function table(title, headers, rows) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const line = (cells) => cells.map((c, i) => (i <= 1 ? String(c ?? '').padEnd(w[i]) : String(c ?? '').padStart(w[i]))).join('  ').trimEnd();
  return [`\n${title}`, line(headers), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}

function median(values) {
  const v = values.filter((x) => x !== null && x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
function maxOf(values) {
  const v = values.filter((x) => x !== null && x !== undefined && Number.isFinite(x));
  return v.length ? Math.max(...v) : null;
}
const ratio = (a, b) => (a === null || b === null || a === undefined || b === undefined || b === 0 ? null : a / b);

/** Combines the repeats of one (scenario, topology, N): medians, except worst cases (max) and completions (min). */
function combine(list) {
  const m = (f) => median(list.map(f));
  const x = (f) => maxOf(list.map(f));
  const r0 = list[0];
  return {
    topology: r0.topology,
    n: r0.n,
    requests: r0.requests,
    runs: list.length,
    busy: list.some((r) => r.busyBefore >= 0.15),
    streamBytes: m((r) => r.streamBytes),
    complete: Math.min(...list.map((r) => r.complete ?? r.n)),
    dropped: Math.max(...list.map((r) => r.dropped ?? 0)),
    aggregateMBps: m((r) => r.aggregateMBps),
    seconds: m((r) => r.seconds ?? r.drainSeconds),
    lagBytes: m((r) => r.lag?.maxBytes),
    lagSeconds: m((r) => r.lag?.maxSeconds),
    masterObuf: x((r) => r.probe?.masterObufMax),
    cpuPerGBIn: m((r) => r.cpu?.perGBIn),
    cpuPerGBOut: m((r) => r.cpu?.perGBOut),
    sinkPerGBOut: m((r) => r.cpu?.sinkPerGBOut),
    rssIdle: m((r) => r.rss?.idle ?? r.rss?.before),
    rssPeak: m((r) => r.rss?.peak),
    heldEachBytes: m((r) => r.heldBytes?.meanEach),
    pingMax: x((r) => r.probe?.ping?.all?.max),
    pingP99: m((r) => r.probe?.ping?.all?.p99),
    infoMax: x((r) => r.probe?.info?.all?.max),
    infoP99: m((r) => r.probe?.info?.all?.p99),
    probeLateMax: x((r) => r.probe?.probeTimerLateMaxMs),
    rssPerReplica: m((r) => r.rssPerReplicaBytes),
    usedPerReplica: m((r) => r.usedMemoryPerReplicaBytes),
    rssZero: m((r) => r.rss?.zero),
    rssN: m((r) => r.rss?.n),
    onlineSeconds: m((r) => r.onlineSeconds),
  };
}

/** Rows combined per (topology, N, requests), in first-seen order. */
export function aggregate(runs = []) {
  const groups = new Map();
  for (const r of runs) {
    const k = `${r.topology}|${r.n}|${r.requests ?? ''}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  return [...groups.values()].map(combine);
}

const labelOf = (a) => `${LABEL[a.topology] ?? a.topology}${a.busy ? ' *' : ''}`;
const probeCell = (max, p99) => (max === null ? '-' : `${fmt(max, 0)} / ${fmt(p99, 1)}`);
const probeOk = (a) => (a.topology === 'redis' || a.topology === 'raw' || a.pingMax === null ? null : a.pingMax <= TARGETS.probeMaxMs && (a.infoMax ?? 0) <= TARGETS.probeMaxMs);
const isRelayRow = (a) => a.topology === 'relay' || a.topology === 'relay-mem';

export function fanoutTable(runs, { repeats } = {}) {
  const agg = aggregate(runs);
  const redisOf = (a) => agg.find((b) => b.topology === 'redis' && b.n === a.n && b.requests === a.requests);
  const sizes = [...new Set(agg.filter((a) => a.topology !== 'raw').map((a) => `-n ${a.requests} (${fmt(a.streamBytes / MB, 0)} MB)`))];
  const rows = agg.map((a) => {
    const red = redisOf(a);
    const rel = isRelayRow(a) || a.topology === 'raw' || a.topology === 'direct' || a.topology === 'c-ref';
    const tr = rel && red ? ratio(a.aggregateMBps, red.aggregateMBps) : null;
    const tTarget = isRelayRow(a) ? TARGETS.fanoutRatio[a.n] : undefined;
    const lr = rel && red && a.topology !== 'raw' ? ratio(a.lagSeconds, red.lagSeconds) : null;
    const lrb = rel && red && a.topology !== 'raw' ? ratio(a.lagBytes, red.lagBytes) : null;
    const lTarget = isRelayRow(a) ? TARGETS.lagRatio[a.n] : undefined;
    const raw = a.topology === 'raw';
    return [
      a.n,
      labelOf(a),
      fmt(a.streamBytes / MB, 0),
      `${a.complete}/${a.n}${a.dropped ? ` (${a.dropped} dropped)` : ''}`,
      fmt(a.seconds, 2),
      fmt(a.aggregateMBps, 0),
      ratioCell(tr),
      tTarget ? `>=${tTarget}x` : '',
      tTarget && tr !== null ? mark(tr >= tTarget) : '',
      raw ? '-' : fmt(a.lagBytes / MB, 1),
      raw ? '-' : fmt(a.lagSeconds, 2),
      lr === null && lrb === null ? '' : `${ratioCell(lrb)} / ${ratioCell(lr)}`,
      lTarget ? `<=${lTarget}x` : '',
      lTarget && lr !== null ? mark(lr <= lTarget && (lrb ?? 0) <= lTarget) : '',
      raw ? '-' : fmt(a.masterObuf / MB, 1),
      raw ? '-' : fmt(a.cpuPerGBIn, 2),
      raw ? '-' : mib(a.rssIdle),
      raw ? '-' : mib(a.rssPeak),
      probeCell(a.pingMax, a.pingP99),
      probeCell(a.infoMax, a.infoP99),
      mark(probeOk(a)),
      fmt(a.sinkPerGBOut, 2),
    ];
  });
  return table(
    `Live fan-out: ${'redis-benchmark -t set -d 1024 -P 32 -r 100000'} ${sizes.join(', ')}; time = benchmark start -> last replica at the master's offset${repeats > 1 ? `; median of ${repeats} runs (PING/INFO max: max of all)` : ''}`,
    ['N', 'topology', 'stream MB', 'done', 'time s', 'MB/s total', 'vs redis', 'target', '', 'max lag MB', 'max lag s', 'lag vs redis MB / s', 'target', '', 'master obuf MB', 'CPU s/GB in', 'RSS idle MiB', 'RSS peak MiB', 'PING max/p99 ms', 'INFO max/p99 ms', '<=100ms', 'sink CPU s/GB'],
    rows,
  );
}

export function drainTable(runs, { repeats } = {}) {
  const agg = aggregate(runs);
  const redisOf = (a) => agg.find((b) => b.topology === 'redis' && b.n === a.n && b.requests === a.requests);
  const rows = agg.map((a) => {
    const red = redisOf(a);
    const r = (isRelayRow(a) || a.topology === 'c-ref') && red ? ratio(a.aggregateMBps, red.aggregateMBps) : null;
    const t = isRelayRow(a) ? TARGETS.drainRatio[a.n] : undefined;
    return [
      a.n,
      labelOf(a),
      fmt(a.streamBytes / MB, 0),
      fmt(a.heldEachBytes / MB, 1),
      `${a.complete}/${a.n}${a.dropped ? ` (${a.dropped} dropped)` : ''}`,
      fmt(a.seconds, 2),
      fmt(a.aggregateMBps, 0),
      ratioCell(r),
      t ? `>=${t}x` : '',
      t && r !== null ? mark(r >= t) : '',
      fmt(a.cpuPerGBOut, 2),
      mib(a.rssPeak),
      probeCell(a.pingMax, a.pingP99),
      probeCell(a.infoMax, a.infoP99),
      mark(probeOk(a)),
    ];
  });
  const size = runs[0] ? `-n ${runs[0].requests} (${fmt(runs[0].streamBytes / MB, 0)} MB)` : '';
  return table(
    `Drain: replicas paused while ${size} arrive at the forwarder, then resumed; time = resume -> all caught up${repeats > 1 ? `; median of ${repeats} runs` : ''}`,
    ['N', 'topology', 'stream MB', 'held MB each', 'done', 'drain s', 'MB/s total', 'vs redis', 'target', '', 'CPU s/GB out', 'RSS peak MiB', 'PING max/p99 ms', 'INFO max/p99 ms', '<=100ms'],
    rows,
  );
}

export function idleTable(runs) {
  const agg = aggregate(runs);
  const rows = agg.map((a) => {
    const kib = a.rssPerReplica / 1024;
    const t = isRelayRow(a) && a.n === TARGETS.idleN ? TARGETS.idleKiBPerReplica : undefined;
    return [
      a.n,
      labelOf(a),
      mib(a.rssZero),
      mib(a.rssN),
      fmt(kib, 1),
      t ? `<=${t}` : '',
      t ? mark(kib <= t) : '',
      fmt(a.usedPerReplica / 1024, 1),
      fmt(a.onlineSeconds, 1),
      probeCell(a.pingMax, a.pingP99),
      probeCell(a.infoMax, a.infoP99),
      mark(probeOk(a)),
    ];
  });
  return table(
    'Idle replicas: forwarder RSS with 0 and with N idle online replicas; KiB per replica = (RSS_N - RSS_0) / N',
    ['N', 'topology', 'RSS 0 MiB', 'RSS N MiB', 'KiB/replica', 'target', '', 'used_memory KiB/replica', 'connect+sync s', 'PING max/p99 ms', 'INFO max/p99 ms', '<=100ms'],
    rows,
  );
}

/** One line per issue-15 target: redis value, relay value, ratio, target, ok/MISS. */
export function targetsTable(res, kind = 'relay') {
  const rows = [];
  const fan = aggregate(res.fanout ?? []);
  const drain = aggregate(res.drain ?? []);
  const idle = aggregate(res.idle ?? []);
  const pair = (agg, n) => [agg.find((a) => a.topology === 'redis' && a.n === n), agg.find((a) => a.topology === kind && a.n === n)];
  for (const [n, t] of Object.entries(TARGETS.fanoutRatio)) {
    const [red, rel] = pair(fan, Number(n));
    if (!rel) continue;
    const r = ratio(rel.aggregateMBps, red?.aggregateMBps);
    rows.push(['live fan-out MB/s total', n, fmt(red?.aggregateMBps, 0), fmt(rel.aggregateMBps, 0), ratioCell(r), `>= ${t}x`, r === null ? '-' : mark(r >= t)]);
  }
  for (const [n, t] of Object.entries(TARGETS.lagRatio)) {
    const [red, rel] = pair(fan, Number(n));
    if (!rel) continue;
    const rs = ratio(rel.lagSeconds, red?.lagSeconds);
    const rb = ratio(rel.lagBytes, red?.lagBytes);
    rows.push(['max lag, seconds', n, fmt(red?.lagSeconds, 2), fmt(rel.lagSeconds, 2), ratioCell(rs), `<= ${t}x`, rs === null ? '-' : mark(rs <= t)]);
    rows.push(['max lag, MB', n, fmt(red ? red.lagBytes / MB : null, 1), fmt(rel.lagBytes / MB, 1), ratioCell(rb), `<= ${t}x`, rb === null ? '-' : mark(rb <= t)]);
  }
  for (const [n, t] of Object.entries(TARGETS.cpuPerGBIn)) {
    const [red, rel] = pair(fan, Number(n));
    if (!rel) continue;
    rows.push(['forwarder CPU s per GB in', n, fmt(red?.cpuPerGBIn, 2), fmt(rel.cpuPerGBIn, 2), '', `<= ${t}`, mark(rel.cpuPerGBIn !== null && rel.cpuPerGBIn <= t)]);
  }
  for (const [n, t] of Object.entries(TARGETS.drainRatio)) {
    const [red, rel] = pair(drain, Number(n));
    if (!rel) continue;
    const r = ratio(rel.aggregateMBps, red?.aggregateMBps);
    rows.push(['drain of a held stream MB/s total', n, fmt(red?.aggregateMBps, 0), fmt(rel.aggregateMBps, 0), ratioCell(r), `>= ${t}x`, r === null ? '-' : mark(r >= t)]);
  }
  const all = [...fan, ...drain, ...idle];
  const worst = (top, f) => maxOf(all.filter((a) => a.topology === top).map(f));
  if (all.some((a) => a.topology === kind)) {
    const ns = [...new Set(all.filter((a) => a.topology === kind).map((a) => a.n))].sort((a, b) => a - b).join(',');
    for (const [name, f] of [['PING', (a) => a.pingMax], ['INFO', (a) => a.infoMax]]) {
      const v = worst(kind, f);
      rows.push([`${name} round trip, max of every run (ms)`, ns, fmt(worst('redis', f), 0), fmt(v, 0), '', `<= ${TARGETS.probeMaxMs}`, v === null ? '-' : mark(v <= TARGETS.probeMaxMs)]);
    }
  }
  for (const a of idle.filter((x) => x.topology === kind)) {
    const red = idle.find((x) => x.topology === 'redis' && x.n === a.n);
    const kib = a.rssPerReplica / 1024;
    const target = a.n === TARGETS.idleN;
    rows.push(['RSS per idle replica (KiB)', a.n, fmt(red ? red.rssPerReplica / 1024 : null, 1), fmt(kib, 1), '', target ? `<= ${TARGETS.idleKiBPerReplica}` : `(at N=${TARGETS.idleN})`, target ? mark(kib <= TARGETS.idleKiBPerReplica) : '-']);
  }
  if (rows.length === 0) return '';
  return table(`Issue 15 targets: ${LABEL[kind]} vs redis intermediate, same run`, ['check', 'N', 'redis', 'relay', 'ratio', 'target', 'result'], rows);
}

export function microTable(micro) {
  const rows = (micro ?? []).flatMap((m) => m.results.map((r) => [m.name, r.case, fmt(r.mbps, 0), r.opsPerSec ? fmt(r.opsPerSec / 1e6, 2) : '-', r.note ?? '']));
  return table('Microbenchmarks (dist/, one process, median of rounds)', ['bench', 'case', 'MB/s', 'M ops/s', 'note'], rows);
}
