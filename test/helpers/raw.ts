import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { networkInterfaces } from 'node:os';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { testLog } from './log-defaults.js';
import { waitFor } from './wait.js';

/** A raw TCP connection: everything received so far, and a promise of all of it once the peer closed. */
export interface RawConnection {
  readonly socket: Socket;
  received(): string;
  /** Resolves with everything received when the connection closes. */
  readonly closed: Promise<string>;
}

/**
 * Resolves when `socket` closes, however: not events.once(socket, 'close'), which rejects when an 'error' (an
 * ECONNRESET: the peer closed with bytes of ours unread) comes first. Handles 'error' too.
 */
export function closeOf(socket: Socket): Promise<void> {
  socket.on('error', () => undefined);
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/**
 * Connections to a local TCP `port` that the kernel has established but its listener has not accepted yet (the
 * listening sockets' rx_queue in /proc/net/tcp and tcp6). A client's 'connect' comes with the kernel's handshake,
 * before the server's accept(): a test that stops the server and counts on it reading a connection in a given turn
 * must first see this reach 0.
 */
export function unaccepted(port: number): number {
  return rxQueued(port, '0A');
}

/**
 * Bytes that reached the server's established connections on local TCP `port` and that it has not read yet. A write
 * that returned has not always reached the receiving socket: on a loaded machine loopback delivery can wait for the
 * kernel's softirq thread, so a test that writes to a stopped server and counts on it reading everything in one turn
 * must first see this reach what it wrote.
 */
export function unread(port: number): number {
  return rxQueued(port, '01');
}

/** The rx_queue of `port`'s local sockets in `state` (0A listening, 01 established), from /proc/net/tcp and tcp6. */
function rxQueued(port: number, state: string): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  // tcp6 is absent on a kernel without IPv6.
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6'].filter((f) => existsSync(f))) {
    for (const line of readFileSync(table, 'latin1').split('\n').slice(1)) {
      const [, local, , st, queues] = line.trim().split(/\s+/);
      if (st === state && local?.endsWith(`:${hexPort}`)) n += parseInt(queues!.split(':')[1]!, 16);
    }
  }
  return n;
}

/** Connects to host:port (from `localAddress` when given), resolves once connected. Writes `send` if given. */
export async function rawConnect(
  port: number,
  host = '127.0.0.1',
  opts: { localAddress?: string; send?: string | Buffer; allowHalfOpen?: boolean } = {},
): Promise<RawConnection> {
  // allowHalfOpen: the peer's FIN is not answered with ours, as a hostile client keeps its side open.
  const socket = connect({ port, host, allowHalfOpen: opts.allowHalfOpen ?? false, ...(opts.localAddress !== undefined && { localAddress: opts.localAddress }) });
  let got = '';
  socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const closed = closeOf(socket).then(() => got);
  await once(socket, 'connect');
  if (opts.send !== undefined) socket.write(opts.send);
  return { socket, received: () => got, closed };
}

/**
 * An IPv4 address of this machine that is not loopback (for protected mode: a client connecting to it has it as
 * its source address). Throws, naming what is missing, when there is none: such a test must not pass unnoticed.
 */
export function nonLoopbackIPv4(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  throw new Error('this test needs a non-loopback IPv4 address on this machine (none found in os.networkInterfaces())');
}

/** Writes `config` (YAML-shaped, kebab-case keys, its `log` through testLog()) to <dir>/relay.yaml; returns its path. */
export function writeConfig(dir: string, config: Record<string, unknown>, mode = 0o644): string {
  const file = join(dir, 'relay.yaml');
  writeFileSync(file, stringify({ ...config, log: testLog(config['log'] as object | undefined) }), { mode });
  return file;
}

/** The JSON log lines of a relay process whose `msg` matches. */
export function logLines(logs: string, msg: RegExp): Array<Record<string, unknown>> {
  return logs
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => msg.test(String(l['msg'])));
}

/**
 * Waits for a log line of a relay process whose `msg` matches (its stdout reaches us after its socket replies do).
 * A process logs in order: once a line is seen, every line logged before it is there too.
 */
export function loggedLine(proc: { logs(): string }, msg: RegExp): Promise<Record<string, unknown>> {
  return waitFor(() => logLines(proc.logs(), msg)[0], { what: `a log line matching ${msg}`, timeoutMs: 10_000 });
}

/**
 * A connected TCP pair on loopback, destroyed at the test's end: `server` is the accepted side (the relay's socket to
 * a client or replica), `client` the peer. Neither side's 'error' (a reset when the other goes) is left unhandled.
 */
export async function loopbackPair(t: { teardown(fn: () => void): void }): Promise<{ server: Socket; client: Socket }> {
  const listener = createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const accepted = once(listener, 'connection') as Promise<[Socket]>;
  const client = connect((listener.address() as { port: number }).port, '127.0.0.1');
  const [server] = await accepted;
  listener.close();
  client.on('error', () => undefined);
  server.on('error', () => undefined);
  t.teardown(() => {
    client.destroy();
    server.destroy();
  });
  return { server, client };
}
