import t from 'tap';
import { readFileSync } from 'node:fs';
import { loadListenerTls } from '../../src/downstream/listener-tls.js';
import { TlsFileError } from '../../src/errors.js';
import type { ServerTlsConfig } from '../../src/config/types.js';
import { fileFingerprint, makeCerts } from '../helpers/tls.js';

// listen.tls's files, checked the same way at start and on SIGHUP: every way they can fail names the key and the file.
const certs = makeCerts();
const other = makeCerts('another CA');
const good: ServerTlsConfig = { port: 6381, cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, verifyClients: true };

t.test('good files: the options to serve them and the certificate, for the log', async (t) => {
  const tls = loadListenerTls(good);
  t.equal(tls.certificate.fingerprint256, fileFingerprint(certs.serverCert), 'the certificate of listen.tls.cert');
  t.equal(tls.certificate.subject, 'CN=localhost');
  t.match(tls.options, { requestCert: true, rejectUnauthorized: true }, 'verify-clients asks for and checks client certificates');
  t.ok(tls.options.ca, 'with the CA');
  t.notOk('ca' in loadListenerTls({ ...good, ca: null, verifyClients: false }).options, 'no ca: none given');
});

t.test('files that cannot serve: a TlsFileError naming the key and the file, never their content', async (t) => {
  const dir = t.testdir({ 'garbage.pem': 'not a certificate\n' });
  const garbage = `${dir}/garbage.pem`;
  const cases: Array<[string, Partial<ServerTlsConfig>, string, string]> = [
    ['a missing certificate file', { cert: `${dir}/missing.crt` }, 'listen.tls.cert', `${dir}/missing.crt`],
    ['a certificate file that is not PEM', { cert: garbage }, 'listen.tls.cert', garbage],
    ['a key file that is not PEM', { key: garbage }, 'listen.tls.key', garbage],
    ['a key that belongs to another certificate', { key: other.serverKey }, 'listen.tls.key', other.serverKey],
    ['a CA file without a certificate', { ca: garbage }, 'listen.tls.ca', garbage],
    ['a missing CA file', { ca: `${dir}/missing-ca.crt` }, 'listen.tls.ca', `${dir}/missing-ca.crt`],
  ];
  const keyPem = readFileSync(other.serverKey, 'latin1');
  for (const [what, change, key, file] of cases) {
    const err = t.throws(() => loadListenerTls({ ...good, ...change }), what) as unknown;
    t.type(err, TlsFileError, `${what}: a TlsFileError`);
    t.match(err, { code: 'RELAY_ERR_CONFIG', path: key, file }, `${what}: names ${key} and the file`);
    t.notOk(String((err as Error).message).includes(keyPem.split('\n')[1]!), `${what}: no key material in the message`);
  }
});
