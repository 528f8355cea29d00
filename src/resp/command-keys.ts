/**
 * The key arguments of a command, following Redis 7's key specs for the commands a replication stream can carry.
 * `RELAY PITR BEFORE <cmd> <glob>` and the /stream `key` filter match these only: a value or a hash field that
 * happens to look like a key (`SET audit:last "user:1"`, `HSET s owner user:2`) must not match a key glob.
 */
import { byName } from '../util/by-name.js';

/** Where a command's keys are: a range of argument indexes, or a count (numkeys) followed by that many keys. */
type KeySpec =
  /** args[first..last] (last -1: to the end), every `step`th. */
  | { readonly first: number; readonly last: number; readonly step?: number }
  /** args[at] = numkeys, the keys follow it; plus args[dest] when set (a destination key before numkeys). */
  | { readonly numkeys: number; readonly dest?: number }
  /** args[1], and the destination after STORE (or STOREDIST); options parsed from args[from]. */
  | { readonly store: number; readonly storedist?: boolean };

const SPECS = new Map<string, KeySpec>();
const NONE: KeySpec = { first: 1, last: 0 };
const rule = (spec: KeySpec, names: string): void => {
  for (const n of names.split(' ')) SPECS.set(n, spec);
};
// No keys: a pattern never matches these (FLUSHALL wipes every key, but names none). PUBLISH/SPUBLISH name a channel.
rule(NONE, 'select swapdb multi exec discard ping replconf flushall flushdb publish spublish function script info config client debug lastsave save bgsave bgrewriteaof');
rule({ first: 1, last: -1 }, 'del unlink exists touch watch mget pfmerge pfcount sinterstore sunionstore sdiffstore sinter sunion sdiff rename renamenx');
rule({ first: 1, last: -1, step: 2 }, 'mset msetnx');
rule({ first: 1, last: 2 }, 'copy smove lmove blmove rpoplpush brpoplpush geosearchstore zrangestore');
rule({ first: 2, last: -1 }, 'bitop'); // BITOP op dest key...
rule({ first: 2, last: 2 }, 'xgroup'); // XGROUP CREATE|SETID|DESTROY|... key ...
rule({ numkeys: 1 }, 'lmpop zmpop sintercard zintercard zunion zinter zdiff');
rule({ numkeys: 2 }, 'blmpop bzmpop eval evalsha eval_ro evalsha_ro fcall fcall_ro'); // timeout or script first
rule({ numkeys: 2, dest: 1 }, 'zunionstore zinterstore zdiffstore');
rule({ store: 2 }, 'sort');
rule({ store: 5, storedist: true }, 'georadius');
rule({ store: 4, storedist: true }, 'georadiusbymember');

/** Arguments an option of SORT / GEORADIUS takes: skipped so that `BY store` is not read as STORE. */
const OPTION_ARGS = byName<number>({ by: 1, get: 1, limit: 2, count: 1 });

/**
 * The key arguments of a command (`args[0]` its name, any case): the Buffers of `args` that are keys, in order.
 * A command not in the table has its key at args[1], as nearly every Redis command does (SET, HSET, LPUSH, ZADD,
 * XADD, EXPIRE, RESTORE, ...). A malformed numkeys gives no keys past the destination.
 */
export function commandKeys(args: readonly Buffer[], name = args[0]?.toString('latin1').toLowerCase() ?? ''): Buffer[] {
  const spec = SPECS.get(name);
  if (spec === undefined) return args.slice(1, 2);
  if ('first' in spec) {
    const last = spec.last < 0 ? args.length - 1 : Math.min(spec.last, args.length - 1);
    const step = spec.step ?? 1;
    const out: Buffer[] = [];
    for (let i = spec.first; i <= last; i += step) out.push(args[i]!);
    return out;
  }
  if ('numkeys' in spec) {
    const dest = spec.dest === undefined ? [] : args.slice(spec.dest, spec.dest + 1);
    const s = args[spec.numkeys]?.toString('latin1') ?? '';
    const n = /^\d{1,10}$/.test(s) ? Number(s) : 0;
    return [...dest, ...args.slice(spec.numkeys + 1, spec.numkeys + 1 + n)];
  }
  // SORT / GEORADIUS*: the source, and the last STORE (or STOREDIST) destination, as Redis parses the options.
  let dest: Buffer | undefined;
  for (let i = spec.store; i < args.length; i++) {
    const word = args[i]!.toString('latin1').toLowerCase();
    if (word === 'store' || (spec.storedist === true && word === 'storedist')) dest = args[++i];
    else i += OPTION_ARGS[word] ?? 0;
  }
  return [...args.slice(1, 2), ...(dest === undefined ? [] : [dest])];
}
