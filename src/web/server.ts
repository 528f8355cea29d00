import { createHash, timingSafeEqual } from 'node:crypto';
import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket, WebSocket } from 'uWebSockets.js';
import type { WebConfig } from '../config/types.js';
import { RelayError } from '../errors.js';
import type { Logger } from '../log.js';
import type { PitrApi } from '../pitr/api.js';
import { PitrError } from '../pitr/planner.js';
import type { RelayStatus, WebStatus } from '../observability/status.js';
import type { Telemetry } from '../observability/telemetry.js';
import { DASHBOARD_HEADERS, DASHBOARD_HTML } from './dashboard.js';
import { METRICS_CONTENT_TYPE, RelayMetrics } from './metrics.js';
import { StreamHub, type StreamSink, type StreamSource, type Subscription } from './stream-hub.js';
import { parseStreamOptions, StreamOptionsError, type StreamOptions } from './stream-message.js';
import { RequestGuard } from './request-guard.js';
import { AnswerBudget } from './answer-budget.js';
import { Answers } from './answers.js';
import type { WebRefusal } from '../observability/telemetry.js';
import { isJsonContentType, MAX_PITR_BODY, parsePitrBody, WebRequestError } from './pitr-request.js';
import { LogLimiter } from '../util/log-limiter.js';
import { clip } from '../util/text.js';
import { offeredProtocols } from './ws-token.js';
import { FdGuard } from './fd-guard.js';
import { openFilesLimit, RESERVED_FDS } from '../downstream/fd-limit.js';
import { TurnMemo } from '../util/turn-memo.js';

/** The uWebSockets.js native addon is loaded (not its slower Node.js fallback). */
export const uwsNative = typeof (uWS as unknown as Record<string, unknown>)['SSLApp'] === 'function';

/** What the web server reads from the relay (the relay hands it one, built from its history and status). */
export interface WebSource extends StreamSource {
  status(): RelayStatus;
  /** Descriptors the RESP port may still take (its free listen.max-clients slots): the web port leaves them. */
  respSlotsFree?(): number;
  /** Point-in-time replicas (GET /history, POST /pitr, DELETE /pitr/<port>); null: not available on this relay. */
  readonly pitr: PitrApi | null;
}

interface WsData {
  readonly opts: StreamOptions;
  sub: Subscription | null;
  alive: boolean;
}

/** A WebSocket close reason is at most 123 bytes. */
const MAX_REASON = 120;

/**
 * HTTP + WebSocket server on uWebSockets.js: `/` dashboard, `/healthz`, `/readyz`, `/status` (JSON),
 * `/metrics` (Prometheus), `WS /stream`, and point-in-time replicas: `GET /history`, `POST /pitr`,
 * `DELETE /pitr/<port>` (JSON). Every request must pass the same-host checks (request-guard.ts: Host, and Origin
 * when sent); `web.token`, when set, also guards /status, /metrics, /stream, /history and /pitr
 * (`Authorization: Bearer <token>`, `?token=`, or on /stream a subprotocol: ws-token.ts); the dashboard page itself
 * holds no data.
 */
export class WebServer {
  readonly hub: StreamHub;
  readonly #src: WebSource;
  readonly #config: WebConfig;
  readonly #log: Logger;
  readonly #tokenDigest: Buffer | null;
  readonly #app: TemplatedApp;
  readonly #guard: RequestGuard;
  readonly #metrics: RelayMetrics;
  /** GET /status's body, built once per turn however many requests of the turn ask for it (TurnMemo). */
  readonly #statusBody = new TurnMemo(() => JSON.stringify(this.#src.status()) + '\n');
  readonly #warnings = new LogLimiter();
  readonly #telemetry: Telemetry;
  readonly #answers: Answers;
  #listenSocket: us_listen_socket | null = null;
  #port = 0;
  /** Closes the listening socket while web connections take the relay's reserved descriptors (fd-guard.ts). */
  readonly #fds: FdGuard;
  #shuttingDown = false;

