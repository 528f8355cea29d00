// Node module hooks that run the tests' TypeScript through esbuild's transform.
//
// Why not tap's default (@tapjs/typescript, a ts-node fork): it loads the TypeScript compiler into every test
// process, about 2 s of CPU per file, a third of the suite's time on 2 cores. Why not tsx: it minifies
// whitespace, and V8 coverage then maps every range onto a handful of lines and reports 100 %. esbuild keeps the
// lines and an inline source map, so coverage and stack traces point at the .ts lines. Types are checked by
// `npm run typecheck`, once, not per test process.
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { transform, version } from 'esbuild';

// Every test process loads most of src/: the transformed code is kept on disk, keyed by the source text, so only
// the first process after a change runs esbuild on a file (about half a second of CPU per test process otherwise).
const CACHE_DIR = fileURLToPath(new URL('../../node_modules/.cache/psync-relay-tests/', import.meta.url));
let writes = 0;

// The sources import each other as './x.js' (NodeNext), which is the .ts file until compiled.
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    const relative = specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('file:');
    // A query stays as it is (t.mockImport's `?tapmock=` makes a module of its own).
    const [path, query] = splitQuery(specifier);
    if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !relative || !path.endsWith('.js')) throw err;
    return next(`${path.slice(0, -3)}.ts${query}`, context);
  }
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !splitQuery(url)[0].endsWith('.ts')) return next(url, context);
  const path = fileURLToPath(url);
  const source = await readFile(path, 'utf8');
  const key = createHash('sha256').update(`${version}\0${path}\0${source}`).digest('hex');
  const cached = `${CACHE_DIR}${key}.js`;
  const hit = await readFile(cached, 'utf8').catch(() => undefined);
  if (hit !== undefined) return { format: 'module', source: hit, shortCircuit: true };
  const { code } = await transform(source, {
    loader: 'ts',
    format: 'esm',
    target: 'node20',
    sourcefile: path,
    sourcemap: 'inline',
    // As tsconfig.json: ES2022 class fields are [[Define]]d, as tsc emits them for the relay itself.
    tsconfigRaw: { compilerOptions: { useDefineForClassFields: true, verbatimModuleSyntax: false } },
  });
  // Parallel test processes may write the same entry: each writes its own temp file and renames it into place.
  const temp = `${cached}.${process.pid}.${++writes}.tmp`;
  await mkdir(CACHE_DIR, { recursive: true })
    .then(() => writeFile(temp, code))
    .then(() => rename(temp, cached))
    .catch(() => undefined);
  return { format: 'module', source: code, shortCircuit: true };
}

function splitQuery(specifier) {
  const q = specifier.search(/[?#]/);
  return q < 0 ? [specifier, ''] : [specifier.slice(0, q), specifier.slice(q)];
}
