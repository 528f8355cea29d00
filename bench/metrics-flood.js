// A /metrics flood (the hostile-client audit's finding 2): `--scrapers` keep-alive clients each scraping GET /metrics
// in a loop (a connection the relay closes is opened again), while a probe sends a PING to the relay's RESP port
// every 10 ms. Prints the scrapes answered (200) and refused (503) a second, the relay's CPU per scrape and the
// PINGs' latency. `--relay-root DIR` runs the relay built in another checkout (e.g. an older commit) for a
// before/after in one run; `--repeats K` alternates them.
//   node bench/metrics-flood.js [--path /metrics] [--scrapers 200] [--seconds 6] [--repeats 1] [--relay-root DIR ...]
import net from 'node:net';
import { cpuSeconds } from './lib/procs.js';
import { compareArgs } from './lib/args.js';
import { floodRuns, pingProbe } from './lib/ping-probe.js';

const { roots, opt } = compareArgs();
const SCRAPERS = Number(opt('scrapers', 200));
const SECONDS = Number(opt('seconds', 6));
const REPEATS = Number(opt('repeats', 1));
const PATH = opt('path', '/metrics');
const REQUEST = `GET ${PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;

/**
 * One keep-alive client: a scrape, its whole answer, the next scrape, until stop(). A connection the relay closes
 * (a 503 past the web port's answer budget closes it) is opened again.
 */
function scraper(port, counts) {
  let stopped = false;
  let socket = null;
  const open = () => {
    let buf = '';
    socket = net.connect(port, '127.0.0.1');
    socket.setEncoding('latin1');
    socket.on('connect', () => socket.write(REQUEST));
    socket.on('data', (d) => {
      buf += d;
      for (;;) {
        const head = buf.indexOf('\r\n\r\n');
        if (head < 0) return;
        const length = Number(/content-length: (\d+)/i.exec(buf.slice(0, head))?.[1] ?? 0);
        if (buf.length < head + 4 + length) return;
        if (buf.startsWith('HTTP/1.1 200')) counts.answered++;
        else counts.refused++;
        buf = buf.slice(head + 4 + length);
        if (!stopped) socket.write(REQUEST);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (stopped) return;
      counts.reopened++;
      open();
    });
  };
  open();
  return () => {
    stopped = true;
    socket.destroy();
  };
}

async function measure(relay) {
  const counts = { answered: 0, refused: 0, reopened: 0 };
  const cpu0 = cpuSeconds(relay.pid);
  const stops = Array.from({ length: SCRAPERS }, () => scraper(relay.webPort, counts));
  const probe = await pingProbe(relay.port, SECONDS);
  const cpu = cpuSeconds(relay.pid) - cpu0;
  const seconds = probe.seconds;
  stops.forEach((stop) => stop());
  return {
    path: PATH,
    scrapesPerSecond: Math.round(counts.answered / seconds),
    refusedPerSecond: Math.round(counts.refused / seconds),
    reopened: counts.reopened,
    relayCpuMsPerScrape: +((cpu * 1000) / counts.answered).toFixed(3),
    relayCpuCores: +(cpu / seconds).toFixed(2),
    pings: probe.pings,
    pingMs: probe.pingMs,
  };
}

await floodRuns(roots, REPEATS, { web: true }, measure);
