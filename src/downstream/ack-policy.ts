import type { AckPolicy } from '../config/types.js';

/**
 * The offset an ack policy acknowledges upstream, given the offsets the online downstream replicas acknowledged:
 * `min` = the smallest of them, `quorum:N` = the N-th highest (held by at least N replicas). null when too few
 * replicas are online to say (none for `min`, fewer than N for `quorum`): the caller then acknowledges nothing new.
 * `self` does not depend on the replicas: null here, the caller acknowledges what it holds.
 */
export function policyAckOffset(policy: AckPolicy, acks: readonly number[]): number | null {
  switch (policy.kind) {
    case 'self':
      return null;
    case 'min':
      return acks.length === 0 ? null : Math.min(...acks);
    case 'quorum': {
      if (acks.length < policy.n) return null;
      return [...acks].sort((a, b) => b - a)[policy.n - 1]!;
    }
  }
}

/** `self`, `min`, `quorum:N`: the policy as written in the config. */
export function formatAckPolicy(policy: AckPolicy): string {
  return policy.kind === 'quorum' ? `quorum:${policy.n}` : policy.kind;
}

export interface AckTrackerHost {
  /** The offsets the online downstream replicas acknowledged. */
  acks(): readonly number[];
  /**
   * The offsets the same replicas said they fsynced to their AOF (REPLCONF ACK <offset> FACK <aof offset>, Redis
   * 7.2+ with appendonly), -1 for one that never said (no AOF, an older Redis).
   */
  aofAcks(): readonly number[];
  /** The relay's master_repl_offset. */
  endOffset(): number;
  /**
   * The offset a restart of the relay keeps: what its disk log has written (its master_repl_offset without an
   * active disk log, which keeps nothing anyway).
   */
  durableOffset(): number;
  /** Have the disk log write what it holds pending now (the replicas hold more than it has written). */
  writeDiskNow(): void;
  /** Whether the upstream link streams (an ACK can be sent). */
  linkUp(): boolean;
  /** Send REPLCONF ACK upstream now. */
  ackNow(): void;
}

/**
 * What the relay acknowledges upstream under replication.ack-policy, and when: the one owner of the floor (the
 * highest offset acknowledged in this history) and of the last offset sent.
 */
export class AckTracker {
  #policy: AckPolicy;
  #host: AckTrackerHost;
  #floor = 0;
  #lastSent = -1;
  /** The same for FACK: the highest AOF offset acknowledged in this history (0: none yet), and the last one sent. */
  #aofFloor = 0;
  #lastAofSent = -1;
  #checkQueued = false;

  constructor(policy: AckPolicy, host: AckTrackerHost) {
    this.#policy = policy;
    this.#host = host;
  }

  /** A new history: offsets restart. */
  reset(): void {
    this.#floor = 0;
    this.#lastSent = -1;
    this.#aofFloor = 0;
    this.#lastAofSent = -1;
  }

  /**
   * What to acknowledge, never more than `held` (the offset the relay holds, or for a GETACK the offset before it).
   * min/quorum acknowledge what the online replicas hold and the relay's disk log has written; with too few replicas
   * online, nothing new (the floor), so WAIT on the master counts only what replicas hold. The disk too: a relay
   * restarted after a SIGKILL (its master killed with it) came back behind a write WAIT had counted, and full-synced
   * its replica, the one copy left, back to its own older data (the PITR and ack audit).
   */
  offsetFor(held: number): number {
    if (this.#policy.kind === 'self') return held;
    const v = this.#policyOffset();
    if (v !== null && v > this.#floor) this.#floor = v;
    const ack = Math.min(held, this.#floor);
    this.#lastSent = ack;
    return ack;
  }

  /**
   * The FACK to send with the ACK of `ack` (WAITAOF on a Redis 7.2+ master counts replicas by it), null for none.
   * min/quorum pass on what the replicas fsynced to their AOF, under the same rule as their offsets: one that never
   * said (no AOF) holds `min` back, and counts for no quorum. `self` sends none: the relay keeps no AOF, so WAITAOF
   * counts it as a replica without one, as Redis counts an intermediate replica without AOF.
   */
  aofOffsetFor(ack: number): number | null {
    if (this.#policy.kind === 'self') return null;
    const v = policyAckOffset(this.#policy, fsynced(this.#policy, this.#host.aofAcks()));
    if (v !== null && v > this.#aofFloor) this.#aofFloor = v;
    if (this.#aofFloor === 0) return null;
    const aof = Math.min(ack, this.#aofFloor);
    this.#lastAofSent = aof;
    return aof;
  }

  /** The policy's offset over the replicas' acks, capped at what the disk log has written; null: too few replicas. */
  #policyOffset(): number | null {
    const v = policyAckOffset(this.#policy, this.#host.acks());
    return v === null ? null : Math.min(v, this.#host.durableOffset());
  }

  /**
   * A downstream replica acknowledged more, or the disk log wrote more: under min/quorum, tell upstream now so WAIT
   * returns promptly. Checked once per turn of the event loop, however many of them came in it.
   */
  replicaAcked(): void {
    if (this.#policy.kind === 'self' || this.#checkQueued) return;
    this.#checkQueued = true;
    setImmediate(() => {
      this.#checkQueued = false;
      if (!this.#host.linkUp()) return;
      const end = this.#host.endOffset();
      const held = policyAckOffset(this.#policy, this.#host.acks());
      // The replicas hold more than the disk has written: it writes now, not after its batching delay (its write
      // brings this check back), so a WAIT waits for a write, not for the delay too.
      if (held !== null && held > this.#host.durableOffset()) this.#host.writeDiskNow();
      const v = this.#policyOffset();
      if (v !== null && Math.min(v, end) > this.#lastSent) return this.#host.ackNow();
      const aof = policyAckOffset(this.#policy, fsynced(this.#policy, this.#host.aofAcks()));
      if (aof !== null && Math.min(aof, end) > this.#lastAofSent) this.#host.ackNow();
    });
  }
}

/** The AOF offsets a policy may count: for `min`, none unless every replica said one (-1: never said). */
function fsynced(policy: AckPolicy, aofAcks: readonly number[]): number[] {
  const said = aofAcks.filter((a) => a >= 0);
  return policy.kind === 'min' && said.length < aofAcks.length ? [] : said;
}
