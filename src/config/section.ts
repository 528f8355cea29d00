import { z } from 'zod';
import { show } from './units.js';
import { isDuration, type Duration } from './value-types.js';

/**
 * The building blocks of the config schema: a key (value type, default as written in YAML, description) and
 * mappings of keys. YAML keys are kebab-case; the validated object's fields are their camelCase names, and a
 * duration's field is named in milliseconds: `connect-timeout` -> `connectTimeoutMs`, `soft-seconds` -> `softMs`.
 */

/** A key in a mapping: `schema` carries the default and the description. `Ms`: the field is named in milliseconds. */
export interface Key<Out = unknown, Ms extends boolean = boolean> {
  readonly schema: z.ZodType<Out>;
  readonly ms: Ms;
}

/** The default of a key that must be given when its mapping is. */
export const REQUIRED = Symbol('required');

/** A key of type `type` with default `value` (in YAML form: '64mb', 60, null) or REQUIRED. */
export function key<T extends z.ZodType>(
  type: T,
  value: z.input<T> | typeof REQUIRED,
  description: string,
): Key<z.output<T>, T extends Duration ? true : false> {
  const withDefault = value === REQUIRED ? type : type.prefault(value as never);
  const schema = withDefault.describe(description) as z.ZodType<z.output<T>>;
  return { schema, ms: isDuration(type) as T extends Duration ? true : false };
}

type Keys = Record<string, Key>;
type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
type FieldName<P extends string, Ms> = Ms extends true ? `${Camel<P extends `${infer B}-seconds` ? B : P>}Ms` : Camel<P>;

/** The validated object of a mapping of `K`. */
export type Fields<K extends Keys> = { [P in keyof K & string as FieldName<P, K[P]['ms']>]: K[P] extends Key<infer O> ? O : never };

function fieldName(name: string, ms: boolean): string {
  const camel = (ms ? name.replace(/-seconds$/, '') : name).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  return ms ? `${camel}Ms` : camel;
}

/** Reports a broken rule at `path`, a dotted key path relative to the mapping (`tls.port`). */
export type Report = (path: string, message: string) => void;

/** Rules between a mapping's keys; they run only when every key is valid on its own. */
export type Rules<K extends Keys> = (value: Fields<K>, report: Report) => void;

/**
 * A mapping of `keys`: unknown keys are errors; a missing key takes its default. `noun` says what else it may be,
 * for the error when it is not a mapping.
 */
export function mapping<K extends Keys>(keys: K, rules?: Rules<K>, noun = 'a mapping'): z.ZodType<Fields<K>, unknown> {
  const shape = Object.fromEntries(Object.entries(keys).map(([name, k]) => [name, k.schema]));
  const fields = Object.entries(keys).map(([name, k]) => [name, fieldName(name, k.ms)] as const);
  const object = z
    // A string where a mapping belongs is not shown: it may be a `name:password` meant as a users entry.
    .strictObject(shape, { error: (iss) => (iss.code === 'unrecognized_keys' ? 'unknown key' : `must be ${noun}, got ${typeof iss.input === 'string' ? 'a string' : show(iss.input)}`) })
    .transform((o) => Object.fromEntries(fields.map(([name, field]) => [field, o[name]])) as Fields<K>);
  if (!rules) return object;
  return object.superRefine((value, ctx) =>
    rules(value, (path, message) => ctx.addIssue({ code: 'custom', path: path.split('.'), message, input: value })),
  );
}

/** A section: a mapping that may be empty or null (all defaults), as when every key in it is commented out. */
export function section<K extends Keys>(keys: K, description: string, rules?: Rules<K>): Key<Fields<K>, false> {
  return key(z.preprocess((v) => v ?? {}, mapping(keys, rules)), {}, description);
}

/** A mapping that is off (null) unless given: `tls: {}` turns TLS on with every sub-key at its default. */
export function optionalSection<K extends Keys>(keys: K, description: string, rules?: Rules<K>): Key<Fields<K> | null, false> {
  return key(mapping(keys, rules, 'a mapping or null').nullable(), null, description);
}
