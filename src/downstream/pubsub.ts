import { arrayReply, bulkReply, errorReply, integerReply } from '../resp/writer.js';
import type { ClientConnection } from './client.js';
import { globMatch } from '../util/glob.js';
import { clip } from '../util/text.js';

/**
 * Minimal pub/sub among the relay's own clients (RESP2), enough for Sentinel: it SUBSCRIBEs and PUBLISHes
 * `__sentinel__:hello` on every instance it monitors, the relay included. Messages are delivered locally only:
 * nothing reaches upstream or the replication stream (a PUBLISH from upstream travels in the stream, byte for byte).
 *
 * Names are kept as latin1 strings (one char per byte), so binary channel names round-trip exactly.
 * The subscriber's own sets live on the client (`channels`, `patterns`); the index from names to clients lives here.
 */
export class PubSub {
  readonly #channels = new Map<string, Set<ClientConnection>>();
  readonly #patterns = new Map<string, Set<ClientConnection>>();
  readonly #watched = new WeakSet<ClientConnection>();

  /** SUBSCRIBE ch [ch ...]: one confirmation per channel, with the client's subscription count. */
  subscribe(c: ClientConnection, names: Buffer[]): void {
    this.#watch(c);
    for (const n of names) {
      const name = n.toString('latin1');
      if (!c.channels.has(name)) {
        c.channels.add(name);
        add(this.#channels, name, c);
      }
      c.push(confirmation('subscribe', n, c));
    }
  }

  /** UNSUBSCRIBE [ch ...]: no names = every channel; nothing subscribed = one confirmation with a nil name. */
  unsubscribe(c: ClientConnection, names: Buffer[]): void {
    this.#leave(c, 'unsubscribe', c.channels, this.#channels, names);
  }

  psubscribe(c: ClientConnection, names: Buffer[]): void {
    this.#watch(c);
    for (const n of names) {
      const name = n.toString('latin1');
      if (!c.patterns.has(name)) {
        c.patterns.add(name);
        add(this.#patterns, name, c);
      }
      c.push(confirmation('psubscribe', n, c));
    }
  }

  punsubscribe(c: ClientConnection, names: Buffer[]): void {
    this.#leave(c, 'punsubscribe', c.patterns, this.#patterns, names);
  }

  /** PUBLISH: `message` to channel subscribers, `pmessage` to matching patterns; returns the number of deliveries. */
  publish(channel: Buffer, message: Buffer): number {
    let receivers = 0;
    const subs = this.#channels.get(channel.toString('latin1'));
    if (subs) {
      const push = arrayReply([bulkReply('message'), bulkReply(channel), bulkReply(message)]);
      for (const s of subs) {
        s.push(push);
        receivers++;
      }
    }
    const channelText = channel.toString('latin1');
    for (const [pattern, clients] of this.#patterns) {
      if (!globMatch(pattern, channelText)) continue;
      const push = arrayReply([bulkReply('pmessage'), bulkReply(Buffer.from(pattern, 'latin1')), bulkReply(channel), bulkReply(message)]);
      for (const s of clients) {
        s.push(push);
        receivers++;
      }
    }
    return receivers;
  }

  /** PUBSUB CHANNELS [pattern] | NUMSUB [ch ...] | NUMPAT. */
  introspect(c: ClientConnection, args: Buffer[]): void {
    const sub = args[1]!.toString('latin1').toLowerCase();
    if (sub === 'channels' && args.length <= 3) {
      const pattern = args[2];
      const glob = pattern?.toString('latin1');
      const names = [...this.#channels.keys()].filter((n) => glob === undefined || globMatch(glob, n));
      return c.reply(arrayReply(names.map((n) => bulkReply(Buffer.from(n, 'latin1')))));
    }
    if (sub === 'numsub') {
      const out: Buffer[] = [];
      for (const n of args.slice(2)) out.push(bulkReply(n), integerReply(this.#channels.get(n.toString('latin1'))?.size ?? 0));
      return c.reply(arrayReply(out));
    }
    if (sub === 'numpat' && args.length === 2) return c.reply(integerReply(this.#patterns.size));
    c.reply(errorReply(`ERR unknown subcommand or wrong number of arguments for '${clip(args[1]!.toString('utf8'))}'. Try PUBSUB HELP.`));
  }

  /** Forget every subscription of `c` without telling it (a closed connection, RESET). */
  drop(c: ClientConnection): void {
    for (const name of c.channels) remove(this.#channels, name, c);
    for (const name of c.patterns) remove(this.#patterns, name, c);
    c.channels.clear();
    c.patterns.clear();
  }

  #watch(c: ClientConnection): void {
    if (this.#watched.has(c)) return;
    this.#watched.add(c);
    c.socket.once('close', () => this.drop(c));
  }

  #leave(c: ClientConnection, kind: string, mine: Set<string>, index: Map<string, Set<ClientConnection>>, names: Buffer[]): void {
    const targets = names.length > 0 ? names : [...mine].map((n) => Buffer.from(n, 'latin1'));
    if (targets.length === 0) return c.push(confirmation(kind, null, c));
    for (const n of targets) {
      const name = n.toString('latin1');
      if (mine.delete(name)) remove(index, name, c);
      c.push(confirmation(kind, n, c));
    }
  }
}

/** Commands a RESP2 client may send while it has subscriptions (Redis processCommand). */
export const SUBSCRIBED_MODE_COMMANDS: ReadonlySet<string> = new Set([
  'subscribe', 'ssubscribe', 'unsubscribe', 'sunsubscribe', 'psubscribe', 'punsubscribe', 'ping', 'quit', 'reset',
]);

export function subscriptionCount(c: ClientConnection): number {
  return c.channels.size + c.patterns.size;
}

/** PING in subscribed mode: `*2 pong <arg or "">`. */
export function subscribedPong(arg: Buffer | undefined): Buffer {
  return arrayReply([bulkReply('pong'), bulkReply(arg ?? '')]);
}

function confirmation(kind: string, name: Buffer | null, c: ClientConnection): Buffer {
  return arrayReply([bulkReply(kind), bulkReply(name), integerReply(subscriptionCount(c))]);
}

function add(index: Map<string, Set<ClientConnection>>, name: string, c: ClientConnection): void {
  let set = index.get(name);
  if (!set) index.set(name, (set = new Set()));
  set.add(c);
}

function remove(index: Map<string, Set<ClientConnection>>, name: string, c: ClientConnection): void {
  const set = index.get(name);
  if (!set) return;
  set.delete(c);
  if (set.size === 0) index.delete(name);
}
