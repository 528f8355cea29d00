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
  /** The relay's master_repl_offset. */
  endOffset(): number;
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
  #checkQueued = false;

  constructor(policy: AckPolicy, host: AckTrackerHost) {
    this.#policy = policy;
    this.#host = host;
  }

  /** A new history: offsets restart. */
  reset(): void {
    this.#floor = 0;
    this.#lastSent = -1;
  }

  /**
   * What to acknowledge, never more than `held` (the offset the relay holds, or for a GETACK the offset before it).
   * min/quorum acknowledge what the online replicas hold; with too few of them online, nothing new (the floor), so
   * WAIT on the master counts only what replicas hold.
   */
  offsetFor(held: number): number {
    if (this.#policy.kind === 'self') return held;
    const v = policyAckOffset(this.#policy, this.#host.acks());
    if (v !== null && v > this.#floor) this.#floor = v;
    const ack = Math.min(held, this.#floor);
    this.#lastSent = ack;
    return ack;
  }

  /**
   * A downstream replica acknowledged more: under min/quorum, tell upstream now so WAIT returns promptly. Checked
   * once per turn of the event loop, however many replicas acknowledged in it.
   */
  replicaAcked(): void {
    if (this.#policy.kind === 'self' || this.#checkQueued) return;
    this.#checkQueued = true;
    setImmediate(() => {
      this.#checkQueued = false;
      if (!this.#host.linkUp()) return;
      const v = policyAckOffset(this.#policy, this.#host.acks());
      if (v !== null && Math.min(v, this.#host.endOffset()) > this.#lastSent) this.#host.ackNow();
    });
  }
}
