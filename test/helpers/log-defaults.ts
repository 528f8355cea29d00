/**
 * The `log` section of a relay a test starts: the test's own, with `memory-prefault: false` unless it sets that key.
 * Writing the pages of the default 64mb tail costs each start ~0.4 s of CPU, which tests that are not about the
 * tail's memory need not spend (the suite starts hundreds of relays).
 */
export function testLog(log: object | undefined): Record<string, unknown> {
  return { 'memory-prefault': false, ...log };
}
