// The WAN bench's CPU scenario sink: N replica connections to a relay, each asking for a compressed stream
// (REPLCONF capa psync-relay-z1:<level>) or not, inflating what it gets, skipping the RDB, counting stream bytes
// and acknowledging its offset once a second like a Redis replica. A forked helper of bench/wan.js:
// IPC {id, op, args} -> {id, ok, result | error}.
import net from 'node:net';
import { createInflateRaw } from 'node:zlib';
import { encodeCommand } from './lib/resp.js';
import { nowMs, sleep } from './lib/clock.js';

const MARK = ' psync-relay-z1';

class Conn {
  constructor(id, port, level) {
    this.id = id;
    this.level = level;
    this.state = 'handshake';
    this.buf = Buffer.alloc(0);
    this.wire = 0;
    this.raw = 0;
    this.offset = -1;
    this.rdbLeft = -1;
    this.inflate = null;
    this.compressed = false;
    this.socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    this.socket.on('error', (err) => (this.error = err));
    this.socket.on('close', () => (this.state = 'closed'));
    this.socket.on('data', (d) => this.#onData(d));
    this.socket.once('connect', () => {
      const capa = ['REPLCONF', 'capa', 'eof', 'capa', 'psync2', ...(level > 0 ? ['capa', `psync-relay-z1:${level}`] : [])];
      this.socket.write(Buffer.concat([encodeCommand(['PING']), encodeCommand(['REPLCONF', 'listening-port', '0']), encodeCommand(capa), encodeCommand(['PSYNC', '?', '-1'])]));
    });
  }
  #onData(d) {
    this.wire += d.length;
    if (this.state === 'handshake') {
      this.buf = Buffer.concat([this.buf, d]);
      for (;;) {
        const nl = this.buf.indexOf(10);
        if (nl < 0) return;
        const line = this.buf.toString('latin1', 0, nl).replace(/\r$/, '');
        this.buf = this.buf.subarray(nl + 1);
        if (!line.startsWith('+FULLRESYNC')) continue;
        this.compressed = line.endsWith(MARK);
        this.offset = Number(line.split(' ')[2]);
        this.state = 'rdb';
        const rest = this.buf;
        this.buf = Buffer.alloc(0);
        if (this.compressed) {
          this.inflate = createInflateRaw({ chunkSize: 64 * 1024 });
          this.inflate.on('data', (p) => this.#payload(p));
          this.inflate.on('error', (err) => (this.error = err));
          this.inflate.write(rest);
        } else this.#payload(rest);
        return;
      }
    }
    if (this.inflate) this.inflate.write(d);
    else this.#payload(d);
  }
  /** Bytes after the reply line, inflated: `$<len>\r\n`, the RDB (skipped), then the stream (counted). */
  #payload(p) {
    if (this.state === 'rdb') {
      if (this.rdbLeft < 0) {
        this.buf = Buffer.concat([this.buf, p]);
        let i = 0;
        while (i < this.buf.length && (this.buf[i] === 10 || this.buf[i] === 13)) i++;
        const nl = this.buf.indexOf(10, i);
        if (nl < 0) return;
        this.rdbLeft = Number(this.buf.toString('latin1', i + 1, nl).replace(/\r$/, ''));
        p = this.buf.subarray(nl + 1);
        this.buf = Buffer.alloc(0);
      }
      const take = Math.min(this.rdbLeft, p.length);
      this.rdbLeft -= take;
      p = p.subarray(take);
      if (this.rdbLeft > 0) return;
      this.state = 'stream';
      this.socket.write(encodeCommand(['REPLCONF', 'ACK', String(this.offset)]));
    }
    this.raw += p.length;
    this.offset += p.length;
  }
  ack() {
    if (this.state === 'stream') this.socket.write(encodeCommand(['REPLCONF', 'ACK', String(this.offset)]));
  }
}

let conns = [];
setInterval(() => {
  for (const c of conns) c.ack();
}, 1000).unref();

async function until(pred, timeoutMs, what) {
  const deadline = nowMs() + timeoutMs;
  while (!pred()) {
    const bad = conns.find((c) => c.error || c.state === 'closed');
    if (bad) throw new Error(`sink: connection ${bad.id} ${bad.error ? `failed: ${bad.error.message}` : 'closed'} waiting for ${what}`);
    if (nowMs() > deadline) throw new Error(`sink: timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
  return nowMs();
}

const ops = {
  async connect({ port, n, level, timeoutMs = 120000 }) {
    const first = conns.length;
    for (let i = 0; i < n; i++) conns.push(new Conn(first + i, port, level));
    await until(() => conns.every((c) => c.state === 'stream'), timeoutMs, `${n} connections streaming`);
    return { compressed: conns.filter((c) => c.compressed).length };
  },
  async waitOffset({ target, timeoutMs = 600000 }) {
    return { at: await until(() => conns.every((c) => c.offset >= target), timeoutMs, `offset ${target}`) };
  },
  counters: () => ({ wire: conns.reduce((a, c) => a + c.wire, 0), raw: conns.reduce((a, c) => a + c.raw, 0) }),
  close() {
    for (const c of conns) c.socket.destroy();
    conns = [];
  },
};

process.on('message', async (m) => {
  try {
    process.send({ id: m.id, ok: true, result: await ops[m.op](m.args ?? {}) });
  } catch (err) {
    process.send({ id: m.id, ok: false, error: String(err?.stack ?? err) });
  }
});
process.on('disconnect', () => process.exit(0));
