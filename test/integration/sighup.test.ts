/**
 * SIGHUP on the relay process (dist/main.js): it never ends the relay (Node's default would kill it, replicas' links
 * with it); it reloads listen.tls's files, so a renewed certificate serves new TLS connections while the connections
 * already open, a replica's link among them, stay as they are. Files that cannot serve keep the old certificate.
 */
import t from 'tap';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess, type RelayProcess } from '../helpers/relay-process.js';
import { startReplica, stat, waitConverged } from '../helpers/replication.js';
import { RedisClient } from '../helpers/redis-client.js';
import { fileFingerprint, makeCerts, redisTlsReplicaArgs, servedFingerprint } from '../helpers/tls.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import type { LogLine } from '../helpers/logged-relay.js';

t.teardown(stopAll);

const master = await startRedis();
const m = await master.client();
t.teardown(() => m.close());

async function writeKeys(tag: string): Promise<void> {
  const cmds: string[][] = [];
  for (let i = 0; i < 200; i++) cmds.push(['SET', `${tag}:${i}`, `v${i}`]);
  await m.pipeline(cmds);
}

/** Sends SIGHUP and waits for the `nth` log line (counted from 1 since the start) that `match` picks; a relay that dies ends the wait. */
async function hangUp(relay: RelayProcess, match: (l: LogLine) => boolean, what: string): Promise<LogLine> {
  const before = relay.lines().filter(match).length;
  relay.proc.kill('SIGHUP');
  return waitFor(() => relay.lines().filter(match)[before], { what, timeoutMs: 10_000, signal: relay.exited });
}

/** The replica connections the relay serves, as CLIENT LIST ids: a dropped and redone link gets a new id. */
async function replicaClientIds(x: RedisClient): Promise<string[]> {
  const list = String(await x.callString('CLIENT', 'LIST'));
  return list.split('\n').filter((l) => / flags=S /.test(l)).map((l) => /^id=(\d+) /.exec(l)?.[1] ?? '?');
}

async function replicationCounts(x: RedisClient): Promise<Record<string, number>> {
  const stats = await x.info('stats');
  const repl = await x.info('replication');
  return { sync_full: stat(stats, 'sync_full'), sync_partial_ok: stat(stats, 'sync_partial_ok'), connected_slaves: stat(repl, 'connected_slaves') };
}

// The relay serves cert A from relay.crt/relay.key (paths relative to its config). B is a renewal (another CA, so a
// replica that reconnected to it would fail: the replica must not need to) valid 5 days, inside the 14-day warning.
const certA = makeCerts('cert A CA');
const certB = makeCerts('cert B CA', 5);
const tlsPort = await freePort();
const tlsRelay = await relayArgs(
  'psync-relay-sighup-',
  master.port,
  `web: {port: 0}\nlog: {memory: 1mb, memory-prefault: false, disk: 0}\nlisten:\n  tls: {port: ${tlsPort}, cert: relay.crt, key: relay.key}\n`,
);
const served = { cert: join(tlsRelay.dir, 'relay.crt'), key: join(tlsRelay.dir, 'relay.key') };
const install = (cert: string, key: string) => {
  copyFileSync(cert, served.cert);
  copyFileSync(key, served.key);
};
install(certA.serverCert, certA.serverKey);
const relay = await startRelayProcess(tlsRelay.args);
t.teardown(() => relay.stop('SIGKILL'));
const x = await RedisClient.connect(tlsRelay.port);
t.teardown(() => x.close());
const replica = await startReplica(tlsPort, redisTlsReplicaArgs(certA));
const r = await replica.client();
t.teardown(() => r.close());
const isError = (l: LogLine) => l['level'] === 50;

