/**
 * Crash injection for the crash-point tests, in the spirit of etcd's gofail: with
 * `PSYNC_RELAY_FAILPOINT=<kind>@<n>` in the environment, the process SIGKILLs itself just before its n-th file
 * operation of that kind (`open:w`, `writev`, `datasync`, `rename`, `rm`, `truncate`, ...; `any` counts every kind).
 * Killing before an operation is the same as dying between it and the one before. Unset, it costs one call.
 */
const spec = /^([\w:+-]+)@(\d+)$/.exec(process.env['PSYNC_RELAY_FAILPOINT'] ?? '');
const kindWanted = spec?.[1] ?? null;
let remaining = spec ? Number(spec[2]) : 0;

export function failpoint(kind: string): void {
  if (kindWanted === null || (kindWanted !== 'any' && kindWanted !== kind)) return;
  if (--remaining > 0) return;
  process.stderr.write(`failpoint: SIGKILL before ${kind}\n`);
  process.kill(process.pid, 'SIGKILL');
}
