export interface Family {
  type: string;
  help: string;
  /** Samples by series: the sample name's suffix after the family name (`_bucket`, `_sum`, `_count`; '' for the name itself) and the labels as written. */
  samples: Map<string, number>;
}

/** Sample-name suffixes that belong to a family of this type (Prometheus text format 0.0.4). */
const SUFFIXES: Record<string, readonly string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count'] };

/**
 * A strict reader of the Prometheus text format 0.0.4: every family has one HELP and one TYPE before its samples,
 * samples of a family are contiguous, names, label names and escapes are valid, no series repeats, an empty line
 * only separates two families (prom-client puts one between families), histogram buckets carry `le` and end in
 * `+Inf` = `_count`. Values as Prometheus reads them (Go's ParseFloat: NaN in any case; prom-client writes `Nan`).
 * Throws on anything else.
 */
export function parseProm(text: string): Map<string, Family> {
  const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
  const families = new Map<string, Family>();
  const done = new Set<string>();
  let current: string | null = null;
  let gap = false;
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    const family = (name: string): Family => {
      if (!NAME.test(name)) throw new Error(`bad metric name, ${where}`);
      if (current !== name) {
        if (current !== null) done.add(current);
        if (done.has(name)) throw new Error(`family ${name} is not contiguous, ${where}`);
        current = name;
      } else if (gap) throw new Error(`empty line inside family ${name}, ${where}`);
      gap = false;
      let f = families.get(name);
      if (!f) families.set(name, (f = { type: '', help: '', samples: new Map() }));
      return f;
    };
    if (line === '') {
      if (i === 0 || gap) throw new Error(`empty line, ${where}`);
      gap = true;
      return;
    }
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]!);
      if (f.samples.size > 0) throw new Error(`${meta[1]} after samples, ${where}`);
      if (meta[1] === 'HELP') {
        if (f.help) throw new Error(`second HELP, ${where}`);
        if (/\\[^\\n]/.test(meta[3]!.replace(/\\\\/g, ''))) throw new Error(`bad HELP escape, ${where}`);
        f.help = meta[3]!;
      } else {
        if (f.type) throw new Error(`second TYPE, ${where}`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(meta[3]!)) throw new Error(`bad TYPE, ${where}`);
        f.type = meta[3]!;
      }
      return;
    }
    if (line.startsWith('#')) {
      if (gap) throw new Error(`empty line before a comment, ${where}`);
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`bad sample, ${where}`);
    // A histogram's or summary's samples are named after it with a suffix.
    const own = current !== null && families.get(current);
    const suffix = own && m[1] !== current ? (SUFFIXES[own.type] ?? []).find((s) => m[1] === current + s) : undefined;
    const f = family(suffix ? current! : m[1]!);
    if (!f.type) throw new Error(`sample before TYPE, ${where}`);
    let labels = '';
    const names = new Set<string>();
    if (m[2]) {
      const body = m[2].slice(1, -1);
      const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/y;
      let pos = 0;
      while (pos < body.length) {
        LABEL.lastIndex = pos;
        const lm = LABEL.exec(body);
        if (!lm) throw new Error(`bad labels, ${where}`);
        if (names.has(lm[1]!)) throw new Error(`repeated label, ${where}`);
        names.add(lm[1]!);
        pos = LABEL.lastIndex;
        if (lm[3] === ',' && pos === body.length) throw new Error(`trailing comma, ${where}`);
      }
      labels = m[2];
    }
    if (f.type === 'histogram' && (suffix === '_bucket') !== names.has('le')) throw new Error(`a histogram has le on its buckets only, ${where}`);
    if (f.type === 'histogram' && !suffix) throw new Error(`a histogram sample needs _bucket, _sum or _count, ${where}`);
    const v = m[3]!;
    if (!/^(nan|[+-]Inf|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$/i.test(v)) throw new Error(`bad value, ${where}`);
    const key = `${suffix ?? ''}${labels}`;
    if (f.samples.has(key)) throw new Error(`repeated series, ${where}`);
    f.samples.set(key, /^nan$/i.test(v) ? NaN : v.endsWith('Inf') ? (v.startsWith('-') ? -Infinity : Infinity) : Number(v));
  });
  for (const [name, f] of families) if (f.type === 'histogram') checkHistogram(name, f);
  return families;
}

/** Each series of a histogram has a `+Inf` bucket equal to its `_count`. */
function checkHistogram(name: string, f: Family): void {
  const inf = new Map<string, number>();
  for (const [key, v] of f.samples) {
    if (key.startsWith('_bucket') && key.includes('le="+Inf"')) inf.set(key.slice('_bucket'.length).replace(/,le="\+Inf"|le="\+Inf",?/, '').replace('{}', ''), v);
  }
  for (const [key, count] of f.samples) {
    if (!key.startsWith('_count')) continue;
    const labels = key.slice('_count'.length);
    if (inf.get(labels) !== count) throw new Error(`histogram ${name}${labels}: no +Inf bucket equal to _count`);
  }
}

/** The value of one series; throws when there is none. */
export function sample(fams: Map<string, Family>, name: string, labels = ''): number {
  const v = fams.get(name)?.samples.get(labels);
  if (v === undefined) throw new Error(`no sample ${name}${labels}`);
  return v;
}
