import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { formatMetrics } from '../../src/web/metrics.js';
import type { RelayStatus } from '../../src/observability/status.js';

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
    diskProblem: 'ENOSPC: no space left on device',
    diskProblemSinceSeconds: 3,
    diskPendingBytes: 4096,
    diskWriteErrors: 2,
    diskDetaches: 0,
  },
  snapshot: { replid: 'a'.repeat(40), offset: 0, size: 200, rdbVersion: 10, usable: true },
  snapshotRefreshInProgress: false,
  snapshotRefreshes: 1,
  snapshotRefreshFailures: 0,
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
    diskReadBytes: 0,
    streamCommands: { set: 3, 'we"ird\\name\n': 1 },
  },
  web: { jsonSubscribers: 1, rawSubscribers: 0, subscribersTotal: 1, messagesSent: 5, bytesSent: 50, droppedMessages: 0, slowDisconnects: 0, decoding: true, bufferedBytes: 0 },
  memory: { rss: 1, heapUsed: 1, external: 1 },
};

const text = formatMetrics(status);
const families = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]!);

t.test('exposition', async (t) => {
  t.ok(families.length > 40, `${families.length} families`);
  t.equal(new Set(families).size, families.length, 'no family twice');
  t.match(text, /^psync_relay_stream_commands_total\{cmd="set"\} 3$/m);
  t.match(text, /^psync_relay_stream_commands_total\{cmd="we\\"ird\\\\name\\n"\} 1$/m, 'label values escaped');
  t.match(text, /^psync_relay_replica_lag_bytes\{replica="10\.0\.0\.2:6379",id="7"\} 0$/m);
  t.match(text, /^psync_relay_upstream_link_state\{state="connected"\} 1$/m);
  t.match(text, /^psync_relay_snapshot_offset 0$/m);
  for (const f of families) t.ok(f.startsWith('psync_relay_'), f);
});

t.test('the README section documents every metric', async (t) => {
  const readme = readFileSync(`${REPO}README.md`, 'utf8');
  const start = readme.indexOf('## Dashboard, status, metrics and the stream');
  t.ok(start >= 0, 'section present');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 10));
  for (const f of families) t.match(section, new RegExp(`\`${f}[\`{]`), `${f} documented`);
  const documented = [...section.matchAll(/`(psync_relay_[a-z_]+)[`{]/g)].map((m) => m[1]!);
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
  for (const e of exprs) {
    for (const m of e.matchAll(/psync_relay_[a-z_]+/g)) t.ok(families.includes(m[0]), `${m[0]} exists (${e})`);
  }
});
