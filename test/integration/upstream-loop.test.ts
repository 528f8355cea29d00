/**
 * A relay told to follow itself (REPLICAOF its own address, or a Sentinel naming it), one of its own Redis replicas
 * (A -> R -> A), or a relay that follows it (A -> C -> B -> A). Its upstream would answer the PSYNC with +CONTINUE and the link would sit "up" on a stream that
 * never moves, with the relay listed as its own replica. The loop must be refused: a logged reason, the link down
 * (retried with backoff), its replicas kept on the master's history, and a later REPLICAOF to the real master
 * continues them.
 */
import t, { type Test } from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { waitFor } from '../helpers/wait.js';
import { freePort } from '../helpers/ports.js';
import { scriptedSentinel } from '../helpers/scripted-sentinel.js';
import { stat, offsetsBeside } from '../helpers/replication.js';
import type { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

/** A logged relay following 127.0.0.1:`port`, quick to retry; `more` is merged into its config. */
const relayOf = (t: Test, port: number, more: Record<string, unknown> = {}) =>
  startLoggedRelay(t, { ...more, upstream: { host: '127.0.0.1', port, 'backoff-min': '50ms', 'backoff-max': '500ms' } });

/** A master, a logged relay following it, and a Redis replica of the relay that has the master's first write. */
async function relayWithReplica(t: Test) {
  const master = await startRedis();
  const relay = await relayOf(t, master.port);
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(relay.port)] });
  const mc = await master.client();
  const rc = await replica.client();
  const relayClient = await relay.client();
  t.teardown(() => Promise.all([mc.close(), rc.close()]));
  await mc.call('SET', 'before', '1');
  await waitFor(async () => (await rc.call('GET', 'before')) !== null, { what: 'the replica to get "before"', timeoutMs: 15_000 });
  return { master, relay, replica, mc, rc, relayClient };
}

/** REPLICAOF the master again: the replica below the relay gets a new write and the master's replid. */
async function followsMasterAgain(t: Test, masterPort: number, mc: RedisClient, rc: RedisClient, relayClient: RedisClient): Promise<void> {
  t.equal(await relayClient.callString('REPLICAOF', '127.0.0.1', String(masterPort)), 'OK');
  await mc.call('SET', 'after', '1');
  const masterOffset = (await mc.info('replication'))['master_repl_offset'];
  await waitFor(async () => (await rc.info('replication'))['master_repl_offset'] === masterOffset, { what: `replica offset ${masterOffset}`, timeoutMs: 15_000 });
  t.equal(await rc.callString('GET', 'after'), '1', 'the replica follows the master again through the relay');
  t.equal((await rc.info('replication'))['master_replid'], (await mc.info('replication'))['master_replid']);
}

t.test('REPLICAOF its own address: the relay refuses the loop, logs why, and follows the real master again', async (t) => {
  const { master, relay, mc, rc, relayClient } = await relayWithReplica(t);

  t.equal(await relayClient.callString('REPLICAOF', '127.0.0.1', String(relay.port)), 'OK');
  const refusal = await waitFor(() => relay.lines.find((l) => JSON.stringify(l).includes('replication loop')), {
    what: 'a log line refusing the loop',
    timeoutMs: 10_000,
  });
  t.equal(refusal['level'], 40, 'logged as a warning');
  const info = await relayClient.info('replication');
  t.equal(info['master_link_status'], 'down', 'the link to itself is not up');
  t.notOk(Object.values(info).some((v) => v.includes(`port=${relay.port},`)), 'the relay is not listed as its own replica');

  await followsMasterAgain(t, master.port, mc, rc, relayClient);
});

