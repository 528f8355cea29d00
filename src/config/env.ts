import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';

/**
 * Environment overrides for secrets, so that a container or a unit can pass them without writing them into the
 * config file: `NAME` holds the value, `NAME_FILE` a file that holds it (a Docker/Kubernetes secret, a systemd
 * credential). They override the config file; command-line flags override them.
 */
export const ENV_KEYS = {
  PSYNC_RELAY_PASSWORD: ['listen', 'password'],
  PSYNC_RELAY_UPSTREAM_PASSWORD: ['upstream', 'password'],
  PSYNC_RELAY_WEB_TOKEN: ['web', 'token'],
} as const satisfies Record<string, readonly string[]>;

export interface EnvOverride {
  /** The variable the value came from (`PSYNC_RELAY_PASSWORD` or `PSYNC_RELAY_PASSWORD_FILE`): errors name it. */
  readonly source: string;
  readonly path: readonly string[];
  readonly value: string;
}

/**
 * Reads the overrides present in `env`. Throws ConfigError with `path` = the variable's name when both `NAME` and
 * `NAME_FILE` are set, when a value is empty (an unset `${VAR}` in a compose file must not turn auth off), or when
 * the file cannot be read. One trailing newline of a file is dropped (`echo pw > file` writes one).
 */
export function readEnvOverrides(env: NodeJS.ProcessEnv): EnvOverride[] {
  const out: EnvOverride[] = [];
  for (const [name, path] of Object.entries(ENV_KEYS)) {
    const fileName = `${name}_FILE`;
    const direct = env[name];
    const file = env[fileName];
    if (direct !== undefined && file !== undefined) throw new ConfigError(name, `set either ${name} or ${fileName}, not both`);
    if (direct !== undefined) out.push({ source: name, path, value: nonEmpty(direct, name) });
    else if (file !== undefined) out.push({ source: fileName, path, value: nonEmpty(readSecretFile(nonEmpty(file, fileName), fileName), fileName) });
  }
  return out;
}

function readSecretFile(file: string, source: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(source, `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  return text.replace(/\r?\n$/, '');
}

function nonEmpty(value: string, source: string): string {
  if (value === '') throw new ConfigError(source, 'is empty; unset it or give a value');
  return value;
}
