/**
 * The relay as a replica asks its upstream for what a Redis 7.0 replica would ask, connection after connection.
 * One scripted upstream per peer runs the same script for a real redis-server replica and for the relay; each row
 * is what Redis 7.0's replica side (syncWithMaster, slaveTryPartialResynchronization) sends, derived from its rules,
 * and checked against the real Redis first (so a wrong derivation fails there, not on the relay):
 *
 *  0. first contact: PSYNC ? -1                              -> +FULLRESYNC A 1000, RDB, stream S1
 *  1. after a full sync: PSYNC A <1000 + |S1| + 1>           -> +CONTINUE, stream S2
 *  2. after a partial: PSYNC A <offset + 1>                  -> +CONTINUE B (a new replid), stream S3
 *  3. after +CONTINUE <new id>: PSYNC B <offset + 1>         -> -LOADING
 *  4. -LOADING is "try later": the cached master stays       -> -NOMASTERLINK
 *  5. -NOMASTERLINK too: the same PSYNC again                -> +FULLRESYNC C 5000, half an RDB, closed
 *  6. a full sync that did not complete leaves Redis 7.0 on its own history (its backlog, replid and offset are
 *     replaced only once the new RDB has loaded): PSYNC B <offset + 1> again
 *                                                           -> -ERR unknown command 'PSYNC'
 *  7. -ERR (PSYNC_NOT_SUPPORTED): SYNC on the same connection
 *
 * (Row 6 is not what the annotated Redis 4 walkthrough suggests, where +FULLRESYNC discards the cached master and
 * the next attempt would be PSYNC ? -1: the real 7.0.15 decides, which is why every row runs against it.)
 *
 * The handshake before the first PSYNC is compared too: PING, REPLCONF listening-port, REPLCONF ip-address (its
 * own command, with announce-ip set), REPLCONF capa eof capa psync2 (and, from a Valkey 8 replica, REPLCONF version,
 * which the relay does not send). The rows hold for Redis 7.4.1 and Valkey 8.0.1 replicas too. Before a PSYNC with a known replid the relay
 * also asks INFO replication (its upstream's ids, for a failover shift); this upstream refuses it (-NOPERM, as for
 * an ACL user with only the replication commands), which must change nothing of the script.
 */
