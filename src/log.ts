import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/** The fields of a peer certificate (tls.PeerCertificate) that name it. */
const CERT_FIELDS = ['subject', 'issuer', 'subjectaltname', 'valid_from', 'valid_to', 'serialNumber', 'fingerprint256'] as const;

/**
 * pino's error serializer, with a TLS error's peer certificate (`err.cert`, on ERR_TLS_CERT_ALTNAME_INVALID) cut to
 * what names it. Whole, with its DER as an array of numbers, its issuer's certificate and its key, it made 4.7 KB
 * lines at every reconnect to a master with a certificate that did not match.
 */
function serializeErr(err: Error): ReturnType<typeof pino.stdSerializers.err> {
  const out = pino.stdSerializers.err(err) as ReturnType<typeof pino.stdSerializers.err> & { cert?: unknown };
  const cert = out.cert;
  if (cert !== null && typeof cert === 'object' && 'raw' in cert) {
    const c = cert as Record<string, unknown>;
    out.cert = Object.fromEntries(CERT_FIELDS.filter((k) => c[k] !== undefined).map((k) => [k, c[k]]));
  }
  return out;
}

/** The root logger. JSON to stdout (or to `destination`); components take `log.child({ component })`. */
export function createLogger(level: LevelWithSilent = 'info', destination?: pino.DestinationStream): Logger {
  const opts: pino.LoggerOptions = {
    level,
    base: { pid: process.pid },
    serializers: { err: serializeErr },
  };
  return destination ? pino(opts, destination) : pino(opts);
}
