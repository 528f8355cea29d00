import t from 'tap';
import { connect } from 'node:net';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll, type RedisServer } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, stat, waitConverged } from '../helpers/replication.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { assertServesTls, explainNoTls, fileFingerprint, makeCerts, namedServerCert, redisTlsArgs, redisTlsReplicaArgs, servedFingerprint, tlsCommands } from '../helpers/tls.js';
import type { RedisClient } from '../helpers/redis-client.js';
import { createLogger } from '../../src/log.js';
import { fetchSnapshot } from '../../src/upstream/snapshot-fetcher.js';

t.teardown(stopAll);

// master (TLS port, client certificates required) → relay A (TLS upstream; TLS listener requiring client
// certificates, plain listener too) → redis-server replica R1 (tls-replication), and A → relay B (TLS upstream
// to A; TLS listener only, listen.port 0) → replica R2.
const certs = makeCerts();
const masterTls = await freePort();
const master = await startRedis({ args: redisTlsArgs(certs, masterTls) }).catch(explainNoTls);
await assertServesTls(masterTls, certs, 'the master');
const m = await master.client();
const clientTls = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };
const aTls = await freePort();
const a = await startRelay({
  upstream: { host: '127.0.0.1', port: masterTls, tls: clientTls },
  listen: { tls: { port: aTls, cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, 'verify-clients': true } },
});
t.teardown(() => a.stop());
const ac = await a.client();
const r1 = await startReplica(aTls, redisTlsReplicaArgs(certs));
const r1c = await r1.client();
const bTls = await freePort();
const b = await startRelay({
  upstream: { host: '127.0.0.1', port: aTls, tls: { ...clientTls, servername: 'localhost' } },
  listen: { port: 0, tls: { port: bTls, cert: certs.serverCert, key: certs.serverKey } },
});
t.teardown(() => b.stop());
const r2 = await startReplica(bTls, redisTlsReplicaArgs(certs));
const r2c = await r2.client();
t.teardown(async () => {
  for (const c of [m, ac, r1c, r2c]) await c.close().catch(() => {});
});

async function writeKeys(c: RedisClient, tag: string): Promise<void> {
  const cmds: string[][] = [];
  for (let i = 0; i < 200; i++) cmds.push(['SET', `${tag}:${i}`, `v${i}`], ['HSET', `${tag}:h`, `f${i}`, String(i)]);
  cmds.push(['SELECT', '2'], ['SET', `${tag}:db2`, 'x'], ['SELECT', '0']);
  await c.pipeline(cmds);
}

/** The local port of `server`'s replica connection(s), from its CLIENT LIST (`laddr`). */
async function replicaLocalPorts(c: RedisClient): Promise<number[]> {
  const list = String(await c.callString('CLIENT', 'LIST'));
  return list.split('\n').filter((l) => / flags=S /.test(l)).map((l) => Number(/ laddr=[^ ]*:(\d+) /.exec(l)?.[1]));
}

t.test('master (TLS) → relay (TLS upstream and listener) → redis-server replica over TLS: digests equal', async (t) => {
  await writeKeys(m, 'tls1');
  const { digest } = await waitConverged(m, [r1c], 'R1 converges through the relay over TLS');
  t.not(digest, '0000000000000000000000000000000000000000', 'the dataset is not empty');
  t.strictSame(await replicaLocalPorts(m), [masterTls], "the relay is the master's replica on its TLS port");
  t.strictSame(await replicaLocalPorts(ac), [aTls, aTls], "R1 and relay B are relay A's replicas on its TLS port");
  const info = await ac.info('replication');
  t.equal(info['master_link_status'], 'up');
  await writeKeys(m, 'tls1b');
  await waitConverged(m, [r1c], 'the stream keeps flowing over TLS');
});

