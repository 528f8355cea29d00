/**
 * A table looked up by a name a client sent (a command, an INFO section), without a prototype: in a plain object,
 * `constructor` or `__proto__` found Object's own (`INFO constructor` threw, `CONSTRUCTOR` got an arity error).
 */
export function byName<T>(entries: Record<string, T>): Record<string, T> {
  return Object.assign(Object.create(null) as Record<string, T>, entries);
}
