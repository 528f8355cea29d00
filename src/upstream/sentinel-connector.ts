import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { ClientTlsConfig } from '../config/types.js';
import { dial } from '../tls.js';
import { ReplyReader, RespErrorValue, type RespValue } from '../resp/reply-reader.js';
import { encodeCommand } from '../resp/writer.js';
import { backoffDelay } from './backoff.js';
import { TimerSet } from './timer-set.js';
import { InternalError } from '../errors.js';
import { checkTransition, type Transitions } from '../util/transitions.js';
import { redact, validHost } from '../util/text.js';

export interface SentinelConnectorOptions {
  readonly nodes: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  readonly masterName: string;
  readonly password: string | null;
  /** TLS to the Sentinels (upstream.tls when upstream.sentinel.tls is on); null/absent = plain TCP. */
  readonly tls?: ClientTlsConfig | null;
  /** Connect timeout, and how long a subscribed Sentinel may stay silent (it answers our PING every second). */
  readonly connectTimeoutMs: number;
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  readonly log: Logger;
}

export const SentinelState = {
  Idle: 'idle',
  /** Asking a Sentinel for the master. */
  Asking: 'asking',
  /** Subscribed to +switch-master on one Sentinel. */
  Subscribed: 'subscribed',
  /** Every Sentinel failed this round; waiting to try again. */
  Backoff: 'backoff',
  Stopped: 'stopped',
} as const;
export type SentinelState = (typeof SentinelState)[keyof typeof SentinelState];

const SENTINEL_TRANSITIONS: Transitions<SentinelState> = {
  idle: ['asking', 'stopped'],
  asking: ['subscribed', 'backoff', 'stopped'],
  subscribed: ['asking', 'backoff', 'stopped'],
  backoff: ['asking', 'stopped'],
  stopped: ['asking'],
};

const PING_INTERVAL_MS = 1000;
/** How long a subscription must hold before the connector's failure counts and backoff start over. */
const HEALTHY_AFTER_MS = 5000;
const SWITCH_MASTER = '+switch-master';

/**
 * Sentinel mode: finds the master through the Sentinels and follows its failovers. Asks the Sentinels in turn
 * (`SENTINEL get-master-addr-by-name`), then stays subscribed to `+switch-master` on the first that answered;
 * when that Sentinel dies or goes silent, moves to the next one, asks again (a switch may have been missed) and
 * re-subscribes. Emits `master` (host, port) whenever the address differs from the last one emitted.
 * Like ioredis' SentinelConnector, without the client around it: the relay follows the address itself.
 */
export class SentinelConnector extends EventEmitter {
  #opts: SentinelConnectorOptions;
  #log: Logger;
  #state: SentinelState = SentinelState.Idle;
  #next = 0;
  /** Sentinels that failed since one last answered: a full round of failures means back off. */
  #failures = 0;
  #attempt = 0;
  #socket: Socket | null = null;
  #timers = new TimerSet();
  #master: { host: string; port: number } | null = null;
  #current = '';

  constructor(opts: SentinelConnectorOptions) {
    super();
    if (opts.nodes.length === 0) throw new InternalError('SentinelConnector needs at least one Sentinel');
    this.#opts = opts;
    this.#log = opts.log;
  }

  get state(): SentinelState {
    return this.#state;
  }
  /** The master address last emitted, or null before the first answer. */
  get master(): { host: string; port: number } | null {
    return this.#master;
  }
  /** `host:port` of the Sentinel we are subscribed to (or asking), '' when none. */
  get sentinel(): string {
    return this.#current;
  }

  start(): void {
    if (this.#state !== SentinelState.Idle) return;
    this.#connect();
  }

  stop(): void {
    this.#teardown();
    this.#setState(SentinelState.Stopped, 'stopped');
  }

  #setState(next: SentinelState, reason: string, fields: Record<string, unknown> = {}): void {
    const from = this.#state;
    if (from === next) return;
    checkTransition(SENTINEL_TRANSITIONS, 'sentinel connector', from, next);
    this.#state = next;
    this.#log.info({ from, to: next, reason, sentinel: this.#current, ...fields }, 'sentinel connector state');
    this.emit('state', next, from);
  }


