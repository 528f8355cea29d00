import { randomBytes } from 'node:crypto';
import { subscribe, Telemetry, TELEMETRY_EVENTS, type TelemetryEvent, type TelemetryMessage } from '../../src/observability/telemetry.js';

export interface TelemetryRecorder {
  /** A handle with a relay id of its own: give it to the module under test. */
  readonly telemetry: Telemetry;
  /** The messages of `event` published through that handle so far, in order. */
  messages<E extends TelemetryEvent>(event: E): TelemetryMessage<E>[];
  close(): void;
}

/** Records what a module publishes, as any diagnostics_channel subscriber would see it. */
export function recordTelemetry(): TelemetryRecorder {
  const telemetry = new Telemetry(`test-${randomBytes(6).toString('hex')}`);
  const seen = new Map<TelemetryEvent, unknown[]>(TELEMETRY_EVENTS.map((e) => [e, []]));
  const offs = TELEMETRY_EVENTS.map((e) => subscribe(e, (m) => m.relay === telemetry.relay && seen.get(e)!.push(m)));
  return {
    telemetry,
    messages: <E extends TelemetryEvent>(event: E) => [...seen.get(event)!] as TelemetryMessage<E>[],
    close: () => offs.forEach((off) => off()),
  };
}