import t from 'tap';
import { redisFlavor, redisVersion, startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startScriptedMaster, type ScriptedConnection, type ScriptedMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';

t.teardown(stopAll);

const A = '0123456789abcdef0123456789abcdef0123456a';
const B = '0123456789abcdef0123456789abcdef0123456b';
const C = '0123456789abcdef0123456789abcdef0123456c';
const FULL_AT = 1000;
const S1 = Buffer.concat([encodeCommand(['SELECT', '0']), encodeCommand(['SET', 'k1', 'v1']), encodeCommand(['SET', 'k2', 'v2'])]);
const S2 = encodeCommand(['SET', 'k3', 'v3']);
const S3 = encodeCommand(['SET', 'k4', 'v4']);
const O1 = FULL_AT + S1.length;
const O2 = O1 + S2.length;
const O3 = O2 + S3.length;
const RDB = emptyRdb(10);
const ANNOUNCE_IP = '10.0.0.7';

const ROWS: Array<[what: string, expected: string[]]> = [
  ['first contact: PSYNC ? -1', ['PSYNC', '?', '-1']],
  ['after a full sync: PSYNC <its replid> <its offset + stream + 1>', ['PSYNC', A, String(O1 + 1)]],
  ['after a partial resync: PSYNC <replid> <offset + 1>', ['PSYNC', A, String(O2 + 1)]],
  ['after +CONTINUE <new id>: PSYNC <new id> <offset + 1>', ['PSYNC', B, String(O3 + 1)]],
  ['after -LOADING (try later): the same PSYNC', ['PSYNC', B, String(O3 + 1)]],
  ['after -NOMASTERLINK (try later): the same PSYNC', ['PSYNC', B, String(O3 + 1)]],
  ['after +FULLRESYNC whose RDB transfer broke: still its own history, the same PSYNC', ['PSYNC', B, String(O3 + 1)]],
  ['after -ERR to PSYNC: SYNC on the same connection', ['SYNC']],
];

/** The upstream's side of the script, the same for both peers. */
function script(conn: ScriptedConnection, cmd: string[]): void {
  const s = conn.socket;
  const closeOnceAcked = (offset: number) => void conn.acked(offset).then(() => s.end());
  switch (conn.index) {
    case 0:
      s.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${A} ${FULL_AT}\r\n$${RDB.length}\r\n`), RDB, S1]));
      closeOnceAcked(O1);
      return;
    case 1:
      s.write(Buffer.concat([Buffer.from('+CONTINUE\r\n'), S2]));
      closeOnceAcked(O2);
      return;
    case 2:
      s.write(Buffer.concat([Buffer.from(`+CONTINUE ${B}\r\n`), S3]));
      closeOnceAcked(O3);
      return;
    case 3:
      s.write('-LOADING Redis is loading the dataset in memory\r\n');
      return;
    case 4:
      s.write("-NOMASTERLINK Can't SYNC while not connected with my master\r\n");
      return;
    case 5:
      s.end(Buffer.concat([Buffer.from(`+FULLRESYNC ${C} 5000\r\n$${RDB.length}\r\n`), RDB.subarray(0, 8)]));
      return;
    case 6:
      if (cmd[0]!.toUpperCase() === 'PSYNC') s.write("-ERR unknown command 'PSYNC', with args beginning with: \r\n");
      // then SYNC arrives on this connection: the script ends there.
      return;
  }
}

/** Connection `index`'s commands up to PSYNC, with the announced port replaced by <port>. */
function handshake(m: ScriptedMaster, port: number, index = 0): string[][] {
  const cmds = m.connections[index]?.commands ?? [];
  const end = cmds.findIndex((c) => c[0] === 'PSYNC');
  return cmds.slice(0, end).map((c) => c.map((a) => (a === String(port) ? '<port>' : a)));
}

const redisUpstream = await startScriptedMaster(script);
const relayUpstream = await startScriptedMaster(script, "-NOPERM User default has no permissions to run the 'info' command\r\n");
t.teardown(() => Promise.all([redisUpstream.close(), relayUpstream.close()]));

const redis = await startRedis({ args: ['--replicaof', '127.0.0.1', String(redisUpstream.port), '--replica-announce-ip', ANNOUNCE_IP] });
const relay = await startRelay({ upstream: { host: '127.0.0.1', port: relayUpstream.port }, listen: { 'announce-ip': ANNOUNCE_IP } });
t.teardown(() => relay.stop());

t.test('a Redis 7.0 replica and the relay ask the scripted upstream for the same things', async (t) => {
  for (const [who, m] of [['redis', redisUpstream], ['relay', relayUpstream]] as const) {
    await waitFor(() => m.syncs.length >= ROWS.length, { what: `${who}: ${ROWS.length} PSYNC/SYNC commands`, timeoutMs: 40_000 });
  }

  t.test('Redis 7.0 (the rules, checked)', async (t) => {
    ROWS.forEach(([what, expected], i) => t.same(redisUpstream.syncs[i], expected, `${i}. ${what}`));
  });

  t.test('the relay', async (t) => {
    ROWS.forEach(([what, expected], i) => t.same(relayUpstream.syncs[i], expected, `${i}. ${what}`));
    t.equal(relay.relay.status().replid, B, 'it follows history B, the last one it completed');
  });

  t.test('the handshake before the first PSYNC', async (t) => {
    const expected = [
      ['PING'],
      ['REPLCONF', 'listening-port', '<port>'],
      ['REPLCONF', 'ip-address', ANNOUNCE_IP],
      ['REPLCONF', 'capa', 'eof', 'capa', 'psync2'],
    ];
    // Valkey 8 also tells its master its own version (REPLCONF version 8.0.1, after capa; only Valkey's cluster bus
    // reads it). The relay is not Valkey and claims no version: a master ignores its absence, as for any Redis replica.
    const peerExpected = redisFlavor() === 'valkey' ? [...expected, ['REPLCONF', 'version', redisVersion()]] : expected;
    t.same(handshake(redisUpstream, redis.port), peerExpected, 'the real replica with replica-announce-ip');
    // The relay's additions: its compression capa (src/compression.ts) and the psync-relay marker, which Redis and
    // Valkey ignore, and last INFO replication (the upstream's ids, and the relays above it) and CLIENT LIST TYPE master
    // (the upstream's own master link, which must not be a connection to this relay), then PSYNC.
    const relayExpected = [
      ...expected.slice(0, -1),
      ['REPLCONF', 'capa', 'eof', 'capa', 'psync2', 'capa', 'psync-relay-z1:1', 'capa', 'psync-relay'],
      ['INFO', 'replication'],
      ['CLIENT', 'LIST', 'TYPE', 'master'],
    ];
    t.same(handshake(relayUpstream, relay.port), relayExpected, 'the relay with listen.announce-ip');
    t.same(handshake(redisUpstream, redis.port, 1), peerExpected, 'the real replica reconnecting: the same');
    t.same(handshake(relayUpstream, relay.port, 1), relayExpected, 'the relay reconnecting: the same');
  });
});
