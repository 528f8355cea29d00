// The sink's reading code: one downstream replica connection that speaks PSYNC and discards what it gets.
// Handshake PING / REPLCONF listening-port / REPLCONF capa eof capa psync2 / PSYNC ? -1 (one step at a time,
// like redis-server), +FULLRESYNC, skip the RDB ($<len> or $EOF:<mark>), then count stream bytes. The owner
// sends REPLCONF ACK every 100 ms (ack()). Used by the sink process, and by the raw reference to record a stream.
import net from 'node:net';
import { nowMs, nowUs } from './clock.js';
import { encodeCommand } from './resp.js';

export const LAT_MARKER = Buffer.from('LATMK');
/** marker + 16 decimal digits of the send time in µs */
export const LAT_LEN = LAT_MARKER.length + 16;

const NL = 10;
/** Shared by every connection of the process: reads are synchronous callbacks, one at a time. */
const READ_BUFFER = Buffer.allocUnsafe(1 << 20);

export class ReplicaConn {
  id;
  state = 'connecting';
  /** Replication offset of the last byte received (valid from +FULLRESYNC on). */
  offset = -1;
  startOffset = -1;
  replid = '';
  rdbTotal = -1;
  rdbBytes = 0;
  streamBytes = 0;
  connectStartAt = 0;
  fullresyncAt = 0;
  onlineAt = 0;
  lastDataAt = 0;
  closedAt = 0;
  closeReason = '';
  frozen = false;
  /** latency: a Samples collector, or null. record: an array to push stream chunks into, or null. */
  latency = null;
  record = null;
  markersSeen = 0;

  #sock;
  #pending = Buffer.alloc(0);
  #steps;
  #step = 0;
  #eofMark = null;
  #eofTail = Buffer.alloc(0);
  #latTail = Buffer.alloc(0);
  #onState;

