/** RESP2 encoders: requests as multibulk (`encodeCommand`) and the reply types a server sends. */

const CRLF = '\r\n';

function argToBuffer(arg: string | Buffer | number): Buffer {
  if (Buffer.isBuffer(arg)) return arg;
  return Buffer.from(typeof arg === 'number' ? String(arg) : arg, 'utf8');
}

/** `*N\r\n$len\r\narg\r\n...`. One allocation: headers and payloads are copied into a single buffer. */
export function encodeCommand(args: ReadonlyArray<string | Buffer | number>): Buffer {
  const bufs = args.map(argToBuffer);
  let size = 0;
  const headers: string[] = new Array(bufs.length);
  const head = `*${bufs.length}${CRLF}`;
  size += head.length;
  for (let i = 0; i < bufs.length; i++) {
    const h = `$${bufs[i]!.length}${CRLF}`;
    headers[i] = h;
    size += h.length + bufs[i]!.length + 2;
  }
  const out = Buffer.allocUnsafe(size);
  let pos = out.write(head, 0, 'latin1');
  for (let i = 0; i < bufs.length; i++) {
    pos += out.write(headers[i]!, pos, 'latin1');
    pos += bufs[i]!.copy(out, pos);
    out[pos++] = 13;
    out[pos++] = 10;
  }
  return out;
}

/** RESP cannot carry CR or LF in a status or error line: like Redis (addReplyErrorFormat), they become spaces. */
function oneLine(s: string): string {
  return /[\r\n]/.test(s) ? s.replace(/[\r\n]/g, ' ') : s;
}

/** Status reply; CR and LF in the text become spaces. */
export function simpleString(s: string): Buffer {
  return Buffer.from(`+${oneLine(s)}${CRLF}`, 'utf8');
}

/**
 * Error reply; `s` is the full text without the leading `-`, e.g. `ERR unknown command`. CR and LF become spaces
 * (client input is echoed in some). Client bytes are echoed as Redis does, byte for byte: callers decode them as
 * latin1, so a text with no character past U+00FF is written as latin1.
 */
export function errorReply(s: string): Buffer {
  const line = `-${oneLine(s)}${CRLF}`;
  // eslint-disable-next-line no-control-regex
  return Buffer.from(line, /^[\u0000-\u00ff]*$/.test(line) ? 'latin1' : 'utf8');
}

export function integerReply(n: number | bigint): Buffer {
  return Buffer.from(`:${n}${CRLF}`, 'latin1');
}

/** Bulk string reply; null is the nil bulk `$-1\r\n`. */
export function bulkReply(value: Buffer | string | null): Buffer {
  if (value === null) return Buffer.from(`$-1${CRLF}`, 'latin1');
  const payload = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const head = `$${payload.length}${CRLF}`;
  const out = Buffer.allocUnsafe(head.length + payload.length + 2);
  let pos = out.write(head, 0, 'latin1');
  pos += payload.copy(out, pos);
  out[pos++] = 13;
  out[pos] = 10;
  return out;
}

/** Array reply; `items` are already-encoded replies. */
export function arrayReply(items: ReadonlyArray<Buffer>): Buffer {
  return Buffer.concat([Buffer.from(`*${items.length}${CRLF}`, 'latin1'), ...items]);
}

export function nullArray(): Buffer {
  return Buffer.from(`*-1${CRLF}`, 'latin1');
}

// Shared constants: callers must not mutate them.
export const OK: Buffer = Buffer.from(`+OK${CRLF}`, 'latin1');
export const PONG: Buffer = Buffer.from(`+PONG${CRLF}`, 'latin1');
