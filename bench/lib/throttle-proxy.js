// A WAN hop on one machine: a TCP proxy that gives each direction a token-bucket rate (bits per second) and a
// one-way delay, with backpressure (a sender that outruns the link is paused, as TCP's window would), and can cut
// the link (drop every connection, refuse new ones) and restore it. Bytes are counted when they leave the
// "link", per direction. Run as a forked helper of bench/wan.js: IPC {id, op, args} -> {id, ok, result | error}.
import net from 'node:net';

/** Pieces no larger than this go over the link one at a time (a few ms each at 50 Mbit/s). */
const PIECE = 16 * 1024;

/** One direction of the link: FIFO of pieces, each leaving at its turn (rate) plus the delay. */
class Direction {
  constructor(from, to, link, key) {
    this.from = from;
    this.to = to;
    this.link = link;
    this.key = key;
    this.queue = [];
    this.queued = 0;
    this.paused = false;
    this.timer = null;
    from.on('data', (chunk) => this.push(chunk));
  }
  push(chunk) {
    const { bytesPerMs, delayMs, limit } = this.link;
    for (let at = 0; at < chunk.length; at += PIECE) {
      const piece = chunk.subarray(at, at + PIECE);
      // The link is busy until `free`: this piece is sent after it, takes len / rate, then travels delayMs.
      const start = Math.max(performance.now(), this.link.free[this.key]);
      this.link.free[this.key] = start + piece.length / bytesPerMs;
      this.queue.push({ piece, at: this.link.free[this.key] + delayMs });
      this.queued += piece.length;
    }
    if (this.queued > limit && !this.paused) {
      this.paused = true;
      this.from.pause();
    }
    this.arm();
  }
  arm() {
    if (this.timer || this.queue.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.deliver();
    }, Math.max(0, this.queue[0].at - performance.now()));
  }
  deliver() {
    const now = performance.now();
    while (this.queue.length > 0 && this.queue[0].at <= now + 0.5) {
      const { piece } = this.queue.shift();
      this.queued -= piece.length;
      this.link.counters[this.key] += piece.length;
      if (!this.to.destroyed) this.to.write(piece);
    }
    if (this.paused && this.queued < this.link.limit / 2) {
      this.paused = false;
      this.from.resume();
    }
    this.arm();
  }
  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
    this.queued = 0;
  }
}

class ThrottleProxy {
  constructor({ targetPort, mbit, delayMs }) {
    this.targetPort = targetPort;
    this.bytesPerMs = (mbit * 1e6) / 8 / 1000;
    this.delayMs = delayMs;
    // Twice the bandwidth-delay product, at least 256 KiB: enough to keep the link busy, no more (a TCP window).
    this.limit = Math.max(256 * 1024, 2 * this.bytesPerMs * delayMs);
    this.counters = { down: 0, up: 0 };
    this.free = { down: 0, up: 0 };
    this.cut = false;
    this.pairs = new Set();
    this.connections = 0;
    this.server = net.createServer((client) => this.#accept(client));
  }
  listen() {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port)));
  }
  #accept(client) {
    if (this.cut) {
      client.destroy();
      return;
    }
    this.connections++;
    client.setNoDelay(true);
    const target = net.connect({ port: this.targetPort, host: '127.0.0.1', noDelay: true });
    const pair = { client, target, dirs: [] };
    pair.dirs.push(new Direction(target, client, this, 'down'), new Direction(client, target, this, 'up'));
    this.pairs.add(pair);
    const close = () => {
      for (const d of pair.dirs) d.stop();
      client.destroy();
      target.destroy();
      this.pairs.delete(pair);
    };
    for (const s of [client, target]) {
      s.on('error', () => undefined);
      s.on('close', close);
    }
  }
  cutLink() {
    this.cut = true;
    for (const p of [...this.pairs]) {
      p.client.destroy();
      p.target.destroy();
    }
  }
  restore() {
    this.cut = false;
    this.free = { down: 0, up: 0 };
  }
}

let proxy = null;
const ops = {
  async start(args) {
    proxy = new ThrottleProxy(args);
    return { port: await proxy.listen(), limit: proxy.limit };
  },
  counters: () => ({ ...proxy.counters, connections: proxy.connections }),
  cut: () => proxy.cutLink(),
  restore: () => proxy.restore(),
};

process.on('message', async (m) => {
  try {
    const result = await ops[m.op](m.args ?? {});
    process.send({ id: m.id, ok: true, result });
  } catch (err) {
    process.send({ id: m.id, ok: false, error: String(err?.stack ?? err) });
  }
});
process.on('disconnect', () => process.exit(0));
