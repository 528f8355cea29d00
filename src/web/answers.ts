import type { HttpResponse } from 'uWebSockets.js';
import type { AnswerBudget } from './answer-budget.js';

/**
 * Headers of every answer. No frame may show one: a page on another site that loads /status?token=<guess> in an
 * `<object>` saw `load` for a 200 and `error` for a 401, and so could tell a right token from a wrong one where the
 * browser sends it no Sec-Fetch-Site to refuse it by (plain http to an address that is not loopback). Refused a
 * frame, `<object>` gets `error` for both. nosniff: a JSON answer never runs as a `<script>` (same `error` for both).
 */
const EVERY_ANSWER: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'content-security-policy': "frame-ancestors 'none'",
};

/**
 * How one web server writes its HTTP answers: each charged to the process's answer budget (answer-budget.ts), and
 * none queued past what its socket takes. `onRefused` hears of every answer the budget refused (a 503).
 */
export class Answers {
  readonly #budget: AnswerBudget;
  readonly #onRefused: (res: HttpResponse) => void;
  /** Whether web.token is set: answers are then charged as trusted (their request proved it) or not. */
  readonly #tokenSet: boolean;
  /** Responses whose request proved web.token (answer-budget.ts keeps half of each turn's answers for them). */
  readonly #trusted = new WeakSet<HttpResponse>();
  readonly #heads = new WeakSet<HttpResponse>();

  constructor(budget: AnswerBudget, onRefused: (res: HttpResponse) => void, tokenSet = false) {
    this.#budget = budget;
    this.#onRefused = onRefused;
    this.#tokenSet = tokenSet;
  }

  /** `res` answers a request that proved web.token. */
  trust(res: HttpResponse): void {
    this.#trusted.add(res);
  }

  /** `res` answers a HEAD request: its status and headers, no body. */
  withoutBody(res: HttpResponse): void {
    this.#heads.add(res);
  }

  /** `closeConnection`: the request's body was not read (too large, or not wanted): do not read it to keep the connection. */
  reply(res: HttpResponse, status: string, type: string, body: string, headers: Record<string, string> = {}, closeConnection = false): void {
    const bytes = Buffer.from(body);
    const trusted = this.#tokenSet ? this.#trusted.has(res) : null;
    if (!this.#budget.spend(Buffer.from(res.getRemoteAddressAsText()).toString(), bytes.length, trusted)) {
      this.#onRefused(res);
      return refuse(res, '503 Service Unavailable', 'too many answers at once: try again\n', { 'retry-after': '1' });
    }
    res.cork(() => {
      res.writeStatus(status).writeHeader('content-type', type).writeHeader('cache-control', 'no-store');
      writeHeaders(res, headers);
      // No arguments: uWS.js 20.30 aborts the process on endWithoutBody(length) or (length, close) ('returning from
      // a request handler without responding'). A HEAD answer is never one that must close the connection.
      if (this.#heads.has(res)) res.endWithoutBody();
      else if (closeConnection) res.end(bytes, true);
      else endBounded(res, bytes);
    });
  }

  json(res: HttpResponse, status: string, value: unknown): void {
    this.reply(res, status, 'application/json', JSON.stringify(value) + '\n');
  }

  /** The web API's errors: `{"error": <message>, "code": <RELAY_ERR_…>}`. */
  jsonError(res: HttpResponse, status: string, err: { readonly code: string; readonly message: string }, closeConnection = false): void {
    this.reply(res, status, 'application/json', JSON.stringify({ error: err.message, code: err.code }) + '\n', {}, closeConnection);
  }

  /**
   * A request that must not be read past (a header sent twice: what follows it may be its body, read as a request):
   * `status`, and the connection closed before another of its requests is handled (see refuse).
   */
  badRequest(res: HttpResponse, text: string): void {
    refuse(res, '400 Bad Request', text, {});
  }

  unauthorized(res: HttpResponse): void {
    this.reply(res, '401 Unauthorized', 'text/plain; charset=utf-8', 'unauthorized: web.token is set; send Authorization: Bearer <token> or ?token=\n', {
      'www-authenticate': 'Bearer realm="psync-relay"',
    });
  }
}

/** EVERY_ANSWER's headers, each replaced by `headers`' own where it has one (the dashboard's fuller policy), then the rest. */
function writeHeaders(res: HttpResponse, headers: Readonly<Record<string, string>>): void {
  for (const [k, v] of Object.entries(EVERY_ANSWER)) res.writeHeader(k, headers[k] ?? v);
  for (const [k, v] of Object.entries(headers)) if (!(k in EVERY_ANSWER)) res.writeHeader(k, v);
}

/**
 * An answer refused (past the budget: 503; a bad request: 400), and its connection closed before another of its
 * requests is handled. Not at once: uWS goes on handling the requests a connection pipelined in the same read after
 * an answer with `Connection: close`, but it closes a connection whose next request comes while an answer is unsent,
 * without calling a handler.
 * So the 503 waits for the end of this turn: a connection with more requests in this read is closed by uWS at the
 * next one (no 503 then: it was still sending), one without gets the 503 and is closed. The budget relies on this:
 * after a refusal, the next answer in this turn is another connection's.
 */
function refuse(res: HttpResponse, status: string, text: string, headers: Record<string, string>): void {
  let aborted = false;
  res.onAborted(() => (aborted = true));
  setImmediate(() => {
    if (aborted) return;
    res.cork(() => {
      res.writeStatus(status).writeHeader('content-type', 'text/plain; charset=utf-8');
      writeHeaders(res, headers);
      res.end(text, true);
    });
  });
}

/**
 * Ends a response without queueing more than the socket takes. uWS's end() keeps whatever the socket cannot take in
 * a per-connection buffer with no limit and goes on to the next pipelined request, so a client that pipelines
 * requests and never reads the answers grew the relay's memory by every answer. tryEnd writes only what the socket
 * takes; the rest follows as it drains (onWritable), and uWS closes a connection that sends another request while
 * an answer is still unsent. At most one answer per connection is held, by this closure.
 */
function endBounded(res: HttpResponse, body: Buffer): void {
  const total = body.length;
  if (res.tryEnd(body, total)[1]) return;
  // Not done: uWS requires an abort handler (the connection may go away meanwhile; nothing is left to do then).
  res.onAborted(() => undefined);
  res.onWritable((offset) => res.tryEnd(body.subarray(offset), total)[0]);
}
