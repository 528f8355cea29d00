/**
 * The web port against browsers on other sites, end to end with a relay process, curl and a WebSocket client:
 * DNS rebinding (a foreign Host) and cross-site WebSocket hijacking (a foreign Origin) get 403 and no data; the
 * allow-lists open exactly what they name; a page on another site cannot frame the dashboard (clickjacking);
 * /stream subscribers are capped; /healthz says 503 once shutdown begins.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { freePort } from '../helpers/ports.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { RedisClient } from '../helpers/redis-client.js';
import { waitFor } from '../helpers/wait.js';
import { loggedLine, logLines, rawConnect, writeConfig } from '../helpers/raw.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { createServer } from 'node:http';
import { once } from 'node:events';
import { networkInterfaces } from 'node:os';
import { browserTest, launchChromium, type FrameLike } from '../helpers/browser.js';

t.teardown(stopAll);
const run = promisify(execFile);

async function relay(t: Test, config: Record<string, unknown> = {}) {
  const port = await freePort();
  const webPort = await freePort();
  const dir = t.testdir({});
  const file = writeConfig(dir, { dir, log: { disk: 0 }, upstream: { host: null }, ...config, web: { port: webPort, ...(config['web'] as object | undefined) } });
  const r = await startRelayProcess(['--config', file, '--port', String(port)]);
  t.teardown(() => r.stop());
  return { ...r, webPort };
}

/**
 * One headless Chromium (with the same switches) for the browser tests, launched by the first and closed at the end
 * of the file: each test opens its own page, in a context of its own (no cookie or cache shared).
 */
let chromium: ReturnType<typeof launchChromium> | undefined;
function sharedChromium(): ReturnType<typeof launchChromium> {
  // Local-network-access checks off: what a browser without them (Firefox, Safari) does; the relay must not rely on them.
  chromium ??= launchChromium(t, ['--host-resolver-rules=MAP evil.test 127.0.0.1', '--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests']);
  return chromium;
}

/** A new page of the shared Chromium, closed when `t` ends (with whatever it still runs: the dashboard polls). */
async function newTab(t: Test) {
  const tab = await (await sharedChromium()).newPage();
  t.teardown(() => (tab as unknown as { close(): Promise<void> }).close());
  return tab;
}

/** curl: status code and body, with the given Host (and Origin) headers. */
async function curl(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const args = ['-s', '-w', '\n%{http_code}', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), `http://127.0.0.1:${port}${path}`];
  const { stdout } = await run('curl', args);
  const i = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) };
}

/** curl -i: the status line and headers of a GET. */
async function curlHeaders(port: number, path: string): Promise<string> {
  const { stdout } = await run('curl', ['-s', '-o', '/dev/null', '-D', '-', `http://127.0.0.1:${port}${path}`]);
  return stdout.replace(/\r/g, '');
}