t.test('relay → relay over TLS (B listens on TLS only) → redis-server replica: digests equal', async (t) => {
  await writeKeys(m, 'tls2');
  await waitConverged(m, [r2c], 'R2 converges through two relays over TLS');
  t.equal(b.port, bTls, 'with listen.port 0 the relay port is the TLS port');
  const [info] = await tlsCommands(bTls, certs, [['INFO', 'replication']]);
  t.match(String(info), `master_port:${aTls}`, 'B follows A on its TLS port');
  t.match(String(info), 'master_link_status:up');
});

t.test('the snapshot fetcher talks TLS too', async (t) => {
  const temp = join(certs.dir, 'fetched.rdb');
  const snap = await fetchSnapshot(
    { host: '127.0.0.1', port: masterTls, user: null, password: null, tls: { ...clientTls, servername: null, verify: true }, listeningPort: 0, connectTimeoutMs: 5000, timeoutMs: 10_000, log: createLogger('silent') },
    temp,
    () => undefined,
    { socket: null },
  );
  t.equal(snap.replid, (await m.info('replication'))['master_replid'], "a snapshot of the master's history");
});

t.test('refusals: no client certificate, plain TCP on the TLS port, an untrusted server certificate', async (t) => {
  await t.rejects(tlsCommands(aTls, certs, [['PING']], false), 'verify-clients: a client without a certificate is refused');
  t.strictSame(await tlsCommands(aTls, certs, [['PING']]), ['PONG'], 'with one it is served');

  // The relay ends the failed TLS handshake itself: waiting for that close is the sync point, not a timer.
  const s = connect({ host: '127.0.0.1', port: aTls });
  t.teardown(() => s.destroy());
  let plain = '';
  let closed = false;
  s.on('connect', () => s.write('PING\r\n'));
  s.on('data', (d) => (plain += d.toString('latin1')));
  s.on('error', () => undefined);
  s.on('close', () => (closed = true));
  await waitFor(() => closed, { what: 'the relay to close a plain-TCP connection on its TLS port', timeoutMs: 10_000 });
  t.notMatch(plain, 'PONG', 'plain RESP on the TLS port gets no reply, and the connection is closed');

  const other = makeCerts('another CA');
  const c = await startRelay({ upstream: { host: '127.0.0.1', port: masterTls, tls: { ca: other.ca, cert: certs.clientCert, key: certs.clientKey } } });
  t.teardown(() => c.stop());
  await waitFor(() => /certificate/i.test(c.relay.status().upstream.lastError), { what: 'the link fails on the certificate', timeoutMs: 10_000 });
  t.not(c.relay.status().upstream.state, 'connected', 'a master whose certificate does not chain to upstream.tls.ca is not followed');
});

