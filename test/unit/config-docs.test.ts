import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { configKeys, defaultOf } from '../../src/config/keys.js';
import { HELP_TEXT, loadConfig, loadConfigFile } from '../../src/config/load.js';
import { validateConfig } from '../../src/config/schema.js';

/** The shipped config and the README against the schema (src/config/schema.ts), which states every key once. */

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

t.test('the examples commented out in config/relay.yaml are valid and show every sub-key', async (t) => {
  const lines = readFileSync(RELAY_YAML, 'utf8').split('\n');
  const withSubKeys = KEYS.filter((k) => k.subKeys.length > 0);
  t.ok(withSubKeys.length >= 4, withSubKeys.map((k) => k.path).join(', '));
  for (const k of withSubKeys) {
    const [section, name, ...rest] = k.path.split('.');
    t.equal(rest.length, 0, `${k.path} is a key of a top-level section`);
    // The key's line in its section, then the comment block above it: `#   name:` and the example indented below.
    const from = lines.indexOf(`${section}:`);
    const to = lines.findIndex((l, i) => i > from && /^\S/.test(l));
    const at = lines.findIndex((l, i) => i > from && i < to && l.startsWith(`  ${name}: `));
    t.ok(from >= 0 && at > from, `${k.path} is in the file`);
    let start = at;
    while (start > 0 && lines[start - 1]!.startsWith('  #')) start--;
    const head = lines.indexOf(`  #   ${name}:`, start);
    t.ok(head >= start && head < at, `${k.path} has an example`);
    let end = head + 1;
    while (end < at && lines[end]!.startsWith('  #     ')) end++;
    const example = parseYaml(lines.slice(head, end).map((l) => l.slice('  #   '.length)).join('\n')) as Mapping;
    t.doesNotThrow(() => validateConfig({ [section!]: example }, RELAY_YAML), `the ${k.path} example is valid`);
    const value = example[name!];
    const shown = new Set((Array.isArray(value) ? value : [value]).flatMap((v) => Object.keys(v as Mapping)));
    t.strictSame([...shown].sort(), [...k.subKeys].sort(), `the ${k.path} example shows every sub-key`);
  }
});

/** The rows of the README's configuration table: the keys named in the first cell, the default cell's values. */
function readmeRows(): Array<{ keys: string[]; defaults: unknown[]; meaning: string }> {
  const readme = readFileSync(resolve(REPO, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Configuration\n'), readme.indexOf('\n## ', readme.indexOf('\n## Configuration\n') + 1));
  return section
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .map((line) => {
      const [keyCell = '', defaultCell = '', meaning = ''] = line.slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim());
      const keys = [...keyCell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
      const defaults = splitTopLevel(defaultCell.replaceAll('`', '')).map((d) => parseYaml(d) as unknown);
      return { keys, defaults, meaning };
    });
}

/** Splits `a, {b: 1, c: 2}, d` at the commas outside brackets. */
function splitTopLevel(cell: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let from = 0;
  for (let i = 0; i < cell.length; i++) {
    if ('{['.includes(cell[i]!)) depth++;
    else if ('}]'.includes(cell[i]!)) depth--;
    else if (cell[i] === ',' && depth === 0) {
      parts.push(cell.slice(from, i).trim());
      from = i + 1;
    }
  }
  return [...parts, cell.slice(from).trim()];
}

t.test('the README configuration table documents every key with its default, in order, and nothing else', async (t) => {
  const rows = readmeRows();
  t.ok(rows.length > 30, `${rows.length} rows`);
  const documented: string[] = [];
  for (const row of rows) {
    t.ok(row.defaults.length === row.keys.length || row.defaults.length === 1, `${row.keys.join(', ')}: one default, or one per key`);
    row.keys.forEach((path, i) => {
      const k = byPath.get(path);
      if (!k) return void t.fail(`README documents ${path}, which the schema lacks`);
      documented.push(path, ...(k.section ? KEYS.filter((s) => s.path.startsWith(`${path}.`)).map((s) => s.path) : []));
      t.strictSame(row.defaults[row.defaults.length === 1 ? 0 : i], k.default, `${path} default ${JSON.stringify(k.default)}`);
      if (k.subKeys.length > 0) t.match(row.meaning, `{${k.subKeys.join(', ')}}`, `${path} names its sub-keys`);
    });
  }
  // A section's own path is implied by its keys; compare keys only.
  const keysOnly = (paths: string[]) => paths.filter((p) => !byPath.get(p)?.section);
  t.strictSame(keysOnly(documented), keysOnly(KEYS.map((k) => k.path)), "every key once, in the schema's order");
});

t.test('--help shows the schema default of each key a flag sets', async (t) => {
  const flags: Array<[string, string]> = [
    ['--port', 'listen.port'],
    ['--bind', 'listen.bind'],
    ['--web-port', 'web.port'],
    ['--dir', 'dir'],
    ['--log-level', 'logging.level'],
    ['--upstream', 'upstream.port'],
  ];
  const entries = HELP_TEXT.split(/\n(?= {2}-)/);
  for (const [flag, path] of flags) {
    const entry = entries.find((e) => new RegExp(`^ {2}(-\\w, )?${flag} `).test(e));
    t.ok(entry, `${flag} is listed`);
    t.match(entry, String(defaultOf(path)), `${flag}: the default of ${path}`);
  }
  t.match(HELP_TEXT, 'fatal|error|warn|info|debug|trace|silent', 'the log levels the schema accepts');
});
