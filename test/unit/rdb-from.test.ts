import t from 'tap';
import { parseRdbFromCapa, rdbFromCapa } from '../../src/rdb-from.js';

t.test('the capa a relay sends reads back as the offset it asks for', async (t) => {
  for (const offset of [0, 1, 123456789, 2 ** 50]) t.equal(parseRdbFromCapa(rdbFromCapa(offset)), offset, String(offset));
});

t.test('any other capa value is not this one (it may be another capa: compression, eof)', async (t) => {
  for (const v of ['psync-relay-rdb-from', 'psync-relay-rdb-from:', 'psync-relay-rdb-from:-1', 'psync-relay-rdb-from:1e9', 'psync-relay-rdb-from:12 ', 'psync-relay-rdb-from:12345678901234567', 'psync-relay-rdb-from:9999999999999999', 'psync-relay-z1:1', 'eof']) {
    t.equal(parseRdbFromCapa(v), null, JSON.stringify(v));
  }
});

t.test('its name is matched in any case, as Redis matches capa values', async (t) => {
  t.equal(parseRdbFromCapa('PSYNC-RELAY-RDB-FROM:42'), 42);
});
