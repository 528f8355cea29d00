import t from 'tap';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import uWS from 'uWebSockets.js';
import WebSocket from 'ws';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { freePort } from '../helpers/ports.js';
import { startReplica, waitConverged } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { uwsNative } from '../../src/web/server.js';

t.teardown(stopAll);

async function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { connection: 'close', ...headers } });
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
}

interface Family {
  type: string;
  help: string;
  samples: Map<string, number>;
}

/**
 * A strict reader of the Prometheus text format 0.0.4: every family has one HELP and one TYPE before its samples,
 * samples of a family are contiguous, names, label names and escapes are valid, no series repeats. Throws on anything else.
 */
function parseProm(text: string): Map<string, Family> {
  const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
  const families = new Map<string, Family>();
  const done = new Set<string>();
  let current: string | null = null;
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    const family = (name: string): Family => {
      if (!NAME.test(name)) throw new Error(`bad metric name, ${where}`);
      if (current !== name) {
        if (current !== null) done.add(current);
        if (done.has(name)) throw new Error(`family ${name} is not contiguous, ${where}`);
        current = name;
      }
      let f = families.get(name);
      if (!f) families.set(name, (f = { type: '', help: '', samples: new Map() }));
      return f;
    };
    if (line === '') throw new Error(`empty line, ${where}`);
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]!);
      if (f.samples.size > 0) throw new Error(`${meta[1]} after samples, ${where}`);
      if (meta[1] === 'HELP') {
        if (f.help) throw new Error(`second HELP, ${where}`);
        if (/\\[^\\n]/.test(meta[3]!.replace(/\\\\/g, ''))) throw new Error(`bad HELP escape, ${where}`);
        f.help = meta[3]!;
      } else {
        if (f.type) throw new Error(`second TYPE, ${where}`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(meta[3]!)) throw new Error(`bad TYPE, ${where}`);
        f.type = meta[3]!;
      }
      return;
    }
    if (line.startsWith('#')) return;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`bad sample, ${where}`);
    const f = family(m[1]!);
    if (!f.type) throw new Error(`sample before TYPE, ${where}`);
    let labels = '';
    if (m[2]) {
      const body = m[2].slice(1, -1);
      const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/y;
      const names = new Set<string>();
      let pos = 0;
      while (pos < body.length) {
        LABEL.lastIndex = pos;
        const lm = LABEL.exec(body);
        if (!lm) throw new Error(`bad labels, ${where}`);
        if (names.has(lm[1]!)) throw new Error(`repeated label, ${where}`);
        names.add(lm[1]!);
        pos = LABEL.lastIndex;
        if (lm[3] === ',' && pos === body.length) throw new Error(`trailing comma, ${where}`);
      }
      labels = m[2];
    }
    const v = m[3]!;
    if (!/^(NaN|[+-]Inf|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$/.test(v)) throw new Error(`bad value, ${where}`);
    if (f.samples.has(labels)) throw new Error(`repeated series, ${where}`);
    f.samples.set(labels, v === 'NaN' ? NaN : v.endsWith('Inf') ? (v.startsWith('-') ? -Infinity : Infinity) : Number(v));
  });
  return families;
}

function sample(fams: Map<string, Family>, name: string, labels = ''): number {
  const v = fams.get(name)?.samples.get(labels);
  if (v === undefined) throw new Error(`no sample ${name}${labels}`);
  return v;
}

t.test('the native uWebSockets.js addon is the one loaded, not its Node.js fallback', async (t) => {
  t.equal(typeof (uWS as unknown as Record<string, unknown>)['SSLApp'], 'function', 'native exports include SSLApp');
  t.equal(uwsNative, true);
  const require = createRequire(import.meta.url);
  t.ok(
    Object.keys(require.cache).some((k) => /uws_.*\.node$/.test(k)),
    'a uws_*.node binary is in the module cache',
  );
});

t.test('a non-loopback bind without a token refuses to start', async (t) => {
  await t.rejects(startRelay({ web: { port: await freePort(), bind: '0.0.0.0' } }), { code: 'RELAY_ERR_CONFIG', path: 'web.token' });
});

