// The raw reference: records the master's replication stream once (as a replica, with the sink's reading
// code), then serves exactly those bytes to N sink connections with the simplest possible program: answer the
// handshake, +FULLRESYNC, an empty RDB, and one socket.write() of the whole recorded stream per connection.
// If the sink takes these bytes much faster than any topology delivers them, the sink is not the bottleneck.
import net from 'node:net';
import { ReplicaConn } from './lib/replica-conn.js';
import { nowMs, sleep } from './lib/clock.js';

let recorder = null;
let chunks = null;
let stream = null;
let server = null;
const ready = [];

// A 'REDIS0009' RDB with no keys: header, EOF opcode, zero checksum (checksum 0 = not checked).
const EMPTY_RDB = Buffer.concat([Buffer.from('REDIS0009'), Buffer.from([0xff]), Buffer.alloc(8)]);

/** Replies to the handshake of one sink connection; resolves when it sent PSYNC. */
function handshake(sock) {
  let buf = '';
  sock.on('data', (d) => {
    if (sock.psynced) return; // REPLCONF ACKs: discarded
    buf += d.toString('latin1');
    // The sink sends one small multibulk command at a time; its name is the first bulk.
    for (;;) {
      const m = /^\*(\d+)\r\n/.exec(buf);
      if (!m) return;
      let p = m[0].length;
      const args = [];
      for (let i = 0; i < Number(m[1]); i++) {
        const h = /^\$(\d+)\r\n/.exec(buf.slice(p));
        if (!h) return;
        const len = Number(h[1]);
        if (buf.length < p + h[0].length + len + 2) return;
        args.push(buf.slice(p + h[0].length, p + h[0].length + len));
        p += h[0].length + len + 2;
      }
      buf = buf.slice(p);
      const name = args[0].toUpperCase();
      if (name === 'PING') sock.write('+PONG\r\n');
      else if (name === 'PSYNC') {
        sock.write(`+FULLRESYNC ${'0'.repeat(40)} 0\r\n$${EMPTY_RDB.length}\r\n`);
        sock.write(EMPTY_RDB);
        sock.psynced = true;
        ready.push(sock);
        return;
      } else sock.write('+OK\r\n');
    }
  });
  sock.on('error', () => {});
}

const ops = {
  async record({ port }) {
    chunks = [];
    recorder = new ReplicaConn({ id: 0, port, record: chunks });
    const deadline = nowMs() + 30000;
    while (recorder.state !== 'stream') {
      if (recorder.state === 'closed') throw new Error(`recorder closed: ${recorder.closeReason}`);
      if (nowMs() > deadline) throw new Error('recorder did not come online');
      await sleep(5);
    }
    const t = setInterval(() => recorder.ack(), 100);
    recorder.ackTimer = t;
    return { startOffset: recorder.startOffset };
  },
  async recordStop({ target, timeoutMs = 120000 }) {
    const deadline = nowMs() + timeoutMs;
    while (recorder.offset < target) {
      if (recorder.state === 'closed') throw new Error(`recorder closed: ${recorder.closeReason}`);
      if (nowMs() > deadline) throw new Error(`recorder stuck at ${recorder.offset} < ${target}`);
      await sleep(5);
    }
    clearInterval(recorder.ackTimer);
    recorder.destroy();
    stream = Buffer.concat(chunks);
    chunks = null;
    return { bytes: stream.length, offset: recorder.offset };
  },
  async serve() {
    if (server) return { port: server.address().port, bytes: stream.length };
    server = net.createServer((sock) => {
      sock.setNoDelay(true);
      handshake(sock);
    });
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    return { port: server.address().port, bytes: stream.length };
  },
  async go({ count, timeoutMs = 30000 }) {
    const deadline = nowMs() + timeoutMs;
    while (ready.length < count) {
      if (nowMs() > deadline) throw new Error(`only ${ready.length} of ${count} sinks sent PSYNC`);
      await sleep(2);
    }
    const t0 = nowMs();
    for (const s of ready.splice(0)) s.write(stream);
    return { t0 };
  },
  async closeClients() {
    ready.length = 0;
    return true;
  },
};

process.on('message', async (msg) => {
  try {
    process.send({ id: msg.id, ok: true, result: await ops[msg.op](msg.args ?? {}) });
  } catch (err) {
    process.send({ id: msg.id, ok: false, error: err.message });
  }
});
process.on('disconnect', () => process.exit(0));
