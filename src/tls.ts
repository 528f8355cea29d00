import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as netConnect, Socket, type OnReadOpts } from 'node:net';
import { connect as tlsConnect, createSecureContext, type ConnectionOptions } from 'node:tls';
import type { ClientTlsConfig, ListenConfig, UpstreamConfig } from './config/types.js';
import { ConfigError, TlsFileError } from './errors.js';

/** Reads a PEM file named by config key `key`; a failure is a TlsFileError naming the key and the file. */
export function readPem(file: string, key: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new TlsFileError(key, file, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/**
 * TLS options from the config's file paths. Files are read on every call, so a connection made after a
 * certificate is replaced on disk uses the new one; a missing file throws (a failed connect, retried).
 */
export function clientTlsOptions(cfg: ClientTlsConfig): ConnectionOptions {
  return {
    ...(cfg.ca !== null && { ca: readPem(cfg.ca, 'upstream.tls.ca') }),
    ...(cfg.cert !== null && { cert: readPem(cfg.cert, 'upstream.tls.cert') }),
    ...(cfg.key !== null && { key: readPem(cfg.key, 'upstream.tls.key') }),
    ...(cfg.servername !== null && { servername: cfg.servername }),
    rejectUnauthorized: cfg.verify,
  };
}

/**
 * upstream.tls for the links to the Sentinels and the snapshot source: the same files, but their certificates are
 * checked against the host dialed, as upstream.tls.servername names the master.
 */
export function sideLinkTls(cfg: ClientTlsConfig | null): ClientTlsConfig | null {
  return cfg === null ? null : { ...cfg, servername: null };
}

/**
 * Loads upstream.tls's files once at start, so a wrong path or a malformed PEM stops the relay (as a bad listen.tls
 * file does) instead of failing every connect in the background. They are read again at each connect all the same.
 */
export function checkClientTls(cfg: ClientTlsConfig): void {
  const options = clientTlsOptions(cfg); // an unreadable file: ConfigError naming its key
  try {
    createSecureContext(options);
  } catch (err) {
    throw new ConfigError('upstream.tls', `cannot load its certificate, key or CA: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Opens a TCP connection, over TLS when `tls` is set. `ready` is the event after which the socket carries
 * application data: `connect` for TCP, `secureConnect` (handshake done, certificate checked) for TLS.
 */
export function dial(host: string, port: number, tls: ClientTlsConfig | null | undefined, onread?: OnReadOpts): { socket: Socket; ready: 'connect' | 'secureConnect' } {
  // `onread` (plain TCP only): reads go to the caller's buffers (upstream/read-tap.ts).
  if (!tls) return { socket: netConnect({ host, port, noDelay: true, ...(onread && { onread }) }), ready: 'connect' };
  // Built inside try so an unreadable file surfaces as a socket error, like a refused connection.
  let options: ConnectionOptions;
  try {
    options = clientTlsOptions(tls);
  } catch (err) {
    const socket = new Socket();
    socket.destroy(err as Error); // 'error' and 'close' are emitted on the next tick, after the caller's listeners are on
    return { socket, ready: 'connect' };
  }
  const socket = tlsConnect({ host, port, ...options });
  socket.setNoDelay(true);
  return { socket, ready: 'secureConnect' };
}

/**
 * The port the relay announces upstream (`REPLCONF listening-port`): the TLS port when it talks TLS upstream
 * and has a TLS listener (as Redis does with tls-replication), or when it has no plain listener.
 */
export function announcedPort(listen: ListenConfig, upstreamTls: ClientTlsConfig | null): number {
  if (listen.tls !== null && (upstreamTls !== null || listen.port === 0)) return listen.tls.port;
  return listen.port;
}

/**
 * Upstream TLS settings that leave a link unauthenticated or unencrypted although upstream.tls is set, as warnings
 * to log at start (`key` names the setting): each is allowed, but should never go unnoticed.
 */
export function tlsWarnings(upstream: UpstreamConfig): Array<{ key: string; message: string }> {
  if (upstream.tls === null) return [];
  const out: Array<{ key: string; message: string }> = [];
  if (!upstream.tls.verify) {
    out.push({ key: 'upstream.tls.verify', message: "upstream TLS does not check the master's certificate: anyone on the path can pose as the master and receive upstream.password and the data" });
  }
  if (upstream.snapshotSource !== null && !upstream.snapshotSource.tls) {
    out.push({ key: 'upstream.snapshot-source.tls', message: 'the snapshot source is reached over plain TCP although upstream.tls is set: its password and the whole dataset cross the network unencrypted' });
  }
  if (upstream.sentinel !== null && !upstream.sentinel.tls) {
    out.push({ key: 'upstream.sentinel.tls', message: 'the Sentinels are reached over plain TCP although upstream.tls is set: upstream.sentinel.password crosses the network unencrypted' });
  }
  return out;
}

/** How close to its end a certificate's validity gets a warning (at start, and at each SIGHUP reload): renewal should have happened by then. */
export const CERT_WARN_DAYS = 14;
const DAY_MS = 86_400_000;

export interface CertificateWarning {
  /** The config key naming the certificate's file. */
  readonly key: string;
  /** Its end of validity, ISO 8601. */
  readonly notAfter: string;
  readonly message: string;
}

/**
 * The relay's own certificates (listen.tls.cert, the one it serves; upstream.tls.cert, the one it presents) that have
 * expired or expire within CERT_WARN_DAYS of `now`, as warnings to log at start: an expired one fails every TLS
 * peer, and would otherwise start without a word. An unreadable or unparsable file is not reported here (the listener
 * and checkClientTls refuse those).
 */
export function certificateWarnings(listen: ListenConfig, upstream: UpstreamConfig, now = Date.now()): CertificateWarning[] {
  const files: Array<[string, string | null | undefined]> = [
    ['listen.tls.cert', listen.tls?.cert],
    ['upstream.tls.cert', upstream.tls?.cert],
  ];
  const out: CertificateWarning[] = [];
  for (const [key, file] of files) {
    if (!file) continue;
    let certificate: X509Certificate;
    try {
      // The first certificate of the PEM: the relay's own (a chain follows it).
      certificate = new X509Certificate(readFileSync(file));
    } catch {
      continue;
    }
    const warning = expiryWarning(key, certificate, now);
    if (warning) out.push(warning);
  }
  return out;
}

/** A warning when `certificate` (named by config key `key`) has expired or expires within CERT_WARN_DAYS of `now`; else null. */
export function expiryWarning(key: string, certificate: X509Certificate, now = Date.now()): CertificateWarning | null {
  const notAfter = Date.parse(certificate.validTo);
  if (!Number.isFinite(notAfter) || notAfter - now > CERT_WARN_DAYS * DAY_MS) return null;
  const when = new Date(notAfter).toISOString();
  const message =
    notAfter <= now
      ? `the certificate in ${key} expired at ${when}: TLS peers will refuse it`
      : `the certificate in ${key} expires at ${when}, in ${Math.ceil((notAfter - now) / DAY_MS)} day(s)${key.startsWith('listen') ? ' (renew the file, then send the relay SIGHUP)' : ' (a renewed file is used from the next connect to the master)'}`;
  return { key, notAfter: when, message };
}
