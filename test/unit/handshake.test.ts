import t from 'tap';
import {
  HandshakeState as S,
  step,
  psyncReply,
  type HandshakeContext,
  type HandshakeInput,
  type HandshakeState,
  type StepResult,
} from '../../src/upstream/handshake.js';
import { HandshakeError } from '../../src/errors.js';

const REPLID = 'a'.repeat(20) + '0123456789ABCDEFGHIJ';
const NEWID = 'b'.repeat(40);

function ctx(over: Partial<HandshakeContext> = {}): HandshakeContext {
  return {
    user: null,
    password: null,
    listeningPort: 6380,
    announceIp: null,
    rdbOnly: false,
    psyncReplid: '?',
    psyncOffset: -1,
    ...over,
  };
}

const connected: HandshakeInput = { type: 'connected' };
const reply = (line: string): HandshakeInput => ({ type: 'reply', line });
/** A bulk string reply: the `$<len>` line with its payload, as connection.ts hands it over. */
const bulk = (text: string): HandshakeInput => ({ type: 'reply', line: `$${Buffer.byteLength(text, 'latin1')}`, bulk: text });

/** What a Redis 7 master promoted from a replica answers to INFO replication (abridged). */
function infoText(replid: string, replid2: string, second: number): string {
  return [
    '# Replication',
    'role:master',
    'connected_slaves:1',
    'slave0:ip=127.0.0.1,port=6381,state=online,offset=5000,lag=0',
    `master_failover_state:no-failover`,
    `master_replid:${replid}`,
    `master_replid2:${replid2}`,
    'master_repl_offset:5000',
    `second_repl_offset:${second}`,
    'repl_backlog_active:1',
    '',
  ].join('\r\n');
}

/** A step as plain data, so whole results compare with t.same. */
function plain(r: StepResult) {
  return {
    next: r.next,
    send: r.send ?? [],
    outcome: r.outcome ?? null,
    info: r.info ?? null,
    masterLinks: r.masterLinks ?? null,
    warning: r.warning !== undefined,
    error: r.error ? { code: r.error.code, state: r.error.state, reply: r.error.reply } : null,
  };
}

interface Row {
  name: string;
  ctx: HandshakeContext;
  state: HandshakeState;
  input: HandshakeInput;
  expect: ReturnType<typeof plain>;
}

const ok = (next: HandshakeState, send: string[][] = [], extra: Partial<ReturnType<typeof plain>> = {}) => ({
  next,
  send,
  outcome: null,
  info: null,
  masterLinks: null,
  warning: false,
  error: null,
  ...extra,
});
const err = (state: HandshakeState, line: string) => ({
  next: state,
  send: [],
  outcome: null,
  info: null,
  masterLinks: null,
  warning: false,
  error: { code: 'RELAY_ERR_HANDSHAKE' as const, state, reply: line },
});

const PORT = ['REPLCONF', 'listening-port', '6380'];
const CAPA = ['REPLCONF', 'capa', 'eof', 'capa', 'psync2'];
const FIRST_PSYNC = ['PSYNC', '?', '-1'];
const INFO = ['INFO', 'replication'];
const MASTER_LINKS = ['CLIENT', 'LIST', 'TYPE', 'master'];

