import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { configKeys, defaultOf } from '../../src/config/keys.js';
import { loadConfig, loadConfigFile } from '../../src/config/load.js';
import { validateConfig } from '../../src/config/schema.js';

/** The shipped config against the schema (src/config/schema.ts), which states every key once. */

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const RELAY_YAML = resolve(REPO, 'config/relay.yaml');
/** Keys the shipped file sets to something other than the default, each marked so in the file. */
const SHIPPED_EXCEPTIONS = ['upstream.host', 'dir'];

const KEYS = configKeys();
const byPath = new Map(KEYS.map((k) => [k.path, k]));

type Mapping = Record<string, unknown>;
const isMapping = (v: unknown): v is Mapping => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The dotted paths in a parsed YAML document, descending into mappings only where the schema has a section. */
function pathsIn(doc: Mapping, prefix = ''): string[] {
  return Object.entries(doc).flatMap(([name, value]) => {
    const path = prefix === '' ? name : `${prefix}.${name}`;
    return byPath.get(path)?.section && isMapping(value) ? [path, ...pathsIn(value, path)] : [path];
  });
}

function valueAt(doc: Mapping, path: string): unknown {
  return path.split('.').reduce<unknown>((node, name) => (isMapping(node) ? node[name] : undefined), doc);
}

t.test('the schema lists sections and keys, each key with a description', async (t) => {
  t.ok(KEYS.length > 50, `${KEYS.length} keys`);
  for (const k of KEYS) t.ok(k.description, `${k.path} is described`);
  t.equal(defaultOf('listen.max-bulk-len'), '512mb', 'defaults are in YAML form');
  t.strictSame(defaultOf('listen.client-output-buffer-limit.normal'), { hard: 0, soft: 0, 'soft-seconds': 0 }, 'a section defaults to its keys');
  t.strictSame(byPath.get('upstream.tls')?.subKeys, ['ca', 'cert', 'key', 'servername', 'verify'], 'a mapping-valued key names its sub-keys');
  t.throws(() => defaultOf('listen.prot'), /no config key listen\.prot/);
});

t.test('shipped config/relay.yaml is the defaults except upstream.host and dir', async (t) => {
  const raw = loadConfigFile(RELAY_YAML) as Mapping;
  const inFile = pathsIn(raw);
  t.strictSame(inFile.filter((p) => !byPath.has(p)), [], 'no key the schema lacks');
  t.strictSame(inFile, KEYS.map((k) => k.path), "every key and section, in the schema's order");
  for (const k of KEYS.filter((k) => !k.section)) {
    if (SHIPPED_EXCEPTIONS.includes(k.path)) t.not(valueAt(raw, k.path), k.default, `${k.path} is the documented exception`);
    else t.strictSame(valueAt(raw, k.path), k.default, `${k.path}: ${JSON.stringify(k.default)}`);
  }
  // Loaded, it is the validated defaults with only the exceptions set.
  const exceptions: Mapping = { upstream: { host: valueAt(raw, 'upstream.host') }, dir: valueAt(raw, 'dir') };
  t.strictSame(loadConfig(['--config', RELAY_YAML], {}).config, validateConfig(exceptions, RELAY_YAML), 'loads as the defaults and the exceptions');
});
