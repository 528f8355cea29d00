import { EventEmitter } from 'node:events';

/**
 * What the downstream connections and sessions use of a net.Socket, for unit tests that decide what write() says: a
 * subclass may count the bytes (`written`) and set `writableLength` and the return value.
 */
export abstract class SocketStandIn extends EventEmitter {
  readonly remoteAddress = '127.0.0.1';
  readonly remotePort = 50000;
  writableLength = 0;
  destroyed = false;
  written = 0;
  setNoDelay(): void {}
  cork(): void {}
  uncork(): void {}
  // A client that used its turn pauses its socket (client.ts #yield); on a loaded machine any command can.
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
  abstract write(buf: Buffer | string): boolean;
  end(): void {}
  destroy(): void {
    this.destroyed = true;
  }
}