/** Opens /stream; resolves with 'open' or the HTTP status of the refused upgrade. */
function openStream(port: number, opts: { origin?: string; host?: string } = {}): Promise<{ result: 'open' | number; ws: WebSocket; messages: string[] }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/stream`, { ...(opts.origin && { origin: opts.origin }), ...(opts.host && { headers: { host: opts.host } }) });
  const messages: string[] = [];
  ws.on('message', (m) => messages.push(String(m)));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ result: 'open', ws, messages }));
    ws.once('unexpected-response', (req, res) => {
      req.destroy();
      resolve({ result: res.statusCode ?? 0, ws, messages });
    });
    ws.once('error', reject);
  });
}

t.test('DNS rebinding: a foreign Host gets 403 and no data on every path; IPs, localhost and allowed names are served', async (t) => {
  const r = await relay(t, { web: { 'allowed-hosts': ['relay.example.com'] } });
  for (const path of ['/status', '/metrics', '/healthz', '/readyz', '/', '/nope']) {
    const res = await curl(r.webPort, path, { host: `rebind.evil.example:${r.webPort}` });
    t.equal(res.status, 403, `${path} with a foreign Host`);
    t.equal(res.body, 'forbidden: this Host is not allowed (web.allowed-hosts)\n', 'and no data');
  }
  for (const host of [`127.0.0.1:${r.webPort}`, `localhost:${r.webPort}`, 'relay.example.com', `RELAY.example.com:${r.webPort}`, '[::1]:80']) {
    t.equal((await curl(r.webPort, '/status', { host })).status, 200, `Host ${host}`);
  }
  t.match(JSON.parse((await curl(r.webPort, '/status')).body), { replid: String }, 'curl with its own Host gets the status');
  const ws = await openStream(r.webPort, { host: `rebind.evil.example:${r.webPort}` });
  t.equal(ws.result, 403, '/stream with a foreign Host');
  t.match(await loggedLine(r, /web request refused/), { level: 40, limit: 'web.allowed-hosts', host: `rebind.evil.example:${r.webPort}` });
  t.match((await curl(r.webPort, '/metrics')).body, /^psync_relay_web_refused_total\{reason="host"\} 7$/m, 'the 7 refusals counted by reason');
});

t.test('cross-site WebSocket hijacking: a foreign Origin gets 403 and no message; same-origin and allowed origins open', async (t) => {
  const r = await relay(t, { web: { 'allowed-origins': ['https://ops.example.com'] } });
  const evil = await openStream(r.webPort, { origin: 'http://evil.example' });
  t.equal(evil.result, 403, 'Origin http://evil.example');
  t.same(evil.messages, []);
  for (const origin of ['null', `http://127.0.0.1:${r.webPort + 1}`, `http://localhost:${r.webPort}`]) {
    t.equal((await openStream(r.webPort, { origin })).result, 403, `Origin ${origin}: not the page's own origin`);
  }
  const opened: WebSocket[] = [];
  t.teardown(() => opened.forEach((w) => w.terminate()));
  for (const origin of [`http://127.0.0.1:${r.webPort}`, 'https://ops.example.com', undefined]) {
    const s = await openStream(r.webPort, origin === undefined ? {} : { origin });
    t.equal(s.result, 'open', `Origin ${origin ?? '(none: not a browser)'}`);
    opened.push(s.ws);
  }
  t.equal((await curl(r.webPort, '/status', { origin: 'http://evil.example' })).status, 403, 'a cross-site fetch of /status too');
  t.match(await loggedLine(r, /web request refused/), { limit: 'web.allowed-origins', origin: 'http://evil.example' });
  t.match(JSON.parse((await curl(r.webPort, '/status')).body), { web: { refused: { host: 0, origin: 5 } } }, '/status counts the 5 refusals by reason');
  // A tag or a no-cors fetch on a page on another site (or another port of this host) sends no Origin, only Sec-Fetch-Site.
  const fetchMeta = (site: string, mode: string, dest: string) => ({ 'sec-fetch-site': site, 'sec-fetch-mode': mode, 'sec-fetch-dest': dest });
  for (const [site, mode, dest] of [['cross-site', 'no-cors', 'image'], ['same-site', 'no-cors', 'script'], ['cross-site', 'navigate', 'object'], ['cross-site', 'navigate', 'iframe']]) {
    const res = await curl(r.webPort, '/status', fetchMeta(site!, mode!, dest!));
    t.equal(res.status, 403, `Sec-Fetch-Site ${site}, ${mode} ${dest}: 403`);
    t.equal(res.body, 'forbidden: a page on another site may not load this (web.allowed-origins)\n', 'and no data');
  }
  t.equal((await curl(r.webPort, '/', fetchMeta('cross-site', 'navigate', 'document'))).status, 200, 'a link from another site to the dashboard opens it');
  t.equal((await curl(r.webPort, '/status', fetchMeta('same-origin', 'cors', 'empty'))).status, 200, "the dashboard's own fetch");
  t.equal((await curl(r.webPort, '/status', fetchMeta('none', 'navigate', 'document'))).status, 200, 'a typed URL or a bookmark');
  t.equal((await curl(r.webPort, '/status', { ...fetchMeta('cross-site', 'cors', 'empty'), origin: 'https://ops.example.com' })).status, 200, 'an allowed Origin from another site');
  const line = await waitFor(() => logLines(r.logs(), /web request refused/).find((l) => l['site'] !== undefined), { what: 'the cross-site refusal logged' });
  t.match(line, { level: 40, limit: 'web.allowed-origins', site: 'cross-site', url: '/status' }, 'logged with the key to change');
});