const table: Row[] = [
  // Connecting
  { name: 'connect sends PING', ctx: ctx(), state: S.Connecting, input: connected, expect: ok(S.ReceivePong, [['PING']]) },
  { name: 'a reply before connect fails', ctx: ctx(), state: S.Connecting, input: reply('+PONG'), expect: err(S.Connecting, '+PONG') },
  { name: 'a second connect event fails', ctx: ctx(), state: S.ReceivePong, input: connected, expect: err(S.ReceivePong, '') },

  // ReceivePong, without a password
  { name: 'PONG without password pipelines listening-port and capa', ctx: ctx(), state: S.ReceivePong, input: reply('+PONG'), expect: ok(S.ReceivePort, [PORT, CAPA, INFO, MASTER_LINKS]) },
  { name: '-NOAUTH to PING is accepted', ctx: ctx(), state: S.ReceivePong, input: reply('-NOAUTH Authentication required.'), expect: ok(S.ReceivePort, [PORT, CAPA, INFO, MASTER_LINKS]) },
  { name: '-NOPERM to PING is accepted', ctx: ctx(), state: S.ReceivePong, input: reply("-NOPERM this user has no permissions to run the 'ping' command"), expect: ok(S.ReceivePort, [PORT, CAPA, INFO, MASTER_LINKS]) },
  { name: '-ERR operation not permitted to PING is accepted', ctx: ctx(), state: S.ReceivePong, input: reply('-ERR operation not permitted'), expect: ok(S.ReceivePort, [PORT, CAPA, INFO, MASTER_LINKS]) },
  { name: 'other -ERR to PING fails', ctx: ctx(), state: S.ReceivePong, input: reply('-ERR unknown command'), expect: err(S.ReceivePong, '-ERR unknown command') },
  { name: '-LOADING to PING fails', ctx: ctx(), state: S.ReceivePong, input: reply('-LOADING Redis is loading the dataset in memory'), expect: err(S.ReceivePong, '-LOADING Redis is loading the dataset in memory') },

  // ReceivePong, with credentials and options
  {
    name: 'PONG with a password sends AUTH pass first',
    ctx: ctx({ password: 's3cret' }),
    state: S.ReceivePong,
    input: reply('+PONG'),
    expect: ok(S.ReceiveAuth, [['AUTH', 's3cret'], PORT, CAPA, INFO, MASTER_LINKS]),
  },
  {
    name: 'PONG with user and password sends AUTH user pass',
    ctx: ctx({ user: 'relay', password: 's3cret' }),
    state: S.ReceivePong,
    input: reply('+PONG'),
    expect: ok(S.ReceiveAuth, [['AUTH', 'relay', 's3cret'], PORT, CAPA, INFO, MASTER_LINKS]),
  },
  {
    name: 'a user without a password sends no AUTH',
    ctx: ctx({ user: 'relay' }),
    state: S.ReceivePong,
    input: reply('+PONG'),
    expect: ok(S.ReceivePort, [PORT, CAPA, INFO, MASTER_LINKS]),
  },
  {
    name: 'rdbOnly adds REPLCONF rdb-only 1 before capa',
    ctx: ctx({ rdbOnly: true }),
    state: S.ReceivePong,
    input: reply('+PONG'),
    expect: ok(S.ReceivePort, [PORT, ['REPLCONF', 'rdb-only', '1'], CAPA]),
  },
  {
    name: 'an rdb-only fetch that needs an offset says so in its capa (src/rdb-from.ts)',
    ctx: ctx({ rdbOnly: true, rdbFrom: 1234 }),
    state: S.ReceivePong,
    input: reply('+PONG'),
    expect: ok(S.ReceivePort, [PORT, ['REPLCONF', 'rdb-only', '1'], [...CAPA, 'capa', 'psync-relay-rdb-from:1234']]),
  },
  {
    name: 'the offset is never asked on the streaming link',
    ctx: ctx({ rdbFrom: 1234 }),
    state: S.ReceivePong,
    input: reply('+PONG'),
    expect: ok(S.ReceivePort, [PORT, CAPA, INFO, MASTER_LINKS]),
  },
  {
    // Redis 7.0 syncWithMaster: `REPLCONF ip-address <replica-announce-ip>` is its own command, after listening-port.
    name: 'announceIp sends REPLCONF ip-address as its own command after listening-port',
    ctx: ctx({ announceIp: '10.0.0.7' }),
    state: S.ReceivePong,
    input: reply('+PONG'),
    expect: ok(S.ReceivePort, [PORT, ['REPLCONF', 'ip-address', '10.0.0.7'], CAPA, INFO, MASTER_LINKS]),
  },
  {
    name: 'everything at once keeps the order AUTH, port, ip, rdb-only, capa',
    ctx: ctx({ user: 'u', password: 'p', announceIp: '::1', rdbOnly: true, listeningPort: 7000 }),
    state: S.ReceivePong,
    input: reply('+PONG'),
    expect: ok(S.ReceiveAuth, [
      ['AUTH', 'u', 'p'],
      ['REPLCONF', 'listening-port', '7000'],
      ['REPLCONF', 'ip-address', '::1'],
      ['REPLCONF', 'rdb-only', '1'],
      CAPA,
    ]),
  },

  // ReceiveAuth
  { name: '+OK to AUTH moves to listening-port', ctx: ctx({ password: 'p' }), state: S.ReceiveAuth, input: reply('+OK'), expect: ok(S.ReceivePort) },
  {
    name: '-WRONGPASS to AUTH fails',
    ctx: ctx({ user: 'u', password: 'p' }),
    state: S.ReceiveAuth,
    input: reply('-WRONGPASS invalid username-password pair or user is disabled.'),
    expect: err(S.ReceiveAuth, '-WRONGPASS invalid username-password pair or user is disabled.'),
  },
  {
    name: '-ERR to AUTH fails',
    ctx: ctx({ password: 'p' }),
    state: S.ReceiveAuth,
    input: reply('-ERR AUTH <password> called without any password configured'),
    expect: err(S.ReceiveAuth, '-ERR AUTH <password> called without any password configured'),
  },

  // ReceivePort
  { name: '+OK to listening-port moves to capa', ctx: ctx(), state: S.ReceivePort, input: reply('+OK'), expect: ok(S.ReceiveCapa) },
  { name: '+OK to listening-port with rdbOnly moves to rdb-only', ctx: ctx({ rdbOnly: true }), state: S.ReceivePort, input: reply('+OK'), expect: ok(S.ReceiveRdbOnly) },
  { name: 'an error to listening-port is only a warning', ctx: ctx(), state: S.ReceivePort, input: reply('-ERR Unrecognized REPLCONF option'), expect: ok(S.ReceiveCapa, [], { warning: true }) },
  { name: '+OK to listening-port with announceIp moves to ip-address', ctx: ctx({ announceIp: '10.0.0.7' }), state: S.ReceivePort, input: reply('+OK'), expect: ok(S.ReceiveIp) },

  // ReceiveIp
  { name: '+OK to ip-address moves to capa', ctx: ctx({ announceIp: '10.0.0.7' }), state: S.ReceiveIp, input: reply('+OK'), expect: ok(S.ReceiveCapa) },
  { name: '+OK to ip-address with rdbOnly moves to rdb-only', ctx: ctx({ announceIp: '10.0.0.7', rdbOnly: true }), state: S.ReceiveIp, input: reply('+OK'), expect: ok(S.ReceiveRdbOnly) },
  {
    // Redis: "(Non critical) Master does not understand REPLCONF ip-address".
    name: 'an error to ip-address is only a warning',
    ctx: ctx({ announceIp: '10.0.0.7' }),
    state: S.ReceiveIp,
    input: reply('-ERR REPLCONF ip-address provided by replica instance is too long: 60 bytes'),
    expect: ok(S.ReceiveCapa, [], { warning: true }),
  },

  // ReceiveRdbOnly
  { name: '+OK to rdb-only moves to capa', ctx: ctx({ rdbOnly: true }), state: S.ReceiveRdbOnly, input: reply('+OK'), expect: ok(S.ReceiveCapa) },
  { name: 'an error to rdb-only is only a warning', ctx: ctx({ rdbOnly: true }), state: S.ReceiveRdbOnly, input: reply('-ERR Unrecognized REPLCONF option: rdb-only'), expect: ok(S.ReceiveCapa, [], { warning: true }) },

  // ReceiveCapa
  { name: '+OK to capa of a snapshot fetch (rdb-only) sends PSYNC ? -1 at once', ctx: ctx({ rdbOnly: true }), state: S.ReceiveCapa, input: reply('+OK'), expect: ok(S.ReceivePsync, [FIRST_PSYNC]) },
  { name: '+OK to capa on first contact waits for the INFO reply', ctx: ctx(), state: S.ReceiveCapa, input: reply('+OK'), expect: ok(S.ReceiveInfo) },
  {
    name: '+OK to capa on reconnect waits for the INFO reply',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveCapa,
    input: reply('+OK'),
    expect: ok(S.ReceiveInfo),
  },
  {
    name: 'an error to capa on reconnect is a warning and waits for the INFO reply',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveCapa,
    input: reply('-ERR Unrecognized REPLCONF option: capa'),
    expect: ok(S.ReceiveInfo, [], { warning: true }),
  },

  // ReceiveInfo (the streaming link): never fatal, except for a loop
  {
    name: 'INFO replication with ids gives the ids and waits for the master links',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveInfo,
    input: bulk(infoText(NEWID, REPLID, 20000)),
    expect: ok(S.ReceiveMasterLinks, [], { info: { replid: NEWID, replid2: REPLID, secondReplOffset: 20000, relayChain: [] } }),
  },
  {
    name: '-NOPERM to INFO (a replication-only ACL user) is a warning, no ids, and waits for the master links',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveInfo,
    input: reply("-NOPERM User relay has no permissions to run the 'info' command"),
    expect: ok(S.ReceiveMasterLinks, [], { warning: true }),
  },
  {
    name: '-ERR unknown command INFO is a warning, no ids, and waits for the master links',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveInfo,
    input: reply("-ERR unknown command 'INFO', with args beginning with: 'replication'"),
    expect: ok(S.ReceiveMasterLinks, [], { warning: true }),
  },
  {
    name: 'a status reply to INFO is a warning, no ids, and waits for the master links',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveInfo,
    input: reply('+OK'),
    expect: ok(S.ReceiveMasterLinks, [], { warning: true }),
  },
  {
    name: 'an INFO text without the ids is a warning, no ids, and waits for the master links',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveInfo,
    input: bulk('# Replication\r\nrole:master\r\nconnected_slaves:0\r\n'),
    expect: ok(S.ReceiveMasterLinks, [], { warning: true }),
  },
  {
    name: 'a skipped (too long) INFO reply is a warning, no ids, and waits for the master links',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveInfo,
    input: { type: 'reply', line: '$99999999', bulk: null },
    expect: ok(S.ReceiveMasterLinks, [], { warning: true }),
  },

  // ReceiveMasterLinks (the streaming link): what upstream's own master link is; never fatal here (connection.ts
  // asks the listener whether the link is ours)
  {
    name: 'a replica\'s CLIENT LIST TYPE master gives both ends of its master link and sends PSYNC',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveMasterLinks,
    input: bulk('id=3 addr=127.0.0.1:6380 laddr=127.0.0.1:51234 fd=8 name= age=9 idle=0 flags=M db=0 cmd=ping user=default\n'),
    expect: ok(S.ReceivePsync, [['PSYNC', REPLID, '12346']], { masterLinks: [{ local: { address: '127.0.0.1', port: 51234 }, remote: { address: '127.0.0.1', port: 6380 } }] }),
  },
  {
    name: 'IPv6 ends in brackets are read without them',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveMasterLinks,
    input: bulk('id=3 addr=[::1]:6380 laddr=[::1]:51234 fd=8 flags=M\n'),
    expect: ok(S.ReceivePsync, [['PSYNC', REPLID, '12346']], { masterLinks: [{ local: { address: '::1', port: 51234 }, remote: { address: '::1', port: 6380 } }] }),
  },
  {
    name: 'a master (no master link: an empty list) sends PSYNC',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveMasterLinks,
    input: bulk(''),
    expect: ok(S.ReceivePsync, [['PSYNC', REPLID, '12346']], { masterLinks: [] }),
  },
  {
    name: 'a unix socket link, or ends that are not ip:port, are left out',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveMasterLinks,
    input: bulk('id=3 addr=/tmp/redis.sock:0 laddr=/tmp/redis.sock fd=8 flags=M\nid=4 addr=1.2.3.4:99999 laddr=1.2.3.4:5 flags=M\n'),
    expect: ok(S.ReceivePsync, [['PSYNC', REPLID, '12346']], { masterLinks: [] }),
  },
  {
    name: '-NOPERM to CLIENT (a replication-only ACL user) is no warning and sends PSYNC',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveMasterLinks,
    input: reply("-NOPERM User relay has no permissions to run the 'client|list' command"),
    expect: ok(S.ReceivePsync, [['PSYNC', REPLID, '12346']], { masterLinks: [] }),
  },
  {
    name: 'a status reply to CLIENT LIST sends PSYNC',
    ctx: ctx({ psyncReplid: REPLID, psyncOffset: 12346 }),
    state: S.ReceiveMasterLinks,
    input: reply('+OK'),
    expect: ok(S.ReceivePsync, [['PSYNC', REPLID, '12346']], { masterLinks: [] }),
  },
  { name: 'an error to capa is a warning and still sends PSYNC', ctx: ctx({ rdbOnly: true }), state: S.ReceiveCapa, input: reply('-ERR Unrecognized REPLCONF option: capa'), expect: ok(S.ReceivePsync, [FIRST_PSYNC], { warning: true }) },

  // ReceivePsync
  {
    name: '+FULLRESYNC gives a full outcome with replid and offset',
    ctx: ctx(),
    state: S.ReceivePsync,
    input: reply(`+FULLRESYNC ${REPLID} 98765`),
    expect: ok(S.Done, [], { outcome: { kind: 'full', replid: REPLID, offset: 98765 } }),
  },
  {
    name: '+FULLRESYNC with offset 0',
    ctx: ctx(),
    state: S.ReceivePsync,
    input: reply(`+FULLRESYNC ${REPLID} 0`),
    expect: ok(S.Done, [], { outcome: { kind: 'full', replid: REPLID, offset: 0 } }),
  },
  { name: '+CONTINUE without id keeps our replid', ctx: ctx(), state: S.ReceivePsync, input: reply('+CONTINUE'), expect: ok(S.Done, [], { outcome: { kind: 'continue', replid: null } }) },
  { name: '+CONTINUE <newid> names the new replid', ctx: ctx(), state: S.ReceivePsync, input: reply(`+CONTINUE ${NEWID}`), expect: ok(S.Done, [], { outcome: { kind: 'continue', replid: NEWID } }) },
  {
    name: '-NOMASTERLINK is try-later',
    ctx: ctx(),
    state: S.ReceivePsync,
    input: reply("-NOMASTERLINK Can't SYNC while not connected with my master"),
    expect: ok(S.Done, [], { outcome: { kind: 'try-later', reply: "-NOMASTERLINK Can't SYNC while not connected with my master" } }),
  },
  {
    name: '-LOADING is try-later',
    ctx: ctx(),
    state: S.ReceivePsync,
    input: reply('-LOADING Redis is loading the dataset in memory'),
    expect: ok(S.Done, [], { outcome: { kind: 'try-later', reply: '-LOADING Redis is loading the dataset in memory' } }),
  },
  {
    name: "-ERR unknown command 'PSYNC' falls back to SYNC",
    ctx: ctx(),
    state: S.ReceivePsync,
    input: reply("-ERR unknown command 'PSYNC'"),
    expect: ok(S.Done, [['SYNC']], { outcome: { kind: 'sync', refusal: "-ERR unknown command 'PSYNC'" }, warning: true }),
  },
  { name: '+FULLRESYNC with a short replid fails', ctx: ctx(), state: S.ReceivePsync, input: reply(`+FULLRESYNC ${'a'.repeat(39)} 5`), expect: err(S.ReceivePsync, `+FULLRESYNC ${'a'.repeat(39)} 5`) },
  { name: '+FULLRESYNC with a long replid fails', ctx: ctx(), state: S.ReceivePsync, input: reply(`+FULLRESYNC ${'a'.repeat(41)} 5`), expect: err(S.ReceivePsync, `+FULLRESYNC ${'a'.repeat(41)} 5`) },
  { name: '+FULLRESYNC without offset fails', ctx: ctx(), state: S.ReceivePsync, input: reply(`+FULLRESYNC ${REPLID}`), expect: err(S.ReceivePsync, `+FULLRESYNC ${REPLID}`) },
  { name: '+FULLRESYNC with a non-numeric offset fails', ctx: ctx(), state: S.ReceivePsync, input: reply(`+FULLRESYNC ${REPLID} 12x`), expect: err(S.ReceivePsync, `+FULLRESYNC ${REPLID} 12x`) },
  { name: '+FULLRESYNC with a negative offset fails', ctx: ctx(), state: S.ReceivePsync, input: reply(`+FULLRESYNC ${REPLID} -1`), expect: err(S.ReceivePsync, `+FULLRESYNC ${REPLID} -1`) },
  { name: '+FULLRESYNC with an offset past 2^53 fails', ctx: ctx(), state: S.ReceivePsync, input: reply(`+FULLRESYNC ${REPLID} 9007199254740993`), expect: err(S.ReceivePsync, `+FULLRESYNC ${REPLID} 9007199254740993`) },
  { name: 'bare +FULLRESYNC fails', ctx: ctx(), state: S.ReceivePsync, input: reply('+FULLRESYNC'), expect: err(S.ReceivePsync, '+FULLRESYNC') },
  { name: '+CONTINUE with a malformed id fails', ctx: ctx(), state: S.ReceivePsync, input: reply('+CONTINUE abc'), expect: err(S.ReceivePsync, '+CONTINUE abc') },
  { name: 'an unexpected reply to PSYNC fails', ctx: ctx(), state: S.ReceivePsync, input: reply('+OK'), expect: err(S.ReceivePsync, '+OK') },
  { name: '-NOAUTH to PSYNC fails', ctx: ctx(), state: S.ReceivePsync, input: reply('-NOAUTH Authentication required.'), expect: err(S.ReceivePsync, '-NOAUTH Authentication required.') },

  // Done
  { name: 'a reply after Done fails', ctx: ctx(), state: S.Done, input: reply('+OK'), expect: err(S.Done, '+OK') },
];

