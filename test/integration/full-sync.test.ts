import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { startRedis, stopAll, type RedisServer } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { freePort } from '../helpers/ports.js';
import { startReplica, waitConverged, stat } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import type { RedisClient } from '../helpers/redis-client.js';
import { tempDir } from '../helpers/temp-dir.js';

t.teardown(stopAll);

const master = await startRedis();
const m = await master.client();
t.teardown(() => m.close());
// Enough data that the first sync takes a moment.
await m.call('DEBUG', 'POPULATE', 20000, 'key', 512);

t.test('five replicas attached at different times cost the master exactly one full sync', async (t) => {
  const port = await freePort();
  // The first replica is waiting for the relay before it even listens.
  const early = await startReplica(port);
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, listen: { port } });
  t.teardown(() => relay.stop());
  const servers: RedisServer[] = [early];
  const clients: RedisClient[] = [await early.client()];
  for (let i = 0; i < 4; i++) {
    await m.call('SET', `stagger:${i}`, i);
    const r = await startReplica(relay.port);
    servers.push(r);
    clients.push(await r.client());
    if (i % 2 === 1) await waitConverged(m, clients, `replica ${i + 2} online`);
  }
  await m.call('SET', 'stagger:last', 'x');
  await waitConverged(m, clients, 'all five replicas converge');
  t.equal(stat(await m.info('stats'), 'sync_full'), 1, 'master sync_full is 1');
  const x = await relay.client();
  t.equal((await x.info('replication'))['connected_slaves'], '5');
  t.equal(stat(await x.info('stats'), 'sync_full'), 5, 'the relay served five full syncs');
  for (const c of [x, ...clients]) await c.close();
  for (const s of servers) await s.stop();
});

t.test('redis-cli --replica and --rdb work against the relay', async (t) => {
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  await waitFor(async () => (await x.info('replication'))['master_link_status'] === 'up', { what: 'relay link up' });

  const cli = spawn('redis-cli', ['-p', String(relay.port), '--replica'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => cli.kill());
  let out = '';
  cli.stdout.on('data', (d: Buffer) => (out += d.toString()));
  cli.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // Redis 7.0 prints "SYNC done", valkey-cli 8 "Full resync done".
  await waitFor(() => /SYNC done|Full resync done/.test(out) || undefined, { what: 'redis-cli --replica synced' });
  await m.call('SET', 'seen-by-cli', 'hello');
  await waitFor(() => out.includes('"seen-by-cli"') || undefined, { what: 'redis-cli --replica prints the command' });
  t.match(out, /"SET","seen-by-cli","hello"/);

  const dir = tempDir('relay-rdb-');
  const file = join(dir, 'dump.rdb');
  const rdb = spawn('redis-cli', ['-p', String(relay.port), '--rdb', file], { stdio: 'ignore' });
  const [code] = (await once(rdb, 'exit')) as [number];
  t.equal(code, 0, 'redis-cli --rdb exits 0');
  t.ok(statSync(file).size > 100000, 'the RDB holds the dataset');
  const check = execFileSync('redis-check-rdb', [file], { encoding: 'utf8' });
  t.match(check, /RDB looks OK/, 'redis-check-rdb accepts the RDB');
  t.match(check, /20\d{3} keys read/, 'every key is in it');
});
