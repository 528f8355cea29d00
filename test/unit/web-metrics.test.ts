import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { PROCESS_METRICS_MAX_AGE_MS, ProcessMetrics, RelayMetrics } from '../../src/web/metrics.js';
import type { RelayStatus, ReplicaStatus } from '../../src/observability/status.js';
import { parseProm, sample } from '../helpers/prom-text.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

const status: RelayStatus = {
  version: '0.1.0',
  runId: 'r'.repeat(40),
  pid: 1,
  uptimeSeconds: 5,
  tcpPort: 6380,
  configFile: '',
  upstream: {
    host: '127.0.0.1',
    port: 6379,
    state: 'connected',
    linkUp: true,
    lastIoSecondsAgo: 0,
    linkDownSinceSeconds: 0,
    syncInProgress: false,
    syncReceivedBytes: 0,
    syncTotalBytes: null,
    syncLastIoSecondsAgo: 0,
    fullSyncs: 1,
    partialSyncs: 2,
    bytesIn: 1000,
    lastError: '',
    relayChain: [],
  },
  replid: 'a'.repeat(40),
  replid2: '0'.repeat(40),
  masterReplOffset: 1000,
  secondReplOffset: -1,
  log: {
    firstOffset: 1,
    endOffset: 1000,
    size: 1000,
    limit: 65536,
    memFirstOffset: 1,
    diskBytes: 1000,
    diskLimit: 1 << 30,
    diskSegments: 1,
    diskState: 'failing',
    diskDirect: true,
    diskProblem: 'ENOSPC: no space left on device',
    diskProblemSinceSeconds: 3,
    diskPendingBytes: 4096,
    diskWriteErrors: 2,
    diskDetaches: 0,
    diskReadErrors: 0,
    diskReadWaits: 0,
    diskReadWaitSeconds: 0,
    blocksAllocated: 64,
    blocksReused: 470,
    blocksDiscarded: 3,
    blocksPrefaulted: 64,
  },
  snapshot: { replid: 'a'.repeat(40), offset: 0, size: 200, rdbVersion: 10, usable: true },
  snapshotLeases: 1,
  snapshotRefreshInProgress: false,
  snapshotWaitingForRoom: 0,
  snapshotDiskRefused: null,
  snapshotRefreshes: 1,
  snapshotRefreshFailures: 0,
  snapshotsGivenUp: 0,
  fullSyncsWaiting: 2,
  fullSyncsActive: 1,
  connectedClients: 2,
  maxClients: 10000,
  replicas: [
    { id: 7, ip: '10.0.0.2', port: 6379, state: 'online', offset: 1000, ackOffset: 990, lagSeconds: 1, lagBytes: 0, version: '7.0.15' },
  ],
  stats: {
    totalConnectionsReceived: 3,
    totalCommandsProcessed: 9,
    rejectedConnections: 0,
    syncFull: 1,
    syncPartialOk: 0,
    syncPartialErr: 0,
    netInputBytes: 100,
    netOutputBytes: 2000,
    replOutputBytes: 1000,
    replicasDroppedLag: 0,
    replicasDroppedTimeout: 0,
    protocolErrors: 0,
    accessDenied: { auth: 4, cmd: 2, channel: 1 },
    diskReadBytes: 0,
    compressedRawBytes: 0,
    compressedWireBytes: 0,
    streamCommands: { set: 3, 'we"ird\\name\n': 1 },
  },
  web: { jsonSubscribers: 1, rawSubscribers: 0, subscribersTotal: 1, messagesSent: 5, bytesSent: 50, droppedMessages: 0, slowDisconnects: 0, refused: { host: 3, origin: 0, token: 5, subscribers: 0, answers: 2 }, decoding: true, bufferedBytes: 0 },
  memory: { rss: 1, heapUsed: 1, external: 1 },
};

const text = await new RelayMetrics(() => status).render();
const families = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]!);
const relayFamilies = families.filter((f) => f.startsWith('psync_relay_'));

