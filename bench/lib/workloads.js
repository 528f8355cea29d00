// The WAN bench's three workloads, as RESP commands for the master: random bytes (incompressible), JSON-like
// documents (what caches and session stores hold), small counters (INCR / SET of small ints). Each call returns
// one command; the master propagates it unchanged, so its length is what it adds to the replication stream.
import { randomBytes } from 'node:crypto';
import { encodeCommand } from './resp.js';

/** xorshift32: fast, deterministic values for the documents' fields (content need not be secure). */
function rng(seed) {
  let s = seed | 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

const FIRST = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy', 'mallory', 'oscar', 'peggy', 'trent', 'victor', 'walter'];
const LAST = ['smith', 'jones', 'garcia', 'miller', 'davis', 'lopez', 'wilson', 'anderson', 'thomas', 'taylor', 'moore', 'jackson'];
const TAGS = ['new', 'vip', 'beta', 'eu', 'us', 'apac', 'mobile', 'web', 'trial', 'churn-risk', 'enterprise', 'free'];
const CITIES = ['Berlin', 'Paris', 'Lisbon', 'Austin', 'Osaka', 'Lagos', 'Lima', 'Oslo', 'Pune', 'Perth'];
const STATUS = ['paid', 'shipped', 'pending', 'refunded'];

export const WORKLOADS = {
  /** SET rnd:<i> <1 KiB from crypto.randomBytes>: nothing to compress but the command framing. */
  random: () => (i) => encodeCommand(['SET', `rnd:${i % 100000}`, randomBytes(1024)]),
  /** SET doc:<i> <JSON, ~0.5-1.2 KB>: a user with orders; ids, uuids, dates, prices vary, the shape repeats. */
  json: (seed = 1) => {
    const r = rng(seed);
    const pick = (a) => a[Math.floor(r() * a.length)];
    return (i) => {
      const f = pick(FIRST);
      const l = pick(LAST);
      const doc = {
        id: i,
        uuid: randomBytes(16).toString('hex'),
        user: { name: `${f} ${l}`, email: `${f}.${l}${Math.floor(r() * 1000)}@example.com`, city: pick(CITIES), age: 18 + Math.floor(r() * 60) },
        tags: TAGS.filter(() => r() < 0.3),
        created: new Date(1.7e12 + Math.floor(r() * 1e10)).toISOString(),
        score: Math.round(r() * 10000) / 100,
        active: r() < 0.7,
        orders: Array.from({ length: 1 + Math.floor(r() * 5) }, () => ({
          sku: `SKU-${Math.floor(r() * 5000)}`,
          qty: 1 + Math.floor(r() * 4),
          price: Math.round(r() * 20000) / 100,
          status: pick(STATUS),
        })),
      };
      return encodeCommand(['SET', `doc:${i % 200000}`, JSON.stringify(doc)]);
    };
  },
  /** INCR counter:<k> or SET gauge:<k> <0-999>, k among 1,000 keys: ~30-40 bytes per command. */
  counters: (seed = 2) => {
    const r = rng(seed);
    return () => {
      const k = Math.floor(r() * 1000);
      return r() < 0.5 ? encodeCommand(['INCR', `counter:${k}`]) : encodeCommand(['SET', `gauge:${k}`, String(Math.floor(r() * 1000))]);
    };
  },
};

export const WORKLOAD_LABEL = {
  random: 'random bytes (SET 1 KiB random)',
  json: 'JSON-like documents (SET ~0.8 KB)',
  counters: 'small counters (INCR / SET int)',
};
