import { RelayError } from '../errors.js';
import type { PitrTarget } from '../pitr/planner.js';

/**
 * The body of `POST /pitr`, parsed into a PitrTarget: exactly one of
 * `{"offset": <int>}`, `{"time": <unix ms int | ISO 8601 string with a zone>}`, `{"before": "<command>", "pattern"?: "<glob>"}`.
 * Pure functions: no sockets, no relay.
 */

/** The largest body read: a target is a few dozen bytes. */
export const MAX_PITR_BODY = 4096;

/** A malformed web API request (answered 400, 413 or 415 with this message). */
export class WebRequestError extends RelayError {
  constructor(message: string) {
    super('RELAY_ERR_WEB_REQUEST', message);
  }
}

const SHAPE = 'the body must be one of {"offset": <int>}, {"time": <unix ms | ISO 8601>}, {"before": "<command>", "pattern": "<glob>"}';
/** A date and time with seconds optional, fraction optional, and a zone required (a server's local time is no one's). */
const ISO_8601 = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})$/i;
const MAX_COMMAND = 64;
const MAX_PATTERN = 1024;

/** `application/json`, with parameters or not: anything else would let a cross-site form post without a CORS preflight. */
export function isJsonContentType(header: string): boolean {
  return /^application\/json\s*(?:;|$)/i.test(header);
}

export function parsePitrBody(body: Buffer): PitrTarget {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new WebRequestError('the body is not UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new WebRequestError(`the body is not JSON (${(err as Error).message}); ${SHAPE}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new WebRequestError(SHAPE);
  const o = value as Record<string, unknown>;
  const kinds = (['offset', 'time', 'before'] as const).filter((k) => Object.hasOwn(o, k));
  if (kinds.length !== 1) throw new WebRequestError(`${kinds.length === 0 ? 'no target' : `more than one target (${kinds.join(', ')})`}: ${SHAPE}`);
  const kind = kinds[0]!;
  const allowed = kind === 'before' ? ['before', 'pattern'] : [kind];
  const unknown = Object.keys(o).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) throw new WebRequestError(`unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} with "${kind}": ${SHAPE}`);
  switch (kind) {
    case 'offset': {
      const offset = o['offset'];
      if (!isCount(offset)) throw new WebRequestError('"offset" must be a non-negative integer (a stream offset)');
      return { kind: 'offset', offset };
    }
    case 'time':
      return { kind: 'time', ms: parseTime(o['time']) };
    case 'before': {
      const command = o['before'];
      if (typeof command !== 'string' || !/^\S+$/.test(command) || command.length > MAX_COMMAND) {
        throw new WebRequestError(`"before" must be a command name (e.g. "flushall"), one word of at most ${MAX_COMMAND} characters`);
      }
      const pattern = o['pattern'] ?? null;
      if (pattern !== null && (typeof pattern !== 'string' || pattern === '' || pattern.length > MAX_PATTERN)) {
        throw new WebRequestError(`"pattern" must be a key glob (e.g. "user:*") of 1 to ${MAX_PATTERN} characters, or left out to match any key`);
      }
      return { kind: 'before', command, pattern };
    }
  }
}

function parseTime(v: unknown): number {
  if (typeof v === 'number') {
    if (!isCount(v)) throw new WebRequestError('"time" as a number must be a non-negative integer of unix milliseconds');
    return v;
  }
  if (typeof v === 'string' && ISO_8601.test(v)) {
    const ms = Date.parse(v.replace(' ', 'T'));
    // Date.parse rolls 2025-02-30 over to March: the day must exist.
    const [y, m, d] = v.slice(0, 10).split('-').map(Number) as [number, number, number];
    const day = new Date(Date.UTC(y, m - 1, d));
    if (Number.isFinite(ms) && ms >= 0 && day.getUTCMonth() === m - 1 && day.getUTCDate() === d) return ms;
  }
  throw new WebRequestError('"time" must be unix milliseconds or an ISO 8601 date and time with a zone (e.g. "2025-01-31T03:12:00Z" or "…+01:00")');
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
