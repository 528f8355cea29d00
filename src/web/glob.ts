/**
 * Redis-style glob matching (util.c stringmatchlen): `*`, `?`, `[abc]`, `[^a-z]`, `\x`. Works on "binary
 * strings" (one char per byte, latin1) so keys that are not UTF-8 match byte for byte; turn a UTF-8 pattern
 * into one with `globBytes()`.
 */
export function globMatch(pattern: string, str: string): boolean {
  return match(pattern, 0, str, 0, 0);
}

/** A pattern typed as text (UTF-8), as a binary string comparable with latin1-decoded keys. */
export function globBytes(pattern: string): string {
  return Buffer.from(pattern, 'utf8').toString('latin1');
}

/** Nesting of `*` is bounded like Redis (it gives up rather than backtrack exponentially). */
const MAX_NESTING = 1000;

function match(p: string, pi: number, s: string, si: number, nesting: number): boolean {
  if (nesting > MAX_NESTING) return false;
  const plen = p.length;
  const slen = s.length;
  while (pi < plen && si < slen) {
    const c = p[pi]!;
    if (c === '*') {
      while (pi + 1 < plen && p[pi + 1] === '*') pi++;
      if (pi + 1 === plen) return true;
      for (let k = si; k <= slen; k++) if (match(p, pi + 1, s, k, nesting + 1)) return true;
      return false;
    }
    if (c === '?') {
      si++;
      pi++;
      continue;
    }
    if (c === '[') {
      pi++;
      const not = p[pi] === '^';
      if (not) pi++;
      let hit = false;
      for (;;) {
        if (pi >= plen) {
          pi--; // unterminated class: like Redis, the last char closes it
          break;
        }
        const pc = p[pi]!;
        if (pc === ']') break;
        if (pc === '\\' && pi + 1 < plen) {
          pi++;
          if (p[pi] === s[si]) hit = true;
        } else if (pi + 2 < plen && p[pi + 1] === '-') {
          let lo = pc.charCodeAt(0);
          let hi = p.charCodeAt(pi + 2);
          if (lo > hi) [lo, hi] = [hi, lo];
          const x = s.charCodeAt(si);
          if (x >= lo && x <= hi) hit = true;
          pi += 2;
        } else if (pc === s[si]) {
          hit = true;
        }
        pi++;
      }
      if (not) hit = !hit;
      if (!hit) return false;
      pi++;
      si++;
      continue;
    }
    if (c === '\\' && pi + 1 < plen) pi++;
    if (p[pi] !== s[si]) return false;
    pi++;
    si++;
  }
  while (pi < plen && p[pi] === '*') pi++;
  return pi === plen && si === slen;
}