t.test('Sentinel mode over TLS: the relay asks a TLS Sentinel and follows the TLS master it names', async (t) => {
  const sTls = await freePort();
  const sentinel: RedisServer = await startRedis({
    sentinel: true,
    sentinelConf: ['sentinel resolve-hostnames no', `sentinel monitor mymaster 127.0.0.1 ${masterTls} 1`].join('\n') + '\n',
    args: ['--tls-port', String(sTls), '--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey, '--tls-ca-cert-file', certs.ca, '--tls-replication', 'yes'],
  }).catch(explainNoTls);
  t.teardown(() => sentinel.stop());
  const d = await startRelay({
    upstream: { tls: clientTls, sentinel: { nodes: [`127.0.0.1:${sTls}`], 'master-name': 'mymaster', tls: true } },
  });
  t.teardown(() => d.stop());
  await writeKeys(m, 'tls3');
  const dc = await d.client();
  t.teardown(() => dc.close());
  await waitFor(
    async () => {
      const [di, mi] = [await dc.info('replication'), await m.info('replication')];
      return di['master_link_status'] === 'up' && di['master_port'] === String(masterTls) && di['master_repl_offset'] === mi['master_repl_offset'];
    },
    { what: 'the relay follows the master named by the TLS Sentinel' },
  );
  t.equal(stat(await dc.info('replication'), 'master_port'), masterTls, 'INFO names the master the Sentinel named');
});

t.test("upstream.tls.servername names the master only: the Sentinels' certificates are checked against their own address", async (t) => {
  // A master whose certificate names only master.test; a Sentinel whose certificate names 127.0.0.1 and localhost.
  const named = namedServerCert(certs, 'master.test');
  const nTls = await freePort();
  const nMaster = await startRedis({ args: ['--tls-port', String(nTls), '--tls-cert-file', named.cert, '--tls-key-file', named.key, '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'yes'] });
  t.teardown(() => nMaster.stop());
  const nm = await nMaster.client();
  t.teardown(() => nm.close());
  const sTls = await freePort();
  const sentinel: RedisServer = await startRedis({
    sentinel: true,
    sentinelConf: ['sentinel resolve-hostnames no', `sentinel monitor named 127.0.0.1 ${nTls} 1`].join('\n') + '\n',
    args: ['--tls-port', String(sTls), '--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey, '--tls-ca-cert-file', certs.ca, '--tls-replication', 'yes'],
  });
  t.teardown(() => sentinel.stop());
  const d = await startRelay({
    upstream: { tls: { ...clientTls, servername: 'master.test' }, sentinel: { nodes: [`127.0.0.1:${sTls}`], 'master-name': 'named', tls: true } },
  });
  t.teardown(() => d.stop());
  await nm.call('SET', 'named', '1');
  const dc = await d.client();
  t.teardown(() => dc.close());
  await waitFor(
    async () => {
      const [di, mi] = [await dc.info('replication'), await nm.info('replication')];
      return di['master_link_status'] === 'up' && di['master_repl_offset'] === mi['master_repl_offset'];
    },
    { what: 'the relay follows the master the Sentinel named, over TLS checked against master.test', timeoutMs: 15_000 },
  );
  t.equal(stat(await dc.info('replication'), 'master_port'), nTls, 'INFO names that master');
});

t.test('a certificate reload reaches the point-in-time listeners of a relay with no plain port', async (t) => {
  // Files the relay reads (copies, so the renewal can replace them), and a renewal from another CA.
  const renewal = makeCerts('renewal CA');
  const served = { cert: join(certs.dir, 'pitr-served.crt'), key: join(certs.dir, 'pitr-served.key') };
  const install = (from: { serverCert: string; serverKey: string }): void => {
    copyFileSync(from.serverCert, served.cert);
    copyFileSync(from.serverKey, served.key);
  };
  install(certs);
  const port = await freePort();
  const p = await startRelay({
    upstream: { host: '127.0.0.1', port: masterTls, tls: clientTls },
    listen: { port: 0, tls: { port, ...served } },
    log: { memory: '1mb', disk: '64mb' },
  });
  t.teardown(() => p.stop());
  await writeKeys(m, 'pitr-tls');
  const offset = await waitFor(
    async () => {
      const [reply] = await tlsCommands(port, certs, [['INFO', 'replication']]);
      const mine = /master_repl_offset:(\d+)/.exec(String(reply))?.[1];
      const theirs = (await m.info('replication'))['master_repl_offset'];
      // And its snapshot: the stream flows while the full sync's RDB is still being saved (seconds on a busy disk).
      return /relay_snapshot_usable:1/.test(String(reply)) && mine !== undefined && mine === theirs && Number(mine);
    },
    { what: 'the relay holds the master stream and a snapshot' },
  );
  const [pitr] = await tlsCommands(port, certs, [['RELAY', 'PITR', 'OFFSET', String(offset)]]);
  t.ok(Array.isArray(pitr), `RELAY PITR opened a listener (${JSON.stringify(pitr)})`);
  const pitrPort = Number((pitr as unknown[])[0]);
  t.equal(await servedFingerprint(pitrPort), fileFingerprint(certs.serverCert), 'the point-in-time listener serves the certificate of listen.tls');

  install(renewal);
  t.equal(p.relay.reloadTls(), true, 'the reload took the renewed files');
  t.equal(await servedFingerprint(port), fileFingerprint(renewal.serverCert), 'the RESP listener serves the renewal to new connections');
  t.equal(await servedFingerprint(pitrPort), fileFingerprint(renewal.serverCert), 'and so does the point-in-time listener');
});
