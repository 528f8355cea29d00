// Minimal RESP2 client for the benchmark orchestrator: INFO, CONFIG, DEBUG POPULATE, PING. Not for the hot path.
import net from 'node:net';

export function encodeCommand(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(`$${b.length}\r\n`, b, '\r\n');
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
}

export class Incomplete extends Error {}

/** Parses one reply at `pos`; returns [value, nextPos]; throws Incomplete. Errors become Error objects. */
export function parseReply(buf, pos) {
  if (pos >= buf.length) throw new Incomplete();
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) throw new Incomplete();
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('latin1', pos + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+':
      return [line, next];
    case '-':
      return [new Error(line), next];
    case ':':
      return [Number(line), next];
    case '$': {
      const len = Number(line);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) throw new Incomplete();
      return [buf.toString('utf8', next, next + len), next + len + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, next];
      const out = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const [v, q] = parseReply(buf, p);
        out.push(v);
        p = q;
      }
      return [out, p];
    }
    default:
      throw new Error(`unexpected reply byte ${JSON.stringify(type)}`);
  }
}

export class RespClient {
  #sock;
  #buf = Buffer.alloc(0);
  #pending = [];
  #closed = false;

  constructor(sock) {
    this.#sock = sock;
    sock.on('data', (chunk) => this.#onData(chunk));
    const fail = (err) => {
      this.#closed = true;
      for (const p of this.#pending.splice(0)) p.reject(err);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('connection closed')));
  }

  static connect(port, host = '127.0.0.1', timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`connect ${host}:${port} timed out`));
      }, timeoutMs);
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new RespClient(sock));
      });
    });
  }

  #onData(chunk) {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    let pos = 0;
    while (this.#pending.length > 0) {
      let v, q;
      try {
        [v, q] = parseReply(this.#buf, pos);
      } catch (err) {
        if (err instanceof Incomplete) break;
        throw err;
      }
      pos = q;
      const p = this.#pending.shift();
      clearTimeout(p.timer);
      if (v instanceof Error) p.reject(v);
      else p.resolve(v);
    }
    this.#buf = this.#buf.subarray(pos);
  }

  /** Sends a command; rejects on an error reply or after `timeoutMs`. */
  call(args, timeoutMs = 30000) {
    if (this.#closed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      const p = { resolve, reject, timer: null };
      p.timer = setTimeout(() => {
        reject(new Error(`${args[0]} timed out after ${timeoutMs} ms`));
        this.#sock.destroy();
      }, timeoutMs);
      this.#pending.push(p);
      this.#sock.write(encodeCommand(args));
    });
  }

  async info(section) {
    const text = await this.call(section ? ['INFO', section] : ['INFO']);
    return parseInfo(text);
  }

  close() {
    this.#closed = true;
    this.#sock.destroy();
  }
}

export function parseInfo(text) {
  const out = {};
  for (const line of text.split('\r\n')) {
    if (!line || line[0] === '#') continue;
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** One command on a short-lived connection. */
export async function oneShot(port, args, timeoutMs = 30000) {
  const c = await RespClient.connect(port);
  try {
    return await c.call(args, timeoutMs);
  } finally {
    c.close();
  }
}

export async function infoOf(port, section) {
  return parseInfo(await oneShot(port, section ? ['INFO', section] : ['INFO']));
}
