/**
 * Redis-style glob matching (util.c stringmatchlen): `*`, `?`, `[abc]`, `[^a-z]`, `\x`, on "binary strings"
 * (one char per byte, latin1) so keys and channels that are not UTF-8 match byte for byte. Used for PSUBSCRIBE
 * patterns and the /stream key filter. Iterative, with one backtrack point for the last `*`: every other token
 * matches exactly one byte, so this is linear in practice and never recurses.
 */
const STAR = 0x2a;
const QUESTION = 0x3f;
const OPEN = 0x5b;
const CLOSE = 0x5d;
const CARET = 0x5e;
const BACKSLASH = 0x5c;
const DASH = 0x2d;

export function globMatch(pattern: string, subject: string): boolean {
  let p = 0;
  let s = 0;
  let starP = -1;
  let starS = 0;
  while (s < subject.length) {
    if (p < pattern.length && pattern.charCodeAt(p) === STAR) {
      while (p < pattern.length && pattern.charCodeAt(p) === STAR) p++;
      if (p === pattern.length) return true;
      starP = p;
      starS = s;
      continue;
    }
    const next = p < pattern.length ? matchOne(pattern, p, subject.charCodeAt(s)) : -1;
    if (next >= 0) {
      p = next;
      s++;
      continue;
    }
    if (starP < 0) return false;
    p = starP;
    s = ++starS;
  }
  while (p < pattern.length && pattern.charCodeAt(p) === STAR) p++;
  return p === pattern.length;
}

/** A pattern typed as text (UTF-8), as a binary string comparable with latin1-decoded keys. */
export function globBytes(pattern: string): string {
  return Buffer.from(pattern, 'utf8').toString('latin1');
}

/** Matches the token at `p` against one byte: the index after the token, or -1. */
function matchOne(pattern: string, p: number, ch: number): number {
  const t = pattern.charCodeAt(p);
  if (t === QUESTION) return p + 1;
  if (t === BACKSLASH && p + 1 < pattern.length) return pattern.charCodeAt(p + 1) === ch ? p + 2 : -1;
  if (t !== OPEN) return t === ch ? p + 1 : -1;
  let i = p + 1;
  const not = pattern.charCodeAt(i) === CARET;
  if (not) i++;
  let match = false;
  for (; i < pattern.length && pattern.charCodeAt(i) !== CLOSE; i++) {
    if (pattern.charCodeAt(i) === BACKSLASH && i + 1 < pattern.length) {
      i++;
      if (pattern.charCodeAt(i) === ch) match = true;
    } else if (i + 2 < pattern.length && pattern.charCodeAt(i + 1) === DASH) {
      let lo = pattern.charCodeAt(i);
      let hi = pattern.charCodeAt(i + 2);
      if (lo > hi) [lo, hi] = [hi, lo];
      if (ch >= lo && ch <= hi) match = true;
      i += 2;
    } else if (pattern.charCodeAt(i) === ch) {
      match = true;
    }
  }
  // An unterminated class ends the pattern, as in Redis.
  const after = i < pattern.length ? i + 1 : i;
  return match !== not ? after : -1;
}
