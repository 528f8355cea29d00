/**
 * Crashes of the relay combined with upstream failovers. Two Redis nodes swap roles (a graceful switchover: the
 * load stops at a batch boundary, the replica catches up, `REPLICAOF NO ONE` on it, `REPLICAOF <it>` on the old
 * master), the relay X is SIGKILLed at random points of the stream, right after it is told about a new master
 * (before or while it PSYNCs it, or right after it shifted its ids), or while a failover happens without it; it is
 * restarted on the same data dir pointed at the master it followed, the new master, or the old master (now a replica
 * of the new one: a chain). An order-sensitive load runs on whichever node is master.
 *
 * Switchovers happen only when everyone below holds the current history (so each node has the history of the node
 * it asks). A graceful one leaves no full sync legitimate anywhere, not on the Redis nodes, not from the relay; one
 * under load (the replica promoted while the master still writes), with the relay up or down, forces exactly those
 * Redis's rules predict from the offsets (hardSwitchover, hardWhileDown). At the end every replica has the final
 * master's digest and offset.
 *
 * FSTORM_ROUNDS (default 8), FSTORM_SEED (default 38: every kind of round), FSTORM_COMMANDS (per load batch, 2000)
 * and FSTORM_LOGS (a file for every life's log) make a longer storm by hand.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { startRedis, stopAll, type RedisServer } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess, type RelayProcess } from '../helpers/relay-process.js';
import { offsetsBeside, replicaSyncs, stat } from '../helpers/replication.js';
import { mixedLoad } from '../helpers/mixed-load.js';
import { waitFor } from '../helpers/wait.js';
import { call, convergedPorts, infoOf, num } from '../helpers/failover.js';

t.teardown(stopAll);

const ROUNDS = Number(process.env.FSTORM_ROUNDS ?? 8);
const SEED = Number(process.env.FSTORM_SEED ?? 38);

/** Neither node pings its replicas while the switchover runs: a PING on the old master after the promotion would be a byte the new one lacks. */
const NODE_ARGS = ['--repl-backlog-size', '256mb', '--repl-ping-replica-period', '3600', '--repl-timeout', '600'];

/**
 * mulberry32: a repeatable random integer below `n`. Not seededRandom (mixed-load.ts): its `state % n` takes an LCG's
 * low bits, whose period is tiny (mod 2 it alternates, mod 6 it never gives an odd number).
 */
function random(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) % n;
  };
}

/** The offset the relay recovered at start (its `replication log recovered` line), from its JSON log. */
function recoveredOffset(logs: string): number | undefined {
  for (const line of logs.split('\n')) {
    if (line.includes('"replication log recovered"')) return (JSON.parse(line) as { offset: number }).offset;
  }
  return undefined;
}

const offsetOf = async (port: number): Promise<number> => num(await infoOf(port), 'master_repl_offset');

/**
 * mixedLoad() batches on whichever node is master now; pause() waits for the batch in flight to end (the stream is
 * then quiet), resume(port) goes on against `port`. Paced so that no replica of the relay falls more than 32 MB
 * behind (they are offline while the relay restarts and must not fall past its log).
 */
function switchableLoad(first: number, replicaPorts: number[], seed: number, commands: number): {
  pause(): Promise<void>;
  resume(port: number): void;
  stop(): Promise<void>;
} {
  let target = first;
  let loading = true;
  /** Set by pause(): called by the loop once the batch in flight is done. */
  const wanted: { paused: (() => void) | null } = { paused: null };
  let resumed: Promise<void> = Promise.resolve();
  let release: () => void = () => undefined;
  const loop = (async () => {
    for (let i = 0; loading; i++) {
      const paused = wanted.paused;
      if (paused) {
        wanted.paused = null;
        paused();
        await resumed;
        if (!loading) break;
      }
      await mixedLoad(target, { commands, seed: seed + i, bigValue: 8_000 });
      const end = await offsetOf(target);
      await waitFor(async () => {
        for (const p of replicaPorts) if (end - (await offsetOf(p)) > 32_000_000) return undefined;
        return true;
      }, { what: 'replicas within 32 MB of the master', timeoutMs: 60_000 });
    }
  })();
  return {
    pause: () => {
      resumed = new Promise((r) => (release = r));
      return new Promise((r) => (wanted.paused = r));
    },
    resume: (port) => {
      target = port;
      release();
    },
    stop: async () => {
      loading = false;
      release();
      wanted.paused?.();
      await loop;
    },
  };
}

