import { z } from 'zod';
import { relaySchema } from './schema.js';

/** A key or section of the config as documented: its dotted path, its default in YAML form, its description. */
export interface ConfigKey {
  readonly path: string;
  /** A section's default is the mapping of its keys' defaults; undefined for a key that must be given. */
  readonly default: unknown;
  readonly description: string | undefined;
  /** A mapping of keys (listen, listen.client-output-buffer-limit.normal) rather than a key holding a value. */
  readonly section: boolean;
  /** The keys of the mapping this key may hold (upstream.tls) or of its list's items (listen.users); else empty. */
  readonly subKeys: readonly string[];
}

interface JsonSchema {
  readonly default?: unknown;
  readonly description?: string;
  readonly properties?: Readonly<Record<string, JsonSchema>>;
  readonly anyOf?: readonly JsonSchema[];
  readonly items?: JsonSchema;
}

let cached: readonly ConfigKey[] | undefined;

/**
 * Every key and section of the schema in order (a section before its keys), read from its JSON Schema. A key whose
 * value may be a mapping (upstream.tls, null by default) is one key: its sub-keys are described in its description.
 */
export function configKeys(): readonly ConfigKey[] {
  cached ??= Object.freeze(walk(z.toJSONSchema(relaySchema.schema, { io: 'input' }) as JsonSchema, ''));
  return cached;
}

function walk(node: JsonSchema, path: string): ConfigKey[] {
  const out: ConfigKey[] = [];
  for (const [name, child] of Object.entries(node.properties ?? {})) {
    const at = path === '' ? name : `${path}.${name}`;
    if (child.properties) {
      const keys = walk(child, at);
      const direct = keys.filter((k) => k.path.lastIndexOf('.') === at.length);
      const value = Object.fromEntries(direct.map((k) => [k.path.slice(at.length + 1), k.default]));
      out.push({ path: at, default: value, description: child.description, section: true, subKeys: [] }, ...keys);
    } else {
      const held = child.anyOf?.find((s) => s.properties) ?? child.items;
      const subKeys = Object.keys(held?.properties ?? {});
      out.push({ path: at, default: child.default, description: child.description, section: false, subKeys });
    }
  }
  return out;
}

/** The default of the key at `path` as written in YAML (`'64mb'`, `6380`, `null`); throws for a path that is no key. */
export function defaultOf(path: string): unknown {
  const found = configKeys().find((k) => k.path === path);
  if (!found) throw new Error(`no config key ${path}`);
  return found.default;
}