t.test('handshake transition table', async (t) => {
  for (const row of table) {
    t.test(row.name, async (t) => {
      const r = step(row.state, row.input, row.ctx);
      t.same(plain(r), row.expect);
      if (row.expect.error) t.type(r.error, HandshakeError);
    });
  }
});

t.test('psyncReply parses the same as step in receive-psync', async (t) => {
  for (const line of [`+FULLRESYNC ${REPLID} 7`, '+CONTINUE', `+CONTINUE ${NEWID}`, '-LOADING x', '-ERR unknown command', '+bogus']) {
    t.same(plain(psyncReply(line)), plain(step(S.ReceivePsync, reply(line), ctx())), line);
  }
});

/** Drive the whole handshake, answering each command in order with the reply `answer` gives (a line, or a whole input). */
function drive(c: HandshakeContext, answer: (cmd: readonly string[]) => string | HandshakeInput) {
  let state: HandshakeState = S.Connecting;
  const sent: string[][] = [];
  const pending: string[][] = [];
  const states: HandshakeState[] = [state];
  const warnings: string[] = [];
  let r = step(state, connected, c);
  for (let guard = 0; guard < 20; guard++) {
    if (r.warning) warnings.push(r.warning);
    if (r.error) return { sent, states, warnings, error: r.error, outcome: null };
    for (const cmd of r.send ?? []) {
      sent.push([...cmd]);
      pending.push([...cmd]);
    }
    state = r.next;
    states.push(state);
    if (state === S.Done) return { sent, states, warnings, error: null, outcome: r.outcome ?? null };
    const cmd = pending.shift();
    if (!cmd) throw new Error(`no command pending in state ${state}`);
    const a = answer(cmd);
    r = step(state, typeof a === 'string' ? reply(a) : a, c);
  }
  throw new Error('handshake did not finish');
}

