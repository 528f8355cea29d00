/**
 * An RDB-only fetch that needs the data as of an offset or later: `REPLCONF capa psync-relay-rdb-from:<offset>`.
 *
 * A relay asked for an RDB alone by a plain `SYNC` (`redis-cli --rdb`, `valkey-cli --rdb`: a backup, told no offset)
 * owes it the data as of that moment, as a Redis replica forks for it; the relay holds no dataset, only snapshots
 * that may be `history.snapshot-interval` old, so it fetches a fresh one when its newest is older. When it fetches
 * from an upstream relay, it passes the offset it needs on with this capa, so that relay does the same instead of
 * answering with an older snapshot it holds. Redis and Valkey ignore capa values they do not know (replconfCommand
 * skips them), so a plain master, which always forks for an RDB-only fetch, sees no difference. A fetch without the
 * capa (`PSYNC ? -1`, told the snapshot's offset in `+FULLRESYNC`) gets the newest snapshot held, as before.
 */
const NAME = 'psync-relay-rdb-from';

export function rdbFromCapa(offset: number): string {
  return `${NAME}:${offset}`;
}

/** The offset a `REPLCONF capa <value>` asks the RDB to reach, or null when the value is not this capa. */
export function parseRdbFromCapa(value: string): number | null {
  const m = /^psync-relay-rdb-from:(\d{1,16})$/i.exec(value);
  const offset = m ? Number(m[1]) : NaN;
  // Offsets past 2^53 are refused everywhere else too (handshake.ts): a JS number cannot count them.
  return Number.isSafeInteger(offset) ? offset : null;
}
