// Reads a V8 .cpuprofile (node --cpu-prof) and ranks functions by self time.
// Format: { nodes: [{ id, callFrame: { functionName, url, lineNumber, columnNumber }, children: [ids] }],
//           samples: [node id per sample], timeDeltas: [µs before each sample], startTime, endTime }.
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

/** The newest .cpuprofile file in `dir`, or null. */
export function findProfile(dir) {
  try {
    const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort();
    return files.length ? join(dir, files[files.length - 1]) : null;
  } catch {
    return null;
  }
}

/**
 * Self and total time per function (same name + file + line = one function, wherever it was called from).
 * Returns { totalMs, busyMs, top: [{ name, where, selfMs, selfPct, totalMs }] }; percentages are of the busy
 * time (everything but "(idle)").
 */
export function topSelfTime(file, { root = process.cwd(), limit = 20 } = {}) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map();
  const { samples, timeDeltas } = prof;
  // timeDeltas[i] is the time before sample i; the time a sample stands for is the next delta (the last: 0).
  for (let i = 0; i < samples.length; i++) {
    const dt = i + 1 < timeDeltas.length ? timeDeltas[i + 1] : 0;
    if (dt > 0) selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + dt);
  }
  const keyOf = (n) => {
    const f = n.callFrame;
    const url = f.url ? (f.url.startsWith('file://') ? relative(root, new URL(f.url).pathname) : f.url) : '';
    return { key: `${f.functionName}|${url}|${f.lineNumber}`, name: f.functionName || '(anonymous)', where: url ? `${url}:${f.lineNumber + 1}` : '' };
  };
  const funcs = new Map();
  const fn = (n) => {
    const k = keyOf(n);
    let e = funcs.get(k.key);
    if (!e) funcs.set(k.key, (e = { name: k.name, where: k.where, selfUs: 0, totalUs: 0 }));
    return e;
  };
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    totalUs += us;
    if (node.callFrame.functionName === '(idle)') idleUs += us;
    fn(node).selfUs += us;
    // Total time: once per function on the stack (recursion counted once).
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const e = fn(byId.get(cur));
      if (seen.has(e)) continue;
      seen.add(e);
      e.totalUs += us;
    }
  }
  const busyUs = totalUs - idleUs;
  const top = [...funcs.values()]
    .filter((e) => e.name !== '(idle)' && e.name !== '(root)')
    .sort((a, b) => b.selfUs - a.selfUs)
    .slice(0, limit)
    .map((e) => ({ name: e.name, where: e.where, selfMs: e.selfUs / 1000, selfPct: busyUs > 0 ? (e.selfUs / busyUs) * 100 : 0, totalMs: e.totalUs / 1000 }));
  return { file, totalMs: totalUs / 1000, busyMs: busyUs / 1000, top };
}
