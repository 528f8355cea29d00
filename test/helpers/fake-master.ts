import { createServer, type Server, type Socket } from 'node:net';
import { RequestParser } from '../../src/resp/request-parser.js';

/**
 * What the fakes answer to `INFO replication` (the relay asks it before a PSYNC with a known replid) unless told
 * otherwise: a master's section without ids, so the relay learns nothing from it.
 */
export const FAKE_INFO_REPLY = '$48\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n';

/**
 * Parses the commands a replica sends on `socket` and hands each to `each`, with its name upper-cased; `each`
 * returning false leaves the rest of that read unparsed (the replica's ACKs once the stream flows).
 */
export function onCommands(socket: Socket, each: (cmd: string[], name: string) => boolean): void {
  const parser = new RequestParser({ maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 24 });
  socket.on('data', (chunk: Buffer) => {
    parser.push(chunk);
    for (let args = parser.next(); args; args = parser.next()) {
      const cmd = args.map((a) => a.toString());
      if (!each(cmd, cmd[0]!.toUpperCase())) return;
    }
  });
}

export interface FakeMaster {
  readonly port: number;
  /** PSYNC/SYNC commands received so far, as strings. */
  readonly psyncs: string[][];
  close(): Promise<void>;
}

/**
 * A scripted upstream for fault tests (the real redis-server cannot corrupt its own RDB): answers the replica
 * handshake like a master (+PONG, +OK, `infoReply` to INFO), then hands the socket to `onPsync` with the attempt
 * number (0-based).
 */
export async function startFakeMaster(onPsync: (socket: Socket, attempt: number, args: string[]) => void, infoReply = FAKE_INFO_REPLY): Promise<FakeMaster> {
  const psyncs: string[][] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let streaming = false;
    onCommands(socket, (cmd, name) => {
      if (streaming) return false; // ACKs from the replica
      if (name === 'PING') socket.write('+PONG\r\n');
      else if (name === 'INFO') socket.write(infoReply);
      else if (name === 'PSYNC' || name === 'SYNC') {
        streaming = true;
        psyncs.push(cmd);
        onPsync(socket, psyncs.length - 1, cmd);
        return false;
      } else socket.write('+OK\r\n');
      return true;
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

/** One replica connection to a scripted master. */
export interface ScriptedConnection {
  /** 0 for the first connection. */
  readonly index: number;
  readonly socket: Socket;
  /** Every command received on this connection, in order: handshake, PSYNC/SYNC, then REPLCONF ACKs. */
  readonly commands: string[][];
  /** Resolves once the replica acknowledged (REPLCONF ACK) at least `offset`. */
  acked(offset: number): Promise<void>;
  /** Resolves when the connection closes (either side). */
  readonly closed: Promise<void>;
}

export interface ScriptedMaster {
  readonly port: number;
  readonly connections: ScriptedConnection[];
  /** The PSYNC/SYNC commands received, across connections, in order. */
  readonly syncs: string[][];
  close(): Promise<void>;
}

/**
 * A scripted upstream that a real redis-server replica and the relay can both follow, for comparing what each sends:
 * answers PING (+PONG), INFO (`infoReply`) and AUTH/REPLCONF (+OK) like a master, records every command of every
 * connection, and hands each PSYNC or SYNC (a replica may send SYNC on the same connection after PSYNC is refused)
 * to `onSync`, which writes the master's side of the script.
 */
export async function startScriptedMaster(onSync: (conn: ScriptedConnection, cmd: string[]) => void, infoReply = FAKE_INFO_REPLY): Promise<ScriptedMaster> {
  const connections: ScriptedConnection[] = [];
  const syncs: string[][] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const commands: string[][] = [];
    let acked = -1;
    const ackWaiters: Array<{ offset: number; resolve: () => void }> = [];
    const conn: ScriptedConnection = {
      index: connections.length,
      socket,
      commands,
      acked: (offset) =>
        new Promise<void>((resolve) => {
          if (acked >= offset) resolve();
          else ackWaiters.push({ offset, resolve });
        }),
      closed: new Promise<void>((resolve) =>
        socket.on('close', () => {
          sockets.delete(socket);
          resolve();
        }),
      ),
    };
    connections.push(conn);
    let streaming = false;
    onCommands(socket, (cmd, name) => {
      commands.push(cmd);
      if (name === 'PSYNC' || name === 'SYNC') {
        streaming = true;
        syncs.push(cmd);
        onSync(conn, cmd);
      } else if (name === 'REPLCONF' && cmd[1]?.toUpperCase() === 'ACK') {
        acked = Math.max(acked, Number(cmd[2]));
        for (const w of ackWaiters.filter((x) => x.offset <= acked)) {
          ackWaiters.splice(ackWaiters.indexOf(w), 1);
          w.resolve();
        }
      } else if (!streaming) {
        socket.write(name === 'PING' ? '+PONG\r\n' : name === 'INFO' ? infoReply : '+OK\r\n');
      }
      return true;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    connections,
    syncs,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
