import { createHash } from 'node:crypto';

/**
 * The dashboard served at `/`: one static page, inline CSS and JS, no build step and no library. It polls
 * /status once a second (link state, ids, offsets, replicas, ops/s and bytes/s chart on a canvas) and tails
 * /stream over a WebSocket with the filters typed in. Each row of the tail offers "restore": POST /pitr at the
 * row's offset (the dataset right after that command) or at its offset - 1 (the relay settles that on the command
 * before it: the dataset right before this one), showing the listener's port as a REPLICAOF line, and DELETE
 * /pitr/<port> to close it. A token comes from `?token=` (then taken out of the URL) or the token field, is kept
 * in localStorage, and is sent as `Authorization: Bearer` to /status and /pitr and as a subprotocol to /stream
 * (ws-token.ts). Text from the relay only ever goes in through textContent. No frame may hold the page
 * (DASHBOARD_HEADERS).
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>psync-relay</title>
<style>
  :root { --bg:#0f1419; --panel:#182029; --fg:#d7dde3; --dim:#8a96a3; --ok:#3fb950; --bad:#f85149; --warn:#d29922; --a:#58a6ff; --b:#d2a8ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background:var(--bg); color:var(--fg); }
  header { display:flex; gap:16px; align-items:center; padding:10px 16px; background:var(--panel); border-bottom:1px solid #263140; flex-wrap:wrap; }
  header h1 { font-size:15px; margin:0; }
  main { display:grid; grid-template-columns: minmax(320px, 1fr) minmax(420px, 2fr); gap:12px; padding:12px 16px; }
  section { background:var(--panel); border:1px solid #263140; border-radius:6px; padding:10px 12px; min-width:0; }
  h2 { font-size:13px; margin:0 0 8px; color:var(--dim); text-transform:uppercase; letter-spacing:.05em; }
  dl { display:grid; grid-template-columns:max-content 1fr; gap:3px 12px; margin:0; }
  dt { color:var(--dim); } dd { margin:0; word-break:break-all; }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:3px 6px; border-bottom:1px solid #263140; white-space:nowrap; }
  th { color:var(--dim); font-weight:normal; }
  .pill { display:inline-block; padding:1px 8px; border-radius:10px; background:#263140; }
  .up { background:#1b4d2b; color:var(--ok); } .down { background:#5a1e1e; color:var(--bad); } .sync { background:#4d3b12; color:var(--warn); }
  canvas { width:100%; height:180px; display:block; }
  .legend span { margin-right:14px; } .la { color:var(--a); } .lb { color:var(--b); }
  #tail { height:420px; overflow:auto; margin:0; padding:0; list-style:none; font-size:12px; }
  #tail li { padding:1px 0; border-bottom:1px solid #1f2933; white-space:pre; overflow:hidden; text-overflow:ellipsis; }
  #tail .off { color:var(--dim); } #tail .db { color:var(--warn); } #tail .cmd { color:var(--a); font-weight:bold; } #tail .int { opacity:.5; }
  form { display:flex; gap:8px; flex-wrap:wrap; margin-bottom:8px; align-items:center; }
  input, button, select { background:#0f1419; color:var(--fg); border:1px solid #334155; border-radius:4px; padding:3px 6px; font:inherit; }
  button { cursor:pointer; } .wide { grid-column: 1 / -1; } #error { color:var(--bad); }
  #tail button { padding:0 4px; margin-right:4px; font-size:11px; opacity:.6; } #tail li:hover button { opacity:1; }
  #pitr { margin-bottom:8px; padding:6px 8px; border:1px solid #334155; border-radius:4px; } #pitr.bad { color:var(--bad); border-color:var(--bad); }
  #pitr-cmd { user-select:all; color:var(--ok); } #pitr-cmd:empty { display:none; }
  .end { margin-left:auto; }
</style>
</head>
<body>
<header>
  <h1>psync-relay</h1>
  <span>upstream <span id="link-state" class="pill">?</span></span>
  <span id="upstream-addr"></span>
  <span id="error"></span>
  <span class="end">token <input id="token" type="password" size="16" autocomplete="off"></span>
</header>
<main>
  <section>
    <h2>Replication</h2>
    <dl>
      <dt>replid</dt><dd id="replid">?</dd>
      <dt>replid2</dt><dd id="replid2">?</dd>
      <dt>master_repl_offset</dt><dd id="master-repl-offset">?</dd>
      <dt>second_repl_offset</dt><dd id="second-repl-offset">?</dd>
      <dt>log</dt><dd id="log-range">?</dd>
      <dt>snapshot</dt><dd id="snapshot">?</dd>
      <dt>last upstream I/O</dt><dd id="last-io">?</dd>
      <dt>sync</dt><dd id="sync-progress">?</dd>
      <dt>syncs from upstream</dt><dd id="upstream-syncs">?</dd>
      <dt>syncs served</dt><dd id="served-syncs">?</dd>
      <dt>uptime</dt><dd id="uptime">?</dd>
    </dl>
  </section>
  <section>
    <h2>Throughput</h2>
    <div class="legend"><span class="la">■ ops/s <b id="ops-now">0</b></span><span class="lb">■ bytes/s <b id="bytes-now">0</b></span></div>
    <canvas id="chart" width="800" height="180"></canvas>
  </section>
  <section class="wide">
    <h2>Replicas (<span id="replica-count">0</span>)</h2>
    <table><thead><tr><th>address</th><th>state</th><th>offset</th><th>ack offset</th><th>lag bytes</th><th>lag s</th><th>version</th></tr></thead>
    <tbody id="replicas"></tbody></table>
  </section>
  <section class="wide">
    <h2>Stream</h2>
    <form id="filters" autocomplete="off">
      <input id="f-cmd" placeholder="cmd (set,hset)" size="16">
      <input id="f-key" placeholder="key glob (user:*)" size="18">
      <input id="f-db" placeholder="db" size="4">
      <label><input id="f-internal" type="checkbox"> PING/GETACK</label>
      <button type="submit">apply</button>
      <button type="button" id="pause">pause</button>
      <button type="button" id="clear">clear</button>
      <span id="stream-state" class="pill">closed</span>
      <span id="stream-count"></span>
    </form>
    <div id="pitr" hidden><span id="pitr-answer"></span> <code id="pitr-cmd"></code> <button type="button" id="pitr-close" hidden>close listener</button></div>
    <ul id="tail"></ul>
  </section>
</main>
<script>
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  let token = params.get('token') || localStorage.getItem('psync-relay-token') || '';
  // A token given in the URL is kept like a typed one and taken out of the address bar: left there, it stays in
  // the browser's history and goes in the Referer of every request the page makes (a TLS proxy's access log).
  if (params.has('token')) {
    if (token) localStorage.setItem('psync-relay-token', token);
    params.delete('token');
    history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : '') + location.hash);
  }
  $('token').value = token;
  $('token').addEventListener('change', () => { token = $('token').value.trim(); localStorage.setItem('psync-relay-token', token); poll(); openStream(); });
  const fmt = (n) => n >= 1e9 ? (n / 1e9).toFixed(2) + 'G' : n >= 1e6 ? (n / 1e6).toFixed(2) + 'M' : n >= 1e3 ? (n / 1e3).toFixed(1) + 'k' : String(Math.round(n));
  const set = (id, v) => { $(id).textContent = v; };
  const auth = (headers) => Object.assign(token ? { authorization: 'Bearer ' + token } : {}, headers);

  // ---- /status poll and chart
  const points = []; // {ops, bytes}
  let prev = null;
  async function poll() {
    try {
      const r = await fetch('status', { headers: auth({}), cache: 'no-store' });
      if (r.status === 401) { set('error', 'unauthorized: enter the web.token'); return; }
      if (!r.ok) { set('error', 'status: HTTP ' + r.status); return; }
      set('error', '');
      render(await r.json());
    } catch (e) { set('error', 'relay unreachable'); }
  }
  function render(s) {
    const up = s.upstream;
    const st = $('link-state');
    st.textContent = up.state + (up.linkUp ? ' (up)' : '');
    st.className = 'pill ' + (up.linkUp ? 'up' : up.state === 'transfer' ? 'sync' : 'down');
    set('upstream-addr', up.host === null ? 'no upstream' : up.host + ':' + up.port);
    set('replid', s.replid); set('replid2', s.replid2);
    set('master-repl-offset', String(s.masterReplOffset));
    set('second-repl-offset', String(s.secondReplOffset));
    set('log-range', s.log.firstOffset + '..' + s.log.endOffset + '  (' + fmt(s.log.size) + 'B of ' + fmt(s.log.limit) + 'B)');
    set('snapshot', s.snapshot ? s.snapshot.offset + ' (' + fmt(s.snapshot.size) + 'B, rdb v' + s.snapshot.rdbVersion + (s.snapshot.usable ? '' : ', stale') + ')' : 'none');
    set('last-io', up.lastIoSecondsAgo < 0 ? 'never' : up.lastIoSecondsAgo + ' s ago');
    set('sync-progress', up.syncInProgress ? fmt(up.syncReceivedBytes) + 'B' + (up.syncTotalBytes ? ' of ' + fmt(up.syncTotalBytes) + 'B' : '') : s.snapshotRefreshInProgress ? 'refreshing snapshot' : 'idle');
    set('upstream-syncs', up.fullSyncs + ' full, ' + up.partialSyncs + ' partial');
    set('served-syncs', s.stats.syncFull + ' full, ' + s.stats.syncPartialOk + ' partial ok, ' + s.stats.syncPartialErr + ' partial refused');
    set('uptime', s.uptimeSeconds + ' s');
    const tb = $('replicas');
    tb.replaceChildren(...s.replicas.map((r) => {
      const tr = document.createElement('tr');
      for (const v of [r.ip + ':' + r.port, r.state, r.offset, r.ackOffset, r.lagBytes, r.lagSeconds, r.version]) {
        const td = document.createElement('td'); td.textContent = String(v); tr.appendChild(td);
      }
      return tr;
    }));
    set('replica-count', String(s.replicas.length));
    const ops = Object.values(s.stats.streamCommands || {}).reduce((a, b) => a + b, 0);
    const now = { t: performance.now(), ops, bytes: up.bytesIn };
    if (prev) {
      const dt = Math.max(0.001, (now.t - prev.t) / 1000);
      points.push({ ops: Math.max(0, (now.ops - prev.ops) / dt), bytes: Math.max(0, (now.bytes - prev.bytes) / dt) });
      if (points.length > 120) points.shift();
      set('ops-now', fmt(points[points.length - 1].ops)); set('bytes-now', fmt(points[points.length - 1].bytes));
      draw();
    }
    prev = now;
  }
  function draw() {
    const c = $('chart');
    const w = c.clientWidth || 800, h = c.clientHeight || 180, dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.strokeStyle = '#263140'; g.lineWidth = 1;
    for (let i = 1; i < 4; i++) { g.beginPath(); g.moveTo(0, (h * i) / 4); g.lineTo(w, (h * i) / 4); g.stroke(); }
    const series = [['ops', '#58a6ff'], ['bytes', '#d2a8ff']];
    for (const [k, color] of series) {
      const max = Math.max(1, ...points.map((p) => p[k]));
      g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
      points.forEach((p, i) => {
        const x = w - (points.length - 1 - i) * (w / 119);
        const y = h - 4 - (p[k] / max) * (h - 20);
        i === 0 ? g.moveTo(x, y) : g.lineTo(x, y);
      });
      g.stroke();
      g.fillStyle = color; g.fillText('max ' + fmt(max) + (k === 'bytes' ? 'B/s' : '/s'), k === 'ops' ? 4 : 120, 12);
    }
  }
  poll();
  setInterval(poll, 1000);

  // ---- /stream tail
  let ws = null, paused = false, lastOffset = null, count = 0, wanted = 0;
  const MAX_ROWS = 500;
  function streamUrl(from) {
    const q = new URLSearchParams();
    const cmd = $('f-cmd').value.trim(), key = $('f-key').value.trim(), db = $('f-db').value.trim();
    if (cmd) q.set('cmd', cmd);
    if (key) q.set('key', key);
    if (db) q.set('db', db);
    if (!$('f-internal').checked) q.set('internal', '0');
    if (from !== null) q.set('from', String(from));
    const base = location.pathname.replace(/[^/]*$/, '');
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base + 'stream?' + q;
  }
  // The token goes as a subprotocol, not in the URL, which a TLS proxy logs whole; the relay answers 'psync-relay'.
  function streamProtocols() {
    if (!token) return [];
    const b64 = btoa(Array.from(new TextEncoder().encode(token), (b) => String.fromCharCode(b)).join(''));
    return ['psync-relay', 'psync-relay.token.' + b64.replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')];
  }
  function openStream(from = null) {
    const me = ++wanted;
    if (ws) { ws.onclose = null; ws.close(); }
    ws = new WebSocket(streamUrl(from), streamProtocols());
    const state = $('stream-state');
    state.textContent = 'connecting'; state.className = 'pill sync';
    ws.onopen = () => { state.textContent = 'live'; state.className = 'pill up'; };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      lastOffset = m.offset;
      count++;
      if (paused) return;
      const li = document.createElement('li');
      if (m.internal) li.className = 'int';
      li.appendChild(restoreButton('here', 'restore to here', m.offset, 'open a point-in-time replica of the dataset right after this command (offset ' + m.offset + ')'));
      li.appendChild(restoreButton('before', 'before this', m.offset - 1, 'open a point-in-time replica of the dataset right before this command'));
      const parts = [['off', String(m.offset).padStart(12)], ['db', ' db' + (m.db === null ? '?' : m.db) + ' '], ['cmd', m.cmd]];
      for (const [cls, text] of parts) { const s = document.createElement('span'); s.className = cls; s.textContent = text; li.appendChild(s); }
      const args = m.args.map((a) => (m.b64 ? 'b64:' : '') + (a.length > 200 ? a.slice(0, 200) + '…(' + a.length + ')' : JSON.stringify(a)));
      li.appendChild(document.createTextNode(' ' + args.join(' ')));
      const tail = $('tail');
      tail.prepend(li);
      while (tail.childElementCount > MAX_ROWS) tail.lastElementChild.remove();
      set('stream-count', count + ' received');
    };
    ws.onclose = (ev) => {
      state.textContent = 'closed ' + ev.code + (ev.reason ? ': ' + ev.reason : ''); state.className = 'pill down';
      if (me !== wanted) return;
      // Resume where we were when we can; start afresh when the relay no longer has that offset.
      const resume = lastOffset !== null && ![4010, 4011, 4012, 4013].includes(ev.code) ? lastOffset + 1 : null;
      if (ev.code === 4010 || ev.code === 4012 || ev.code === 4013) lastOffset = null;
      setTimeout(() => { if (me === wanted) openStream(resume); }, 2000);
    };
  }

  // ---- point in time: POST /pitr, DELETE /pitr/<port>
  let pitrPort = null;
  function restoreButton(cls, label, offset, title) {
    const b = document.createElement('button');
    b.type = 'button'; b.className = cls; b.textContent = label; b.title = title;
    b.addEventListener('click', () => restore(offset));
    return b;
  }
  function showPitr(text, cmd, bad) {
    $('pitr').hidden = false; $('pitr').className = bad ? 'bad' : '';
    set('pitr-answer', text); set('pitr-cmd', cmd);
    $('pitr-close').hidden = pitrPort === null;
  }
  async function failed(r, what) {
    if (r.status === 401) return 'unauthorized: enter the web.token';
    const body = await r.json().catch(() => null);
    return what + ': ' + (body && body.error ? body.error + ' (' + body.code + ')' : 'HTTP ' + r.status);
  }
  async function restore(offset) {
    pitrPort = null;
    showPitr('opening a point-in-time replica at offset ' + offset + '…', '', false);
    try {
      const r = await fetch('pitr', { method: 'POST', headers: auth({ 'content-type': 'application/json' }), body: JSON.stringify({ offset }), cache: 'no-store' });
      if (!r.ok) return showPitr(await failed(r, 'restore refused'), '', true);
      const a = await r.json();
      pitrPort = a.port;
      const host = location.hostname.replace(/^\\[|\\]$/g, '');
      showPitr('port ' + a.port + ' serves the dataset at offset ' + a.offset + (a.time ? ' (' + a.time + ')' : '') + ', from the snapshot at ' + a.snapshotOffset + '; point a replica at it:', 'REPLICAOF ' + host + ' ' + a.port, false);
    } catch (e) { showPitr('restore failed: relay unreachable', '', true); }
  }
  $('pitr-close').addEventListener('click', async () => {
    const port = pitrPort;
    if (port === null) return;
    try {
      const r = await fetch('pitr/' + port, { method: 'DELETE', headers: auth({}), cache: 'no-store' });
      if (r.ok || r.status === 404) pitrPort = null;
      showPitr(r.ok ? 'closed the listener on port ' + port : await failed(r, 'close'), '', !r.ok);
    } catch (e) { showPitr('close failed: relay unreachable', '', true); }
  });
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); lastOffset = null; openStream(); });
  $('pause').addEventListener('click', () => { paused = !paused; $('pause').textContent = paused ? 'resume' : 'pause'; });
  $('clear').addEventListener('click', () => { $('tail').replaceChildren(); count = 0; set('stream-count', ''); });
  openStream();
})();
</script>
</body>
</html>
`;

/** The CSP source of the one inline `<tag>` block of the page: its SHA-256, so that no other inline code runs. */
function inlineHash(tag: 'script' | 'style'): string {
  const body = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(DASHBOARD_HTML)?.[1];
  if (body === undefined) throw new Error(`the dashboard has no <${tag}>`);
  return `'sha256-${createHash('sha256').update(body).digest('base64')}'`;
}

/**
 * Headers of the page. No frame may hold it (frame-ancestors, and X-Frame-Options for older browsers): a page on
 * another site could otherwise lay it in a transparent frame over its own bait and steal a click on "restore to
 * here", a POST /pitr from the dashboard's own origin, which the Origin check lets through. Only its own script and
 * style run (their hashes), it connects only to its own origin (/status, /pitr, /stream), and it loads nothing:
 * should text from the relay ever reach the markup, it could neither run nor send the token elsewhere.
 */
export const DASHBOARD_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': [
    "default-src 'none'",
    // 'unsafe-eval' lets browser automation poll the page (Playwright's waitForFunction evals its predicate in it);
    // the page itself never evals, and no script but its own can start.
    `script-src ${inlineHash('script')} 'unsafe-eval'`,
    `style-src ${inlineHash('style')}`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-frame-options': 'DENY',
};