  constructor(source: WebSource, config: WebConfig, logger: Logger, telemetry: Telemetry) {
    this.#src = source;
    this.#config = config;
    this.#log = logger;
    this.#telemetry = telemetry;
    this.#tokenDigest = config.token === null ? null : digest(config.token);
    this.#answers = new Answers(budget, (res) => this.#refused('answers', res), this.#tokenDigest !== null);
    this.#guard = new RequestGuard(config);
    this.hub = new StreamHub(source, { maxBuffered: config.maxBuffered, maxBufferedTotal: config.maxBufferedTotal, slowClient: config.slowClient, logger, telemetry });
    this.#metrics = new RelayMetrics(() => source.status());
    this.#app = this.#routes(uWS.App());
    this.#fds = new FdGuard({
      limit: openFilesLimit(),
      reserve: RESERVED_FDS,
      promised: () => source.respSlotsFree?.() ?? 0,
      logger,
      pause: () => {
        if (this.#listenSocket) uWS.us_listen_socket_close(this.#listenSocket);
        this.#listenSocket = null;
      },
      // The port it had (a port 0 was given one): uWS calls back before listen() returns.
      resume: () => {
        if (this.#shuttingDown) return false;
        this.#app.listen(this.#config.bind, this.#port, (ls) => {
          this.#listenSocket = ls || null;
        });
        return this.#listenSocket !== null;
      },
    });
  }

  get port(): number {
    return this.#port;
  }

  listen(): Promise<number> {
    if (!uwsNative) this.#log.warn('uWebSockets.js runs its Node.js fallback, not the native addon');
    return new Promise((resolve, reject) => {
      this.#app.listen(this.#config.bind, this.#config.port, (ls) => {
        if (!ls) {
          reject(new RelayError('RELAY_ERR_WEB_LISTEN', `web server cannot listen on ${this.#config.bind}:${this.#config.port}`));
          return;
        }
        this.#listenSocket = ls;
        this.#port = uWS.us_socket_local_port(ls as unknown as uWS.us_socket);
        this.#log.info({ bind: this.#config.bind, port: this.#port, auth: this.#tokenDigest !== null, native: uwsNative }, 'web server listening');
        this.#fds.start();
        resolve(this.#port);
      });
    });
  }

  /** The relay is shutting down: /healthz and /readyz answer 503 so load balancers stop sending clients. */
  shuttingDown(): void {
    this.#shuttingDown = true;
  }

  async close(): Promise<void> {
    this.#fds.stop();
    this.hub.close();
    if (this.#listenSocket) uWS.us_listen_socket_close(this.#listenSocket);
    this.#listenSocket = null;
  }

  /** The /stream figures that are state, not counters (the stats model holds those), for the status builder. */
  gauges(): Pick<WebStatus, 'jsonSubscribers' | 'rawSubscribers' | 'decoding' | 'bufferedBytes'> {
    const hub = this.hub;
    return { jsonSubscribers: hub.jsonSubscribers, rawSubscribers: hub.rawSubscribers, decoding: hub.decoding, bufferedBytes: hub.bufferedBytes };
  }

  #routes(app: TemplatedApp): TemplatedApp {
    const page = (res: HttpResponse, req: HttpRequest) => {
      if (this.#allowed(res, req)) this.#answers.reply(res, '200 OK', 'text/html; charset=utf-8', DASHBOARD_HTML, DASHBOARD_HEADERS);
    };
    const healthz = (res: HttpResponse, req: HttpRequest): void => {
      if (!this.#allowed(res, req)) return;
      if (this.#shuttingDown) return this.#answers.reply(res, '503 Service Unavailable', 'text/plain; charset=utf-8', 'shutting down\n');
      this.#answers.reply(res, '200 OK', 'text/plain; charset=utf-8', 'ok\n');
    };
    const readyz = (res: HttpResponse, req: HttpRequest): void => {
      if (!this.#allowed(res, req)) return;
      const s = this.#src.status();
      const ready = s.upstream.linkUp && s.snapshot !== null && !this.#shuttingDown;
      // Still ready (replicas are served), but worth a look: the disk log is failing or detached, or full syncs
      // wait for room on the disk.
      const notes = s.log.diskProblem !== null ? [`disk log ${s.log.diskState}: ${s.log.diskProblem}`] : [];
      if (s.snapshotWaitingForRoom > 0) {
        notes.push(`an RDB (a snapshot fetch, or the relay's own full sync) waits for more than ${s.snapshotWaitingForRoom} bytes of room on the disk`);
      }
      if (s.snapshotDiskRefused !== null) notes.push(`an RDB (a snapshot fetch, or the relay's own full sync) waits for the disk to take writes (${s.snapshotDiskRefused})`);
      const body = JSON.stringify({ ready, linkUp: s.upstream.linkUp, linkState: s.upstream.state, snapshot: s.snapshot !== null, shuttingDown: this.#shuttingDown, notes });
      this.#answers.reply(res, ready ? '200 OK' : '503 Service Unavailable', 'application/json', body + '\n');
    };
    return app
      .get('/', page)
      .get('/index.html', page)
      .get('/healthz', healthz)
      // Health checkers that send HEAD get the same status, without the body.
      .head('/healthz', healthz)
      .get('/readyz', readyz)
      .head('/readyz', readyz)
      .get('/status', (res, req) => {
        if (!this.#allowed(res, req)) return;
        if (!this.#authorized(res, req)) return;
        this.#answers.reply(res, '200 OK', 'application/json', this.#statusBody.get());
      })
      .get('/metrics', (res, req) => {
        if (!this.#allowed(res, req)) return;
        if (!this.#authorized(res, req)) return;
        this.#serveMetrics(res);
      })
      .get('/history', (res, req) => {
        if (!this.#allowed(res, req)) return;
        if (!this.#authorized(res, req)) return;
        const pitr = this.#src.pitr;
        if (pitr === null) return this.#pitrUnavailable(res);
        try {
          this.#answers.json(res, '200 OK', pitr.history());
        } catch (err) {
          this.#pitrFailed(res, err, 'GET /history');
        }
      })
      .post('/pitr', (res, req) => this.#openPitr(res, req))
      .del('/pitr/:port', (res, req) => {
        if (!this.#allowed(res, req)) return;
        if (!this.#authorized(res, req)) return;
        const pitr = this.#src.pitr;
        if (pitr === null) return this.#pitrUnavailable(res);
        const raw = req.getParameter(0) ?? '';
        const port = /^[1-9]\d{0,4}$/.test(raw) ? Number(raw) : 0;
        if (port < 1 || port > 65535) return this.#answers.jsonError(res, '400 Bad Request', new WebRequestError('the port must be an integer 1..65535: DELETE /pitr/<port>'));
        let closed: boolean;
        try {
          closed = pitr.close(port);
        } catch (err) {
          return this.#pitrFailed(res, err, 'DELETE /pitr');
        }
        if (!closed) return this.#answers.jsonError(res, '404 Not Found', new PitrError(`no point-in-time listener on port ${port}`));
        this.#log.info({ port }, 'point-in-time listener closed (web)');
        this.#answers.json(res, '200 OK', { port, closed: true });
      })
      .any('/pitr', (res, req) => {
        if (this.#allowed(res, req)) this.#answers.reply(res, '405 Method Not Allowed', 'text/plain; charset=utf-8', 'POST /pitr opens a point-in-time listener\n', { allow: 'POST' });
      })
      .ws<WsData>('/stream', {
        compression: uWS.DISABLED,
        maxPayloadLength: 4096,
        idleTimeout: 120,
        sendPingsAutomatically: true,
        // The hub enforces web.max-buffered itself; uWS must not drop silently before it.
        maxBackpressure: Math.max(this.#config.maxBuffered * 4, 1024 ** 3),
        upgrade: (res, req, context) => {
          if (!this.#allowed(res, req)) return;
          const protocols = offeredProtocols(req.getHeader('sec-websocket-protocol'));
          if (!this.#authorized(res, req, protocols.token)) return;
          const subscribers = this.hub.jsonSubscribers + this.hub.rawSubscribers;
          if (subscribers >= this.#config.maxSubscribers) {
            this.#warnings.warn(this.#log, { limit: 'web.max-subscribers', value: this.#config.maxSubscribers }, '/stream subscriber refused: too many subscribers');
            this.#refused('subscribers', res);
            return this.#answers.reply(res, '503 Service Unavailable', 'text/plain; charset=utf-8', `too many /stream subscribers (web.max-subscribers: ${this.#config.maxSubscribers})\n`);
          }
          let opts: StreamOptions;
          try {
            opts = parseStreamOptions(req.getQuery() ?? '');
          } catch (err) {
            if (!(err instanceof StreamOptionsError)) throw err;
            return this.#answers.reply(res, '400 Bad Request', 'text/plain; charset=utf-8', `${err.message}\n`);
          }
          const key = req.getHeader('sec-websocket-key');
          const extensions = req.getHeader('sec-websocket-extensions');
          res.cork(() => res.upgrade<WsData>({ opts, sub: null, alive: true }, key, protocols.answer, extensions, context));
        },
        open: (ws) => {
          const data = ws.getUserData();
          data.sub = this.hub.subscribe(sinkOf(ws), data.opts);
        },
        drain: (ws) => ws.getUserData().sub?.drain(),
        // uWS has queued the pong by now: the hub closes a client whose pongs pile up unread.
        ping: (ws) => ws.getUserData().sub?.pinged(),
        close: (ws) => {
          const data = ws.getUserData();
          data.alive = false;
          data.sub?.closed();
        },
      })
      .any('/*', (res, req) => {
        if (this.#allowed(res, req)) this.#answers.reply(res, '404 Not Found', 'text/plain; charset=utf-8', 'not found\n');
      });
  }

  #tooLarge(res: HttpResponse): void {
    this.#answers.jsonError(res, '413 Payload Too Large', new WebRequestError(`the body is larger than ${MAX_PITR_BODY} bytes`), true);
  }

  #pitrUnavailable(res: HttpResponse): void {
    this.#answers.jsonError(res, '503 Service Unavailable', new PitrError('point-in-time replicas are not available on this relay'));
  }

  #refused(reason: WebRefusal, res: HttpResponse): void {
    this.#telemetry.emit('web.refused', { reason, peer: Buffer.from(res.getRemoteAddressAsText()).toString() });
  }

  /**
   * Every request's first check: a header that must come once sent twice (400, the connection closed), then the
   * same-host checks (request-guard.ts: 403 with no data); false when one fails. Also marks a HEAD request's answer
   * as having no body.
   */
  #allowed(res: HttpResponse, req: HttpRequest): boolean {
    // Every answer to a HEAD request goes without its body (one sent would be read as the next answer's start).
    if (req.getMethod() === 'head') this.#answers.withoutBody(res);
    const twice = repeatedHeader(req);
    if (twice !== null) {
      this.#warnings.warn(this.#log, { header: twice, url: clip(req.getUrl()) }, 'web request refused: a header sent twice');
      this.#answers.badRequest(res, `bad request: ${twice} sent twice\n`);
      return false;
    }
    const host = req.getHeader('host');
    const origin = req.getHeader('origin');
    const site = req.getHeader('sec-fetch-site');
    const refused = this.#guard.check(host, origin, { site, mode: req.getHeader('sec-fetch-mode'), dest: req.getHeader('sec-fetch-dest') });
    if (refused === null) return true;
    this.#refused(refused === 'web.allowed-hosts' ? 'host' : 'origin', res);
    const limit = refused === 'cross-site' ? 'web.allowed-origins' : refused;
    this.#warnings.warn(
      this.#log,
      { limit, host: clip(host), origin: clip(origin), ...(refused === 'cross-site' && { site: clip(site) }), url: clip(req.getUrl()) },
      'web request refused: Host or Origin not allowed (possible DNS rebinding or cross-site request)',
    );
    const what = refused === 'web.allowed-hosts' ? 'this Host is not allowed' : refused === 'web.allowed-origins' ? 'this Origin is not allowed' : 'a page on another site may not load this';
    this.#answers.reply(res, '403 Forbidden', 'text/plain; charset=utf-8', `forbidden: ${what} (${limit})\n`);
    return false;
  }

  /** prom-client renders asynchronously: the response may be aborted meanwhile, and must not be touched then. */
  #serveMetrics(res: HttpResponse): void {
    let aborted = false;
    res.onAborted(() => (aborted = true));
    this.#metrics.render().then(
      (body) => aborted || this.#answers.reply(res, '200 OK', METRICS_CONTENT_TYPE, body),
      (err: Error) => {
        this.#log.error({ err }, '/metrics could not be rendered');
        if (!aborted) this.#answers.reply(res, '500 Internal Server Error', 'text/plain; charset=utf-8', 'metrics could not be rendered\n');
      },
    );
  }

  /**
   * POST /pitr: reads the JSON body (at most MAX_PITR_BODY bytes), opens a listener, answers with it. Headers are
   * read before the handler returns (uWS requests are only valid then); onAborted is registered before any body
   * or async work, and nothing is written to an aborted response.
   */
  #openPitr(res: HttpResponse, req: HttpRequest): void {
    if (!this.#allowed(res, req)) return;
    if (!this.#authorized(res, req)) return;
    const pitr = this.#src.pitr;
    if (pitr === null) return this.#pitrUnavailable(res);
    // A cross-site form can post text/plain without a CORS preflight; application/json cannot.
    if (!isJsonContentType(req.getHeader('content-type'))) {
      return this.#answers.jsonError(res, '415 Unsupported Media Type', new WebRequestError('the body must be JSON, sent with Content-Type: application/json'), true);
    }
    const length = req.getHeader('content-length');
    if (length !== '' && !(Number(length) <= MAX_PITR_BODY)) return this.#tooLarge(res);
    let aborted = false;
    let opening = false;
    res.onAborted(() => {
      aborted = true;
      if (opening) this.#log.debug('POST /pitr: the client went away while its listener opens');
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    res.onData((chunk, isLast) => {
      if (done || aborted) return;
      size += chunk.byteLength;
      if (size > MAX_PITR_BODY) {
        done = true;
        return this.#tooLarge(res);
      }
      // uWS reuses (and frees) the chunk's memory once this callback returns: copy it.
      chunks.push(Buffer.from(new Uint8Array(chunk)));
      if (!isLast) return;
      done = true;
      let target;
      try {
        target = parsePitrBody(Buffer.concat(chunks));
      } catch (err) {
        if (!(err instanceof WebRequestError)) throw err;
        return this.#answers.jsonError(res, '400 Bad Request', err);
      }
      opening = true;
      Promise.resolve()
        .then(() => pitr.open(target))
        .then(
          (answer) => {
            opening = false;
            this.#log.info({ target, port: answer.port, offset: answer.offset }, 'point-in-time listener opened (web)');
            if (aborted) {
              this.#log.info({ port: answer.port }, 'POST /pitr: the client went away before the answer; the listener stays until closed or idle');
              return;
            }
            this.#answers.json(res, '200 OK', answer);
          },
          (err: unknown) => {
            opening = false;
            if (!aborted) this.#pitrFailed(res, err, 'POST /pitr');
            else if (!(err instanceof PitrError)) this.#log.error({ err }, 'POST /pitr failed');
          },
        );
    });
  }

  /** A PitrError is the request's (409, its message names the window); anything else is ours (500, logged). */
  #pitrFailed(res: HttpResponse, err: unknown, what: string): void {
    if (err instanceof PitrError) return this.#answers.jsonError(res, '409 Conflict', err);
    this.#log.error({ err }, `${what} failed`);
    this.#answers.jsonError(res, '500 Internal Server Error', { code: 'RELAY_ERR_INTERNAL', message: `${what} failed: see the relay's log` });
  }

  /**
   * web.token, when set; answers 401 and returns false when it is missing or wrong. A wrong token (a guess, not a
   * page polling before the token is typed in) is logged like a failed AUTH: rate limited, never the token itself.
   * Read synchronously: uWS requests are only valid during the handler. `offered`: the token a WebSocket upgrade
   * offered as a subprotocol (ws-token.ts).
   */
  #authorized(res: HttpResponse, req: HttpRequest, offered: string | null = null): boolean {
    if (this.#tokenDigest === null) return true;
    const header = req.getHeader('authorization');
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const given = m?.[1] ?? offered ?? new URLSearchParams(req.getQuery() ?? '').get('token');
    if (given !== null && given !== undefined && timingSafeEqual(digest(given), this.#tokenDigest)) {
      this.#answers.trust(res);
      return true;
    }
    if (given !== null && given !== undefined) {
      const remote = Buffer.from(res.getRemoteAddressAsText()).toString();
      this.#warnings.warn(this.#log, { limit: 'web.token', remote, url: clip(req.getUrl()) }, 'web request refused: wrong web.token');
      this.#refused('token', res);
    }
    this.#answers.unauthorized(res);
    return false;
  }
}

/**
 * Headers a request may carry once (RFC 9110, 9112): uWS.js accepts them twice and reads the first. Two
 * Content-Lengths let a body be read as a request of its own (request smuggling behind a proxy that reads the
 * other), and two Hosts pass the same-host check with the first while something in front may route by the second.
 */
const ONCE = new Set(['host', 'content-length', 'transfer-encoding', 'origin', 'authorization']);

/** The first of those headers the request sent twice, or null. */
function repeatedHeader(req: HttpRequest): string | null {
  const seen = new Set<string>();
  let twice: string | null = null;
  req.forEach((key) => {
    if (twice !== null || !ONCE.has(key)) return;
    if (seen.has(key)) twice = key;
    seen.add(key);
  });
  return twice;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** The answers of this process's web port, per connection and per turn of the event loop (answer-budget.ts). */
const budget = new AnswerBudget();

/** The hub's view of a uWS WebSocket; inert once the socket closed. */
function sinkOf(ws: WebSocket<WsData>): StreamSink {
  const data = ws.getUserData();
  return {
    send: (msg, binary) => {
      if (data.alive) ws.send(msg, binary);
    },
    bufferedAmount: () => (data.alive ? ws.getBufferedAmount() : 0),
    end: (code, reason) => {
      if (!data.alive) return;
      data.alive = false;
      ws.end(code, reason.length > MAX_REASON ? reason.slice(0, MAX_REASON) : reason);
    },
    cork: (fn) => {
      if (data.alive) ws.cork(fn);
      else fn();
    },
  };
}
