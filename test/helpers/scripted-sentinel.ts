import { createServer, type Socket } from 'node:net';
import { RequestParser } from '../../src/resp/request-parser.js';
import { encodeCommand } from '../../src/resp/writer.js';

/**
 * A scripted Sentinel that names `host`:`port` as the master, every time it is asked; `flapping`: it closes each
 * connection once it has confirmed the subscription.
 */
export async function scriptedSentinel(host: string, port: number, flapping = false): Promise<{ port: number; asked: () => number; close: () => Promise<void> }> {
  let asked = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const parser = new RequestParser({ maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 20 });
    socket.on('data', (chunk: Buffer) => {
      parser.push(chunk);
      for (let args = parser.next(); args; args = parser.next()) {
        const name = args[0]!.toString().toUpperCase();
        if (name === 'SENTINEL') {
          asked++;
          socket.write(encodeCommand([host, String(port)]));
        } else if (name === 'SUBSCRIBE') {
          socket.write('*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n');
          if (flapping) socket.end();
        }
        else socket.write('+PONG\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    asked: () => asked,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
