import fc from 'fast-check';
import type { Test } from 'tap';

export interface PropertyRuns {
  readonly seed: number;
  readonly numRuns: number;
}

/**
 * Runs a fast-check property and turns its verdict into two tap assertions: no counterexample (on failure the
 * assertion shows fast-check's report: seed, path and the shrunk input, enough to replay it), and every run
 * actually executed (a property that skipped or stopped early proves less than its name says).
 */
export function assertProperty<Ts>(t: Test, what: string, property: fc.IProperty<Ts>, runs: PropertyRuns): void {
  const details = fc.check(property, runs);
  report(t, what, details, runs, fc.defaultReportMessage(details));
}

/** assertProperty for async properties. */
export async function assertAsyncProperty<Ts>(t: Test, what: string, property: fc.IAsyncProperty<Ts>, runs: PropertyRuns): Promise<void> {
  const details = await fc.check(property, runs);
  report(t, what, details, runs, await fc.asyncDefaultReportMessage(details));
}

function report<Ts>(t: Test, what: string, details: fc.RunDetails<Ts>, runs: PropertyRuns, message: string | undefined): void {
  const error = details.errorInstance instanceof Error ? `\nGot: ${details.errorInstance.message}` : details.errorInstance ? `\nGot: ${String(details.errorInstance)}` : '';
  t.equal(message === undefined ? null : message + error, null, `${what}: no counterexample`);
  t.equal(details.numRuns, runs.numRuns, `${what}: all ${runs.numRuns} cases ran`);
}
