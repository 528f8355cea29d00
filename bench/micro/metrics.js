// GET /metrics with 1,000 replicas (dist/web/metrics.js, prom-client): how long one scrape holds the event loop
// (the status is read once; every family and the per-replica gauges are filled from it, then prom-client writes
// the text), and the cost that made the hot-path counters plain increments rather than diagnostics_channel
// messages (dist/observability/telemetry.js).
//   node bench/micro/metrics.js [--quick] [--json]
import { performance } from 'node:perf_hooks';
import { RelayMetrics } from '../../dist/web/metrics.js';
import { subscribe, Telemetry } from '../../dist/observability/telemetry.js';
import { QUICK, JSON_OUT, medianSeconds } from './common.js';

const REPLICAS = 1000;
const replicas = Array.from({ length: REPLICAS }, (_, i) => ({
  id: i + 1, ip: `10.0.${i >> 8}.${i & 255}`, port: 6379, state: 'online', offset: 1e9, ackOffset: 1e9 - i, lagSeconds: 0, lagBytes: i * 100, version: '7.0.15',
}));
const status = {
  version: '0.1.0', runId: 'r'.repeat(40), pid: 1, uptimeSeconds: 5, tcpPort: 6380, configFile: '',
  upstream: { host: '127.0.0.1', port: 6379, state: 'connected', linkUp: true, lastIoSecondsAgo: 0, linkDownSinceSeconds: 0, syncInProgress: false, syncReceivedBytes: 0, syncTotalBytes: null, syncLastIoSecondsAgo: 0, fullSyncs: 1, partialSyncs: 0, bytesIn: 1e9, lastError: '', relayChain: [] },
  replid: 'a'.repeat(40), replid2: '0'.repeat(40), masterReplOffset: 1e9, secondReplOffset: -1,
  log: { firstOffset: 1, endOffset: 1e9, size: 64e6, limit: 64e6, memFirstOffset: 9e8, diskBytes: 1e9, diskLimit: 1e9, diskSegments: 8, diskState: 'ok', diskProblem: null, diskProblemSinceSeconds: 0, diskPendingBytes: 0, diskDirect: true, diskPendingBytes: 0, diskWriteErrors: 0, diskDetaches: 0, diskReadErrors: 0, diskReadWaits: 0, diskReadWaitSeconds: 0, blocksAllocated: 64, blocksReused: 0, blocksDiscarded: 0, blocksPrefaulted: 64 },
  snapshot: { replid: 'a'.repeat(40), offset: 1, size: 1e6, rdbVersion: 10, usable: true }, snapshotLeases: 0, snapshotRefreshInProgress: false, snapshotWaitingForRoom: 0, snapshotDiskRefused: null, snapshotsGivenUp: 0, fullSyncsWaiting: 0, fullSyncsActive: 0, snapshotRefreshes: 0, snapshotRefreshFailures: 0,
  connectedClients: REPLICAS, maxClients: 10000, replicas,
  stats: { totalConnectionsReceived: REPLICAS, totalCommandsProcessed: 1e6, rejectedConnections: 0, syncFull: REPLICAS, syncPartialOk: 0, syncPartialErr: 0, netInputBytes: 1e6, netOutputBytes: 1e12, replOutputBytes: 1e12, replicasDroppedLag: 0, replicasDroppedTimeout: 0, protocolErrors: 0, accessDenied: { auth: 0, cmd: 0, channel: 0 }, diskReadBytes: 0, compressedRawBytes: 0, compressedWireBytes: 0, streamCommands: { set: 1e7, ping: 1e3, select: 1 } },
  web: { jsonSubscribers: 0, rawSubscribers: 0, subscribersTotal: 0, messagesSent: 0, bytesSent: 0, droppedMessages: 0, slowDisconnects: 0, refused: { host: 0, origin: 0, token: 0, subscribers: 0, answers: 0 }, decoding: false, bufferedBytes: 0 },
  memory: { rss: 1e8, heapUsed: 5e7, external: 1e7 },
};

const metrics = new RelayMetrics(() => status);
let bytes = 0;
const scrape = await medianSeconds(QUICK ? 20 : 100, async () => {
  // The synchronous part (collect + text) is what blocks the loop; prom-client awaits only resolved promises.
  // Each in a turn of its own: scrapes in one turn share a rendering (the process families are rendered at most
  // once a second, so this is the psync_relay_* families).
  await new Promise((resolve) => setImmediate(resolve));
  bytes = (await metrics.render()).length;
});

// One counter bump per socket write: a plain increment vs a diagnostics_channel message with one subscriber.
const N = QUICK ? 2e6 : 2e7;
const telemetry = new Telemetry('bench');
const off = subscribe('replica.dropped', (m) => m.relay === 'bench' && (sink += 1));
let sink = 0;
let t0 = performance.now();
for (let i = 0; i < N; i++) telemetry.traffic.replOutputBytes += 16384;
const inc = ((performance.now() - t0) * 1e6) / N;
t0 = performance.now();
for (let i = 0; i < N; i++) telemetry.emit('replica.dropped', { reason: 'lag', peer: '', detail: '' });
const msg = ((performance.now() - t0) * 1e6) / N;
off();

const results = [
  { case: `GET /metrics, ${REPLICAS} replicas`, ms: +(scrape * 1000).toFixed(2), bytes },
  { case: 'counter bump: plain increment', ns: +inc.toFixed(1) },
  { case: 'counter bump: diagnostics_channel message, 1 subscriber', ns: +msg.toFixed(1) },
];
if (JSON_OUT) process.stdout.write(`${JSON.stringify({ name: 'metrics', results })}\n`);
else for (const r of results) console.log(`  ${r.case.padEnd(56)} ${r.ms !== undefined ? `${r.ms} ms (${r.bytes} bytes)` : `${r.ns} ns`}`);
