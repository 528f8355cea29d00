import { randomBytes } from 'node:crypto';

/** Redis's "no second id" value. */
export const NULL_REPLID = '0000000000000000000000000000000000000000';

export function randomReplid(): string {
  return randomBytes(20).toString('hex');
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

  /** A new, unrelated history (full sync from upstream). */
  reset(replid: string): void {
    this.replid = replid;
    this.replid2 = NULL_REPLID;
    this.secondReplOffset = -1;
  }

  /** Upstream failed over and continued us under a new id (Redis shiftReplicationId). */
  shift(newReplid: string, masterReplOffset: number): void {
    this.replid2 = this.replid;
    this.secondReplOffset = masterReplOffset + 1;
    this.replid = newReplid;
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