t.test('SIGHUP with renewed files: new TLS connections get the new certificate, the replica keeps its link', async (t) => {
  await writeKeys('before');
  await waitConverged(m, [r], 'the replica is online over TLS with cert A');
  t.equal(await servedFingerprint(tlsPort), fileFingerprint(certA.serverCert), 'cert A is served at first');
  const links = await replicaClientIds(x);
  t.equal(links.length, 1, 'one replica link');
  const counts = await replicationCounts(x);

  install(certB.serverCert, certB.serverKey);
  const reloaded = await hangUp(relay, (l) => l['msg'] === 'TLS certificate reloaded: new connections get it', 'the reload to be logged');
  t.match(reloaded, { level: 30, key: 'listen.tls', subject: 'CN=localhost', notAfter: /^\d{4}-/, fingerprint256: fileFingerprint(certB.serverCert) }, 'logged with the new certificate');
  t.equal(await servedFingerprint(tlsPort), fileFingerprint(certB.serverCert), 'a new TLS connection is served cert B');
  t.match(
    relay.lines().find((l) => l['level'] === 40 && l['key'] === 'listen.tls.cert'),
    { notAfter: reloaded['notAfter'], msg: /expires at .* in 5 day\(s\)/ },
    'a renewal to a certificate expiring within 14 days is warned about',
  );

  await writeKeys('after');
  await waitConverged(m, [r], 'the replica keeps converging on its old TLS session');
  t.strictSame(await replicaClientIds(x), links, 'the same replica connection: not dropped');
  t.strictSame(await replicationCounts(x), counts, 'no new full or partial sync, the same number of replicas');
  t.strictSame(relay.lines().filter(isError), [], 'no error logged');
});

t.test('SIGHUP with files that cannot serve: the previous certificate stays, the error names the key and the file, the relay goes on', async (t) => {
  const cases: Array<[string, () => void, string, string]> = [
    ['a certificate file that is not PEM', () => writeFileSync(served.cert, 'not a certificate\n'), 'listen.tls.cert', served.cert],
    ['a key that belongs to another certificate', () => install(certB.serverCert, certA.serverKey), 'listen.tls.key', served.key],
    ['a missing key file', () => rmSync(served.key), 'listen.tls.key', served.key],
  ];
  for (const [what, damage, key, file] of cases) {
    install(certB.serverCert, certB.serverKey);
    damage();
    const line = await hangUp(relay, isError, `the failed reload to be logged (${what})`);
    t.match(line, { key, file, msg: 'TLS certificate not reloaded: the previous one stays in service' }, `${what}: logged as an error naming ${key} and the file`);
    t.equal(await servedFingerprint(tlsPort), fileFingerprint(certB.serverCert), `${what}: cert B is still served`);
    t.equal(await x.callString('PING'), 'PONG', `${what}: the relay still answers`);
  }
  t.notMatch(relay.logs(), /PRIVATE KEY/, 'no key material in the log');
  install(certB.serverCert, certB.serverKey);
  await writeKeys('after-errors');
  await waitConverged(m, [r], 'the replica still converges');
});

t.test('SIGHUP on a relay without TLS: nothing to reload, it keeps answering and replicating', async (t) => {
  const plain = await relayArgs('psync-relay-sighup-plain-', master.port, 'web: {port: 0}\nlog: {memory: 1mb, memory-prefault: false, disk: 0}\n');
  const p = await startRelayProcess(plain.args);
  t.teardown(() => p.stop('SIGKILL'));
  const pr = await (await startReplica(plain.port)).client();
  t.teardown(() => pr.close());
  await writeKeys('plain-before');
  await waitConverged(m, [pr], 'the replica is online');
  const px = await RedisClient.connect(plain.port);
  t.teardown(() => px.close());
  const counts = await replicationCounts(px);

  const line = await hangUp(p, (l) => l['msg'] === 'no listen.tls: no certificate to reload', 'the relay to say there is nothing to reload');
  t.equal(line['level'], 30, 'logged at info');
  t.equal(await px.callString('PING'), 'PONG', 'the relay still answers');
  await writeKeys('plain-after');
  await waitConverged(m, [pr], 'and keeps replicating');
  t.strictSame(await replicationCounts(px), counts, 'on the same link');
});
