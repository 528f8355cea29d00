import { resolve } from 'node:path';
import { z } from 'zod';
import { validHost } from '../util/text.js';
import { durationToMs, kindOf, show, sizeToBytes } from './units.js';

/**
 * The kinds of value a config key can hold, as zod types: each checks a YAML value, converts it (sizes to bytes,
 * durations to milliseconds) and words its own error (`must be ..., got ...`). The string types never echo the
 * value: they also check passwords and tokens.
 */

declare const MILLISECONDS: unique symbol;
/** A duration type; the key holding it gets a field named in milliseconds (see section.ts). Type-level mark only. */
export type Duration = z.ZodType<number, number | string> & { readonly [MILLISECONDS]: true };
const durations = new WeakSet<z.ZodType>();

export function isDuration(type: z.ZodType): boolean {
  return durations.has(type);
}

/** An integer in min..max. */
export function integer(min: number, max: number) {
  const error = (iss: { input?: unknown }) => `must be an integer ${min}..${max}, got ${show(iss.input)}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

/** A non-empty string. */
export function text() {
  const error = (iss: { input?: unknown }) => `must be a non-empty string, got ${kindOf(iss.input)}`;
  return z.string({ error }).min(1, { error });
}

/** A non-empty string, or null. */
export function nullableText() {
  const error = (iss: { input?: unknown }) => `must be a non-empty string or null, got ${kindOf(iss.input)}`;
  return z.string({ error }).min(1, { error }).nullable();
}

const HOST = 'a host name or IP address (no URL: user and password have keys of their own)';

/**
 * A host name or IP address, as REPLICAOF takes one (validHost). A URL with credentials in it would otherwise be
 * shown whole in INFO's master_host, /status and every upstream log line.
 */
export function host() {
  const error = (iss: { input?: unknown }) => `must be ${HOST}, got ${typeof iss.input === 'string' ? show(iss.input) : kindOf(iss.input)}`;
  return z.string({ error }).refine(validHost, { error });
}

/** A host (see host()), or null. */
export function nullableHost() {
  return host().nullable();
}

export function boolean() {
  return z.boolean({ error: (iss) => `must be true or false, got ${show(iss.input)}` });
}

/** A switch: `on` or `off` (true and false accepted too), as a boolean. */
export function onOff() {
  return z
    .union([z.literal('on'), z.literal('off'), z.boolean()], { error: (iss) => `must be on or off, got ${show(iss.input)}` })
    .transform((v) => v === 'on' || v === true);
}

/** One of `values`. */
export function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: (iss) => `must be one of ${values.join(', ')}; got ${show(iss.input)}` });
}

/** Bytes: a non-negative integer or a Redis memory unit string (1k = 1000, 1kb = 1024, m, mb, g, gb), at least `min`. */
export function size(min: number) {
  const what = 'a size: bytes (a non-negative integer) or a string like 64mb, 1gb, 500k';
  return z
    .union([z.number(), z.string()], { error: (iss) => `must be ${what}; got ${show(iss.input)}` })
    .transform((value, ctx) => {
      const bytes = sizeToBytes(value);
      if (bytes === undefined) ctx.addIssue({ code: 'custom', input: value, message: `must be ${what}; got ${show(value)}` });
      else if (bytes < min) ctx.addIssue({ code: 'custom', input: value, message: `must be at least ${min} bytes, got ${bytes}` });
      else return bytes;
      return z.NEVER;
    });
}

/** Milliseconds: seconds as a number (may be fractional), or a string 500ms, 10s, 5m, 1h; at least `minMs`. */
export function duration(minMs: number): Duration {
  const what = 'a duration: seconds (a number) or a string like 500ms, 10s, 5m, 1h';
  const type = z
    .union([z.number(), z.string()], { error: (iss) => `must be ${what}; got ${show(iss.input)}` })
    .transform((value, ctx) => {
      const ms = durationToMs(value);
      if (ms === undefined) ctx.addIssue({ code: 'custom', input: value, message: `must be ${what}; got ${show(value)}` });
      else if (ms < minMs) ctx.addIssue({ code: 'custom', input: value, message: `must be at least ${minMs}ms, got ${ms}ms` });
      else return ms;
      return z.NEVER;
    });
  durations.add(type);
  return type as unknown as Duration;
}

/** A file path, resolved against `base()` (the config file's directory); the file is not read here. */
export function filePath(base: () => string) {
  return text().transform((path) => resolve(base(), path));
}

export function nullableFilePath(base: () => string) {
  return nullableText().transform((path) => (path === null ? null : resolve(base(), path)));
}

/** A list of `item`s; `what` names the items in errors. */
export function listOf<T extends z.ZodType>(item: T, what: string) {
  return z.array(item, { error: (iss) => `must be a list of ${what}, got ${kindOf(iss.input)}` });
}

/** A string matching `pattern` (`what` says how, in errors), lower-cased. */
export function matching(pattern: RegExp, what: string) {
  return z
    .string({ error: (iss) => `must be ${what}; got ${show(iss.input)}` })
    .regex(pattern, { error: (iss) => `must be ${what}; got ${show(iss.input)}` })
    .transform((s) => s.toLowerCase());
}

/** `host:port` or `[v6]:port`, port `defaultPort` when omitted. */
export function hostPort(defaultPort: number) {
  const what = 'host:port (IPv6 as [::1]:port)';
  return z.string({ error: (iss) => `must be ${what}, got ${show(iss.input)}` }).transform((item, ctx) => {
    const m = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(item) ?? /^([^:[\]]+)(?::(\d{1,5}))?$/.exec(item);
    const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
    if (m && port >= 1 && port <= 65535 && validHost(m[1]!)) return { host: m[1]!, port };
    ctx.addIssue({ code: 'custom', input: item, message: `must be ${what}, got ${show(item)}` });
    return z.NEVER;
  });
}

/**
 * self: the offset the relay holds (a Redis replica's ACK); min: the smallest offset acknowledged by the online
 * downstream replicas; quorum: the n-th highest of them. With too few replicas online, nothing new is acknowledged.
 */
export type AckPolicy = { readonly kind: 'self' } | { readonly kind: 'min' } | { readonly kind: 'quorum'; readonly n: number };

/** `self`, `min` or `quorum:N` (N ≥ 1). */
export function ackPolicy() {
  const what = 'self, min or quorum:N (N an integer from 1)';
  return z.string({ error: (iss) => `must be ${what}; got ${show(iss.input)}` }).transform((value, ctx): AckPolicy => {
    if (value === 'self' || value === 'min') return { kind: value };
    const m = /^quorum:([1-9]\d{0,5})$/.exec(value);
    if (m) return { kind: 'quorum', n: Number(m[1]) };
    ctx.addIssue({ code: 'custom', input: value, message: `must be ${what}; got ${show(value)}` });
    return z.NEVER;
  });
}
