import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { LineCounter, parseDocument } from 'yaml';
import { ConfigError } from '../errors.js';
import { ENV_KEYS, readEnvOverrides } from './env.js';
import { defaultOf } from './keys.js';
import { LOG_LEVELS, validateConfig } from './schema.js';
import type { RelayConfig } from './types.js';

type FlagName = 'config' | 'upstream' | 'port' | 'bind' | 'web-port' | 'dir' | 'log-level' | 'help' | 'version';

/** Flags that set config keys: flag -> the YAML path it overrides and how its string value is read. */
const FLAG_KEYS = {
  port: { path: ['listen', 'port'], parse: parseInteger },
  bind: { path: ['listen', 'bind'], parse: (s: string) => s },
  'web-port': { path: ['web', 'port'], parse: parseInteger },
  // A path typed on the command line is relative to the working directory, not to the config file.
  dir: { path: ['dir'], parse: (s: string) => (s === '' ? s : resolve(s)) },
  'log-level': { path: ['logging', 'level'], parse: (s: string) => s },
} as const satisfies Partial<Record<FlagName, { path: readonly string[]; parse: (s: string, flag: string) => unknown }>>;

const PARSE_ARGS_OPTIONS = {
  config: { type: 'string' },
  upstream: { type: 'string' },
  port: { type: 'string' },
  bind: { type: 'string' },
  'web-port': { type: 'string' },
  dir: { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const satisfies Record<FlagName, { type: 'string' | 'boolean'; short?: string }>;

export const HELP_TEXT = `Usage: psync-relay [--config FILE] [options]

Replicates from one Redis master and serves its replication stream to many replicas.
Settings come from the built-in defaults, then the config file, then these flags.
Each flag takes its value as "--flag value" or "--flag=value".

Options:
  --config FILE          YAML config file, see config/relay.yaml (default: none)
  --upstream HOST:PORT   master to replicate from; IPv6 as [::1]:6379; port optional
                         (default: none, wait for REPLICAOF; port ${defaultOf('upstream.port')})
  --port N               port replicas connect to, listen.port (default: ${defaultOf('listen.port')})
  --bind ADDR            address replicas connect to, listen.bind (default: ${defaultOf('listen.bind')})
  --web-port N           HTTP status/metrics port, 0 = off, web.port (default: ${defaultOf('web.port')})
  --dir PATH             data directory, relative to the working directory
                         (default: ${defaultOf('dir')} relative to the config file, else to the working directory)
  --log-level LEVEL      ${LOG_LEVELS.join('|')} (default: ${defaultOf('logging.level')})
  -h, --help             print this help and exit
  -v, --version          print the version and exit

Environment (overrides the config file; flags override it):
${Object.entries(ENV_KEYS)
  .map(([name, path]) => `  ${name}[_FILE]`.padEnd(39) + ` ${path.join('.')}, or a file holding it`)
  .join('\n')}
`;

/**
 * Reads and parses a YAML config file; returns the plain JS value (not yet validated).
 * Throws ConfigError with path '' on read errors and YAML errors (message: `file:line:col: ...`).
 */
export function loadConfigFile(path: string): unknown {
  let src: string;
  try {
    src = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read config file ${path}: ${(err as Error).message}`, { cause: err });
  }
  // Not prettyErrors: it quotes the offending line, and that line is often `password: ...` (errors reach the log).
  const lineCounter = new LineCounter();
  const doc = parseDocument(src, { prettyErrors: false, uniqueKeys: true, lineCounter });
  const [first] = doc.errors;
  if (first) {
    const pos = lineCounter.linePos(first.pos[0]);
    throw new ConfigError('', `${path}:${pos.line}:${pos.col}: ${first.message}`);
  }
  return doc.toJS();
}

/**
 * Builds the config from defaults <- the `--config` file <- environment overrides (env.ts) <- flags. With
 * `--help`/`-h` or `--version`/`-v` the flags are still checked but neither the file nor the environment is read
 * and `config` holds the defaults, so both work even with a broken config file.
 * Errors are ConfigError: a bad flag (unknown, missing or malformed value) has `path` = the flag as typed (`--port`);
 * a flag value out of range has `path` = the flag too; a bad file key has its dotted YAML path; a bad environment
 * override has `path` = the variable's name.
 */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): { config: RelayConfig; help: boolean; version: boolean } {
  const { tokens } = parseArgs({ args: argv, options: PARSE_ARGS_OPTIONS, strict: false, allowPositionals: true, tokens: true });

  let configFile: string | null = null;
  let help = false;
  let version = false;
  const overrides: Array<{ flag: string; path: readonly string[]; value: unknown }> = [];

  for (const token of tokens) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') throw new ConfigError(token.value, 'unexpected argument');
    const flag = token.rawName;
    if (!Object.hasOwn(PARSE_ARGS_OPTIONS, token.name)) throw new ConfigError(flag, 'unknown flag; see --help');
    const name = token.name as FlagName;
    if (name === 'help' || name === 'version') {
      if (token.value !== undefined) throw new ConfigError(flag, 'takes no value');
      if (name === 'help') help = true;
      else version = true;
      continue;
    }
    // `--port --bind x` would read "--bind" as the port: a value starting with "-" must be written `--flag=-value`.
    if (token.value === undefined || (!token.inlineValue && token.value.startsWith('-'))) {
      throw new ConfigError(flag, 'missing value');
    }
    const value = token.value;
    if (name === 'config') configFile = resolve(value);
    else if (name === 'upstream') overrides.push(...parseUpstream(value, flag));
    else overrides.push({ flag, path: FLAG_KEYS[name].path, value: FLAG_KEYS[name].parse(value, flag) });
  }

  if (help || version) return { config: validateConfig({}, null), help, version };
  // Applied before the flags, so a flag setting the same key wins.
  overrides.unshift(...readEnvOverrides(env).map((o) => ({ flag: o.source, path: o.path, value: o.value })));

  // An empty file parses to null: same as {}.
  const raw = (configFile === null ? {} : loadConfigFile(configFile)) ?? {};
  const merged = isMapping(raw) ? structuredClone(raw) : raw;
  if (isMapping(merged)) {
    for (const { path, value } of overrides) setIn(merged, path, value);
  }
  try {
    return { config: validateConfig(merged, configFile), help, version };
  } catch (err) {
    // A flag's (or variable's) value failed validation: name it, not the key it set. The last one setting a key wins.
    const by = err instanceof ConfigError ? overrides.findLast((o) => o.path.join('.') === err.path) : undefined;
    if (by && err instanceof ConfigError) {
      throw new ConfigError(by.flag, err.message.slice(err.path.length + 2), { cause: err });
    }
    throw err;
  }
}

/** `host`, `host:port`, `[v6]` or `[v6]:port`. */
function parseUpstream(value: string, flag: string): Array<{ flag: string; path: readonly string[]; value: unknown }> {
  const m = /^\[([^\]]+)\](?::([^:]*))?$/.exec(value) ?? /^([^:[\]]+)(?::([^:]*))?$/.exec(value);
  if (!m) throw new ConfigError(flag, 'expected HOST:PORT (IPv6 as [::1]:6379)');
  const out: Array<{ flag: string; path: readonly string[]; value: unknown }> = [{ flag, path: ['upstream', 'host'], value: m[1] }];
  if (m[2] !== undefined) out.push({ flag, path: ['upstream', 'port'], value: parseInteger(m[2], flag) });
  return out;
}

function parseInteger(value: string, flag: string): number {
  if (!/^\d{1,9}$/.test(value)) throw new ConfigError(flag, 'expected an integer');
  return Number(value);
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Sets `path` in `obj`, creating sections; a non-mapping section is left alone for validateConfig to report. */
function setIn(obj: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = obj;
  for (const key of path.slice(0, -1)) {
    const child = node[key] ?? {};
    if (!isMapping(child)) return;
    node[key] = child;
    node = child;
  }
  node[path[path.length - 1]!] = value;
}
