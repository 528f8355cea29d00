// Commands that never end (the security re-audit's flood): `--clients` connections each send a multibulk of a million
// empty arguments that never finishes (6 MB), and connect again when the relay closes them (evicted at
// listen.max-clients-memory), while a probe sends a PING to the relay every 10 ms, then one on a fresh connection
// (its wait in the accept queue included). Prints the PINGs' latency, the evictions and the relay's peak RSS.
// `--relay-root DIR` runs the relay built in another checkout for a before/after in one run; `--repeats K`
// alternates them.
//   node bench/unfinished-flood.js [--clients 200] [--seconds 15] [--repeats 1] [--relay-root DIR ...]
import net from 'node:net';
import { rssBytes } from './lib/procs.js';
import { compareArgs } from './lib/args.js';
import { floodRuns, pingProbe } from './lib/ping-probe.js';
import { sleep } from './lib/clock.js';

const { roots, opt } = compareArgs();
const CLIENTS = Number(opt('clients', 200));
const SECONDS = Number(opt('seconds', 15));
const REPEATS = Number(opt('repeats', 1));
const ARGS = 1_000_000;
const PAYLOAD = Buffer.concat([Buffer.from(`*${ARGS}\r\n`), Buffer.from('$0\r\n\r\n'.repeat(ARGS - 1))]);

/** One flooding connection, opened again whenever the relay closes it; counts the closes. */
function flooder(port, counts) {
  let stopped = false;
  let socket = null;
  const open = () => {
    socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => socket.write(PAYLOAD));
    socket.on('error', () => {});
    socket.on('close', () => {
      if (stopped) return;
      counts.closed++;
      setTimeout(open, 100);
    });
  };
  open();
  return () => {
    stopped = true;
    socket.destroy();
  };
}

async function measure(relay) {
  const counts = { closed: 0 };
  const stops = Array.from({ length: CLIENTS }, () => flooder(relay.port, counts));
  let rssPeak = 0;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssBytes(relay.pid))), 100);
  // The flood under way first (the connections made, their first reads in).
  await sleep(1000);
  const probe = await pingProbe(relay.port, SECONDS, { fresh: true });
  clearInterval(sampler);
  stops.forEach((stop) => stop());
  return { clients: CLIENTS, closedByRelay: counts.closed, rssPeakMiB: Math.round(rssPeak / 2 ** 20), pings: probe.pings, pingMs: probe.pingMs, freshConnectionPingMs: probe.freshConnectionPingMs };
}

await floodRuns(roots, REPEATS, {}, measure);
