import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Command-line options shared by the benchmark scripts: `--flag`, `--name value`, comma lists.
// `known` names every flag and option the script reads: `--help` prints `usage` and exits; anything else starting
// with `--` is refused before any work (a mistyped flag once started the full 8-minute run).
export function parseArgs({ flags = [], opts = [], usage = '' } = {}, argv = process.argv.slice(2)) {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const known = new Set([...flags, ...opts]);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (opts.includes(a)) i++;
    else if (!known.has(a)) {
      process.stderr.write(`unknown argument: ${a}\n${usage}\n`);
      process.exit(2);
    }
  }
  return {
    argv,
    flag: (name) => argv.includes(name),
    opt: (name) => {
      const i = argv.indexOf(name);
      return i >= 0 ? argv[i + 1] : undefined;
    },
  };
}

export const list = (s) => s.split(',').filter(Boolean);

/**
 * The scripts that compare builds (bench/coldstart.js, bench/metrics-flood.js): `--name value` options with
 * defaults, and the checkouts given with `--relay-root DIR` (repeatable; this one when none), absolute.
 */
export function compareArgs(argv = process.argv.slice(2)) {
  const roots = argv.flatMap((a, i) => (a === '--relay-root' ? [resolve(argv[i + 1])] : []));
  if (roots.length === 0) roots.push(fileURLToPath(new URL('../..', import.meta.url)));
  return {
    argv,
    roots,
    opt: (name, def) => {
      const i = argv.indexOf(`--${name}`);
      return i >= 0 ? argv[i + 1] : def;
    },
  };
}
