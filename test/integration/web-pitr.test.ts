/**
 * The web API of point-in-time replicas (GET /history, POST /pitr, DELETE /pitr/<port>) and the dashboard's
 * "restore" action, against a fake PitrApi: a WebServer is built directly on a source that is a real Relay (its
 * log, ids, status, /stream) with the fake as its `pitr`. What the real service does with a target is tested with it.
 */
import t, { type Test } from 'tap';
import { request } from 'node:http';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import WebSocket from 'ws';
import { validateConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import type { HistoryView, PitrAnswer, PitrApi } from '../../src/pitr/api.js';
import { PitrError, type PitrTarget } from '../../src/pitr/planner.js';
import type { Relay } from '../../src/relay.js';
import { WebServer, type WebSource } from '../../src/web/server.js';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { browserTest, launchChromium } from '../helpers/browser.js';

t.teardown(stopAll);

const REPLID = 'a'.repeat(40);

/** Records what it is asked; answers a listener per open, on ports from 40001. */
class FakePitr implements PitrApi {
  readonly opened: PitrTarget[] = [];
  readonly closed: number[] = [];
  readonly listeners = new Map<number, PitrAnswer>();
  /** open() throws this (after `hold`, if any). */
  fail: Error | null = null;
  /** open() waits for this before answering. */
  hold: Promise<void> | null = null;
  #port = 40001;

  history(): HistoryView {
    return {
      replid: REPLID,
      firstOffset: 100,
      lastOffset: 5000,
      firstTime: '2025-01-31T02:00:00.000Z',
      lastTime: '2025-01-31T03:00:00.000Z',
      snapshots: [{ replid: REPLID, offset: 100, time: '2025-01-31T02:00:00.000Z', bytes: 4096 }],
      listeners: [...this.listeners.values()],
    };
  }
  async open(target: PitrTarget): Promise<PitrAnswer> {
    this.opened.push(target);
    if (this.hold) await this.hold;
    if (this.fail) throw this.fail;
    const offset = target.kind === 'offset' ? target.offset : 4242;
    const answer: PitrAnswer = { port: this.#port++, offset, time: '2025-01-31T02:30:00.000Z', replid: REPLID, snapshotOffset: 100 };
    this.listeners.set(answer.port, answer);
    return answer;
  }
  close(port: number): boolean {
    this.closed.push(port);
    return this.listeners.delete(port);
  }
}

/** A real relay as the web server reads it, with `pitr` in place of the relay's own. */
function sourceOf(relay: Relay, pitr: PitrApi | null): WebSource {
  // The relay's own source (its getters stay live through the prototype), with `pitr` replaced.
  return Object.assign(Object.create(relay.webSource()) as WebSource, { pitr });
}

interface Served {
  readonly port: number;
  readonly pitr: FakePitr;
  /** Log lines written so far (at debug and above). */
  readonly logs: Record<string, unknown>[];
}

async function serve(t: Test, relay: Relay, web: Record<string, unknown> = {}, pitr: FakePitr | null = new FakePitr()): Promise<Served> {
  const config = validateConfig({ dir: t.testdir({}), web: { port: await freePort(), ...web } }, null);
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const server = new WebServer(sourceOf(relay, pitr), config.web, createLogger('debug', sink), new Telemetry(`test-${config.web.port}`));
  const port = await server.listen();
  t.teardown(() => server.close());
  return { port, pitr: pitr ?? new FakePitr(), logs };
}

interface Answer {
  readonly status: number;
  readonly type: string;
  readonly text: string;
  readonly json: unknown;
}

/** One request on its own connection, every header as given (Origin and Host included). */
function call(port: number, method: string, path: string, opts: { body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Answer> {
  const body = opts.body;
  const headers: Record<string, string> = {
    ...(body !== undefined && { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }),
    ...opts.headers,
  };
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json: unknown = undefined;
        try {
          json = JSON.parse(text);
        } catch {
          // not JSON: 401/403/405 answer text
        }
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Writes `pieces` on one connection, each once the previous was flushed, and returns what came back by the time the
 * server closed it (`close`: ask for that with a request sent after them).
 */
async function exchange(t: Test, port: number, pieces: string[], close = false): Promise<string> {
  const sock = connect(port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  const received: Buffer[] = [];
  sock.on('data', (c: Buffer) => received.push(c));
  sock.on('error', () => undefined); // the server may close before the last piece (413)
  const ended = new Promise((resolve) => sock.once('close', resolve));
  await new Promise<void>((resolve) => sock.once('connect', resolve));
  if (close) pieces = [...pieces, `GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`];
  for (const p of pieces) {
    if (sock.destroyed) break;
    await new Promise<void>((resolve) => sock.write(p, () => resolve()));
  }
  await ended;
  return Buffer.concat(received).toString();
}

const post = (port: number, body: string | Buffer, headers: Record<string, string> = {}): Promise<Answer> => call(port, 'POST', '/pitr', { body, headers });

t.test('the web API', async (t) => {
  const relay = await startRelay();
  t.teardown(() => relay.stop());

  t.test('GET /history: the JSON of pitr.history()', async (t) => {
    const s = await serve(t, relay.relay);
    const res = await call(s.port, 'GET', '/history');
    t.equal(res.status, 200);
    t.match(res.type, /^application\/json/);
    t.same(res.json, s.pitr.history());
  });

  t.test('POST /pitr: each kind of target reaches pitr.open as its PitrTarget; the answer is the listener', async (t) => {
    const s = await serve(t, relay.relay);
    const cases: [string, PitrTarget][] = [
      ['{"offset": 1234}', { kind: 'offset', offset: 1234 }],
      ['{"offset": 0}', { kind: 'offset', offset: 0 }],
      ['{"time": 1738293120000}', { kind: 'time', ms: 1738293120000 }],
      ['{"time": "2025-01-31T03:12:00Z"}', { kind: 'time', ms: Date.UTC(2025, 0, 31, 3, 12) }],
      ['{"time": "2025-01-31T03:12:00.250+01:00"}', { kind: 'time', ms: Date.UTC(2025, 0, 31, 2, 12, 0, 250) }],
      ['{"before": "FLUSHALL"}', { kind: 'before', command: 'FLUSHALL', pattern: null }],
      ['{"before": "del", "pattern": "user:*"}', { kind: 'before', command: 'del', pattern: 'user:*' }],
      ['{"before": "flushdb", "pattern": null}', { kind: 'before', command: 'flushdb', pattern: null }],
    ];
    for (const [body, target] of cases) {
      const before = s.pitr.opened.length;
      const res = await post(s.port, body, { 'content-type': 'application/json; charset=utf-8' });
      t.equal(res.status, 200, body);
      t.match(res.type, /^application\/json/);
      t.same(s.pitr.opened.slice(before), [target], `${body} → ${JSON.stringify(target)}`);
      t.same(res.json, s.pitr.listeners.get((res.json as PitrAnswer).port), 'the answer is what pitr.open returned');
    }
    t.same((await call(s.port, 'GET', '/history')).json, s.pitr.history(), '/history lists the listeners');
  });

  t.test('a malformed body: 400 with the error and its code, nothing opened', async (t) => {
    const s = await serve(t, relay.relay);
    const bad: (string | Buffer)[] = [
      '',
      'offset=12',
      '{"offset": 12',
      '[12]',
      'null',
      '12',
      '{}',
      '{"offset": -1}',
      '{"offset": 1.5}',
      '{"offset": "12"}',
      '{"offset": 9007199254740993}',
      '{"offset": 12, "time": 1}',
      '{"offset": 12, "pattern": "x"}',
      '{"offset": 12, "extra": true}',
      '{"time": "2025-01-31T03:12:00"}',
      '{"time": "2025-02-30T03:12:00Z"}',
      '{"time": "yesterday"}',
      '{"time": -5}',
      '{"before": ""}',
      '{"before": "del user:1"}',
      '{"before": 7}',
      '{"before": "del", "pattern": ""}',
      '{"before": "del", "pattern": 5}',
      Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]),
    ];
    for (const body of bad) {
      const res = await post(s.port, body);
      t.equal(res.status, 400, `${JSON.stringify(body.toString())}: 400`);
      t.match(res.json, { error: String, code: 'RELAY_ERR_WEB_REQUEST' }, 'with a JSON error');
    }
    t.same(s.pitr.opened, [], 'nothing opened');
  });

  t.test('the body is JSON and small: 415 for other types, 413 beyond 4 KiB; nothing opened', async (t) => {
    const s = await serve(t, relay.relay);
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonp']) {
      const res = await post(s.port, '{"offset": 12}', { 'content-type': type });
      t.equal(res.status, 415, type);
      t.match(res.json, { code: 'RELAY_ERR_WEB_REQUEST' });
    }
    const big = JSON.stringify({ offset: 12, pad: 'x'.repeat(5000) });
    const res = await post(s.port, big);
    t.equal(res.status, 413);
    t.match(res.json, { error: /4096 bytes/, code: 'RELAY_ERR_WEB_REQUEST' });
    t.same(s.pitr.opened, []);
  });

  t.test('a body arriving in pieces is read whole; a chunked body past 4 KiB gets 413', async (t) => {
    const s = await serve(t, relay.relay);
    const body = JSON.stringify({ before: 'del', pattern: `${'k'.repeat(1000)}*` });
    const head = `POST /pitr HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
    const pieces = await exchange(t, s.port, [head + body.slice(0, 10), body.slice(10, 600), body.slice(600)]);
    t.match(pieces, /^HTTP\/1\.1 200 OK\r\n/);
    t.same(s.pitr.opened, [{ kind: 'before', command: 'del', pattern: `${'k'.repeat(1000)}*` }]);

    const chunk = (text: string): string => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
    const chunked = `POST /pitr HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const small = await exchange(t, s.port, [chunked + chunk('{"off'), chunk('set": 77}') + '0\r\n\r\n'], true);
    t.match(small, /^HTTP\/1\.1 200 OK\r\n/, 'a chunked body, no Content-Length');
    t.same(s.pitr.opened.at(-1), { kind: 'offset', offset: 77 });
    const big = await exchange(t, s.port, [chunked + chunk(`{"offset": 78, "pad": "${'x'.repeat(3000)}`), chunk(`${'x'.repeat(3000)}"}`) + '0\r\n\r\n']);
    t.match(big, /^HTTP\/1\.1 413 Payload Too Large\r\n/, 'counted as it arrives');
    t.equal(s.pitr.opened.length, 2, 'nothing more opened');
  });

  t.test('a PitrError: 409 with its message (the window) and code; another error: 500 without details', async (t) => {
    const s = await serve(t, relay.relay);
    s.pitr.fail = new PitrError('offset 99 is outside the window: the window is offsets 100..5000');
    const res = await post(s.port, '{"offset": 99}');
    t.equal(res.status, 409);
    t.same(res.json, { error: 'offset 99 is outside the window: the window is offsets 100..5000', code: 'RELAY_ERR_PITR' });
    s.pitr.fail = new Error('disk on fire at /secret/path');
    const boom = await post(s.port, '{"offset": 200}');
    t.equal(boom.status, 500);
    t.match(boom.json, { code: 'RELAY_ERR_INTERNAL' });
    t.notMatch(boom.text, /secret/, 'no internals in the answer');
    t.match(s.logs.find((l) => l['msg'] === 'POST /pitr failed'), { level: 50, err: { message: 'disk on fire at /secret/path' } }, 'logged');
  });

  t.test('DELETE /pitr/<port> closes a listener; 404 when there is none; GET /pitr is 405', async (t) => {
    const s = await serve(t, relay.relay);
    const opened = (await post(s.port, '{"offset": 300}')).json as PitrAnswer;
    const res = await call(s.port, 'DELETE', `/pitr/${opened.port}`);
    t.equal(res.status, 200);
    t.same(res.json, { port: opened.port, closed: true });
    t.same(s.pitr.closed, [opened.port]);
    t.same((s.pitr.history()).listeners, []);
    const again = await call(s.port, 'DELETE', `/pitr/${opened.port}`);
    t.equal(again.status, 404);
    t.match(again.json, { error: new RegExp(`port ${opened.port}`), code: 'RELAY_ERR_PITR' });
    for (const p of ['abc', '0', '65536', '012', '-1']) {
      const r = await call(s.port, 'DELETE', `/pitr/${p}`);
      t.equal(r.status, 400, `/pitr/${p}`);
      t.match(r.json, { code: 'RELAY_ERR_WEB_REQUEST' });
    }
    t.same(s.pitr.closed, [opened.port, opened.port], 'malformed ports reach nothing');
    const get = await call(s.port, 'GET', '/pitr');
    t.equal(get.status, 405);
    t.equal((await call(s.port, 'DELETE', '/pitr')).status, 405);
  });

  t.test('web.token guards /history and /pitr as it guards /status', async (t) => {
    const s = await serve(t, relay.relay, { token: 's3cret' });
    t.equal((await call(s.port, 'GET', '/history')).status, 401);
    t.equal((await call(s.port, 'GET', '/history', { headers: { authorization: 'Bearer wrong' } })).status, 401);
    t.equal((await post(s.port, '{"offset": 300}')).status, 401);
    t.equal((await post(s.port, '{"offset": 300}', { authorization: 'Bearer wrong' })).status, 401);
    t.equal((await call(s.port, 'POST', '/pitr?token=wrong', { body: '{"offset": 300}' })).status, 401);
    t.same(s.pitr.opened, [], 'nothing opened without the token');
    t.equal((await call(s.port, 'GET', '/history', { headers: { authorization: 'Bearer s3cret' } })).status, 200);
    t.equal((await call(s.port, 'GET', '/history?token=s3cret')).status, 200);
    const ok = await post(s.port, '{"offset": 300}', { authorization: 'Bearer s3cret' });
    t.equal(ok.status, 200);
    const port = (ok.json as PitrAnswer).port;
    t.equal((await call(s.port, 'POST', '/pitr?token=s3cret', { body: '{"offset": 301}' })).status, 200, '?token= too');
    t.equal((await call(s.port, 'DELETE', `/pitr/${port}`)).status, 401);
    t.same(s.pitr.closed, [], 'nothing closed without the token');
    t.equal((await call(s.port, 'DELETE', `/pitr/${port}`, { headers: { authorization: 'Bearer s3cret' } })).status, 200);
  });

  t.test('CSRF: a request from a foreign Origin (or Host) is refused before anything opens, token or not', async (t) => {
    const s = await serve(t, relay.relay, { token: 's3cret' });
    const auth = { authorization: 'Bearer s3cret' };
    for (const origin of ['http://evil.example', 'null', `http://127.0.0.1:${s.port + 1}`]) {
      const res = await post(s.port, '{"offset": 300}', { ...auth, origin });
      t.equal(res.status, 403, `POST /pitr, Origin ${origin}`);
      t.equal(res.text, 'forbidden: this Origin is not allowed (web.allowed-origins)\n');
    }
    t.equal((await post(s.port, '{"offset": 300}', { origin: 'http://evil.example' })).status, 403, 'without the token too');
    t.equal((await call(s.port, 'GET', '/history', { headers: { ...auth, origin: 'http://evil.example' } })).status, 403);
    t.equal((await post(s.port, '{"offset": 300}', { ...auth, host: `rebind.evil.example:${s.port}` })).status, 403, 'a rebound Host');
    t.same(s.pitr.opened, [], 'nothing opened');
    const ok = await post(s.port, '{"offset": 300}', { ...auth, origin: `http://127.0.0.1:${s.port}` });
    t.equal(ok.status, 200, "the dashboard's own origin");
    const port = (ok.json as PitrAnswer).port;
    t.equal((await call(s.port, 'DELETE', `/pitr/${port}`, { headers: { ...auth, origin: 'http://evil.example' } })).status, 403, 'DELETE from a foreign Origin');
    t.same(s.pitr.closed, [], 'nothing closed');
  });

  t.test('no PitrApi: 503 with a clear error', async (t) => {
    const s = await serve(t, relay.relay, {}, null);
    for (const [method, path] of [['GET', '/history'], ['POST', '/pitr'], ['DELETE', '/pitr/40001']] as const) {
      const res = await call(s.port, method, path, method === 'POST' ? { body: '{"offset": 300}' } : {});
      t.equal(res.status, 503, `${method} ${path}`);
      t.same(res.json, { error: 'point-in-time replicas are not available on this relay', code: 'RELAY_ERR_PITR' });
    }
  });

  t.test('a client that goes away while its listener opens gets nothing written; the server goes on', async (t) => {
    const s = await serve(t, relay.relay);
    let release = (): void => undefined;
    s.pitr.hold = new Promise((resolve) => (release = resolve));
    const ac = new AbortController();
    const req = request({ host: '127.0.0.1', port: s.port, method: 'POST', path: '/pitr', headers: { 'content-type': 'application/json' }, agent: false, signal: ac.signal });
    req.on('error', () => undefined);
    req.end('{"offset": 700}');
    await waitFor(() => s.pitr.opened.length === 1, { what: 'open called' });
    ac.abort();
    await waitFor(() => s.logs.some((l) => l['msg'] === 'POST /pitr: the client went away while its listener opens'), { what: 'the abort seen' });
    release();
    const line = await waitFor(() => s.logs.find((l) => /went away before the answer/.test(String(l['msg']))), { what: 'the undelivered answer logged' });
    t.match(line, { port: 40001 });
    t.equal((await call(s.port, 'GET', '/history')).status, 200, 'still serving');
  });
});

t.test("the relay's own web server serves its PITR service: an empty window before any sync, and a 409 naming it", async (t) => {
  const relay = await startRelay({ web: { port: await freePort() } });
  t.teardown(() => relay.stop());
  const res = await call(relay.relay.webPort, 'GET', '/history');
  t.equal(res.status, 200);
  t.match(res.json, { firstOffset: -1, lastOffset: -1, snapshots: [], listeners: [] });
  const open = await call(relay.relay.webPort, 'POST', '/pitr', { body: '{"offset": 1}', headers: { 'content-type': 'application/json' } });
  t.equal(open.status, 409);
  t.match(open.json, { code: 'RELAY_ERR_PITR', error: /no point in time can be served/ });
});

browserTest('the dashboard: "restore to here" on a stream row posts its offset, with the token, and shows the port', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close().catch(() => {}));
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const s = await serve(t, relay.relay, { token: 's3cret' });
  // Subscribers opened before the first full sync would be closed by it (a new history).
  await waitFor(() => relay.relay.status().upstream.linkUp, { what: 'the relay streams from the master' });

  // The offset the relay gives the command, as a /stream subscriber of its own sees it.
  const tap = new WebSocket(`ws://127.0.0.1:${s.port}/stream?cmd=set&token=s3cret`);
  t.teardown(() => tap.terminate());
  const seen: { offset: number; args: string[] }[] = [];
  tap.on('message', (d) => seen.push(JSON.parse(String(d)) as { offset: number; args: string[] }));
  await new Promise((resolve, reject) => {
    tap.once('open', resolve);
    tap.once('error', reject);
  });

  const browser = await launchChromium(t);
  const page = await browser.newPage();
  // The URLs the page opens WebSockets on: a URL goes whole into a TLS proxy's access log.
  await page.addInitScript(`window.wsUrls = []; window.WebSocket = class extends WebSocket { constructor(u, p) { super(u, p); window.wsUrls.push(String(u)); } };`);
  await page.goto(`http://127.0.0.1:${s.port}/?token=s3cret`);
  await page.waitForFunction(`document.getElementById('stream-state')?.textContent === 'live'`);
  // Left in the address bar, the token stays in the browser's history and goes in the Referer of every request.
  t.equal(await page.evaluate('location.href'), `http://127.0.0.1:${s.port}/`, 'the page takes the token out of its URL');
  t.equal(await page.evaluate(`localStorage.getItem('psync-relay-token')`), 's3cret', 'and keeps it in localStorage');
  t.notMatch(String(await page.evaluate(`window.wsUrls.join(' ')`)), /s3cret/, 'nor in the URL of /stream, which is live with the token');
  await m.call('SET', 'pitr-key', 'v1');
  const row = await waitFor(() => seen.find((x) => x.args[0] === 'pitr-key'), { what: 'the SET on /stream' });
  await page.waitForFunction(`(document.getElementById('tail')?.textContent ?? '').includes('pitr-key')`);
  const shown = Number(await page.evaluate(`[...document.querySelectorAll('#tail li')].find((li) => li.textContent.includes('pitr-key')).querySelector('.off').textContent.trim()`));
  t.equal(shown, row.offset, 'the row shows the offset of the command');

  await page.click('#tail li:has-text("pitr-key") button.here');
  await page.waitForFunction(`(document.getElementById('pitr-cmd')?.textContent ?? '') !== ''`);
  t.same(s.pitr.opened, [{ kind: 'offset', offset: row.offset }], '"restore to here": the offset of the row, with the token (else 401)');
  const answer = [...s.pitr.listeners.values()][0]!;
  t.equal(String(await page.evaluate(`document.getElementById('pitr-cmd').textContent`)), `REPLICAOF 127.0.0.1 ${answer.port}`, 'a REPLICAOF line to copy');
  t.match(String(await page.evaluate(`document.getElementById('pitr-answer').textContent`)), new RegExp(`port ${answer.port} .*offset ${row.offset} \\(2025-01-31T02:30:00.000Z\\)`));

  if (process.env['DASHBOARD_SCREENSHOT']) await page.screenshot({ path: process.env['DASHBOARD_SCREENSHOT'] });
  await page.click('#pitr-close');
  await page.waitForFunction(`(document.getElementById('pitr-answer')?.textContent ?? '').startsWith('closed')`);
  t.same(s.pitr.closed, [answer.port], 'close listener: DELETE /pitr/<port>');

  await page.click('#tail li:has-text("pitr-key") button.before');
  await page.waitForFunction(`(document.getElementById('pitr-cmd')?.textContent ?? '') !== ''`);
  t.same(s.pitr.opened[1], { kind: 'offset', offset: row.offset - 1 }, '"before": the offset just before the command (the relay settles it on the previous command)');

  s.pitr.fail = new PitrError('offset 3 is outside the window: the window is offsets 100..5000');
  await page.click('#tail li:has-text("pitr-key") button.here');
  await page.waitForFunction(`(document.getElementById('pitr-answer')?.textContent ?? '').includes('outside the window')`);
  t.match(String(await page.evaluate(`document.getElementById('pitr-answer').textContent`)), /restore refused: offset 3 is outside the window.*\(RELAY_ERR_PITR\)/, 'the error, shown');
  t.equal(String(await page.evaluate(`document.getElementById('pitr').className`)), 'bad');
  t.equal(String(await page.evaluate(`document.getElementById('pitr-cmd').textContent`)), '', 'no REPLICAOF line');
});