t.test('exposition', async (t) => {
  t.ok(relayFamilies.length > 40, `${relayFamilies.length} psync_relay_ families`);
  t.equal(new Set(families).size, families.length, 'no family twice');
  t.doesNotThrow(() => parseProm(text), 'strict text format 0.0.4');
  t.match(text, /^psync_relay_stream_commands_total\{cmd="set"\} 3$/m);
  t.match(text, /^psync_relay_stream_commands_total\{cmd="we\\"ird\\\\name\\n"\} 1$/m, 'label values escaped');
  t.match(text, /^psync_relay_replica_lag_bytes\{replica="10\.0\.0\.2:6379",id="7"\} 0$/m);
  t.match(text, /^psync_relay_upstream_link_state\{state="connected"\} 1$/m);
  t.match(text, /^psync_relay_snapshot_offset 0$/m);
  t.match(text, /^psync_relay_log_disk_direct 1$/m, 'whether the disk log writes with O_DIRECT');
  t.match(text, /^psync_relay_replicas_dropped_total\{reason="timeout"\} 0$/m, 'a labelled counter shows its zero series');
  t.match(text, /^psync_relay_access_denied_total\{reason="auth"\} 4$/m, 'clients refused, by reason');
  t.match(text, /^psync_relay_web_refused_total\{reason="token"\} 5$/m, 'web requests refused, by reason');
  for (const f of families) t.match(f, /^(psync_relay|process|nodejs)_/, `${f}: the relay's own, or prom-client's standard process and Node.js families`);
  for (const f of ['process_cpu_seconds_total', 'process_open_fds', 'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_gc_duration_seconds', 'nodejs_heap_size_used_bytes']) {
    t.ok(families.includes(f), `${f} exported`);
  }
});

t.test('every family the hand-written exposition had is still there, unchanged (families added since are extra)', async (t) => {
  // The hand-written formatter's output for the status above, captured before prom-client replaced it (a frozen
  // record: that formatter is gone, so the file is not regenerated).
  const before = readFileSync(`${REPO}test/fixtures/metrics-before-prom-client.txt`, 'utf8');
  const typeOf = (s: string) => new Map([...s.matchAll(/^# TYPE (psync_relay_\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  const old = typeOf(before);
  const now = typeOf(text);
  t.same([...now].filter(([name]) => old.has(name)), [...old], 'names, types and order of the old families');
  const series = (s: string) => [...s.matchAll(/^(psync_relay_[^ {]+)([^ ]*) (\S+)$/gm)].filter((m) => old.has(m[1]!)).map((m) => `${m[1]}${m[2]} ${m[3]}`);
  t.same(series(text), series(before), 'every series of the old families with its labels and value');
});

/** The end of this turn of the event loop. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('scrapes in one turn share one rendering: a client pipelining thousands of GET /metrics costs one', async (t) => {
  let reads = 0;
  const metrics = new RelayMetrics(() => (reads++, status));
  // What uWS dispatches for one read of pipelined requests: every render() in the same tick.
  const texts = await Promise.all(Array.from({ length: 1000 }, () => metrics.render()));
  t.equal(reads, 1, 'one status, one rendering for the 1000 scrapes');
  t.ok(texts.every((x) => x === texts[0]) && texts[0]!.includes('psync_relay_'), 'each gets the same, whole exposition');
  await metrics.render();
  t.equal(reads, 1, 'a scrape later in the same turn (another connection read in it) shares it too');
  await nextTurn();
  await metrics.render();
  t.equal(reads, 2, 'a scrape in a later turn renders afresh');
});

t.test('a scrape in a later turn sees what changed since the last one', async (t) => {
  let current: RelayStatus = status;
  const metrics = new RelayMetrics(() => current);
  t.equal(sample(parseProm(await metrics.render()), 'psync_relay_master_repl_offset'), 1000);
  current = { ...status, masterReplOffset: 2000 };
  await nextTurn();
  t.equal(sample(parseProm(await metrics.render()), 'psync_relay_master_repl_offset'), 2000);
});

t.test('the process families are rendered at most once a second, however often the relay is scraped, and are never older', async (t) => {
  let now = 0;
  let renders = 0;
  let fail = false;
  const processFamilies = new ProcessMetrics(async () => {
    renders++;
    if (fail) throw new Error('collect failed');
    return `process_cpu_seconds_total ${renders}\n`;
  }, () => now);
  const metrics = new RelayMetrics(() => status, processFamilies);
  const line = async (): Promise<string | undefined> => {
    const text = await metrics.render();
    await nextTurn();
    return /^process_cpu_seconds_total .*$/m.exec(text)?.[0];
  };
  t.equal(await line(), 'process_cpu_seconds_total 1', 'the first scrape renders them');
  for (let i = 0; i < 100; i++) {
    now += 9;
    t.equal(await line(), 'process_cpu_seconds_total 1');
  }
  t.equal(renders, 1, '100 scrapes within the second: no other rendering');
  now += 100;
  t.equal(await line(), 'process_cpu_seconds_total 2', 'a scrape past the second renders anew: it never gets a rendering older than that');
  t.equal(renders, 2);
  now += PROCESS_METRICS_MAX_AGE_MS;
  await nextTurn();
  const [a, b] = await Promise.all([metrics.render(), metrics.render()]);
  t.equal(a, b, 'scrapes at the same time share the new rendering');
  t.equal(renders, 3);
  await nextTurn();
  fail = true;
  now += PROCESS_METRICS_MAX_AGE_MS;
  t.equal(await line(), 'process_cpu_seconds_total 3', 'a rendering that fails leaves the last one');
  fail = false;
  t.equal(await line(), 'process_cpu_seconds_total 5', 'and the next scrape renders again');
  const none = new ProcessMetrics(async () => {
    throw new Error('collect failed');
  });
  await t.rejects(async () => none.text(), /collect failed/, 'with no rendering yet, a failure is the scrape\'s (a 500)');
});

t.test('a scrape reads the status once and exports every replica, whatever their number', async (t) => {
  let reads = 0;
  const replicas: ReplicaStatus[] = Array.from({ length: 1000 }, (_, i) => ({
    id: i + 1, ip: '10.0.0.1', port: 10000 + i, state: 'online', offset: 5000, ackOffset: 4000 + i, lagSeconds: 0, lagBytes: i, version: '7.0.15',
  }));
  let current: RelayStatus = { ...status, replicas };
  const metrics = new RelayMetrics(() => (reads++, current));
  const fams = parseProm(await metrics.render());
  t.equal(reads, 1, 'one status per scrape: every family is filled from it in one pass');
  for (const f of ['replica_lag_bytes', 'replica_lag_seconds', 'replica_offset', 'replica_ack_offset']) {
    t.equal(fams.get(`psync_relay_${f}`)?.samples.size, 1000, `${f}: one series per replica`);
  }
  t.equal(sample(fams, 'psync_relay_replica_ack_offset', '{replica="10.0.0.1:10999",id="1000"}'), 4999);
  // A replica that left is gone from the next scrape, not frozen at its last value.
  current = { ...status, replicas: replicas.slice(0, 2) };
  await nextTurn();
  const next = parseProm(await metrics.render());
  t.equal(reads, 2);
  t.equal(next.get('psync_relay_replica_lag_bytes')?.samples.size, 2);
  t.equal(sample(next, 'psync_relay_connected_replicas'), 2);
});

t.test('the README section documents every metric', async (t) => {
  const readme = readFileSync(`${REPO}README.md`, 'utf8');
  const start = readme.indexOf('## Dashboard, status, metrics and the stream');
  t.ok(start >= 0, 'section present');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 10));
  for (const f of families) t.match(section, new RegExp(`\`${f}[\`{]`), `${f} documented`);
  const documented = [...section.matchAll(/`((?:psync_relay|process|nodejs)_[a-z0-9_]+)[`{]/g)].map((m) => m[1]!);
  for (const d of documented) t.ok(families.includes(d), `${d} exists`);
});

t.test('the shipped alerts and Grafana dashboard only use metrics that exist', async (t) => {
  const rules = parse(readFileSync(`${REPO}config/prometheus-alerts.yml`, 'utf8')) as {
    groups: { name: string; rules: { alert: string; expr: string; labels: { severity: string } }[] }[];
  };
  const alerts = rules.groups.flatMap((g) => g.rules);
  t.ok(alerts.length >= 3);
  const names = alerts.map((a) => a.alert);
  for (const want of ['PsyncRelayUpstreamLinkDown', 'PsyncRelayReplicaLagBytes', 'PsyncRelayFullSyncsPilingUp']) t.ok(names.includes(want), want);
  const dash = JSON.parse(readFileSync(`${REPO}config/grafana-dashboard.json`, 'utf8')) as { panels: { targets: { expr: string }[] }[] };
  const exprs = [...alerts.map((a) => a.expr), ...dash.panels.flatMap((p) => p.targets.map((x) => x.expr))];
  const histograms = [...text.matchAll(/^# TYPE (\S+) histogram$/gm)].map((m) => m[1]!);
  // A histogram's series are named after it with a suffix.
  const exists = (name: string) => families.includes(name) || histograms.includes(name.replace(/_(bucket|sum|count)$/, ''));
  for (const e of exprs) {
    for (const m of e.matchAll(/\b(?:psync_relay|process|nodejs)_[a-z0-9_]+/g)) t.ok(exists(m[0]), `${m[0]} exists (${e})`);
  }
});
