const MiB = 1024 * 1024;

/** Bytes of answers one connection may be written in one turn of the event loop. */
export const CONNECTION_TURN_ANSWER_BYTES = 4 * MiB;
/** Bytes of answers all connections together may be written in one turn of the event loop. */
export const TURN_ANSWER_BYTES = 16 * MiB;

/**
 * How many bytes of answers the web port writes in one turn of the event loop, per connection and in all. uWS runs
 * the handlers of every request that one read brought, back to back, and an answer rendered in a microtask
 * (/metrics) still lands in that turn: 10,000 pipelined scrapes wrote ~500 MB and held replication and every other
 * client for seconds. No real client (a browser, a Prometheus scrape) comes near either limit.
 *
 * Per connection, without knowing the connection: uWS.js 20.30 gives a handler no connection identity (a new
 * HttpResponse object per request, the remote address but not the port). What it does guarantee is order: the
 * requests one read of a connection brought are handled in one uninterrupted run (each handler, then its microtasks:
 * uWS.js calls handlers through node::MakeCallback), and libuv reads a ready socket once per turn (unless over 1,024
 * sockets are ready at once). So the budget is charged to the current run, and a run ends where it is seen to end:
 * - when the remote address of the answers changes (another connection, from another address);
 * - when an answer is refused: its connection is closed before another of its requests is handled (server.ts
 *   refuse()), so the next answer is another connection's;
 * - at the end of the turn.
 * Two connections from one address read one after the other in the same turn, the first not refused, are charged as
 * one: a client that keeps just under the budget can still have the answer of another client on its own address
 * refused. The total caps what many connections together make the loop write in one turn: an answer that does not
 * fit in what is left of it is refused, whoever's it is.
 *
 * With `web.token` set, answers to requests that did not prove it (the dashboard page, /healthz, refusals) may take
 * at most half of the total: clients without the token pipelining `GET /` and never reading had the authenticated
 * Prometheus scrape refused with 503 at most turns (40 of 53 in the web re-audit). Those that proved it have the
 * other half whatever the rest do.
 */
export class AnswerBudget {
  readonly #perConnection: number;
  readonly #perTurn: number;
  #turn = 0;
  /** Of #turn, the answers to requests that did not prove the token (with one set). */
  #openTurn = 0;
  #run = 0;
  #runFrom: string | null = null;
  #resetting = false;

  constructor(perConnection = CONNECTION_TURN_ANSWER_BYTES, perTurn = TURN_ANSWER_BYTES) {
    this.#perConnection = perConnection;
    this.#perTurn = perTurn;
  }

  /**
   * Whether an answer of `n` bytes to a client at address `from` fits. false: the caller refuses it and closes its
   * connection before that connection's next request is handled; nothing is counted then. `trusted`: whether its
   * request proved `web.token` (null: no token is set, every answer shares the whole total).
   */
  spend(from: string, n: number, trusted: boolean | null = null): boolean {
    if (!this.#resetting) {
      this.#resetting = true;
      setImmediate(() => {
        this.#turn = 0;
        this.#openTurn = 0;
        this.#run = 0;
        this.#runFrom = null;
        this.#resetting = false;
      });
    }
    if (from !== this.#runFrom) {
      this.#runFrom = from;
      this.#run = 0;
    }
    const open = trusted === false;
    if (this.#run + n > this.#perConnection || this.#turn + n > this.#perTurn || (open && this.#openTurn + n > this.#perTurn / 2)) {
      this.#runFrom = null;
      this.#run = 0;
      return false;
    }
    this.#run += n;
    this.#turn += n;
    if (open) this.#openTurn += n;
    return true;
  }
}
