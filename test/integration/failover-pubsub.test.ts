import t from 'tap';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { waitFor } from '../helpers/wait.js';
import { ReplyReader, RespErrorValue, type RespValue } from '../../src/resp/reply-reader.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { infoOf, num } from '../helpers/failover.js';

t.teardown(stopAll);

/** A raw RESP connection that queues everything it receives, pushes included (the test RedisClient expects one reply per request). */
class PushConn {
  readonly socket: Socket;
  readonly #reader = new ReplyReader();
  readonly #values: RespValue[] = [];
  #waiters: Array<() => void> = [];
  closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#reader.push(chunk);
      for (let v = this.#reader.next(); v !== undefined; v = this.#reader.next()) this.#values.push(v);
      for (const w of this.#waiters.splice(0)) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  static async open(port: number): Promise<PushConn> {
    const socket = connect({ port, host: '127.0.0.1' });
    await once(socket, 'connect');
    return new PushConn(socket);
  }

  send(...args: Array<string | number>): void {
    this.socket.write(encodeCommand(args));
  }

  /** The next value received, as strings (bulk strings decoded), nil as null. */
  async next(): Promise<unknown> {
    while (this.#values.length === 0) {
      if (this.closed) throw new Error('connection closed');
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    return plain(this.#values.shift()!);
  }

  async call(...args: Array<string | number>): Promise<unknown> {
    this.send(...args);
    return this.next();
  }

  close(): void {
    this.socket.destroy();
  }
}

function plain(v: RespValue): unknown {
  if (Buffer.isBuffer(v)) return v.toString('latin1');
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof RespErrorValue) return { error: v.message };
  return v;
}


t.test('pub/sub among the relay clients, as Sentinel uses it', async (t) => {
  const x = await startRelay();
  t.teardown(() => x.stop());
  const sub = await PushConn.open(x.port);
  const psub = await PushConn.open(x.port);
  const pub = await PushConn.open(x.port);
  t.teardown(() => [sub, psub, pub].forEach((c) => c.close()));

  sub.send('SUBSCRIBE', '__sentinel__:hello', 'other');
  t.same(await sub.next(), ['subscribe', '__sentinel__:hello', 1]);
  t.same(await sub.next(), ['subscribe', 'other', 2]);
  t.same(await psub.call('PSUBSCRIBE', '__sentinel__:*'), ['psubscribe', '__sentinel__:*', 1]);

  t.equal(await pub.call('PUBLISH', '__sentinel__:hello', '127.0.0.1,26379,abc,0,mymaster'), 2, 'two receivers');
  t.same(await sub.next(), ['message', '__sentinel__:hello', '127.0.0.1,26379,abc,0,mymaster']);
  t.same(await psub.next(), ['pmessage', '__sentinel__:*', '__sentinel__:hello', '127.0.0.1,26379,abc,0,mymaster']);
  t.equal(await pub.call('PUBLISH', 'nobody', 'x'), 0);
  t.equal(await pub.call('PUBLISH', 'other', 'bin\u0000ary'), 1);
  t.same(await sub.next(), ['message', 'other', 'bin\u0000ary'], 'binary-safe payload');

  // Subscribed mode: only (P)(UN)SUBSCRIBE, PING, QUIT, RESET.
  t.match(await sub.call('INFO'), { error: /^ERR Can't execute 'info': only \(P\|S\)SUBSCRIBE/ });
  t.same(await sub.call('PING'), ['pong', '']);
  t.same(await sub.call('PING', 'hi'), ['pong', 'hi']);
  t.same(await pub.call('PUBSUB', 'NUMSUB', '__sentinel__:hello', 'none'), ['__sentinel__:hello', 1, 'none', 0]);
  t.equal(await pub.call('PUBSUB', 'NUMPAT'), 1);
  t.same(((await pub.call('PUBSUB', 'CHANNELS')) as string[]).sort(), ['__sentinel__:hello', 'other']);
  t.same(await pub.call('PUBSUB', 'CHANNELS', 'o*'), ['other']);
  t.match(await pub.call('CLIENT', 'LIST'), /flags=P .*sub=2 psub=0/);

  sub.send('UNSUBSCRIBE');
  const unsubs = [await sub.next(), await sub.next()] as unknown[][];
  t.same(unsubs.map((u) => u[0]), ['unsubscribe', 'unsubscribe']);
  t.same(unsubs.map((u) => u[2]), [1, 0], 'counts go down');
  t.same(await sub.call('UNSUBSCRIBE'), ['unsubscribe', null, 0], 'nothing to leave');
  t.same(await sub.call('PING'), 'PONG', 'back to normal mode');
  t.equal(await pub.call('PUBLISH', '__sentinel__:hello', 'x'), 1, 'only the pattern left');
  t.same(await psub.next(), ['pmessage', '__sentinel__:*', '__sentinel__:hello', 'x']);

  t.same(await sub.call('SUBSCRIBE', 'c'), ['subscribe', 'c', 1]);
  t.equal(await sub.call('RESET'), 'RESET', 'RESET leaves subscribed mode');
  t.equal(await pub.call('PUBLISH', 'c', 'x'), 0);

  // CLIENT KILL TYPE pubsub takes subscribers only; TYPE normal spares them (and the caller).
  t.equal(await pub.call('CLIENT', 'KILL', 'TYPE', 'normal'), 1, 'the idle normal client');
  await waitFor(() => sub.closed, { what: 'normal client killed' });
  t.equal(psub.closed, false, 'the subscriber survives TYPE normal');
  t.equal(await pub.call('CLIENT', 'KILL', 'TYPE', 'pubsub'), 1);
  await waitFor(() => psub.closed, { what: 'subscriber killed' });
  t.equal(await pub.call('PUBSUB', 'NUMPAT'), 0, 'a closed subscriber is forgotten');
});

t.test("Sentinel's reconfiguration transaction is understood whole", async (t) => {
  const m = await startRedis();
  const x = await startRelay();
  t.teardown(() => x.stop());
  const sentinel = await PushConn.open(x.port);
  const hello = await PushConn.open(x.port);
  const bystander = await PushConn.open(x.port);
  t.teardown(() => [sentinel, hello, bystander].forEach((c) => c.close()));
  t.same(await hello.call('SUBSCRIBE', '__sentinel__:hello'), ['subscribe', '__sentinel__:hello', 1]);
  t.equal(await bystander.call('CLIENT', 'SETNAME', 'bystander'), 'OK');

  // sentinel.c sentinelSendSlaveOf, as sent at failover.
  for (const cmd of [['MULTI'], ['SLAVEOF', '127.0.0.1', m.port], ['CONFIG', 'REWRITE'], ['CLIENT', 'KILL', 'TYPE', 'normal'], ['CLIENT', 'KILL', 'TYPE', 'pubsub']]) {
    t.equal(await sentinel.call(...cmd), cmd[0] === 'MULTI' ? 'OK' : 'QUEUED', cmd.join(' '));
  }
  t.same(await sentinel.call('EXEC'), ['OK', 'OK', 1, 1], 'EXEC runs all four');
  await waitFor(() => hello.closed && bystander.closed, { what: 'normal and pubsub clients killed' });
  t.equal(sentinel.closed, false, 'the sender survives');
  await waitFor(async () => (await infoOf(x.port))['master_link_status'] === 'up', { what: 'the relay follows the new master' });
  t.equal(num(await infoOf(x.port), 'master_port'), m.port);

  // An unknown command inside MULTI aborts EXEC, which is why every command above must be known.
  t.equal(await sentinel.call('MULTI'), 'OK');
  t.match(await sentinel.call('NOSUCH'), { error: /unknown command/ });
  t.match(await sentinel.call('EXEC'), { error: /^EXECABORT/ });
});
