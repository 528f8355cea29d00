// Docker HEALTHCHECK: healthy when the relay's GET /readyz answers 200 (upstream link streaming and a snapshot
// held). Node's own fetch, because the slim image has no curl. The web server listens on loopback by default,
// which is where this runs: inside the container.
const url = process.env.PSYNC_RELAY_HEALTH_URL ?? 'http://127.0.0.1:8080/readyz';
try {
  const res = await fetch(url, { headers: { connection: 'close' }, signal: AbortSignal.timeout(4000) });
  // The body says why it is not ready; docker inspect shows it.
  process.stdout.write(`${res.status} ${await res.text()}\n`);
  process.exitCode = res.status === 200 ? 0 : 1;
} catch (err) {
  process.stdout.write(`${url}: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
