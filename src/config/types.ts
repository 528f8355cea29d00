import type { z } from 'zod';
import type { relaySchema } from './schema.js';

/**
 * The validated, frozen configuration, derived from the schema (schema.ts states each key once, with its meaning).
 * YAML keys are kebab-case (`max-bulk-len`); fields here are camelCase. Sizes are bytes, durations are milliseconds.
 */
export type RelayConfig = DeepReadonly<
  z.output<(typeof relaySchema)['schema']> & {
    /** The file the config was loaded from (for CONFIG REWRITE); null when built from defaults/flags only. */
    configFile: string | null;
  }
>;

export type UpstreamConfig = RelayConfig['upstream'];
/** upstream.tls: TLS client side. File paths are absolute (resolved against the config file's directory). */
export type ClientTlsConfig = NonNullable<UpstreamConfig['tls']>;
export type SentinelConfig = NonNullable<UpstreamConfig['sentinel']>;
export type ListenConfig = RelayConfig['listen'];
/** listen.tls: the TLS RESP listener. */
export type ServerTlsConfig = NonNullable<ListenConfig['tls']>;
/** A named downstream user (listen.users): `AUTH <name> <password>`. */
export type ListenUser = ListenConfig['users'][number];
/** One class of Redis's client-output-buffer-limit: bytes, and how long the soft limit may be exceeded; 0 = none. */
export type OutputBufferLimit = ListenConfig['clientOutputBufferLimit']['normal'];
export type LogConfig = RelayConfig['log'];
export type ReplicationConfig = RelayConfig['replication'];
export type AckPolicy = ReplicationConfig['ackPolicy'];
export type WebConfig = RelayConfig['web'];
export type LoggingConfig = RelayConfig['logging'];

export type DeepReadonly<T> = T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;