t.test('REPLICAOF one of its own Redis replicas: the relay sees its own connection as that replica\'s master link, refuses the loop, and follows the master again', async (t) => {
  const { master, relay, replica, mc, rc, relayClient } = await relayWithReplica(t);

  // Its replica answers PSYNC with +CONTINUE (it is connected, on the same history): without the check the link
  // would sit "up" on a stream nothing feeds.
  t.equal(await relayClient.callString('REPLICAOF', '127.0.0.1', String(replica.port)), 'OK');
  const refusals = await waitFor(() => {
    const l = relay.lines.filter((l) => JSON.stringify(l).includes('replicates from this relay'));
    return l.length >= 2 ? l : undefined;
  }, { what: 'the loop refused on two attempts', timeoutMs: 10_000 });
  t.equal(refusals[0]!['level'], 40, 'logged as a warning');
  t.match(JSON.stringify(refusals[0]), `our connection on 127.0.0.1:${relay.port}`, 'naming the connection');
  const info = await relayClient.info('replication');
  t.equal(info['master_link_status'], 'down', 'the relay does not follow its own replica');
  t.equal((await rc.info('replication'))['master_link_status'], 'up', 'the replica stays on the relay');

  await followsMasterAgain(t, master.port, mc, rc, relayClient);
});

t.test('a Sentinel naming the relay itself as the master: the loop is refused and logged on every retry', async (t) => {
  const relayPort = await freePort();
  // A scripted Sentinel whose every answer names the relay.
  const sentinel = await scriptedSentinel('127.0.0.1', relayPort);
  t.teardown(() => sentinel.close());
  const sentinelPort = sentinel.port;

  const relay = await startLoggedRelay(t, {
    listen: { port: relayPort },
    upstream: { host: null, 'backoff-min': '50ms', 'backoff-max': '500ms', sentinel: { nodes: [`127.0.0.1:${sentinelPort}`], 'master-name': 'mymaster' } },
  });
  const client = await relay.client();
  await waitFor(() => relay.lines.filter((l) => JSON.stringify(l).includes('replication loop')).length >= 2, {
    what: 'the loop refused on each retry',
    timeoutMs: 10_000,
  });
  t.ok(sentinel.asked() >= 1, 'the Sentinel was asked');
  const info = await client.info('replication');
  t.equal(info['master_port'], String(relayPort), 'it names the relay itself');
  t.equal(info['master_link_status'], 'down');
  t.notOk(Object.values(info).some((v) => v.includes(`port=${relayPort},`)), 'the relay is not listed as its own replica');
});

t.test('REPLICAOF a relay two below it: the top relay sees itself in that relay\'s chain, refuses the loop and follows the master again', async (t) => {
  const master = await startRedis();
  const top = await relayOf(t, master.port);
  const middle = await relayOf(t, top.port);
  const bottom = await relayOf(t, middle.port);
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(bottom.port)] });
  const mc = await master.client();
  const rc = await replica.client();
  const [xt, xm, xb] = [await top.client(), await middle.client(), await bottom.client()];
  t.teardown(() => Promise.all([mc.close(), rc.close()]));

  await mc.call('SET', 'before', '1');
  // Three relays started together, each waiting for the one above it: longer than one relay alone.
  await waitFor(async () => (await rc.call('GET', 'before')) !== null, { what: 'the replica below the chain to get "before"', timeoutMs: 30_000 });
  const ids = await Promise.all([xt, xm, xb].map(async (x) => (await x.info('replication'))['relay_id']));
  // Started together, a relay may have connected before the one above it knew its own chain: it is reconnected then.
  const chains = await waitFor(
    async () => {
      const c = await Promise.all([xt, xm, xb].map(async (x) => (await x.info('replication'))['relay_chain']));
      return c[2] === `${ids[1]},${ids[0]}` ? c : undefined;
    },
    { what: 'the bottom relay to name both relays above it' },
  );
  t.same(chains, ['', ids[0], `${ids[1]},${ids[0]}`], 'each relay names the relays above it, nearest first (none above the top one: its upstream is Redis)');

  t.equal(await xt.callString('REPLICAOF', '127.0.0.1', String(bottom.port)), 'OK');
  const refusal = await waitFor(() => top.lines.find((l) => JSON.stringify(l).includes('replication loop')), { what: 'the top relay refusing the loop', timeoutMs: 10_000 });
  t.equal(refusal['level'], 40, 'logged as a warning');
  t.match(JSON.stringify(refusal), new RegExp(`${ids[0]} \\(this relay\\)`), 'naming itself in the chain');
  const info = await xt.info('replication');
  t.equal(info['master_link_status'], 'down', 'the top relay does not follow the bottom one');
  t.equal(info['relay_chain'], '', 'and names no relay above it');

  t.equal(await xt.callString('REPLICAOF', '127.0.0.1', String(master.port)), 'OK');
  await mc.call('SET', 'after', '1');
  const masterOffset = (await mc.info('replication'))['master_repl_offset'];
  await waitFor(async () => (await rc.info('replication'))['master_repl_offset'] === masterOffset, { what: `replica offset ${masterOffset}`, timeoutMs: 15_000 });
  t.equal(await rc.callString('GET', 'after'), '1', 'the replica below the chain follows the master again');
  t.equal(stat(await rc.info('stats'), 'sync_full'), 0, 'it never needed a full sync: the loop cost it nothing');
});

