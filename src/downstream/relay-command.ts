import { arrayReply, bulkReply, errorReply, integerReply, OK } from '../resp/writer.js';
import type { ClientConnection } from './client.js';
import type { PitrApi, PitrAnswer } from '../pitr/api.js';
import type { PitrTarget } from '../pitr/planner.js';
import { RelayError } from '../errors.js';
import { clip } from '../util/text.js';

const INT = /^-?\d{1,16}$/;

/** `RELAY PITR OFFSET|TIME|BEFORE ...` arguments as a target, or an error text. */
export function parsePitrTarget(args: readonly string[]): PitrTarget | string {
  const [kind, a, b, ...rest] = args;
  const k = (kind ?? '').toLowerCase();
  if (k === 'offset' || k === 'time') {
    if (a === undefined || b !== undefined) return `ERR syntax: RELAY PITR ${k.toUpperCase()} <${k === 'offset' ? 'offset' : 'unix-ms'}>`;
    if (!INT.test(a) || Number(a) < 0) return 'ERR value is not an integer or out of range';
    return k === 'offset' ? { kind: 'offset', offset: Number(a) } : { kind: 'time', ms: Number(a) };
  }
  if (k === 'before') {
    if (a === undefined || a === '' || rest.length > 0) return 'ERR syntax: RELAY PITR BEFORE <command> [<key-pattern>]';
    return { kind: 'before', command: a, pattern: b ?? null };
  }
  return `ERR unknown RELAY PITR target '${clip(kind ?? '')}': OFFSET <offset>, TIME <unix-ms>, BEFORE <command> [<key-pattern>], or CLOSE <port>`;
}

const timeReply = (iso: string | null): Buffer => bulkReply(iso);

function answerReply(a: PitrAnswer): Buffer {
  return arrayReply([integerReply(a.port), integerReply(a.offset), timeReply(a.time)]);
}

/**
 * RELAY PITR OFFSET <offset> | TIME <unix-ms> | BEFORE <command> [<key-pattern>] → [port, offset, time];
 * RELAY PITR CLOSE <port> → OK; RELAY HISTORY → the window as field/value pairs. Admin only (roles.ts).
 */
export function relayCommand(pitr: PitrApi | null, c: ClientConnection, args: readonly string[]): void {
  const sub = (args[0] ?? '').toLowerCase();
  if (pitr === null) return c.reply(errorReply('ERR point-in-time replicas are not available here'));
  if (sub === 'history' && args.length === 1) {
    const h = pitr.history();
    return c.reply(
      arrayReply([
        bulkReply('replid'),
        bulkReply(h.replid),
        bulkReply('first-offset'),
        integerReply(h.firstOffset),
        bulkReply('first-time'),
        timeReply(h.firstTime),
        bulkReply('last-offset'),
        integerReply(h.lastOffset),
        bulkReply('last-time'),
        timeReply(h.lastTime),
        bulkReply('snapshots'),
        arrayReply(h.snapshots.map((s) => arrayReply([integerReply(s.offset), bulkReply(s.time), integerReply(s.bytes)]))),
        bulkReply('listeners'),
        arrayReply(h.listeners.map(answerReply)),
      ]),
    );
  }
  if (sub !== 'pitr') return c.reply(errorReply(`ERR unknown RELAY subcommand '${clip(args[0] ?? '')}': PITR or HISTORY`));
  const rest = args.slice(1);
  if ((rest[0] ?? '').toLowerCase() === 'close') {
    const port = rest[1];
    if (port === undefined || rest.length > 2 || !INT.test(port)) return c.reply(errorReply('ERR syntax: RELAY PITR CLOSE <port>'));
    return c.reply(pitr.close(Number(port)) ? OK : errorReply(`ERR no point-in-time listener on port ${port}`));
  }
  const target = parsePitrTarget(rest);
  if (typeof target === 'string') return c.reply(errorReply(target));
  c.suspend(
    pitr.open(target).then(
      (a) => c.reply(answerReply(a)),
      (err: Error) => {
        if (!(err instanceof RelayError)) c.logger.error({ err }, 'RELAY PITR failed');
        c.reply(errorReply(`ERR ${err instanceof RelayError ? err.message : 'internal error'}`));
      },
    ),
  );
}
