import type { OnReadOpts, Socket } from 'node:net';

/** Where a ReadTap puts what it reads once the stream flows: the log's tail. */
export interface ReadSink {
  /** The buffer the next read goes into (the log's reserved tail space). */
  space(): Buffer;
  /** `n` bytes arrived at the start of `space`. Return false to stop reading (the socket is paused: resume() it). */
  arrived(space: Buffer, n: number): boolean;
}

/** Reads before a sink is set (handshake, RDB): fresh buffers of this size, as Node's own reads. */
const DATA_READ = 64 * 1024;

/**
 * Reads a plain TCP socket through net's `onread` option. Until a sink is set, each read lands in a fresh buffer that
 * is emitted as a 'data' event, as on any socket (the handshake and the RDB transfer read 'data'). With a sink, reads
 * go straight into the sink's space: no buffer allocated, no byte copied, no stream machinery per read. A read
 * already under way in a 'data' buffer when the sink is set is still emitted as 'data'.
 */
export class ReadTap {
  #socket: Socket | null = null;
  #sink: ReadSink | null = null;
  /** The buffer Node reads into next, and whether it is the sink's. */
  #space: Buffer | null = null;
  #sinkSpace = false;

  /** The `onread` option for net.connect(). */
  readonly onread: OnReadOpts = {
    buffer: () => this.#next(),
    callback: (n: number, buf: Uint8Array) => this.#read(n, buf as Buffer),
  };

  /** The socket created with `onread` (reads start only once it is connected). */
  set socket(s: Socket) {
    this.#socket = s;
  }

  set sink(sink: ReadSink | null) {
    this.#sink = sink;
  }

  #next(): Buffer {
    if (this.#sink !== null) {
      this.#space = this.#sink.space();
      this.#sinkSpace = true;
    } else {
      this.#space = Buffer.allocUnsafeSlow(DATA_READ);
      this.#sinkSpace = false;
    }
    return this.#space;
  }

  #read(n: number, buf: Buffer): boolean {
    if (this.#sinkSpace && buf === this.#space && this.#sink !== null) return this.#sink.arrived(buf, n);
    this.#socket?.emit('data', buf.subarray(0, n));
    return true;
  }
}
