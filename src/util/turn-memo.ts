/**
 * A value computed at most once per turn of the event loop, shared by every caller in that turn (dropped in the
 * turn's check phase). For answers that many requests of one turn ask for: uWS runs the handlers of every request
 * one read brought, and of every read ready in the turn, back to back. A request read in a turn was sent before its
 * client could see anything the relay did in that turn (what the relay writes leaves in the turn, and an answer to
 * it is read in a later one), so a value from earlier in the turn is as fresh as that client can tell. Except past
 * 1,024 sockets ready at once: libuv then polls again within the same turn, and a request read in a later batch may
 * get a value one event old (the web re-audit: 3-7 of ~1,000 checks one command behind, under 1,500 scrapers).
 */
export class TurnMemo<T> {
  readonly #compute: () => T;
  #value: { readonly v: T } | null = null;

  constructor(compute: () => T) {
    this.#compute = compute;
  }

  get(): T {
    if (this.#value === null) {
      // Set only once computed: one that throws is computed again by the next caller.
      this.#value = { v: this.#compute() };
      setImmediate(() => (this.#value = null));
    }
    return this.#value.v;
  }
}