browserTest('clickjacking: a page on another site cannot show the dashboard in a frame, so a click it steals opens nothing', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close().catch(() => {}));
  const r = await relay(t, { upstream: { host: '127.0.0.1', port: master.port } });
  await waitFor(async () => (await curl(r.webPort, '/readyz')).status === 200, { what: 'the relay is ready' });
  const page = await curlHeaders(r.webPort, '/');
  t.match(page, /^x-frame-options: DENY$/im, 'the page says: no frame (X-Frame-Options)');
  t.match(page, /^content-security-policy: .*frame-ancestors 'none'/im, 'and frame-ancestors (CSP)');

  // The attacker's page (http://evil.test/, any site) lays the dashboard in a transparent frame over its own bait.
  const evil = createServer((_req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(`<!doctype html><p>Click to win</p><iframe src="http://127.0.0.1:${r.webPort}/" style="opacity:0.01" width="1200" height="800" onload="window.framed = true"></iframe>`);
  });
  evil.listen(0, '127.0.0.1');
  await once(evil, 'listening');
  t.teardown(() => evil.close());
  const evilPort = (evil.address() as { port: number }).port;
  const tab = await newTab(t);
  await tab.goto(`http://evil.test:${evilPort}/`);
  await tab.waitForFunction('window.framed === true');
  let dashboard: FrameLike | null = null;
  for (const frame of tab.frames()) {
    if (frame !== tab.mainFrame() && (await frame.evaluate(`document.getElementById('tail') !== null`).catch(() => false)) === true) dashboard = frame;
  }
  if (dashboard !== null) {
    // The dashboard runs inside the attacker's page: the click the bait steals lands on "restore to here".
    const frame = dashboard;
    await frame.waitForFunction(`document.getElementById('stream-state')?.textContent === 'live'`);
    await waitFor(async () => {
      await m.call('SET', 'clickjacked', 'v');
      return (await frame.evaluate(`document.querySelector('#tail button.here') !== null`)) === true;
    }, { what: 'a row to restore in the framed dashboard' });
    await frame.click('#tail button.here');
    await frame.waitForFunction(`/port|refused|failed/.test(document.getElementById('pitr-answer')?.textContent ?? '')`);
  }
  t.equal(dashboard?.url() ?? null, null, 'the dashboard does not render inside a page from another site');
  const history = JSON.parse((await curl(r.webPort, '/history')).body) as { listeners: unknown[] };
  t.same(history.listeners, [], 'no point-in-time listener was opened');
});

/**
 * A page on another site (evil.test) loads `http://<host>:<port>/status?token=` in `<object>`, `<img>` and
 * `<script>`, with a guess and with the right token: the load or error event each tag saw, all such a page can see.
 */
async function tokenProbes(t: Test, tab: Awaited<ReturnType<typeof newTab>>, host: string, port: number): Promise<Record<string, { wrong: string; right: string }>> {
  const evil = createServer((_req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(`<!doctype html><body><script>
      const probe = (tag, token) => new Promise((resolve) => {
        const el = document.createElement(tag);
        const url = 'http://${host}:${port}/status?token=' + token;
        el.onload = () => resolve('load');
        el.onerror = () => resolve('error');
        if (tag === 'object') el.data = url; else el.src = url;
        document.body.appendChild(el);
      });
      window.probes = (async () => {
        const out = {};
        for (const tag of ['object', 'img', 'script']) out[tag] = { wrong: await probe(tag, 'a-guess'), right: await probe(tag, 'right-token') };
        return out;
      })();
    </script>`);
  });
  evil.listen(0, '127.0.0.1');
  await once(evil, 'listening');
  t.teardown(() => evil.close());
  await tab.goto(`http://evil.test:${(evil.address() as { port: number }).port}/`);
  return (await tab.evaluate('window.probes')) as Record<string, { wrong: string; right: string }>;
}