t.test(`relay SIGKILLs and upstream switchovers, ${ROUNDS} rounds (seed ${SEED}): only the full syncs Redis's rules force, equal digests`, async (t) => {
  t.comment(`FSTORM_SEED=${SEED} FSTORM_ROUNDS=${ROUNDS}`);
  const rand = random(SEED);
  // Two Redis nodes that swap roles: nodes[master] is the master, the other its replica.
  const nodes: RedisServer[] = [await startRedis({ args: NODE_ARGS })];
  nodes.push(await startRedis({ args: [...NODE_ARGS, '--replicaof', '127.0.0.1', String(nodes[0]!.port)] }));
  let master = 0;
  const { port, args } = await relayArgs(
    'relay-fstorm-',
    nodes[0]!.port,
    'log:\n  memory: 64mb\n  disk: 1gb\nreplication:\n  ahead-wait: 60s\nweb:\n  port: 0\nupstream:\n  backoff-min: 20ms\n  backoff-max: 200ms\n',
  );
  /** The port the relay follows (it is restarted pointed there). */
  let xUp = nodes[0]!.port;
  const argsFor = (up: number): string[] => args.map((a) => (a.startsWith('127.0.0.1:') ? `127.0.0.1:${up}` : a));
  let relay: RelayProcess = await startRelayProcess(argsFor(xUp));
  t.teardown(() => relay.stop('SIGKILL'));
  const replicas = [await startRedis({ args: ['--replicaof', '127.0.0.1', String(port), '--repl-timeout', '600'] }), await startRedis({ args: ['--replicaof', '127.0.0.1', String(port), '--repl-timeout', '600'] })];
  const rPorts = replicas.map((s) => s.port);
  await convergedPorts(nodes[0]!.port, [nodes[1]!.port, ...rPorts], 'first syncs');

  const nodeFull0 = await Promise.all(nodes.map(async (n) => num(await infoOf(n.port, 'stats'), 'sync_full')));
  t.same(nodeFull0, [2, 0], 'first syncs: the master served its replica and the relay');
  // Full syncs the relay served, over all its lives (each life's count is read before it is killed).
  let relayFull = -num(await infoOf(port, 'stats'), 'sync_full');
  let relayPartial = 0;
  const lives: string[] = [];
  const counts = { kill: 0, failover: 0, told: 0, killTold: 0, downFailover: 0, chained: 0, hard: 0, hardDown: 0 };
  /** The full syncs Redis's rules make legitimate (only switchovers under load have any). */
  const expected = { nodeFull: 0, relayFull: 0, rdbLoads: [1, 1] };

  const kill = async (): Promise<void> => {
    // The counts of this life: read at once before the kill (a sync decided in between is not counted).
    const s = await infoOf(port, 'stats').catch(() => null);
    if (s) {
      relayFull += num(s, 'sync_full');
      relayPartial += num(s, 'sync_partial_ok');
    }
    await relay.stop('SIGKILL');
    lives.push(relay.logs());
  };
  const restart = async (up: number): Promise<void> => {
    xUp = up;
    relay = await startRelayProcess(argsFor(up));
  };

  /** Everyone holds the master's history and its link is up: the next switchover is one Redis can continue. */
  const settled = async (what: string): Promise<void> => {
    const mp = nodes[master]!.port;
    await waitFor(async () => {
      const id = (await infoOf(mp))['master_replid'];
      for (const p of [nodes[1 - master]!.port, port, ...rPorts]) {
        const i = await infoOf(p);
        if (i['master_replid'] !== id || i['master_link_status'] !== 'up') return undefined;
      }
      return true;
    }, { what, timeoutMs: 60_000 });
  };

  /**
   * A graceful switchover: the load stops at a batch boundary, the replica catches up, is promoted, and the old
   * master follows it. `between` runs between the promotion and the old master's REPLICAOF.
   */
  const switchover = async (load: ReturnType<typeof switchableLoad>, between: () => Promise<void> = async () => {}): Promise<void> => {
    await load.pause();
    const old = nodes[master]!;
    const next = nodes[1 - master]!;
    await waitFor(async () => {
      const o = await infoOf(next.port);
      return o['master_link_status'] === 'up' && num(o, 'master_repl_offset') === (await offsetOf(old.port)) || undefined;
    }, { what: 'the replica caught up with the master', timeoutMs: 60_000 });
    await call(next.port, 'REPLICAOF', 'NO', 'ONE');
    await between();
    await call(old.port, 'REPLICAOF', '127.0.0.1', String(next.port));
    master = 1 - master;
    counts.failover++;
    load.resume(next.port);
  };

  /**
   * A switchover under load: the replica is promoted while the master still takes the batch in flight, whose end
   * the new master never gets. Redis's rules then say exactly who must full-sync: the old master if it wrote
   * anything after the promotion (its offset reached the new master's second_repl_offset), and so the relay if it
   * took that (it waits until it has all of the old master's stream, then is told, or stays chained through it), and
   * so the relay's replicas (a new history), once each.
   */
  const hardSwitchover = async (load: ReturnType<typeof switchableLoad>, tell: boolean, k: number): Promise<void> => {
    const old = nodes[master]!;
    const next = nodes[1 - master]!;
    await call(next.port, 'REPLICAOF', 'NO', 'ONE');
    const second = num(await infoOf(next.port), 'second_repl_offset');
    await load.pause();
    const oldEnd = await offsetOf(old.port);
    const xOnOld = xUp === old.port;
    if (xOnOld) await waitFor(async () => (await offsetOf(port)) === oldEnd || undefined, { what: "the relay has all of the old master's stream", timeoutMs: 60_000 });
    const oldFull = oldEnd >= second;
    const xFull = xOnOld && oldFull;
    t.comment(`round ${k}: switchover under load, relay ${xOnOld ? (tell ? 'told' : 'not told (chained)') : 'chained through the promoted node'}: old master ${oldEnd - second + 1} bytes past the promotion${xFull ? ', so the relay and its replicas full-sync' : ''}`);
    if (xOnOld && tell) {
      await call(port, 'REPLICAOF', '127.0.0.1', String(next.port));
      xUp = next.port;
    }
    await call(old.port, 'REPLICAOF', '127.0.0.1', String(next.port));
    master = 1 - master;
    counts.failover++;
    counts.hard++;
    expected.nodeFull += (oldFull ? 1 : 0) + (xFull ? 1 : 0);
    expected.relayFull += xFull ? replicas.length : 0;
    if (xFull) expected.rdbLoads = expected.rdbLoads.map((n) => n + 1);
    load.resume(next.port);
    // The full syncs end before the next round (a kill during one would make another).
    await settled(`round ${k}: everyone on the new master's history`);
  };

  /**
   * A switchover under load while the relay is down; it restarts pointed at the new master, from whatever its disk
   * log kept (possibly less than its replicas hold). By Redis's rules, with S the new master's second_repl_offset:
   * the relay continues iff its recovered offset + 1 <= S (the new master vouches for the old id up to S in its
   * INFO); then each replica continues iff its own offset + 1 <= S (it is held until the relay has its offset), else
   * it full-syncs; when the relay full-syncs, so does every replica.
   */
  const hardWhileDown = async (load: ReturnType<typeof switchableLoad>, k: number, late: boolean): Promise<void> => {
    const old = nodes[master]!;
    const next = nodes[1 - master]!;
    // Killed before the promotion, or after it once it took all the old master wrote past it (its replicas then
    // hold bytes the new master never had).
    if (!late) await kill();
    await call(next.port, 'REPLICAOF', 'NO', 'ONE');
    const second = num(await infoOf(next.port), 'second_repl_offset');
    await load.pause();
    const oldEnd = await offsetOf(old.port);
    if (late) {
      if (xUp === old.port) await waitFor(async () => (await offsetOf(port)) === oldEnd || undefined, { what: "the relay has all of the old master's stream", timeoutMs: 60_000 });
      await kill();
    }
    await call(old.port, 'REPLICAOF', '127.0.0.1', String(next.port));
    master = 1 - master;
    counts.failover++;
    counts.hardDown++;
    // The replicas' offsets stand still while the relay is down.
    const held = await Promise.all(rPorts.map(offsetOf));
    await restart(next.port);
    const recovered = await waitFor(() => recoveredOffset(relay.logs()), { what: 'the relay logs its recovered offset' });
    const xFull = recovered + 1 > second;
    const replicaFull = held.map((o) => xFull || o + 1 > second);
    t.comment(`round ${k}: switchover under load while the relay is down (killed ${late ? 'after' : 'before'} the promotion): S ${second}, old master +${oldEnd - second + 1}, relay recovered ${recovered - second + 1}, replicas ${held.map((o) => o - second + 1).join('/')} (relative to S): full syncs for ${xFull ? 'the relay' : 'no relay'}, replicas ${replicaFull.map((f) => (f ? 'full' : 'partial')).join('/')}`);
    expected.nodeFull += (oldEnd >= second ? 1 : 0) + (xFull ? 1 : 0);
    expected.relayFull += replicaFull.filter(Boolean).length;
    replicaFull.forEach((f, i) => (expected.rdbLoads[i]! += f ? 1 : 0));
    load.resume(next.port);
    await settled(`round ${k}: everyone on the new master's history`);
  };

  /** Lines of the relay's current life matching `text`. */
  const linesOf = (text: string): number => relay.logs().split('\n').filter((l) => l.includes(text)).length;

  const load = switchableLoad(nodes[0]!.port, rPorts, SEED * 1000, Number(process.env.FSTORM_COMMANDS ?? 2000));
  for (let k = 0; k < ROUNDS; k++) {
    // A random point of the stream (not faster than the relay catches up).
    await waitFor(async () => (await offsetOf(nodes[master]!.port)) - (await offsetOf(port)) < 8_000_000 || undefined, { what: 'the relay caught up', timeoutMs: 60_000 });
    const before = await offsetOf(port);
    const step = rand(2_000_000);
    await waitFor(async () => (await offsetOf(port)) >= before + step || undefined, { what: 'the relay took more stream', timeoutMs: 60_000 });
    const action = rand(7);
    if (action === 0) {
      t.comment(`round ${k}: SIGKILL at ${await offsetOf(port).catch(() => -1)}`);
      await kill();
      await restart(xUp);
      counts.kill++;
      continue;
    }
    // Switchovers only from a settled topology (Redis needs the same: a replica two ids behind full-syncs).
    await settled(`round ${k}: everyone on the master's history`);
    if (action === 1 || action === 2) {
      // The relay told via REPLICAOF (before or after the old master follows the new one), or not at all (it stays
      // on the old master, now a replica of the new one: chained).
      const tell = rand(3);
      t.comment(`round ${k}: switchover, relay ${['told before the old master moves', 'told after', 'not told (chained)'][tell]}`);
      const next = nodes[1 - master]!.port;
      const told = async (): Promise<void> => {
        await call(port, 'REPLICAOF', '127.0.0.1', String(next));
        xUp = next;
        counts.told++;
      };
      if (tell === 0) await switchover(load, told);
      else await switchover(load);
      if (tell === 1) await told();
      if (tell === 2) counts.chained++;
      continue;
    }
    if (action === 3) {
      // Told, then killed at one of the moments of its move to the new master.
      const picked = ['at once', 'following a new upstream', 'partial resync accepted by upstream', 'upstream has a new replid, shifting ids', '"to":"connected"'][rand(5)]!;
      // Already on the new master (chained through it before it was promoted): REPLICAOF is a no-op, logs nothing.
      const moment = xUp === nodes[1 - master]!.port ? 'at once' : picked;
      t.comment(`round ${k}: switchover, relay told then SIGKILLed: ${moment}`);
      await switchover(load, async () => {
        const n0 = moment === 'at once' ? 0 : linesOf(moment);
        await call(port, 'REPLICAOF', '127.0.0.1', String(nodes[1 - master]!.port));
        if (moment !== 'at once') await waitFor(() => linesOf(moment) > n0 || undefined, { what: `the relay logs ${moment}`, timeoutMs: 30_000 });
        await kill();
      });
      // Restarted pointed at the new master, or at the old one (now its replica).
      const chained = rand(2) === 1;
      await restart(nodes[chained ? 1 - master : master]!.port);
      counts.killTold++;
      if (chained) counts.chained++;
      continue;
    }
    if (action === 5) {
      await hardSwitchover(load, rand(2) === 0, k);
      continue;
    }
    if (action === 6) {
      await hardWhileDown(load, k, rand(2) === 0);
      continue;
    }
    // Killed, a switchover while it is down, restarted pointed at the new master or the old one.
    const chained = rand(2) === 1;
    t.comment(`round ${k}: SIGKILL, switchover while down, restart on the ${chained ? 'old master (chained)' : 'new master'}`);
    await kill();
    await switchover(load);
    await restart(nodes[chained ? 1 - master : master]!.port);
    counts.downFailover++;
    if (chained) counts.chained++;
  }
  await load.stop();
  const mp = nodes[master]!.port;
  await call(mp, 'SET', 'after-storm', '1');
  t.comment(`actions: ${JSON.stringify(counts)}`);
  // The oracle: an order-sensitive load gives equal digests only if no byte was lost, repeated or reordered.
  const end = await convergedPorts(mp, [nodes[1 - master]!.port, ...rPorts], 'everyone converges on the final master', 120_000);
  await waitFor(async () => (await offsetOf(port)) === end.offset || undefined, { what: 'the relay at the master offset' });
  const xs = await infoOf(port, 'stats');
  relayFull += num(xs, 'sync_full');
  relayPartial += num(xs, 'sync_partial_ok');
  lives.push(relay.logs());
  if (process.env.FSTORM_LOGS) writeFileSync(process.env.FSTORM_LOGS, lives.map((l, i) => `===== life ${i}\n${l}`).join('\n'));

  const nodeStats = await Promise.all(nodes.map((n) => infoOf(n.port, 'stats')));
  t.comment(`nodes: sync_full ${nodeStats.map((s) => num(s, 'sync_full')).join('/')}, sync_partial_ok ${nodeStats.map((s) => num(s, 'sync_partial_ok')).join('/')}; relay: served ${relayFull} full, ${relayPartial} partial`);
  t.comment(`expected full syncs: ${JSON.stringify(expected)}`);
  // A replica that must full-sync when the relay's snapshot is no longer usable makes it fetch one (a fork upstream).
  const fetches = lives.join('\n').split('\n').filter((l) => l.includes('no usable snapshot for a full sync: fetching a fresh one')).length;
  t.comment(`snapshot fetches by the relay: ${fetches}`);
  t.equal(nodeStats.reduce((n, s, i) => n + num(s, 'sync_full') - nodeFull0[i]!, 0), expected.nodeFull + fetches, 'the Redis nodes made only the full syncs a switchover under load forces, and the snapshot fetches (the relay and the demoted master continued otherwise)');
  t.equal(relayFull, expected.relayFull, 'the relay served full syncs only after it had to take one itself');
  t.same(replicas.map((r) => replicaSyncs(r.logs()).full), expected.rdbLoads, "the relay's replicas loaded one RDB each, plus those Redis's rules force");
  const xi = await infoOf(port);
  const mi = await infoOf(mp);
  t.equal(xi['master_replid'], mi['master_replid'], "the relay follows the final master's history");
  // Read together: the master's PINGs move its offset at any moment (end.offset may be behind both already).
  const together = await offsetsBeside(mp, [port]);
  t.equal(together.others[0], together.master, 'the relay has the master offset');
  for (const p of rPorts) t.equal((await infoOf(p))['master_replid'], mi['master_replid'], `replica ${p} on the final history`);
  t.ok(end.digest !== '0000000000000000000000000000000000000000', 'the dataset is not empty');
  for (const r of replicas) await r.stop();
});