t.test('a relay whose chain changes reconnects the relays below it, which continue partially and name the new chain', async (t) => {
  const master = await startRedis();
  const other = await relayOf(t, master.port);
  const top = await relayOf(t, master.port);
  const below = await relayOf(t, top.port);
  const mc = await master.client();
  const [xo, xt, xb] = [await other.client(), await top.client(), await below.client()];
  t.teardown(() => mc.close());
  const [idOther, idTop] = await Promise.all([xo, xt].map(async (x) => (await x.info('replication'))['relay_id']));
  await waitFor(async () => (await xb.info('replication'))['relay_chain'] === idTop || undefined, { what: 'the relay below to name the top relay' });
  await mc.call('SET', 'before-the-move', '1');
  const held = await offsetsBeside(master.port, [below.port]);
  t.same(held.others, [held.master], "the relay below streams the master's writes");
  const partialBefore = stat(await xb.info('stats'), 'relay_upstream_partial_syncs');

  t.equal(await xt.callString('REPLICAOF', '127.0.0.1', String(other.port)), 'OK');
  await waitFor(async () => (await xb.info('replication'))['relay_chain'] === `${idTop},${idOther}` || undefined, {
    what: 'the relay below to name both relays above it',
  });
  t.ok(stat(await xb.info('stats'), 'relay_upstream_partial_syncs') > partialBefore, 'it reconnected and continued partially');
  t.equal(stat(await xb.info('stats'), 'relay_upstream_full_syncs'), 1, 'with no second full sync');
  await mc.call('SET', 'after-the-move', '1');
  const offset = (await mc.info('replication'))['master_repl_offset'];
  await waitFor(async () => (await xb.info('replication'))['master_repl_offset'] === offset || undefined, { what: 'the relay below to hold the write' });
});

t.test('a relay below that was taking a snapshot when the chain changed reconnects once it has it, and names the new chain', async (t) => {
  const master = await startRedis();
  const mc = await master.client();
  t.teardown(() => mc.close());
  await mc.call('DEBUG', 'POPULATE', 2000, 'key', 512);
  const other = await relayOf(t, master.port);
  // Snapshots leave the top relay at 200 kB/s: the one below takes seconds to get its ~1 MB.
  const top = await relayOf(t, master.port, { replication: { 'full-sync-rate': '200kb' } });
  const [xo, xt] = [await other.client(), await top.client()];
  const [idOther, idTop] = await Promise.all([xo, xt].map(async (x) => (await x.info('replication'))['relay_id']));
  await waitFor(async () => (await xt.info('replication'))['relay_snapshot_usable'] === '1' || undefined, { what: 'the top relay to hold a snapshot' });
  const below = await relayOf(t, top.port);
  const xb = await below.client();
  await waitFor(async () => (await xb.info('replication'))['master_sync_in_progress'] === '1' || undefined, { what: 'the relay below to be taking its snapshot' });

  t.equal(await xt.callString('REPLICAOF', '127.0.0.1', String(other.port)), 'OK');
  await waitFor(async () => (await xt.info('replication'))['relay_chain'] === idOther || undefined, { what: 'the top relay to name the relay above it' });
  t.equal((await xb.info('replication'))['master_sync_in_progress'], '1', 'the relay below is still taking its snapshot: it was not cut');
  await waitFor(async () => (await xb.info('replication'))['relay_chain'] === `${idTop},${idOther}` || undefined, {
    what: 'the relay below to name both relays above it',
    timeoutMs: 30_000,
  });
  t.equal(stat(await xb.info('stats'), 'relay_upstream_full_syncs'), 1, 'one full sync: it reconnected after it, partially');
});
