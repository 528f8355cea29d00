import { InternalError } from '../errors.js';

/** A legal-transition table: for every state, the states it may move to. */
export type Transitions<S extends string> = { readonly [K in S]: readonly S[] };

/**
 * Behind every #setState: a move the table does not allow is a bug, reported at the move (with what moved) rather
 * than discovered later as a state nobody expected.
 */
export function checkTransition<S extends string>(table: Transitions<S>, what: string, from: S, to: S): void {
  if (!table[from].includes(to)) throw new InternalError(`${what}: illegal state transition ${from} -> ${to}`);
}
