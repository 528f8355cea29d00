// The WAN bench's writer: one pipelined connection to the master writing a workload (bench/lib/workloads.js) at a
// steady rate of stream bytes (or as fast as the master takes them), in 10 ms ticks. A forked helper of
// bench/wan.js: IPC {id, op, args} -> {id, ok, result | error}.
import net from 'node:net';
import { WORKLOADS } from './lib/workloads.js';
import { sleep } from './lib/clock.js';

const TICK_MS = 10;
/** Most commands awaiting a reply: the writer never buffers more than the master answers. */
const MAX_OUTSTANDING = 20000;
/** Most bytes generated per tick (when behind, or unthrottled). */
const MAX_TICK_BYTES = 1 << 20;
/**
 * Commands are generated once into a pool this large, then sent in turn: the writer costs little CPU next to the
 * master and the forwarders, and a command repeats only 16 MB later, far beyond DEFLATE's 32 KiB window.
 */
const POOL_BYTES = 16 << 20;

function pool(workload, seed) {
  const gen = WORKLOADS[workload](seed);
  const cmds = [];
  for (let bytes = 0, i = 0; bytes < POOL_BYTES; i++) {
    const c = gen(i);
    cmds.push(c);
    bytes += c.length;
  }
  return cmds;
}

let run = null;

function connect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Writes until stopped or `maxBytes` are out; every reply of this workload is one line (+OK, :n). */
async function start({ port, workload, rateBps = 0, maxBytes = Infinity, seed = 1 }) {
  if (run) throw new Error('writer already running');
  const socket = await connect(port);
  const cmds = pool(workload, seed);
  const next = (i) => cmds[i % cmds.length];
  const state = { socket, sent: 0, commands: 0, replies: 0, stop: false, error: null };
  socket.on('data', (d) => {
    for (let i = d.indexOf(10); i >= 0; i = d.indexOf(10, i + 1)) state.replies++;
  });
  socket.on('error', (err) => (state.error = err));
  const t0 = performance.now();
  let i = 0;
  state.loop = (async () => {
    while (!state.stop && state.sent < maxBytes && !state.error) {
      const due = rateBps > 0 ? (rateBps * (performance.now() - t0)) / 1000 : Infinity;
      let tick = 0;
      const parts = [];
      while (state.sent < due && state.sent < maxBytes && tick < MAX_TICK_BYTES && state.commands - state.replies < MAX_OUTSTANDING) {
        const cmd = next(i++);
        parts.push(cmd);
        state.sent += cmd.length;
        tick += cmd.length;
        state.commands++;
      }
      if (parts.length > 0 && !socket.write(Buffer.concat(parts))) await new Promise((r) => socket.once('drain', r));
      await sleep(parts.length > 0 && rateBps === 0 ? 0 : TICK_MS);
    }
    while (state.replies < state.commands && !state.error) await sleep(2);
  })();
  run = state;
  return { started: true };
}

async function stop() {
  if (!run) return null;
  const state = run;
  state.stop = true;
  await state.loop;
  state.socket.destroy();
  run = null;
  if (state.error) throw state.error;
  return { commands: state.commands, bytes: state.sent };
}

/** Resolves when a `maxBytes` run has written everything and had every reply. */
async function done() {
  if (!run) return null;
  await run.loop;
  return stop();
}

const ops = { start, stop, done, status: () => (run ? { bytes: run.sent, commands: run.commands, replies: run.replies } : null) };
process.on('message', async (m) => {
  try {
    process.send({ id: m.id, ok: true, result: await ops[m.op](m.args ?? {}) });
  } catch (err) {
    process.send({ id: m.id, ok: false, error: String(err?.stack ?? err) });
  }
});
process.on('disconnect', () => process.exit(0));
