import t from 'tap';
import { createRequire } from 'node:module';
import uWS from 'uWebSockets.js';
import WebSocket from 'ws';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { freePort } from '../helpers/ports.js';
import { startReplica, waitConverged } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { infoOf } from '../helpers/failover.js';
import { parseProm, sample } from '../helpers/prom-text.js';
import { uwsNative } from '../../src/web/server.js';
import { browserTest, launchChromium } from '../helpers/browser.js';

t.teardown(stopAll);

async function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { connection: 'close', ...headers } });
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
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
  // As the dashboard sends it: a subprotocol, so the token is not in the URL a proxy logs.
  const offer = (token: string) => ['psync-relay', `psync-relay.token.${Buffer.from(token).toString('base64url')}`];
  const viaProtocol = new WebSocket(`ws://127.0.0.1:${port}/stream`, offer('s3cret'));
  await new Promise((resolve, reject) => {
    viaProtocol.once('open', resolve);
    viaProtocol.once('error', reject);
  });
  t.equal(viaProtocol.protocol, 'psync-relay', '/stream with the token as a subprotocol opens, answered psync-relay (not the token)');
  viaProtocol.close();
  const wrong = await new Promise<number>((resolve) => {
    const w = new WebSocket(`ws://127.0.0.1:${port}/stream`, offer('guess'));
    w.on('unexpected-response', (req, res) => {
      req.destroy();
      resolve(res.statusCode ?? 0);
    });
  });
  t.equal(wrong, 401, 'a wrong token as a subprotocol');
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
  const replid = (await infoOf(relay.port))['master_replid'];
  new Function(...Object.keys(sandbox), script)(...Object.values(sandbox));
  await waitFor(() => byId('replid')!['textContent'] === replid, { what: 'the page script shows the replid (INFO master_replid)' });
  t.equal(byId('link-state')!['textContent'], 'none', 'and the link state');
  const streamState = await waitFor(() => byId('stream-state')!['textContent'] === 'live' && 'live', { what: 'the page tails /stream' });
  t.equal(streamState, 'live', 'the page script opens /stream');
  t.equal(sockets.length, 1, 'one WebSocket');
});

browserTest('a headless Chromium shows the link, the replicas and the live command tail', async (t) => {
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
  const browser = await launchChromium(t);
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${relay.relay.webPort}/`);
  const text = async (id: string): Promise<string> => String(await page.evaluate(`document.getElementById(${JSON.stringify(id)})?.textContent ?? ''`));
  const replid = (await infoOf(relay.port))['master_replid'];
  await page.waitForFunction(`document.getElementById('replid')?.textContent === ${JSON.stringify(replid)}`);
  t.equal(await text('replid'), replid, 'the page shows the replid (INFO master_replid)');
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

browserTest('the dashboard runs only its own code: a script or a style attribute added to the page is refused (Content-Security-Policy); test tools can still poll it', async (t) => {
  const relay = await startRelay({ web: { port: await freePort() } });
  t.teardown(() => relay.stop());
  const browser = await launchChromium(t);
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${relay.relay.webPort}/`);
  const replid = (await infoOf(relay.port))['master_replid'];
  // Its own script runs: it polled /status and shows the replid.
  await page.waitForFunction(`document.getElementById('replid')?.textContent === ${JSON.stringify(replid)}`);
  const injected = await page.evaluate(`(() => {
    const s = document.createElement('script');
    s.textContent = 'window.injected = 1';
    document.body.appendChild(s);
    const d = document.createElement('div');
    d.setAttribute('style', 'width: 123px');
    document.body.appendChild(d);
    return { script: window.injected ?? null, styleWidth: getComputedStyle(d).width };
  })()`);
  t.same(injected, { script: null, styleWidth: `${String(await page.evaluate('document.body.clientWidth'))}px` }, 'the added script did not run and the style attribute did not apply');
  // Automation still works: a waitForFunction that is false at first is polled with eval inside the page.
  await page.evaluate('setTimeout(() => { window.later = true }, 50)');
  await page.waitForFunction('window.later === true');
  t.equal(await page.evaluate('window.later'), true, 'a test tool can poll the page (waitForFunction)');
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
  t.equal(status.replid, (await rc.info('replication'))['master_replid'], 'the replid its replica took from it');
  t.equal(status.upstream.linkUp, true);
  t.equal(status.upstream.port, master.port);
  t.equal(status.replicas.length, 1);
  t.match(status.replicas[0], { state: 'online', lagBytes: Number, lagSeconds: Number, ackOffset: Number, offset: Number, ip: String });
  t.match(status, { log: { firstOffset: Number, endOffset: Number, size: Number }, snapshot: { offset: Number, usable: true }, stats: { streamCommands: Object } });

  const before = parseProm((await get(port, '/metrics')).body);
  for (const [name, f] of before) {
    t.ok(/^(psync_relay|process|nodejs)_/.test(name), `${name}: the relay's own, or a standard process or Node.js family`);
    t.ok(f.help.length > 0, `${name} has HELP`);
    if (f.type === 'counter') t.ok(name.endsWith('_total'), `counter ${name} ends in _total`);
  }
  // prom-client's standard families, under their standard names.
  t.match(
    Object.fromEntries(['process_cpu_seconds_total', 'process_open_fds', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_gc_duration_seconds'].map((n) => [n, before.get(n)?.type])),
    {
      process_cpu_seconds_total: 'counter',
      process_open_fds: 'gauge',
      process_resident_memory_bytes: 'gauge',
      nodejs_eventloop_lag_seconds: 'gauge',
      nodejs_eventloop_lag_p99_seconds: 'gauge',
      nodejs_heap_size_used_bytes: 'gauge',
      nodejs_gc_duration_seconds: 'histogram',
    },
  );
  t.ok(sample(before, 'process_open_fds') > 0, 'open file descriptors counted');
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
  t.equal(sample(after, 'psync_relay_master_repl_offset'), relay.relay.status().masterReplOffset);
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
  t.throws(() => parseProm('# TYPE x gauge\n\nx 1\n'), /empty line inside/, 'an empty line only separates families');
  t.throws(() => parseProm('# TYPE x gauge\nx 1\n\n\n# TYPE y gauge\ny 1\n'), /empty line/);
  t.ok(parseProm('# TYPE x gauge\nx 1\n\n# TYPE y gauge\ny Nan\n').get('y'), 'one empty line between families; NaN as Go parses it');
  const h = (count: number) => `# TYPE h histogram\nh_bucket{le="1",k="a"} 1\nh_bucket{le="+Inf",k="a"} 2\nh_sum{k="a"} 3\nh_count{k="a"} ${count}\n`;
  t.equal(sample(parseProm(h(2)), 'h', '_count{k="a"}'), 2, 'a histogram: _bucket, _sum and _count samples');
  t.throws(() => parseProm(h(3)), /\+Inf bucket/);
  t.throws(() => parseProm('# TYPE h histogram\nh_bucket{k="a"} 1\n'), /le on its buckets/);
  t.throws(() => parseProm('# TYPE h histogram\nh 1\n'), /needs _bucket/);
  t.throws(() => parseProm('# TYPE g gauge\ng_sum 1\n'), /before TYPE/, 'only histograms and summaries own suffixed samples');
});