t.test('web.token guards /status, /metrics and /stream; health, readiness and the page stay open', async (t) => {
  const relay = await startRelay({ web: { port: await freePort(), token: 's3cret' } });
  t.teardown(() => relay.stop());
  const port = relay.relay.webPort;
  t.equal((await get(port, '/status')).status, 401);
  t.equal((await get(port, '/status', { authorization: 'Bearer wrong' })).status, 401);
  t.equal((await get(port, '/status', { authorization: 'Bearer s3cret' })).status, 200);
  t.equal((await get(port, '/status?token=s3cret')).status, 200);
  t.equal((await get(port, '/metrics')).status, 401);
  t.equal((await get(port, '/metrics', { authorization: 'Bearer s3cret' })).status, 200);
  t.equal((await get(port, '/healthz')).status, 200);
  t.equal((await get(port, '/readyz')).status, 503, 'no upstream: not ready');
  t.equal((await get(port, '/')).status, 200);
  t.equal((await get(port, '/nope')).status, 404);
  const refused = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/stream`);
    ws.on('unexpected-response', (req, res) => {
      req.destroy();
      resolve(res.statusCode ?? 0);
    });
  });
  t.equal(refused, 401, '/stream without the token');
  const ws = new WebSocket(`ws://127.0.0.1:${port}/stream?token=s3cret`);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  t.equal(ws.readyState, WebSocket.OPEN, '/stream with ?token= opens');
  ws.close();
});

t.test('the dashboard page', async (t) => {
  const relay = await startRelay({ web: { port: await freePort() } });
  t.teardown(() => relay.stop());
  const page = await get(relay.relay.webPort, '/');
  t.equal(page.status, 200);
  t.match(page.type, /^text\/html/);
  for (const id of ['link-state', 'replid', 'replid2', 'master-repl-offset', 'log-range', 'snapshot', 'replicas', 'chart', 'tail', 'f-cmd', 'f-key', 'f-db', 'f-internal', 'token']) {
    t.match(page.body, new RegExp(`id="${id}"`), `has #${id}`);
  }
  const script = /<script>([\s\S]*)<\/script>/.exec(page.body)?.[1] ?? '';
  t.doesNotThrow(() => new Function(script), 'its script parses');

  // Without a browser: run the page script against a stub DOM, the real /status and the real /stream.
  const port = relay.relay.webPort;
  const elements = new Map<string, Record<string, unknown>>();
  const element = (): Record<string, unknown> => {
    const el: Record<string, unknown> = {
      textContent: '', className: '', value: '', checked: false, childElementCount: 0, lastElementChild: null,
      clientWidth: 800, clientHeight: 180, width: 800, height: 180,
      addEventListener: () => {}, appendChild: () => {}, prepend: () => {}, replaceChildren: () => {}, remove: () => {},
      getContext: () => new Proxy({}, { get: () => () => {} }),
    };
    return el;
  };
  const byId = (id: string) => {
    if (!elements.has(id)) elements.set(id, element());
    return elements.get(id);
  };
  const timers: NodeJS.Timeout[] = [];
  const sockets: WebSocket[] = [];
  const sandbox = {
    document: { getElementById: byId, createElement: element, createTextNode: () => ({}) },
    location: { search: '', protocol: 'http:', host: `127.0.0.1:${port}`, pathname: '/' },
    localStorage: { getItem: () => null, setItem: () => {} },
    window: { devicePixelRatio: 1 },
    performance,
    URLSearchParams,
    fetch: (url: string, init: { headers?: Record<string, string> } = {}) =>
      fetch(`http://127.0.0.1:${port}/${url}`, { headers: { ...init.headers, connection: 'close' } }),
    WebSocket: class extends WebSocket {
      constructor(url: string) {
        super(url);
        sockets.push(this);
        this.on('open', () => (this as unknown as { onopen?: () => void }).onopen?.());
      }
    },
    setInterval: (fn: () => void, ms: number) => timers.push(setInterval(fn, ms)),
    setTimeout: () => 0,
  };
  t.teardown(() => {
    for (const x of timers) clearInterval(x);
    for (const w of sockets) w.terminate();
  });
  new Function(...Object.keys(sandbox), script)(...Object.values(sandbox));
  await waitFor(() => byId('replid')!['textContent'] === relay.relay.ids.replid, { what: 'the page script shows the replid' });
  t.equal(byId('link-state')!['textContent'], 'none', 'and the link state');
  const streamState = await waitFor(() => byId('stream-state')!['textContent'] === 'live' && 'live', { what: 'the page tails /stream' });
  t.equal(streamState, 'live', 'the page script opens /stream');
  t.equal(sockets.length, 1, 'one WebSocket');
});