  #teardown(): void {
    this.#timers.clear();
    this.#socket?.destroy();
    this.#socket = null;
  }

  /** One Sentinel session: ask for the master, subscribe, then read events and PING replies until it fails. */
  #connect(): void {
    if (this.#state === SentinelState.Stopped) return;
    const node = this.#opts.nodes[this.#next % this.#opts.nodes.length]!;
    this.#next = (this.#next + 1) % this.#opts.nodes.length;
    this.#current = `${node.host}:${node.port}`;
    this.#setState(SentinelState.Asking, 'asking for the master');

    const { socket, ready } = dial(node.host, node.port, this.#opts.tls);
    this.#socket = socket;
    const reader = new ReplyReader();
    const expect: Array<'auth' | 'master' | 'subscribe'> = [];
    let lastIo = Date.now();
    let done = false;

    const fail = (why: string, err?: Error): void => {
      if (done) return;
      done = true;
      if (this.#state === SentinelState.Stopped) return;
      this.#log.warn({ sentinel: `${node.host}:${node.port}`, err, reason: why }, 'sentinel unusable, trying the next one');
      this.#teardown();
      this.#failures++;
      if (this.#failures < this.#opts.nodes.length) {
        this.#connect();
        return;
      }
      this.#failures = 0;
      const delay = backoffDelay(this.#attempt++, this.#opts.backoffMinMs, this.#opts.backoffMaxMs);
      this.#setState(SentinelState.Backoff, 'no sentinel answered', { delayMs: delay });
      this.#timers.set(delay, () => this.#connect());
    };

    const connectTimer = this.#timers.set(this.#opts.connectTimeoutMs, () => fail('connect or reply timeout'));
    socket.once(ready, () => {
      const cmds: string[][] = [];
      if (this.#opts.password !== null) {
        cmds.push(['AUTH', this.#opts.password]);
        expect.push('auth');
      }
      // Pipelined: the Sentinel runs both before any event can fire in between, so no switch is missed.
      cmds.push(['SENTINEL', 'get-master-addr-by-name', this.#opts.masterName], ['SUBSCRIBE', SWITCH_MASTER]);
      expect.push('master', 'subscribe');
      socket.write(Buffer.concat(cmds.map((c) => encodeCommand(c))));
    });
    socket.on('error', (err) => fail('connection error', err));
    socket.on('close', () => fail('connection closed'));
    socket.on('data', (chunk: Buffer) => {
      lastIo = Date.now();
      reader.push(chunk);
      try {
        for (let v = reader.next(); v !== undefined && !done; v = reader.next()) {
          const step = expect.shift();
          if (step !== undefined) this.#handshakeReply(step, v, fail);
          else this.#event(v);
          if (step === 'subscribe' && !done) {
            this.#timers.cancel(connectTimer);
            // Only a subscription that holds proves the Sentinels usable: one dropped at once, reset here, had the
            // connector cycle through them with no delay, forever (the teardown of a failure cancels this).
            this.#timers.set(HEALTHY_AFTER_MS, () => {
              this.#failures = 0;
              this.#attempt = 0;
            });
            this.#setState(SentinelState.Subscribed, 'subscribed to +switch-master');
            keepalive();
          }
        }
      } catch (err) {
        fail('protocol error', err as Error);
      }
    });

    const keepalive = (): void => {
      this.#timers.set(PING_INTERVAL_MS, () => {
        if (done) return;
        if (Date.now() - lastIo > Math.max(this.#opts.connectTimeoutMs, 3 * PING_INTERVAL_MS)) return fail('sentinel went silent');
        socket.write(encodeCommand(['PING']));
        keepalive();
      });
    };
  }

  #handshakeReply(step: 'auth' | 'master' | 'subscribe', v: RespValue, fail: (why: string) => void): void {
    // A Sentinel without requirepass refuses AUTH but serves us anyway (ioredis treats it the same way).
    if (step === 'auth' && v instanceof RespErrorValue && /without any password configured/.test(v.message)) return;
    // redact: a Sentinel that does not know AUTH quotes its argument back.
    if (v instanceof RespErrorValue) return fail(`${step} refused: ${redact(v.message, this.#opts.password)}`);
    if (step !== 'master') return;
    if (v === null) return fail(`sentinel does not know master ${this.#opts.masterName}`);
    if (!Array.isArray(v) || v.length !== 2 || !Buffer.isBuffer(v[0]) || !Buffer.isBuffer(v[1])) return fail('malformed get-master-addr-by-name reply');
    const port = Number(v[1].toString('latin1'));
    if (!Number.isInteger(port) || port < 1 || port > 65535) return fail('malformed master port');
    // As REPLICAOF checks it: an empty host would connect to localhost, whatever runs there.
    const host = v[0].toString('utf8');
    if (!validHost(host)) return fail(`malformed master host: ${JSON.stringify(host.slice(0, 64))}`);
    this.#found(host, port, 'get-master-addr-by-name');
  }

  /** Pushed messages once subscribed: `+switch-master <name> <oldip> <oldport> <newip> <newport>`, PING replies. */
  #event(v: RespValue): void {
    if (!Array.isArray(v) || v.length !== 3 || !Buffer.isBuffer(v[0]) || v[0].toString('latin1') !== 'message') return;
    if (!Buffer.isBuffer(v[1]) || v[1].toString('latin1') !== SWITCH_MASTER || !Buffer.isBuffer(v[2])) return;
    const [name, , , host, portText] = v[2].toString('utf8').split(' ');
    if (name !== this.#opts.masterName || host === undefined) return;
    const port = Number(portText);
    if (!Number.isInteger(port) || port < 1 || port > 65535 || !validHost(host)) {
      this.#log.warn({ sentinel: this.#current, event: v[2].toString('utf8').slice(0, 200) }, 'malformed +switch-master ignored');
      return;
    }
    this.#found(host, port, SWITCH_MASTER);
  }

  #found(host: string, port: number, how: string): void {
    if (this.#master?.host === host && this.#master.port === port) return;
    const from = this.#master ? `${this.#master.host}:${this.#master.port}` : null;
    this.#master = { host, port };
    this.#log.info({ master: `${host}:${port}`, from, how, sentinel: this.#current }, 'sentinel names the master');
    this.emit('master', host, port);
  }
}
