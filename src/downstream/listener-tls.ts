import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext, type TlsOptions } from 'node:tls';
import type { ServerTlsConfig } from '../config/types.js';
import { TlsFileError } from '../errors.js';
import { readPem } from '../tls.js';

/** listen.tls's files, read and checked: what a TLS listener is created with at start and given again on SIGHUP. */
export interface ListenerTls {
  /** For tls.createServer and Server.setSecureContext. */
  readonly options: TlsOptions;
  /** The certificate served (the first of listen.tls.cert; a chain may follow): its subject and validity are logged. */
  readonly certificate: X509Certificate;
}

/**
 * Reads and checks listen.tls's certificate, key and CA. Every failure is a TlsFileError naming the config key and the
 * file, so the start can refuse it and a reload can keep the certificate in service and say which file to fix:
 * a file that cannot be read, a certificate or key that does not parse, a key that does not belong to the
 * certificate, a CA file without a certificate in it (OpenSSL would take that as "no CA": every client refused when
 * verify-clients is on), or anything else OpenSSL refuses when it builds the context.
 */
export function loadListenerTls(cfg: ServerTlsConfig): ListenerTls {
  const cert = readPem(cfg.cert, 'listen.tls.cert');
  const key = readPem(cfg.key, 'listen.tls.key');
  const ca = cfg.ca === null ? null : readPem(cfg.ca, 'listen.tls.ca');
  const certificate = parsed('listen.tls.cert', cfg.cert, 'a PEM certificate', () => new X509Certificate(cert));
  const privateKey = parsed('listen.tls.key', cfg.key, 'a PEM private key (without a passphrase)', () => createPrivateKey(key));
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new TlsFileError('listen.tls.key', cfg.key, `the key in ${cfg.key} does not belong to the certificate in listen.tls.cert (${cfg.cert})`);
  }
  if (cfg.ca !== null && ca !== null) parsed('listen.tls.ca', cfg.ca, 'a PEM certificate bundle', () => new X509Certificate(ca));
  const options: TlsOptions = {
    cert,
    key,
    ...(ca !== null && { ca }),
    requestCert: cfg.verifyClients,
    rejectUnauthorized: cfg.verifyClients,
  };
  parsed('listen.tls', cfg.cert, 'usable with its key and CA', () => createSecureContext(options));
  return { options, certificate };
}

/**
 * `parse()`'s result; its failure as a TlsFileError whose cause is OpenSSL's error (the log shows its message after
 * ours: it names the failing step, never the bytes).
 */
function parsed<T>(key: string, file: string, what: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new TlsFileError(key, file, `${file} is not ${what}`, { cause: err });
  }
}