/** Loads `playwright-core` (a devDependency; it drives the system's Chromium, it downloads no browser). */
async function loadPlaywright(): Promise<PlaywrightLike | null> {
  try {
    const name = 'playwright-core';
    return (await import(name)) as PlaywrightLike;
  } catch {
    return null;
  }
}
interface PlaywrightLike {
  chromium: {
    launch(o: object): Promise<{
      close(): Promise<void>;
      newPage(): Promise<{
        goto(url: string): Promise<unknown>;
        waitForFunction(expr: string): Promise<unknown>;
        evaluate(expr: string): Promise<unknown>;
        screenshot(o: { path: string }): Promise<unknown>;
      }>;
    }>;
  };
}

const CHROMIUM = '/usr/bin/chromium';
const playwright = await loadPlaywright();
const noBrowser = [existsSync(CHROMIUM) ? '' : `${CHROMIUM} not found`, playwright ? '' : 'playwright-core not installed'].filter(Boolean).join(', ');
// Outside CI a missing browser skips the test, saying why; in CI (CI=true) it fails: the dashboard must not go
// untested there without anyone noticing.
const inCi = /^(1|true)$/i.test(process.env['CI'] ?? '');
if (noBrowser && !inCi) t.comment(`headless dashboard test skipped: ${noBrowser}`);

