// What the flood scripts (metrics-flood.js, unfinished-flood.js) share: a bystander on the relay's RESP port (a PING
// every 10 ms for `seconds`, one at a time; the latencies' p50, p99 and max in ms), and their rounds of processes.
import net from 'node:net';
import { nowMs, sleep } from './clock.js';
import { cleanupAll, startRedis, startRelay } from './procs.js';

export async function pingProbe(port, seconds, { fresh = false } = {}) {
  const probe = net.connect(port, '127.0.0.1');
  await new Promise((r) => probe.once('connect', r));
  const latencies = [];
  const freshLatencies = [];
  const start = nowMs();
  try {
    while (nowMs() - start < seconds * 1000) {
      let t = nowMs();
      probe.write('PING\r\n');
      await new Promise((r) => probe.once('data', r));
      latencies.push(nowMs() - t);
      if (fresh) {
        // `fresh`: then a PING on a new connection, its wait in the relay's accept queue included.
        t = nowMs();
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        s.write('PING\r\n');
        await new Promise((r) => s.once('data', r));
        freshLatencies.push(nowMs() - t);
        s.destroy();
      }
      await sleep(10);
    }
  } finally {
    probe.destroy();
  }
  const quantiles = (l) => {
    l.sort((a, b) => a - b);
    const at = (q) => +l[Math.min(l.length - 1, Math.floor(q * l.length))].toFixed(1);
    return { p50: at(0.5), p99: at(0.99), max: at(1) };
  };
  return { seconds: (nowMs() - start) / 1000, pings: latencies.length, pingMs: quantiles(latencies), ...(fresh && { freshConnectionPingMs: quantiles(freshLatencies) }) };
}

/**
 * For the flood scripts: `repeats` rounds, each a master and a relay per root (`relayOpts` for startRelay), link up,
 * then `measure(relay)`; prints each result as a JSON line, the relay's root with it. Everything started is gone after.
 */
export async function floodRuns(roots, repeats, relayOpts, measure) {
  try {
    for (let r = 0; r < repeats; r++) {
      for (const root of roots) {
        const master = await startRedis('master');
        const relay = await startRelay(master.port, root, relayOpts);
        try {
          await relay.waitLinkUp();
          console.log(JSON.stringify({ relay: root, ...(await measure(relay)) }));
        } finally {
          await relay.stop();
          await master.stop();
        }
      }
    }
  } finally {
    cleanupAll();
  }
}
