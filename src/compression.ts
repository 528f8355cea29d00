/**
 * psync-relay stream compression between two relays ("z1"). Both sides' modules import this one, so the framing
 * is written down once, here.
 *
 * Negotiation. A relay replicating from an upstream announces, in the REPLCONF capa command it already sends,
 * one more value: `capa psync-relay-z1:<level>` (upstream.compression, upstream.compression-level). Redis and
 * Valkey ignore capa values they do not know (replconfCommand skips them), so a plain master sees no difference
 * and answers as always. An upstream psync-relay that sees the value (and has replication.compression on) answers
 * PSYNC with its usual reply line plus one more token:
 *
 *     +FULLRESYNC <replid> <offset> psync-relay-z1\r\n
 *     +CONTINUE <replid> psync-relay-z1\r\n            (the replid always present, whatever capa psync2 said)
 *
 * Framing. Everything after that line's `\n` is one raw DEFLATE stream (RFC 1951, zlib windowBits 15, no header,
 * no checksum) until the connection closes: the `$<len>\r\n` or `$EOF:` payload header, the RDB, then the stream.
 * Keepalive newlines sent while a replica waits for its snapshot come before the reply line, uncompressed, as
 * today. The sender ends every batch (what one turn of its event loop handed the connection) with Z_SYNC_FLUSH,
 * so the receiver can inflate every byte sent so far: compression adds no latency beyond one batch.
 *
 * Why this cannot be misread: only a peer that announced the capa ever gets the extra token, and a plain Redis
 * never announces it; a relay that announced it reads the token, and without it (a Redis or a relay with
 * compression off answered) reads the plain protocol. A token it did not ask for is a handshake error, not a guess.
 *
 * Offsets and replids are the master's, counted on the inflated bytes: PSYNC offsets, REPLCONF ACK (replica →
 * upstream, never compressed), INFO. The compressor works on each replica's copy of the bytes in the session's
 * write path; the shared log is never touched.
 */

/** The capa value and the reply token. The suffix names the codec: a later codec gets a new name. */
export const Z1 = 'psync-relay-z1';
/** zlib level 1: ~95% of level 6's ratio on JSON-like streams at 2-3x less CPU (bench/README.md "WAN"). */
export const DEFAULT_COMPRESSION_LEVEL = 1;

/** The capa value a relay announces upstream for `level`. */
export function compressionCapa(level: number): string {
  return `${Z1}:${level}`;
}

/**
 * The level a `REPLCONF capa <value>` asks for, or null when the value is not ours. A bare `psync-relay-z1`
 * takes the default level.
 */
export function parseCompressionCapa(value: string): number | null {
  const m = /^psync-relay-z1(?::([1-9]))?$/i.exec(value);
  if (!m) return null;
  return m[1] === undefined ? DEFAULT_COMPRESSION_LEVEL : Number(m[1]);
}

/** A PSYNC reply line (without CRLF) as sent to a replica, marked when its stream is compressed. */
export function psyncReplyLine(text: string, compressed: boolean): string {
  return compressed ? `${text} ${Z1}\r\n` : `${text}\r\n`;
}