  constructor({ id, host = '127.0.0.1', port, listeningPort = 0, latency = null, record = null, onState = () => {} }) {
    this.id = id;
    this.latency = latency;
    this.record = record;
    this.#onState = onState;
    this.#steps = [['PING'], ['REPLCONF', 'listening-port', String(listeningPort || 10000 + id)], ['REPLCONF', 'capa', 'eof', 'capa', 'psync2'], ['PSYNC', '?', '-1']];
    this.connectStartAt = nowMs();
    // onread: libuv reads into one reused buffer (no allocation per read, up to 1 MiB a read); the
    // callback sees a view of it that is only valid during the call.
    const sock = net.connect({ host, port, onread: { buffer: READ_BUFFER, callback: (n, buf) => this.#onData(buf.subarray(0, n)) } });
    this.#sock = sock;
    sock.setNoDelay(true);
    sock.on('connect', () => {
      this.#setState('handshake');
      sock.write(encodeCommand(this.#steps[0]));
    });
    sock.on('error', (err) => this.#close(`socket error: ${err.message}`));
    sock.on('close', () => this.#close('closed by peer'));
  }

  #setState(s) {
    this.state = s;
    this.#onState(this);
  }

  #close(reason) {
    if (this.state === 'closed') return;
    this.closedAt = nowMs();
    this.closeReason = reason;
    this.#setState('closed');
    this.#sock.destroy();
  }

  destroy(reason = 'closed by sink') {
    this.#close(reason);
  }

  /** A frozen replica: stop reading (the kernel buffers fill up) and stop acknowledging. */
  freeze() {
    this.frozen = true;
    this.#sock.pause();
  }

  /** Reads (and acknowledges) again after freeze(). */
  unfreeze() {
    if (!this.frozen) return;
    this.frozen = false;
    if (this.state === 'closed') return;
    this.#sock.resume();
    this.ack();
  }

  ack() {
    if (this.state !== 'stream' || this.frozen || this.#sock.destroyed) return;
    this.#sock.write(encodeCommand(['REPLCONF', 'ACK', String(this.offset)]));
  }

  #onData(chunk) {
    if (this.state === 'stream') {
      this.#stream(chunk);
      return;
    }
    // The read buffer is reused: keep a copy of what the handshake has not consumed yet.
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    this.#advance();
    if (this.state !== 'closed' && this.#pending.length && this.#pending.buffer === READ_BUFFER.buffer) this.#pending = Buffer.from(this.#pending);
  }

  /** Returns the next line (without CRLF) of #pending, skipping keepalive newlines, or null. */
  #line() {
    let p = 0;
    while (p < this.#pending.length && this.#pending[p] === NL) p++;
    const eol = this.#pending.indexOf('\r\n', p);
    if (eol < 0) {
      this.#pending = this.#pending.subarray(p);
      return null;
    }
    const line = this.#pending.toString('latin1', p, eol);
    this.#pending = this.#pending.subarray(eol + 2);
    return line;
  }

  #advance() {
    for (;;) {
      switch (this.state) {
        case 'handshake': {
          const line = this.#line();
          if (line === null) return;
          const step = this.#steps[this.#step];
          if (step[0] === 'PSYNC') {
            const m = /^\+FULLRESYNC (\S+) (\d+)$/.exec(line);
            if (!m) return this.#close(`unexpected PSYNC reply: ${line}`);
            this.replid = m[1];
            this.offset = this.startOffset = Number(m[2]);
            this.fullresyncAt = nowMs();
            this.#setState('rdbhdr');
            continue;
          }
          if (line.startsWith('-') && step[0] === 'PING' && !line.startsWith('-NOAUTH')) {
            // Redis answers PING with -LOADING etc. while busy; a real replica retries, we just report.
            return this.#close(`PING refused: ${line}`);
          }
          this.#step++;
          this.#sock.write(encodeCommand(this.#steps[this.#step]));
          continue;
        }
        case 'rdbhdr': {
          const line = this.#line();
          if (line === null) return;
          if (line.startsWith('$EOF:')) {
            this.#eofMark = Buffer.from(line.slice(5), 'latin1');
            if (this.#eofMark.length !== 40) return this.#close(`bad EOF mark: ${line}`);
          } else if (/^\$\d+$/.test(line)) {
            this.rdbTotal = Number(line.slice(1));
          } else return this.#close(`unexpected RDB header: ${line}`);
          this.#setState('rdb');
          continue;
        }
        case 'rdb': {
          const buf = this.#pending;
          if (buf.length === 0) return;
          if (this.#eofMark === null) {
            const take = Math.min(buf.length, this.rdbTotal - this.rdbBytes);
            this.rdbBytes += take;
            this.#pending = buf.subarray(take);
            if (this.rdbBytes < this.rdbTotal) return;
          } else {
            // The mark may straddle chunks: look in (tail of the previous chunk + this one).
            const mark = this.#eofMark;
            const hay = this.#eofTail.length ? Buffer.concat([this.#eofTail, buf]) : buf;
            const at = hay.indexOf(mark);
            if (at < 0) {
              this.rdbBytes += buf.length;
              this.#eofTail = Buffer.from(hay.subarray(Math.max(0, hay.length - (mark.length - 1))));
              this.#pending = Buffer.alloc(0);
              return;
            }
            const end = at + mark.length - this.#eofTail.length; // end of the mark within buf
            this.rdbBytes += end;
            this.rdbTotal = this.rdbBytes;
            this.#pending = buf.subarray(end);
            this.#eofTail = Buffer.alloc(0);
          }
          this.onlineAt = nowMs();
          this.lastDataAt = this.onlineAt;
          this.#setState('stream');
          // A Redis 7.0 master holds the stream back after an EOF-marked RDB until the first ACK.
          this.ack();
          const rest = this.#pending;
          this.#pending = Buffer.alloc(0);
          if (rest.length) this.#stream(rest);
          return;
        }
        default:
          return;
      }
    }
  }

  #stream(chunk) {
    this.offset += chunk.length;
    this.streamBytes += chunk.length;
    this.lastDataAt = nowMs();
    if (this.latency !== null) this.#scanMarkers(chunk);
    if (this.record !== null) this.record.push(Buffer.from(chunk));
  }

  #scanMarkers(chunk) {
    const tail = this.#latTail;
    const now = nowUs();
    if (tail.length > 0) {
      // Markers that start in the previous chunk's tail.
      const head = Buffer.concat([tail, chunk.subarray(0, LAT_LEN)]);
      let p = head.indexOf(LAT_MARKER);
      while (p >= 0 && p < tail.length) {
        if (p + LAT_LEN <= head.length) this.#sample(head, p, now);
        p = head.indexOf(LAT_MARKER, p + 1);
      }
    }
    let p = chunk.indexOf(LAT_MARKER);
    while (p >= 0 && p + LAT_LEN <= chunk.length) {
      this.#sample(chunk, p, now);
      p = chunk.indexOf(LAT_MARKER, p + LAT_LEN);
    }
    const keep = LAT_LEN - 1;
    this.#latTail = chunk.length >= keep ? Buffer.from(chunk.subarray(chunk.length - keep)) : Buffer.concat([tail, chunk]).subarray(-keep);
  }

  #sample(buf, p, now) {
    let v = 0;
    for (let i = p + LAT_MARKER.length, end = p + LAT_LEN; i < end; i++) v = v * 10 + (buf[i] - 48);
    this.markersSeen++;
    this.latency.push(now - v);
  }
}

/** A growable array of numbers with percentiles. */
export class Samples {
  #a;
  #n = 0;
  constructor(cap = 1 << 16) {
    this.#a = new Float64Array(cap);
  }
  get count() {
    return this.#n;
  }
  push(v) {
    if (this.#n === this.#a.length) {
      const b = new Float64Array(this.#a.length * 2);
      b.set(this.#a);
      this.#a = b;
    }
    this.#a[this.#n++] = v;
  }
  reset() {
    this.#n = 0;
  }
  summary() {
    const n = this.#n;
    if (n === 0) return { count: 0 };
    const s = this.#a.slice(0, n).sort();
    const q = (x) => s[Math.min(n - 1, Math.floor(x * n))];
    let sum = 0;
    for (let i = 0; i < n; i++) sum += s[i];
    return { count: n, min: s[0], p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: s[n - 1], mean: sum / n };
  }
}
