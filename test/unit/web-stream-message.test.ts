import t from 'tap';
import { commandKeys, formatCommand, parseStreamOptions, selectedDb, StreamOptionsError } from '../../src/web/stream-message.js';

const b = (...xs: string[]) => xs.map((x) => Buffer.from(x));


t.test('query options', async (t) => {
  const o = parseStreamOptions('cmd=SET,hset&cmd=del&key=a*&db=0,3&internal=0&from=10');
  t.strictSame([...o.cmds!], ['set', 'hset', 'del']);
  t.strictSame(o.keys, ['a*']);
  t.strictSame([...o.dbs!], [0, 3]);
  t.equal(o.internal, false);
  t.equal(o.from, 10);
  t.equal(o.format, 'json');
  const d = parseStreamOptions('');
  t.strictSame([d.cmds, d.keys, d.dbs, d.from, d.replid, d.internal, d.format], [null, null, null, null, null, true, 'json']);
  t.equal(parseStreamOptions('format=raw&from=5&token=x').format, 'raw');
  for (const bad of ['format=xml', 'from=0', 'from=-1', 'from=1e3', 'db=x', 'internal=maybe', 'replid=zz', 'format=raw&cmd=set']) {
    t.throws(() => parseStreamOptions(bad), { code: 'RELAY_ERR_STREAM_OPTIONS' }, bad);
    t.throws(() => parseStreamOptions(bad), StreamOptionsError);
  }
});

t.test('command keys', async (t) => {
  t.strictSame(commandKeys('set', b('SET', 'k', 'v')), ['k']);
  t.strictSame(commandKeys('del', b('DEL', 'a', 'b')), ['a', 'b']);
  t.strictSame(commandKeys('mset', b('MSET', 'a', '1', 'b', '2')), ['a', 'b']);
  t.strictSame(commandKeys('rename', b('RENAME', 'a', 'b')), ['a', 'b']);
  t.strictSame(commandKeys('eval', b('EVAL', 's', '2', 'k1', 'k2', 'arg')), ['k1', 'k2']);
  t.strictSame(commandKeys('zunionstore', b('ZUNIONSTORE', 'd', '2', 'a', 'b', 'WEIGHTS', '1', '2')), ['d', 'a', 'b']);
  t.strictSame(commandKeys('lmpop', b('LMPOP', '2', 'a', 'b', 'LEFT')), ['a', 'b']);
  t.strictSame(commandKeys('bitop', b('BITOP', 'AND', 'd', 'a', 'b')), ['d', 'a', 'b']);
  t.strictSame(commandKeys('xgroup', b('XGROUP', 'CREATE', 'st', 'g', '$')), ['st'], 'XGROUP: the key follows the subcommand');
  t.strictSame(commandKeys('xgroup', b('XGROUP', 'SETID', 'st', 'g', '0')), ['st']);
  t.strictSame(commandKeys('sort', b('SORT', 'src', 'ALPHA', 'STORE', 'dst')), ['src', 'dst'], 'SORT ... STORE: the destination too');
  t.strictSame(commandKeys('sort', b('SORT', 'src', 'BY', 'nosort', 'store', 'dst')), ['src', 'dst']);
  t.strictSame(commandKeys('georadius', b('GEORADIUS', 'g', '0', '0', '1', 'km', 'STOREDIST', 'd')), ['g', 'd']);
  t.strictSame(commandKeys('georadiusbymember', b('GEORADIUSBYMEMBER', 'g', 'm', '1', 'km', 'STORE', 'd')), ['g', 'd']);
  t.strictSame(commandKeys('select', b('SELECT', '1')), []);
  t.strictSame(commandKeys('multi', b('MULTI')), []);
});

t.test('SELECT is recognised from its first two args', async (t) => {
  t.equal(selectedDb('select', 2, Buffer.from('7')), 7);
  t.equal(selectedDb('select', 2, Buffer.from('x')), null);
  t.equal(selectedDb('select', 3, Buffer.from('7')), null);
  t.equal(selectedDb('set', 2, Buffer.from('7')), null);
  t.equal(selectedDb('select', 2, undefined), null);
});

t.test('JSON messages', async (t) => {
  t.strictSame(JSON.parse(formatCommand(42, 3, 'set', b('SET', 'k', 'é'), false)), { offset: 42, db: 3, cmd: 'set', args: ['k', 'é'] });
  t.strictSame(JSON.parse(formatCommand(9, null, 'ping', b('PING'), true)), { offset: 9, db: null, cmd: 'ping', args: [], internal: true });
  const bin = JSON.parse(formatCommand(1, 0, 'set', [Buffer.from('SET'), Buffer.from('k'), Buffer.from([0xc3])], false));
  t.strictSame(bin, { offset: 1, db: 0, cmd: 'set', args: ['aw==', 'ww=='], b64: true });
});
