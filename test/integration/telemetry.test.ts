/**
 * The telemetry path end to end: a real relay (a redis-server master upstream, a redis-server replica downstream)
 * publishes what happens on its diagnostics_channel channels, and INFO and /status count exactly what it published,
 * while another relay in the same process publishes under its own id and counts only its own.
 */
import t from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, stat, waitConverged } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { subscribe, TELEMETRY_EVENTS, type TelemetryEvent, type TelemetryMessage } from '../../src/observability/telemetry.js';

t.teardown(stopAll);

const seen: { event: TelemetryEvent; msg: TelemetryMessage<TelemetryEvent> }[] = [];
const offs = TELEMETRY_EVENTS.map((event) => subscribe(event, (msg) => seen.push({ event, msg })));
t.teardown(() => offs.forEach((off) => off()));
const of = <E extends TelemetryEvent>(relay: string, event: E) =>
  seen.filter((s) => s.event === event && s.msg.relay === relay).map((s) => s.msg as unknown as TelemetryMessage<E>);

t.test('a relay publishes its syncs, connections and errors; INFO and /status count exactly those', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close().catch(() => {}));
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const other = await startRelay();
  t.teardown(() => other.stop());
  const id = relay.relay.runId;
  const replica = await startReplica(relay.port);
  t.teardown(() => replica.stop());
  const rc = await replica.client();
  t.teardown(() => rc.close().catch(() => {}));
  await m.call('SET', 'k', 'v');
  await waitConverged(m, [rc]);

  t.match(of(id, 'upstream.sync'), [{ kind: 'full', replid: relay.relay.status().replid }], 'one full sync from upstream');
  t.match(of(id, 'replica.sync'), [{ kind: 'full', peer: /^127\.0\.0\.1:\d+$/ }], 'one full sync served');

  // A client that breaks the protocol, on this relay; a plain connection to the other one.
  const bad = connect(relay.port, '127.0.0.1');
  bad.on('error', () => undefined);
  bad.on('data', () => undefined);
  bad.write('*1\r\n$x\r\n');
  await once(bad, 'close');
  const plain = await other.client();
  await plain.callString('PING');
  await plain.close();
  t.match(of(id, 'protocol-error'), [{ limit: null }], 'the protocol error, with no limit (a malformed bulk length)');
  t.equal(of(other.relay.runId, 'protocol-error').length, 0, 'published under the relay it happened on');

  const x = await relay.client();
  t.teardown(() => x.close().catch(() => {}));
  const info = await x.info('stats');
  t.equal(stat(info, 'relay_upstream_full_syncs'), of(id, 'upstream.sync').filter((s) => s.kind === 'full').length);
  t.equal(stat(info, 'sync_full'), of(id, 'replica.sync').filter((s) => s.kind === 'full').length);
  t.equal(stat(info, 'relay_protocol_errors'), 1);
  t.equal(stat(info, 'total_connections_received'), of(id, 'connection').length, "every connection published, and only this relay's counted");
  t.ok(of(other.relay.runId, 'connection').length >= 1, 'the other relay published its own connection');
  const o = await other.client();
  t.teardown(() => o.close().catch(() => {}));
  t.equal(stat(await o.info('stats'), 'relay_protocol_errors'), 0, "and counts none of this one's errors");

  // The upstream goes away: the link's error is published, and it is the last error /status shows.
  await master.stop();
  const err = await waitFor(() => of(id, 'upstream.error').at(-1), { what: 'an upstream.error message' });
  t.equal(relay.relay.status().upstream.lastError, of(id, 'upstream.error').at(-1)!.message, `lastError is the last published: ${err.message}`);
});
