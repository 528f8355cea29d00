import { randomBytes } from 'node:crypto';

/** Redis's "no second id" value. */
export const NULL_REPLID = '0000000000000000000000000000000000000000';

export function randomReplid(): string {
  return randomBytes(20).toString('hex');
}

/** An upstream's replid, replid2 and second_repl_offset, as its INFO replication states them. */
export interface UpstreamIds {
  readonly replid: string;
  readonly replid2: string;
  readonly secondReplOffset: number;
}

/**
 * replid / replid2 / second_repl_offset, as in Redis's server.replid, replid2 and second_replid_offset.
 * A history is named by replid; replid2 names the history we followed before a failover, valid up to
 * (and including the byte before) secondReplOffset.
 */
export class ReplIds {
  replid: string;
  replid2 = NULL_REPLID;
  secondReplOffset = -1;

  constructor(replid = randomReplid()) {
    this.replid = replid;
  }

  /** A copy, to shift without changing what this one answers (History.continued). */
  copy(): ReplIds {
    const c = new ReplIds(this.replid);
    c.set(this);
    return c;
  }

  /** Takes `other`'s three ids. */
  set(other: Pick<ReplIds, 'replid' | 'replid2' | 'secondReplOffset'>): void {
    this.replid = other.replid;
    this.replid2 = other.replid2;
    this.secondReplOffset = other.secondReplOffset;
  }

  /** A new, unrelated history (full sync from upstream). */
  reset(replid: string): void {
    this.replid = replid;
    this.replid2 = NULL_REPLID;
    this.secondReplOffset = -1;
  }

  /**
   * Upstream failed over and continued us under a new id (Redis shiftReplicationId): replid2 takes our id, valid up
   * to our offset + 1, as in Redis. Unless `upstream`'s own ids (its INFO replication, read before PSYNC) vouch for
   * more: when its replid is the new id and its replid2 is ours, its history and ours are the same bytes up to its
   * second_repl_offset, which may be past our offset (a relay restarted behind its replicas). Returns the
   * second_repl_offset taken and where it came from.
   */
  shift(newReplid: string, masterReplOffset: number, upstream: UpstreamIds | null = null): { secondReplOffset: number; from: 'upstream' | 'offset' } {
    const own = masterReplOffset + 1;
    const vouched =
      upstream !== null &&
      upstream.replid.toLowerCase() === newReplid.toLowerCase() &&
      upstream.replid2.toLowerCase() === this.replid.toLowerCase() &&
      upstream.secondReplOffset >= own;
    this.replid2 = this.replid;
    this.secondReplOffset = vouched ? upstream.secondReplOffset : own;
    this.replid = newReplid;
    return { secondReplOffset: this.secondReplOffset, from: vouched ? 'upstream' : 'offset' };
  }

  /**
   * Is the stream up to `offset` - 1 the one a dataset of `replid` at that point was made of? Our id, or any id of
   * this history up to second_repl_offset (the bytes before it are the old master's, whichever id they were taken
   * under). A snapshot is served only then: one of the old id taken past that point, fetched ahead of our stream
   * before a failover, holds the old master's writes the new one never had (History, DownstreamReplication).
   */
  vouches(replid: string, offset: number): boolean {
    return replid.toLowerCase() === this.replid.toLowerCase() || offset <= this.secondReplOffset;
  }

  /**
   * Can a replica asking `PSYNC replid offset` be continued, as far as ids go (Redis masterTryPartialResynchronization)?
   * The caller still checks that the log holds `offset`.
   */
  accepts(replid: string, offset: number): boolean {
    // Redis compares with strcasecmp.
    const id = replid.toLowerCase();
    if (id === this.replid.toLowerCase()) return true;
    return id === this.replid2.toLowerCase() && replid !== NULL_REPLID && offset <= this.secondReplOffset;
  }
}
