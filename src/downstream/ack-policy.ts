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
