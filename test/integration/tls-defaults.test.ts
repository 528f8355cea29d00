import t from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startRelay } from '../helpers/relay.js';
import { freePort } from '../helpers/ports.js';
import { makeCerts, tlsCommands } from '../helpers/tls.js';

// The TLS listener's defaults, held to Redis 7.0's: tls-auth-clients is yes unless said otherwise, and a TLS port
// without tls-ca-cert-file does not start ("Either tls-ca-cert-file or tls-ca-cert-dir must be specified when
// tls-cluster, tls-replication or tls-auth-clients are enabled!").
const certs = makeCerts();

t.test('a TLS listener that does not say verify-clients requires a client certificate, as Redis tls-auth-clients yes', async (t) => {
  const tlsPort = await freePort();
  const relay = await startRelay({ listen: { tls: { port: tlsPort, cert: certs.serverCert, key: certs.serverKey, ca: certs.ca } } });
  t.teardown(() => relay.stop());
  await t.rejects(tlsCommands(tlsPort, certs, [['PING']], false), 'a client without a certificate is refused');
  t.strictSame(await tlsCommands(tlsPort, certs, [['PING']]), ['PONG'], 'a client with one signed by ca is served');
});

t.test('a TLS listener without ca does not start unless verify-clients: false says clients need no certificate', async (t) => {
  let err: unknown;
  try {
    validateConfig({ listen: { tls: { port: 6381, cert: certs.serverCert, key: certs.serverKey } } }, null);
  } catch (e) {
    err = e;
  }
  t.type(err, ConfigError, 'refused at load');
  t.equal((err as ConfigError | undefined)?.path, 'listen.tls.ca');

  const tlsPort = await freePort();
  const relay = await startRelay({ listen: { tls: { port: tlsPort, cert: certs.serverCert, key: certs.serverKey, 'verify-clients': false } } });
  t.teardown(() => relay.stop());
  t.strictSame(await tlsCommands(tlsPort, certs, [['PING']], false), ['PONG'], 'verify-clients: false: a client without a certificate is served');
});

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
