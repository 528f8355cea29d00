/** Redis memory units (`memtoull` in redis util.c): lower-case suffix -> bytes. */
const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1000,
  kb: 1024,
  m: 1000 ** 2,
  mb: 1024 ** 2,
  g: 1000 ** 3,
  gb: 1024 ** 3,
};

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const SIZE_RE = /^(\d+)([kmg]?b?)$/i;
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/i;

/**
 * Bytes from a non-negative integer or a Redis-style size string (`1k` = 1000, `1kb` = 1024, `m`, `mb`, `g`, `gb`;
 * case-insensitive, no spaces); undefined when `value` is neither.
 */
export function sizeToBytes(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const m = SIZE_RE.exec(value);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) return undefined;
  const bytes = Number(m[1]) * unit;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/**
 * Milliseconds from a number of seconds (may be fractional) or a string `500ms`, `10s`, `5m`, `1h` (a bare numeric
 * string means seconds), rounded to whole milliseconds; undefined when `value` is neither.
 */
export function durationToMs(value: unknown): number | undefined {
  let ms: number | undefined;
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) ms = Math.round(value * 1000);
  } else if (typeof value === 'string') {
    const m = DURATION_RE.exec(value);
    if (m) ms = Math.round(Number(m[1]) * DURATION_UNITS[(m[2] ?? 's').toLowerCase()]!);
  }
  return ms !== undefined && Number.isSafeInteger(ms) ? ms : undefined;
}

/**
 * Short description of a bad value for error messages. The user and password of a URL-like string
 * (`redis://user:pw@host`, `user:pw@host`) are left out: a host key may be given one, and errors reach the log.
 */
export function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') {
    const shown = value.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/]*@/i, '$1…@');
    return JSON.stringify(shown.length > 40 ? `${shown.slice(0, 40)}…` : shown);
  }
  return `${typeof value} ${String(value)}`;
}

/** What kind of value `value` is, never the value itself (for keys that may hold secrets). */
export function kindOf(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === '') return 'an empty string';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'a mapping' : typeof value;
}
