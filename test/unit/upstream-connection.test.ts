/**
 * openReplicationConnection against a scripted upstream: the `INFO replication` asked before a PSYNC with a known
 * replid is read whole (its bulk payload spans lines and chunks), and any other answer to it (an error, a reply too
 * long to read) leaves the handshake going, without upstream ids.
 */
import t, { type Test } from 'tap';
import { createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { openReplicationConnection, type OpenedLink } from '../../src/upstream/connection.js';
import type { MasterLink } from '../../src/upstream/handshake.js';
import { onCommands } from '../helpers/fake-master.js';
import { createLogger } from '../../src/log.js';

const OLD = 'a'.repeat(40);
const NEW = 'b'.repeat(40);
const INFO = ['# Replication', 'role:master', 'connected_slaves:0', `master_replid:${NEW}`, `master_replid2:${OLD}`, 'master_repl_offset:9000', 'second_repl_offset:8001', ''].join('\r\n');

/**
 * A master that answers the handshake like Redis, INFO with `info`, CLIENT (LIST TYPE master) with `links` (a master's
 * empty list unless told), and PSYNC with +CONTINUE <NEW>; `split` writes every reply one byte per write. Records the
 * commands.
 */
async function scripted(t: Test, info: string, split = false, links = '$0\r\n\r\n'): Promise<{ port: number; commands: string[][] }> {
  const commands: string[][] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const write = async (text: string) => {
      if (!split) return void socket.write(text, 'latin1');
      // One byte per turn, so the relay sees each byte in its own 'data' event.
      for (const b of Buffer.from(text, 'latin1')) {
        socket.write(Buffer.of(b));
        await new Promise((r) => setImmediate(r));
      }
    };
    let queue = Promise.resolve();
    onCommands(socket, (cmd, name) => {
      commands.push(cmd);
      const answer =
        name === 'PING' ? '+PONG\r\n' : name === 'INFO' ? info : name === 'CLIENT' ? links : name === 'PSYNC' ? `+CONTINUE ${NEW}\r\n` : '+OK\r\n';
      queue = queue.then(() => write(answer));
      return true;
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const addr = server.address();
  return { port: typeof addr === 'object' && addr ? addr.port : 0, commands };
}

interface More {
  rdbOnly?: boolean;
  relayId?: string;
  isOwnConnection?: (link: MasterLink) => boolean;
}

async function open(t: Test, port: number, psyncReplid = OLD, more: More = {}): Promise<OpenedLink> {
  const opened = await openReplicationConnection({
    host: '127.0.0.1',
    port,
    user: null,
    password: null,
    listeningPort: 6380,
    announceIp: null,
    rdbOnly: more.rdbOnly ?? false,
    relayId: more.relayId ?? null,
    psyncReplid,
    psyncOffset: psyncReplid === '?' ? -1 : 5001,
    connectTimeoutMs: 5000,
    replyTimeoutMs: 5000,
    log: createLogger('silent'),
    ...(more.isOwnConnection && { isOwnConnection: more.isOwnConnection }),
  });
  t.teardown(() => opened.socket.destroy());
  return opened;
}

const INFO_CMD = ['INFO', 'replication'];
const LINKS_CMD = ['CLIENT', 'LIST', 'TYPE', 'master'];

const bulk = (text: string) => `$${Buffer.byteLength(text, 'latin1')}\r\n${text}\r\n`;

for (const split of [false, true]) {
  t.test(`a bulk INFO reply gives upstream's ids, then PSYNC continues${split ? ' (byte by byte)' : ''}`, async (t) => {
    const m = await scripted(t, bulk(INFO), split);
    const opened = await open(t, m.port);
    t.same(opened.outcome, { kind: 'continue', replid: NEW });
    t.same(opened.upstreamInfo, { replid: NEW, replid2: OLD, secondReplOffset: 8001, relayChain: [] });
    t.same(m.commands.slice(-3), [INFO_CMD, LINKS_CMD, ['PSYNC', OLD, '5001']], 'INFO and the master links are asked just before PSYNC');
    t.equal(opened.rest.length, 0, 'nothing of the INFO reply is left for the stream');
  });
}

t.test('an error reply to INFO (-NOPERM) leaves the handshake going, without ids', async (t) => {
  const m = await scripted(t, "-NOPERM User repl has no permissions to run the 'info' command\r\n");
  const opened = await open(t, m.port);
  t.same(opened.outcome, { kind: 'continue', replid: NEW });
  t.equal(opened.upstreamInfo, null);
});

t.test('an unknown-command error to INFO leaves the handshake going, without ids', async (t) => {
  const m = await scripted(t, "-ERR unknown command 'INFO', with args beginning with: 'replication'\r\n");
  const opened = await open(t, m.port);
  t.same(opened.outcome, { kind: 'continue', replid: NEW });
  t.equal(opened.upstreamInfo, null);
});

t.test('an INFO reply too long to read is skipped, without ids, and the PSYNC reply after it is read', async (t) => {
  const long = INFO + `${'x'.repeat(100)}\r\n`.repeat(12_000);
  const m = await scripted(t, bulk(long));
  const opened = await open(t, m.port);
  t.same(opened.outcome, { kind: 'continue', replid: NEW });
  t.equal(opened.upstreamInfo, null);
});

t.test('a first contact (PSYNC ? -1) asks INFO and the master links too; a snapshot fetch (rdb-only) does not', async (t) => {
  const first = await scripted(t, bulk(INFO));
  await open(t, first.port, '?');
  t.same(first.commands.slice(-3), [INFO_CMD, LINKS_CMD, ['PSYNC', '?', '-1']]);
  const fetch = await scripted(t, bulk(INFO));
  await open(t, fetch.port, '?', { rdbOnly: true });
  t.notOk(fetch.commands.some((c) => c[0] === 'INFO' || c[0] === 'CLIENT'));
});

const ME = 'c'.repeat(40);
const ABOVE = 'd'.repeat(40);
const relayInfo = (id: string, chain: string[]) => bulk(INFO + `relay_id:${id}\r\nrelay_chain:${chain.join(',')}\r\n`);

t.test("an upstream relay's INFO gives the chain of relays above us: its relay_id, then its relay_chain", async (t) => {
  const m = await scripted(t, relayInfo(ABOVE, [NEW, 'not-an-id', OLD]));
  const opened = await open(t, m.port, OLD, { relayId: ME });
  t.same(opened.upstreamInfo?.relayChain, [ABOVE, NEW, OLD], 'ids that are not 40 hex digits are left out');
});

for (const [what, info] of [
  ['is this relay (through a proxy)', relayInfo(ME, [])],
  ['follows this relay', relayInfo(ABOVE, [NEW, ME])],
] as const) {
  t.test(`an upstream that ${what} is refused as a replication loop before PSYNC`, async (t) => {
    const m = await scripted(t, info);
    await t.rejects(open(t, m.port, OLD, { relayId: ME }), /would be a replication loop/);
    t.notOk(m.commands.some((c) => c[0] === 'PSYNC'), 'no PSYNC was sent');
  });
}

/** What a Redis replica lists as its master link: its own end (laddr) and its master's (addr). */
const replicaLink = bulk('id=7 addr=10.1.2.3:7001 laddr=10.9.8.7:40404 fd=9 name= age=3 idle=0 flags=M db=0 sub=0 psub=0 multi=-1 cmd=ping user=default\n');

for (const split of [false, true]) {
  t.test(`an upstream whose master link is a connection this relay's listener holds is refused as a loop before PSYNC${split ? ' (byte by byte)' : ''}`, async (t) => {
    const m = await scripted(t, bulk(INFO), split, replicaLink);
    const asked: MasterLink[] = [];
    const own = (l: MasterLink) => {
      asked.push(l);
      return l.local.address === '10.9.8.7' && l.local.port === 40404 && l.remote.address === '10.1.2.3' && l.remote.port === 7001;
    };
    await t.rejects(open(t, m.port, OLD, { isOwnConnection: own }), /replicates from this relay \(its master link is our connection on 10\.1\.2\.3:7001\): following it would be a replication loop/);
    t.equal(asked.length, 1, 'the listener was asked about the one link');
    t.notOk(m.commands.some((c) => c[0] === 'PSYNC'), 'no PSYNC was sent');
  });
}

t.test('an upstream whose master link is not ours (a replica of another master) is followed', async (t) => {
  const m = await scripted(t, bulk(INFO), false, replicaLink);
  const opened = await open(t, m.port, OLD, { isOwnConnection: () => false });
  t.same(opened.outcome, { kind: 'continue', replid: NEW });
});

t.test('a CLIENT LIST reply too long to read is skipped, and the PSYNC reply after it is read', async (t) => {
  const m = await scripted(t, bulk(INFO), false, bulk('id=1 addr=1.2.3.4:5 laddr=6.7.8.9:10 flags=N\n'.repeat(3_000)));
  const opened = await open(t, m.port, OLD, { isOwnConnection: () => true });
  t.same(opened.outcome, { kind: 'continue', replid: NEW }, 'no link was read, so none is ours');
  t.equal(opened.rest.length, 0);
});
