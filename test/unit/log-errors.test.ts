/**
 * How errors are logged: a TLS error names the peer's certificate by its subject, issuer, names, dates and
 * fingerprint, and no more. pino's own serializer copied every property of the error, so a master whose certificate
 * did not match wrote its whole certificate at every reconnect (the raw DER as a JSON array of numbers, the issuer's
 * certificate, the public key): 4.7 KB a line, 800 MB a day while it lasted.
 */
import t from 'tap';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, connect } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../../src/log.js';
import { makeCerts, namedServerCert } from '../helpers/tls.js';

/** The error a TLS client gets from a server whose certificate names only `wrong.example`. */
async function altnameError(): Promise<Error> {
  const certs = makeCerts();
  const named = namedServerCert(certs, 'wrong.example');
  const server = createServer({ cert: readFileSync(named.cert), key: readFileSync(named.key) }, (s) => s.on('error', () => undefined));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const client = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, ca: readFileSync(certs.ca) });
  const [err] = (await once(client, 'error')) as [Error];
  client.destroy();
  return err;
}

t.test("a TLS error's certificate is logged as what names it, not whole", async (t) => {
  const err = await altnameError();
  t.equal((err as NodeJS.ErrnoException).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
  t.ok('cert' in err, 'Node attaches the peer certificate to this error');
  const lines: string[] = [];
  const log = createLogger('info', { write: (s: string) => void lines.push(s) });
  log.warn({ err }, 'upstream link failed');
  const line = lines[0]!;
  t.ok(line.length < 1500, `one short line (${line.length} bytes)`);
  const logged = JSON.parse(line) as { err: { code: string; message: string; cert: Record<string, unknown> } };
  t.equal(logged.err.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
  t.match(logged.err.message, /wrong\.example|altnames/i);
  t.match(logged.err.cert, { subject: { CN: 'wrong.example' }, issuer: { CN: 'psync-relay test CA' }, subjectaltname: 'DNS:wrong.example' });
  t.match(logged.err.cert['fingerprint256'], /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  t.notOk('raw' in logged.err.cert || 'issuerCertificate' in logged.err.cert || 'pubkey' in logged.err.cert, 'no DER, issuer chain or key');
});

t.test('other errors are logged as pino logs them', async (t) => {
  const lines: string[] = [];
  const log = createLogger('info', { write: (s: string) => void lines.push(s) });
  const err = Object.assign(new Error('boom'), { code: 'EBOOM', cert: 'not a certificate object' });
  log.warn({ err }, 'x');
  t.match(JSON.parse(lines[0]!), { err: { type: 'Error', message: 'boom', code: 'EBOOM', cert: 'not a certificate object' } });
});
