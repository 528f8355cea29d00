import { createServer, type Server, type Socket } from 'node:net';
import { RequestParser } from '../../src/resp/request-parser.js';

export interface FakeMaster {
  readonly port: number;
  /** PSYNC/SYNC commands received so far, as strings. */
  readonly psyncs: string[][];
  close(): Promise<void>;
}

/**
 * A scripted upstream for fault tests (the real redis-server cannot corrupt its own RDB): answers the replica
 * handshake like a master (+PONG, +OK), then hands the socket to `onPsync` with the attempt number (0-based).
 */
export async function startFakeMaster(onPsync: (socket: Socket, attempt: number, args: string[]) => void): Promise<FakeMaster> {
  const psyncs: string[][] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const parser = new RequestParser({ maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 24 });
    let streaming = false;
    socket.on('data', (chunk: Buffer) => {
      if (streaming) return; // ACKs from the replica
      parser.push(chunk);
      for (let args = parser.next(); args; args = parser.next()) {
        const cmd = args.map((a) => a.toString());
        const name = cmd[0]!.toUpperCase();
        if (name === 'PING') socket.write('+PONG\r\n');
        else if (name === 'PSYNC' || name === 'SYNC') {
          streaming = true;
          psyncs.push(cmd);
          onPsync(socket, psyncs.length - 1, cmd);
          return;
        } else socket.write('+OK\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    psyncs,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