t.test('a headless Chromium shows the link, the replicas and the live command tail', { skip: noBrowser && !inCi ? `needs a browser: ${noBrowser}` : false }, async (t) => {
  if (noBrowser) {
    t.fail(`CI=${process.env['CI']}: the dashboard's browser test cannot run (${noBrowser}); install chromium (.ci/run does)`);
    return;
  }
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close().catch(() => {}));
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, web: { port: await freePort() } });
  t.teardown(() => relay.stop());
  const replica = await startReplica(relay.port);
  t.teardown(() => replica.stop());
  const rc = await replica.client();
  t.teardown(() => rc.close().catch(() => {}));
  await waitConverged(m, [rc]);
  const browser = await playwright!.chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${relay.relay.webPort}/`);
  const text = async (id: string): Promise<string> => String(await page.evaluate(`document.getElementById(${JSON.stringify(id)})?.textContent ?? ''`));
  await page.waitForFunction(`document.getElementById('replid')?.textContent === ${JSON.stringify(relay.relay.ids.replid)}`);
  t.equal(await text('replid'), relay.relay.ids.replid, 'the page shows the replid');
  await page.waitForFunction(`/up|connected/i.test(document.getElementById('link-state')?.textContent ?? '')`);
  t.match(await text('link-state'), /up|connected/i, 'the page shows the upstream link up');
  await page.waitForFunction(`(document.getElementById('replicas')?.textContent ?? '').includes('online')`);
  t.match(await text('replicas'), new RegExp(`:${replica.port}online`), 'the replica table lists the replica, online');
  // The tail subscribes to /stream: a write on the master appears in the page.
  await waitFor(async () => {
    await m.call('SET', 'dashboard-key', 'shown');
    return (await page.evaluate(`(document.getElementById('tail')?.textContent ?? '').includes('dashboard-key')`)) === true || undefined;
  }, { what: 'the command tail shows the write' });
  t.match(await text('tail'), /dashboard-key/, 'the live tail shows the command written to the master');
  if (process.env['DASHBOARD_SCREENSHOT']) await page.screenshot({ path: process.env['DASHBOARD_SCREENSHOT'] });
});

t.test('/status, /metrics and /readyz follow the workload and the upstream link', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close().catch(() => {}));
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, web: { port: await freePort() } });
  t.teardown(() => relay.stop());
  const port = relay.relay.webPort;
  await waitFor(async () => (await get(port, '/readyz')).status === 200, { what: 'relay ready' });
  const replica = await startReplica(relay.port);
  t.teardown(() => replica.stop());
  const rc = await replica.client();
  t.teardown(() => rc.close().catch(() => {}));
  await waitConverged(m, [rc]);

  const status = JSON.parse((await get(port, '/status')).body);
  t.equal(status.replid, relay.relay.ids.replid);
  t.equal(status.upstream.linkUp, true);
  t.equal(status.upstream.port, master.port);
  t.equal(status.replicas.length, 1);
  t.match(status.replicas[0], { state: 'online', lagBytes: Number, lagSeconds: Number, ackOffset: Number, offset: Number, ip: String });
  t.match(status, { log: { firstOffset: Number, endOffset: Number, size: Number }, snapshot: { offset: Number, usable: true }, stats: { streamCommands: Object } });

  const before = parseProm((await get(port, '/metrics')).body);
  for (const [name, f] of before) {
    t.ok(name.startsWith('psync_relay_'), `${name} is prefixed`);
    t.ok(f.help.length > 0, `${name} has HELP`);
    if (f.type === 'counter') t.ok(name.endsWith('_total'), `counter ${name} ends in _total`);
  }
  const ws = new WebSocket(`ws://127.0.0.1:${port}/stream`);
  let received = 0;
  ws.on('message', () => received++);
  await new Promise((r) => ws.once('open', r));

  const N = 250;
  const cmds: string[][] = [];
  for (let i = 0; i < N; i++) cmds.push(['SET', `met:${i}`, 'x'.repeat(100)]);
  for (let i = 0; i < 20; i++) cmds.push(['HSET', 'met:h', `f${i}`, 'v']);
  await m.pipeline(cmds);
  await waitConverged(m, [rc]);
  await waitFor(() => received >= N + 20, { what: 'stream messages' });
  const afterRes = await get(port, '/metrics');
  t.match(afterRes.type, /^text\/plain; version=0\.0\.4/);
  const after = parseProm(afterRes.body);
  t.equal(sample(after, 'psync_relay_stream_commands_total', '{cmd="set"}') - (before.get('psync_relay_stream_commands_total')?.samples.get('{cmd="set"}') ?? 0), N, 'SETs counted by name');
  t.ok(sample(after, 'psync_relay_stream_commands_total', '{cmd="hset"}') >= 20);
  t.ok(sample(after, 'psync_relay_upstream_bytes_total') - sample(before, 'psync_relay_upstream_bytes_total') >= N * 100, 'bytes in moved');
  t.ok(sample(after, 'psync_relay_repl_output_bytes_total') - sample(before, 'psync_relay_repl_output_bytes_total') >= N * 100, 'bytes out to replicas moved');
  t.ok(sample(after, 'psync_relay_net_output_bytes_total') > sample(before, 'psync_relay_net_output_bytes_total'));
  t.equal(sample(after, 'psync_relay_master_repl_offset'), relay.relay.log.endOffset);
  t.equal(sample(after, 'psync_relay_connected_replicas'), 1);
  t.equal(sample(after, 'psync_relay_sync_full_total'), 1, 'one full sync served');
  t.equal(sample(after, 'psync_relay_upstream_link_up'), 1);
  t.equal(sample(after, 'psync_relay_upstream_link_state', '{state="connected"}'), 1);
  t.equal(sample(after, 'psync_relay_snapshot_usable'), 1);
  t.equal(after.get('psync_relay_replica_lag_bytes')?.samples.size, 1, 'one lag series per replica');
  t.equal(after.get('psync_relay_replica_lag_seconds')?.samples.size, 1);
  t.equal(sample(after, 'psync_relay_web_subscribers', '{format="json"}'), 1);
  t.ok(sample(after, 'psync_relay_web_messages_sent_total') >= N + 20, 'WebSocket messages counted');
  t.equal(sample(after, 'psync_relay_web_dropped_messages_total'), 0);
  t.equal(sample(after, 'psync_relay_web_decoding'), 1, 'decoding on while someone subscribes');
  ws.close();
  await waitFor(async () => sample(parseProm((await get(port, '/metrics')).body), 'psync_relay_web_decoding') === 0, { what: 'decoding off' });

  await master.stop();
  await waitFor(async () => (await get(port, '/readyz')).status === 503, { what: '/readyz 503 with upstream down' });
  t.match(JSON.parse((await get(port, '/readyz')).body), { ready: false, linkUp: false, snapshot: true });
  t.equal(sample(parseProm((await get(port, '/metrics')).body), 'psync_relay_upstream_link_up'), 0);
  t.equal((await get(port, '/healthz')).status, 200, 'still alive');
});

t.test('the metrics parser used here is strict', async (t) => {
  t.throws(() => parseProm('x 1'), /newline/);
  t.throws(() => parseProm('x 1\n'), /before TYPE/);
  t.throws(() => parseProm('# TYPE x gauge\nx{a="1} 1\n'), /bad labels/);
  t.throws(() => parseProm('# TYPE x gauge\nx{a="1",} 1\n'), /trailing comma/);
  t.throws(() => parseProm('# TYPE x gauge\nx 1\nx 2\n'), /repeated series/);
  t.throws(() => parseProm('# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx{a="b"} 1\n'), /not contiguous/);
  t.throws(() => parseProm('# TYPE x gauge\nx one\n'), /bad value/);
  t.ok(parseProm('# HELP x a \\\\ b\n# TYPE x gauge\nx{a="q\\"\\n"} +Inf\n').get('x'));
});
