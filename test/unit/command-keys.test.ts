/**
 * The key arguments of replicated commands (Redis 7 key specs): what RELAY PITR BEFORE <cmd> <glob> and the /stream
 * key filter match, never values or fields.
 */
import t from 'tap';
import { commandKeys } from '../../src/resp/command-keys.js';

const keys = (...args: string[]): string[] => commandKeys(args.map((a) => Buffer.from(a))).map((k) => k.toString('latin1'));

t.test('most commands: args[1] is the only key, whatever the values or fields say', async (t) => {
  t.strictSame(keys('SET', 'audit:last', 'user:1 edited'), ['audit:last']);
  t.strictSame(keys('set', 'k', 'v', 'EX', '10'), ['k'], 'any case');
  t.strictSame(keys('GETSET', 'k', 'v'), ['k']);
  t.strictSame(keys('HSET', 'session:9', 'owner', 'user:2'), ['session:9']);
  t.strictSame(keys('HDEL', 'h', 'f1', 'f2'), ['h']);
  t.strictSame(keys('LPUSH', 'l', 'a', 'b'), ['l']);
  t.strictSame(keys('SADD', 's', 'm'), ['s']);
  t.strictSame(keys('ZADD', 'z', '1', 'm'), ['z']);
  t.strictSame(keys('INCR', 'n'), ['n']);
  t.strictSame(keys('EXPIRE', 'k', '10'), ['k']);
  t.strictSame(keys('PEXPIREAT', 'k', '1700000000000'), ['k']);
  t.strictSame(keys('XADD', 'st', '*', 'f', 'v'), ['st']);
  t.strictSame(keys('XTRIM', 'st', 'MAXLEN', '10'), ['st']);
  t.strictSame(keys('XDEL', 'st', '1-0'), ['st']);
  t.strictSame(keys('SETRANGE', 'k', '0', 'x'), ['k']);
  t.strictSame(keys('APPEND', 'k', 'x'), ['k']);
  t.strictSame(keys('GETDEL', 'k'), ['k']);
  t.strictSame(keys('GETEX', 'k', 'PERSIST'), ['k']);
  t.strictSame(keys('RESTORE', 'k', '0', '\x00payload'), ['k']);
  t.strictSame(keys('PERSIST', 'k'), ['k']);
  t.strictSame(keys('XGROUP', 'CREATE', 'st', 'g', '$'), ['st'], 'XGROUP: the key follows the subcommand');
  t.strictSame(keys('XGROUP', 'SETID', 'st', 'g', '0'), ['st']);
});

t.test('every argument after the name is a key', async (t) => {
  t.strictSame(keys('DEL', 'a', 'b', 'c'), ['a', 'b', 'c']);
  t.strictSame(keys('UNLINK', 'a', 'b'), ['a', 'b']);
  t.strictSame(keys('TOUCH', 'a'), ['a']);
  t.strictSame(keys('SINTERSTORE', 'd', 'a', 'b'), ['d', 'a', 'b']);
  t.strictSame(keys('SUNIONSTORE', 'd', 'a'), ['d', 'a']);
  t.strictSame(keys('SDIFFSTORE', 'd', 'a', 'b'), ['d', 'a', 'b']);
  t.strictSame(keys('PFMERGE', 'd', 'a', 'b'), ['d', 'a', 'b']);
  t.strictSame(keys('RENAME', 'a', 'b'), ['a', 'b']);
  t.strictSame(keys('RENAMENX', 'a', 'b'), ['a', 'b']);
  t.strictSame(keys('WATCH', 'a', 'b'), ['a', 'b']);
});

t.test('MSET / MSETNX: every other argument', async (t) => {
  t.strictSame(keys('MSET', 'a', 'user:1', 'b', '2'), ['a', 'b']);
  t.strictSame(keys('MSETNX', 'a', '1', 'b', '2', 'c', '3'), ['a', 'b', 'c']);
});

t.test('the first two arguments', async (t) => {
  t.strictSame(keys('COPY', 'a', 'b', 'REPLACE'), ['a', 'b']);
  t.strictSame(keys('SMOVE', 'a', 'b', 'member'), ['a', 'b']);
  t.strictSame(keys('LMOVE', 'a', 'b', 'LEFT', 'RIGHT'), ['a', 'b']);
  t.strictSame(keys('BLMOVE', 'a', 'b', 'LEFT', 'RIGHT', '0'), ['a', 'b']);
  t.strictSame(keys('RPOPLPUSH', 'a', 'b'), ['a', 'b']);
  t.strictSame(keys('BRPOPLPUSH', 'a', 'b', '0'), ['a', 'b']);
  t.strictSame(keys('GEOSEARCHSTORE', 'd', 'src', 'FROMMEMBER', 'm', 'BYRADIUS', '1', 'km'), ['d', 'src']);
  t.strictSame(keys('ZRANGESTORE', 'd', 'src', '0', '-1'), ['d', 'src']);
});