t.test('a full handshake with user, password, rdbOnly and announceIp', async (t) => {
  const c = ctx({ user: 'u', password: 'p', rdbOnly: true, announceIp: '1.2.3.4' });
  const r = drive(c, (cmd) => (cmd[0] === 'PING' ? '+PONG' : cmd[0] === 'PSYNC' ? `+FULLRESYNC ${REPLID} 100` : '+OK'));
  t.same(r.sent, [
    ['PING'],
    ['AUTH', 'u', 'p'],
    ['REPLCONF', 'listening-port', '6380'],
    ['REPLCONF', 'ip-address', '1.2.3.4'],
    ['REPLCONF', 'rdb-only', '1'],
    CAPA,
    FIRST_PSYNC,
  ]);
  t.same(r.states, [S.Connecting, S.ReceivePong, S.ReceiveAuth, S.ReceivePort, S.ReceiveIp, S.ReceiveRdbOnly, S.ReceiveCapa, S.ReceivePsync, S.Done]);
  t.same(r.outcome, { kind: 'full', replid: REPLID, offset: 100 });
  t.same(r.warnings, []);
});

t.test('a reconnect handshake without password asks INFO replication and the master links last, then continues', async (t) => {
  const c = ctx({ psyncReplid: REPLID, psyncOffset: 501 });
  const r = drive(c, (cmd) => (cmd[0] === 'PING' ? '+PONG' : cmd[0] === 'PSYNC' ? '+CONTINUE' : cmd[0] === 'INFO' ? bulk(infoText(REPLID, NEWID, 7)) : '+OK'));
  t.same(r.sent, [['PING'], PORT, CAPA, INFO, MASTER_LINKS, ['PSYNC', REPLID, '501']]);
  t.same(r.states, [S.Connecting, S.ReceivePong, S.ReceivePort, S.ReceiveCapa, S.ReceiveInfo, S.ReceiveMasterLinks, S.ReceivePsync, S.Done]);
  t.same(r.outcome, { kind: 'continue', replid: null });
  t.same(r.warnings, []);
});

