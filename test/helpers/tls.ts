import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { ReplyReader, type RespValue } from '../../src/resp/reply-reader.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { tempDir } from './temp-dir.js';

/** PEM file paths of a throwaway PKI: a CA, a server certificate for 127.0.0.1/localhost, a client certificate. */
export interface TestCerts {
  readonly dir: string;
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

function openssl(dir: string, args: string[]): void {
  try {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr?.toString() ?? e.message}`);
  }
}

/**
 * Generates a CA and two certificates signed by it (EC P-256, valid `days`) in a fresh temp dir with `openssl`.
 * Both certificates carry serverAuth and clientAuth, since Redis uses tls-cert-file for both sides of a connection.
 */
export function makeCerts(cn = 'psync-relay test CA', days = 400): TestCerts {
  const dir = tempDir('psync-relay-tls-');
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, ['req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', String(days), '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n');
  for (const name of ['server', 'client']) {
    openssl(dir, ['req', '-new', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'server' ? 'localhost' : 'replica'}`]);
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', String(days), '-extfile', 'ext.cnf']);
  }
  return {
    dir,
    ca: join(dir, 'ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
  };
}

/**
 * One more server certificate from `certs`' CA, valid only for the DNS name `dns` (no IP address, not localhost), as
 * `<dns>.crt` and `<dns>.key` in `certs.dir`.
 */
export function namedServerCert(certs: TestCerts, dns: string): { cert: string; key: string } {
  writeFileSync(join(certs.dir, `${dns}.cnf`), `subjectAltName=DNS:${dns}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n`);
  openssl(certs.dir, ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${dns}.key`, '-out', `${dns}.csr`, '-subj', `/CN=${dns}`]);
  openssl(certs.dir, ['x509', '-req', '-in', `${dns}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${dns}.crt`, '-days', '30', '-extfile', `${dns}.cnf`]);
  return { cert: join(certs.dir, `${dns}.crt`), key: join(certs.dir, `${dns}.key`) };
}

/** redis-server argv for a TLS port with `certs`' server certificate; clients must present a certificate. */
export function redisTlsArgs(certs: TestCerts, tlsPort: number): string[] {
  return ['--tls-port', String(tlsPort), '--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey, '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'yes'];
}

/** redis-server argv for a replica whose link to its master is TLS, with `certs`' client certificate. */
export function redisTlsReplicaArgs(certs: TestCerts): string[] {
  return ['--tls-replication', 'yes', '--tls-cert-file', certs.clientCert, '--tls-key-file', certs.clientKey, '--tls-ca-cert-file', certs.ca];
}

/** For `.catch()` on a redis-server start with TLS options: says what to suspect, keeps the log. */
export function explainNoTls(err: unknown): never {
  throw new Error(
    `redis-server with TLS options did not start; if it was built without TLS support (BUILD_TLS=yes), install Debian's redis-server 7.0, which has it: ${(err as Error).message}`,
    { cause: err },
  );
}

/** Fails loudly unless `port` completes a TLS handshake and answers PING (a build without TLS would not). */
export async function assertServesTls(port: number, certs: TestCerts, what: string): Promise<void> {
  try {
    const [reply] = await tlsCommands(port, certs, [['PING']]);
    if (reply !== 'PONG') throw new Error(`PING answered ${String(reply)}`);
  } catch (err) {
    throw new Error(`${what} does not serve TLS on port ${port} (redis-server built without TLS support?): ${(err as Error).message}`, { cause: err });
  }
}

/** One-shot commands over TLS (the tests' RedisClient is plain TCP). Resolves with each reply; errors as RespErrorValue. */
export async function tlsCommands(port: number, certs: TestCerts, cmds: string[][], withClientCert = true): Promise<RespValue[]> {
  const socket: TLSSocket = tlsConnect({
    host: '127.0.0.1',
    port,
    ca: readFileSync(certs.ca),
    ...(withClientCert && { cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) }),
  });
  try {
    return await new Promise<RespValue[]>((resolve, reject) => {
      const reader = new ReplyReader();
      const replies: RespValue[] = [];
      socket.once('secureConnect', () => socket.write(Buffer.concat(cmds.map((c) => encodeCommand(c)))));
      socket.on('data', (chunk: Buffer) => {
        reader.push(chunk);
        for (let v = reader.next(); v !== undefined; v = reader.next()) replies.push(v);
        if (replies.length >= cmds.length) resolve(replies);
      });
      socket.once('error', reject);
      socket.once('close', () => reject(new Error(`TLS connection to ${port} closed after ${replies.length} replies`)));
    });
  } finally {
    socket.destroy();
  }
}


/** The SHA-256 fingerprint of the certificate a new TLS connection to `port` is served (not verified: any certificate). */
export async function servedFingerprint(port: number): Promise<string> {
  const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    return socket.getPeerCertificate().fingerprint256;
  } finally {
    socket.destroy();
  }
}

/** The SHA-256 fingerprint of the (first) certificate in the PEM file `file`, as servedFingerprint() reports it. */
export function fileFingerprint(file: string): string {
  return new X509Certificate(readFileSync(file)).fingerprint256;
}