t.test('numkeys forms', async (t) => {
  t.strictSame(keys('ZUNIONSTORE', 'd', '2', 'a', 'b', 'WEIGHTS', '1', '2'), ['d', 'a', 'b']);
  t.strictSame(keys('ZINTERSTORE', 'd', '1', 'a', 'AGGREGATE', 'MAX'), ['d', 'a']);
  t.strictSame(keys('ZDIFFSTORE', 'd', '2', 'a', 'b'), ['d', 'a', 'b']);
  t.strictSame(keys('LMPOP', '2', 'a', 'b', 'LEFT', 'COUNT', '2'), ['a', 'b']);
  t.strictSame(keys('ZMPOP', '1', 'z', 'MIN'), ['z']);
  t.strictSame(keys('BLMPOP', '0', '2', 'a', 'b', 'LEFT'), ['a', 'b'], 'the timeout comes first');
  t.strictSame(keys('BZMPOP', '1.5', '1', 'z', 'MAX'), ['z']);
  t.strictSame(keys('SINTERCARD', '2', 'a', 'b', 'LIMIT', '5'), ['a', 'b']);
  t.strictSame(keys('ZINTERCARD', '2', 'a', 'b'), ['a', 'b']);
  t.strictSame(keys('EVAL', 'return 1', '2', 'k1', 'k2', 'user:1'), ['k1', 'k2']);
  t.strictSame(keys('EVALSHA', 'a'.repeat(40), '1', 'k1', 'arg'), ['k1']);
  t.strictSame(keys('FCALL', 'fn', '0', 'user:1'), [], 'no keys: the arguments are not keys');
  t.strictSame(keys('ZUNIONSTORE', 'd', 'x', 'a'), ['d'], 'a malformed numkeys: only the destination');
  t.strictSame(keys('EVAL', 's', '9', 'k1'), ['k1'], 'numkeys past the end: the keys there are');
});

t.test('BITOP, SORT and GEORADIUS ... STORE', async (t) => {
  t.strictSame(keys('BITOP', 'AND', 'd', 'a', 'b'), ['d', 'a', 'b']);
  t.strictSame(keys('BITOP', 'NOT', 'd', 'a'), ['d', 'a']);
  t.strictSame(keys('SORT', 'src'), ['src']);
  t.strictSame(keys('SORT', 'src', 'ALPHA', 'STORE', 'dst'), ['src', 'dst'], 'the STORE destination too');
  t.strictSame(keys('SORT', 'src', 'BY', 'store', 'LIMIT', '0', '10', 'GET', '#', 'store', 'dst'), ['src', 'dst'], 'an option argument named store is not STORE');
  t.strictSame(keys('SORT', 'src', 'BY', 'store'), ['src']);
  t.strictSame(keys('SORT_RO', 'src', 'BY', 'w_*', 'GET', 'o_*'), ['src']);
  t.strictSame(keys('GEORADIUS', 'g', '0', '0', '1', 'km', 'COUNT', '5', 'STOREDIST', 'd'), ['g', 'd']);
  t.strictSame(keys('GEORADIUSBYMEMBER', 'g', 'm', '1', 'km', 'STORE', 'd'), ['g', 'd']);
});

t.test('keyless commands', async (t) => {
  for (const cmd of [['FLUSHALL'], ['FLUSHDB', 'ASYNC'], ['SELECT', '1'], ['SWAPDB', '0', '1'], ['MULTI'], ['EXEC'], ['DISCARD'], ['PING'],
    ['PUBLISH', 'user:1', 'hi'], ['SPUBLISH', 'user:1', 'hi'], ['FUNCTION', 'LOAD', 'code'], ['SCRIPT', 'FLUSH'], ['REPLCONF', 'GETACK', '*']]) {
    t.strictSame(keys(...cmd), [], cmd[0]!);
  }
});

t.test('unknown commands: args[1] when there is one', async (t) => {
  t.strictSame(keys('MODULE.WRITE', 'k', 'v'), ['k']);
  t.strictSame(keys('NOSUCHCOMMAND'), []);
  t.strictSame(commandKeys([]), []);
});

t.test('the key Buffers are the arguments themselves (binary keys match byte for byte)', async (t) => {
  const k = Buffer.from([0xff, 0x00, 0x41]);
  const args = [Buffer.from('DEL'), k];
  t.equal(commandKeys(args)[0], k);
  t.strictSame(commandKeys([Buffer.from('set'), k, Buffer.from('v')], 'set'), [k], 'a name already lowered may be passed');
});
