import t from 'tap';
import { ConfigError } from '../../src/errors.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startRelay } from '../helpers/relay.js';
import { makeCerts } from '../helpers/tls.js';
import { freePort } from '../helpers/ports.js';
import { certificateWarnings, CERT_WARN_DAYS } from '../../src/tls.js';
import { validateConfig } from '../../src/config/schema.js';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';

// What TLS settings do at start: links left unchecked or in plain text, and certificates expired or about to, are
// warned about; bad upstream files stop it.
const certs = makeCerts();

t.test('TLS settings that leave a link unchecked or in plain text are warned about at start', async (t) => {
  const warned = async (upstream: Record<string, unknown>): Promise<string[]> => {
    const { lines } = await startLoggedRelay(t, { upstream: { host: null, ...upstream } });
    return lines.filter((l) => l['level'] === 40 && typeof l['key'] === 'string').map((l) => String(l['key']));
  };
  t.strictSame(await warned({ tls: { ca: certs.ca } }), [], 'verified TLS: no warning');
  t.strictSame(await warned({ tls: { ca: certs.ca, verify: false } }), ['upstream.tls.verify'], "verify: false: the master's certificate is not checked");
  t.strictSame(
    await warned({ tls: { ca: certs.ca }, 'snapshot-source': { host: '127.0.0.1' }, sentinel: { nodes: ['127.0.0.1:1'], 'master-name': 'm' } }),
    ['upstream.snapshot-source.tls', 'upstream.sentinel.tls'],
    'the snapshot source and the Sentinels over plain TCP while the master is reached over TLS',
  );
  t.strictSame(await warned({ 'snapshot-source': { host: '127.0.0.1' } }), [], 'no TLS anywhere: nothing to point out');
});

t.test('an unreadable or malformed upstream.tls file stops the start, naming the key, as a bad listen.tls file does', async (t) => {
  const dir = t.testdir({ 'garbage.pem': 'not a certificate\n' });
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['a missing ca', { ca: `${dir}/missing-ca.crt` }, 'upstream.tls.ca'],
    ['a cert that is no PEM', { ca: certs.ca, cert: `${dir}/garbage.pem`, key: certs.clientKey }, 'upstream.tls'],
    ['a missing key', { ca: certs.ca, cert: certs.clientCert, key: `${dir}/missing.key` }, 'upstream.tls.key'],
  ];
  for (const [what, tls, key] of cases) {
    let relay: Awaited<ReturnType<typeof startRelay>> | undefined;
    let err: unknown;
    try {
      relay = await startRelay({ log: { disk: 0, 'memory-prefault': false }, upstream: { host: '127.0.0.1', port: 1, tls } });
    } catch (e) {
      err = e;
    }
    await relay?.stop();
    t.type(err, ConfigError, `${what}: the start fails`);
    t.equal((err as ConfigError | undefined)?.path, key, 'naming the key');
  }
});

t.test('a listen.tls file that is malformed or a key of another certificate stops the start, naming the key', async (t) => {
  const dir = t.testdir({ 'garbage.pem': 'not a certificate\n' });
  const other = makeCerts('another CA');
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['a cert that is no PEM', { cert: `${dir}/garbage.pem`, key: certs.serverKey }, 'listen.tls.cert'],
    ['the key of another certificate', { cert: certs.serverCert, key: other.serverKey }, 'listen.tls.key'],
  ];
  for (const [what, files, key] of cases) {
    const err: unknown = await startLoggedRelay(t, { log: { disk: 0, 'memory-prefault': false }, listen: { tls: { port: await freePort(), ...files } } }).then(() => null, (e: unknown) => e);
    t.type(err, ConfigError, `${what}: the start fails`);
    t.equal((err as ConfigError | null)?.path, key, 'naming the key');
  }
});

t.test('a certificate of the relay that has expired or expires within 14 days is warned about at start, naming its key', async (t) => {
  const config = validateConfig({ listen: { tls: { port: 6390, cert: certs.serverCert, key: certs.serverKey } }, upstream: { host: null, tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } } }, null);
  const notAfter = Date.parse(new X509Certificate(readFileSync(certs.serverCert)).validTo);
  const DAY = 86_400_000;
  t.same(certificateWarnings(config.listen, config.upstream, notAfter - (CERT_WARN_DAYS + 1) * DAY), [], 'more than 14 days left: nothing');
  const soon = certificateWarnings(config.listen, config.upstream, notAfter - 3 * DAY + 1000);
  t.same(soon.map((w) => w.key), ['listen.tls.cert', 'upstream.tls.cert'], 'both certificates, 3 days left');
  t.match(soon[0]!.message, /expires at .* in 3 day\(s\) \(renew the file, then send the relay SIGHUP\)/);
  const late = certificateWarnings(config.listen, config.upstream, notAfter + DAY);
  t.match(late[0]!.message, /listen\.tls\.cert expired at/, 'expired');

  // A real start with a certificate valid 2 days: the warning is in the log.
  const short = makeCerts('short-lived CA', 2);
  const { lines } = await startLoggedRelay(t, { listen: { tls: { port: await freePort(), cert: short.serverCert, key: short.serverKey } }, upstream: { host: null } });
  const line = lines.find((l) => l['level'] === 40 && l['key'] === 'listen.tls.cert');
  t.match(line, { notAfter: /^\d{4}-/, msg: /expires at .* in 2 day\(s\)/ }, 'logged at start');
});
