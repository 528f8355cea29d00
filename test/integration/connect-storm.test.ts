/**
 * A storm of connections (replicas reconnecting at once after a network cut or a relay restart) against a relay
 * process: Node accepts one connection per turn of its event loop, so the kernel's queue of completed connections
 * (listen.tcp-backlog) must hold the storm, or the kernel drops the handshakes past it and those clients wait on
 * its retransmissions. With Redis's 511, 3,000 connections at once overflowed it on a 2-core machine, and 20 s
 * later the relay had still not accepted them all.
 */
import t, { type Test } from 'tap';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { freePort } from '../helpers/ports.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { RedisClient } from '../helpers/redis-client.js';
import { logLines, writeConfig } from '../helpers/raw.js';
import { waitFor } from '../helpers/wait.js';
import { somaxconn } from '../../src/downstream/tcp-backlog.js';
import { openFilesLimit } from '../../src/downstream/fd-limit.js';

async function relay(t: Test, listen: Record<string, unknown> = {}) {
  const port = await freePort();
  const dir = t.testdir({});
  const file = writeConfig(dir, { dir, web: { port: 0 }, log: { disk: 0 }, upstream: { host: null }, listen });
  const r = await startRelayProcess(['--config', file, '--port', String(port)]);
  t.teardown(() => r.stop());
  return r;
}

const cap = somaxconn();
// Both ends of every connection are in processes with this limit (the relay's child inherits it).
const storm = Math.min(3000, (cap ?? 0) - 96, (openFilesLimit() ?? Infinity) - 300);

t.test('a storm of connections within the default listen.tcp-backlog is queued by the kernel and all of it served', { skip: storm < 1000 ? `net.core.somaxconn (${cap}) or the open files limit (${openFilesLimit()}) leaves room for a storm of ${storm} connections only` : false }, async (t) => {
  const r = await relay(t);
  const admin = await RedisClient.connect(r.port);
  t.teardown(() => admin.close());
  const sockets: Socket[] = [];
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  for (let i = 0; i < storm; i++) {
    const s = connect(r.port, '127.0.0.1');
    s.on('error', () => {});
    sockets.push(s);
  }
  await Promise.all(sockets.map((s) => once(s, 'connect')));
  // The kernel's queue held them all (with 511, it dropped handshakes: the relay had not accepted them all 20 s later;
  // the kernel's ListenOverflows counter, system-wide, rose meanwhile).
  await waitFor(async () => Number((await admin.info('clients'))['connected_clients']) === storm + 1, {
    what: `the relay accepted all ${storm} connections`,
    timeoutMs: 20_000,
    signal: r.exited,
  });
  // Every one of them is a client the relay answers.
  const replies = sockets.map((s) => once(s, 'data'));
  sockets.forEach((s) => s.write('PING\r\n'));
  const answers = (await Promise.all(replies)).map(([d]) => String(d));
  t.equal(answers.filter((a) => a === '+PONG\r\n').length, storm, 'every connection of the storm answered its PING');
});

t.test('a listen.tcp-backlog above net.core.somaxconn is warned about, as Redis does', { skip: cap === null || cap >= 65535 ? `net.core.somaxconn is ${cap}: no backlog the relay takes is above it` : false }, async (t) => {
  const r = await relay(t, { 'tcp-backlog': cap! + 1 });
  const warned = logLines(r.logs(), /listen\.tcp-backlog .* cannot be enforced/);
  t.equal(warned.length, 1, 'one warning at start');
  t.match(warned[0], { limit: 'listen.tcp-backlog', value: cap! + 1, somaxconn: cap });
});
