// Command-line options shared by the benchmark scripts: `--flag`, `--name value`, comma lists.
export function parseArgs(argv = process.argv.slice(2)) {
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