browserTest('a page on another site cannot tell a right web.token from a wrong one by loading /status in <object>, <img> or <script>', async (t) => {
  const [r, tab] = await Promise.all([relay(t, { web: { token: 'right-token' } }), newTab(t)]);
  const probes = await tokenProbes(t, tab, '127.0.0.1', r.webPort);
  for (const [tag, seen] of Object.entries(probes)) t.equal(seen.right, seen.wrong, `<${tag}>: the same event for the right token as for a guess (${seen.wrong})`);
  t.notMatch(r.logs(), /wrong web\.token/, 'refused before the token is looked at');
  t.equal((await curl(r.webPort, '/status', { authorization: 'Bearer right-token' })).status, 200, 'the token still opens /status to a client that is not a page on another site');
});

browserTest('at an address that is not loopback (no Sec-Fetch-Site), a page on another site still cannot tell a right web.token from a wrong one', async (t) => {
  // Browsers send Sec-Fetch-* only to trustworthy origins (https, loopback): over plain http to the machine's own
  // network address the request looks like any tool's, and only the answer's headers (no frame) keep <object> mute.
  const address = Object.values(networkInterfaces())
    .flat()
    .find((a) => a?.family === 'IPv4' && !a.internal)?.address;
  if (address === undefined) {
    t.fail('this machine has no IPv4 address but loopback to reach the relay at');
    return;
  }
  const [r, tab] = await Promise.all([relay(t, { web: { token: 'right-token', bind: address } }), newTab(t)]);
  const probes = await tokenProbes(t, tab, address, r.webPort);
  for (const [tag, seen] of Object.entries(probes)) t.equal(seen.right, seen.wrong, `<${tag}>: the same event for the right token as for a guess (${seen.wrong})`);
  t.match(r.logs(), /wrong web\.token/, 'the guess did reach the token check: no Sec-Fetch-Site refused it first');
});

t.test('web.max-subscribers: one more /stream subscriber gets 503; a slot frees when one leaves', async (t) => {
  const r = await relay(t, { web: { 'max-subscribers': 2 } });
  const a = await openStream(r.webPort);
  const b = await openStream(r.webPort);
  t.teardown(() => [a, b].forEach((s) => s.ws.terminate()));
  t.equal((await openStream(r.webPort)).result, 503, 'the third is refused');
  t.match(await loggedLine(r, /subscriber refused/), { limit: 'web.max-subscribers', value: 2 });
  a.ws.close();
  await waitFor(async () => {
    const c = await openStream(r.webPort);
    c.ws.terminate();
    return c.result === 'open';
  }, { what: 'a subscriber opens once one left' });
});

t.test('/healthz and /readyz answer 503 once shutdown begins, while replicas are still given time', async (t) => {
  const master = await startRedis();
  const r = await relay(t, { upstream: { host: '127.0.0.1', port: master.port }, 'shutdown-timeout': 60 });
  await waitFor(async () => (await curl(r.webPort, '/readyz')).status === 200, { what: 'the relay is ready' });
  // A replica that never acknowledges: shutdown waits for it (up to shutdown-timeout).
  const replica = await rawConnect(r.port, '127.0.0.1', { send: encodeCommand(['PSYNC', '?', '-1']) });
  t.teardown(() => replica.socket.destroy());
  const admin = await RedisClient.connect(r.port);
  await waitFor(async () => /slave0:.*state=online/.test(await admin.callString('INFO', 'replication')), { what: 'the replica is online' });
  const m = await master.client();
  await m.call('SET', 'k', 'v');
  await m.close();
  await waitFor(async () => Number((await admin.info('replication'))['master_repl_offset']) > 0, { what: 'the relay has stream bytes the replica never acknowledges' });
  await admin.close();
  t.equal((await curl(r.webPort, '/healthz')).status, 200);
  r.proc.kill('SIGTERM');
  const res = await waitFor(async () => {
    const h = await curl(r.webPort, '/healthz');
    return h.status === 503 && h;
  }, { what: '/healthz says 503' });
  t.equal(res.body, 'shutting down\n');
  t.equal((await curl(r.webPort, '/readyz')).status, 503);
  t.equal(await r.stop('SIGTERM'), 0, 'a second signal ends the wait; exit 0');
});