t.test('a reconnect handshake whose upstream refuses INFO (-NOPERM) still continues', async (t) => {
  const c = ctx({ user: 'repl', password: 'p', psyncReplid: REPLID, psyncOffset: 501 });
  const r = drive(c, (cmd) =>
    cmd[0] === 'PING' ? '+PONG' : cmd[0] === 'PSYNC' ? `+CONTINUE ${NEWID}` : cmd[0] === 'INFO' ? "-NOPERM User repl has no permissions to run the 'info' command" : '+OK',
  );
  t.same(r.sent, [['PING'], ['AUTH', 'repl', 'p'], PORT, CAPA, INFO, MASTER_LINKS, ['PSYNC', REPLID, '501']]);
  t.same(r.outcome, { kind: 'continue', replid: NEWID });
  t.equal(r.warnings.length, 1, 'the refusal is a warning');
  t.equal(r.error, null);
});

t.test('an old master refusing every REPLCONF and PSYNC ends in SYNC with warnings', async (t) => {
  const r = drive(ctx({ rdbOnly: true, announceIp: '10.0.0.7' }), (cmd) => (cmd[0] === 'PING' ? '+PONG' : '-ERR unknown command'));
  t.same(r.sent, [['PING'], PORT, ['REPLCONF', 'ip-address', '10.0.0.7'], ['REPLCONF', 'rdb-only', '1'], CAPA, FIRST_PSYNC, ['SYNC']]);
  t.same(r.outcome, { kind: 'sync', refusal: '-ERR unknown command' });
  t.equal(r.warnings.length, 5, 'listening-port, ip-address, rdb-only, capa, psync');
  t.equal(r.error, null);
});

t.test('a wrong password stops the handshake at AUTH', async (t) => {
  const r = drive(ctx({ password: 'bad' }), (cmd) => (cmd[0] === 'PING' ? '-NOAUTH Authentication required.' : cmd[0] === 'AUTH' ? '-WRONGPASS invalid username-password pair' : '+OK'));
  t.equal(r.error?.code, 'RELAY_ERR_HANDSHAKE');
  t.equal(r.error?.state, S.ReceiveAuth);
  t.equal(r.outcome, null);
});
