import { isIP } from 'node:net';

/** Most characters of client input echoed into a reply or a log line (Redis echoes at most 128). */
export const ECHO_MAX = 128;

/** `s` cut to `max` characters, marked with `...` when cut. */
export function clip(s: string, max = ECHO_MAX): string {
  return s.length > max ? `${s.slice(0, max)}...` : s;
}

/**
 * A peer's reply to a command that carried `secret`, fit for a log line or an error: a server that does not know
 * AUTH quotes its arguments back. Redis's quote ("unknown command 'AUTH', with args beginning with: 'user' 'pw' ",
 * each cut to 128 characters, so a long password may show only in part) is dropped whole; anywhere else, the
 * secret standing as a word of its own (between spaces, quotes or the ends) is replaced: a short one inside other
 * words ("p" in "password") is left alone, so the reply stays readable.
 */
export function redact(text: string, secret: string | null): string {
  if (secret === null || secret === '') return text;
  const cut = text.replace(/(with args beginning with:).*$/s, '$1 <redacted>');
  const escaped = secret.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return cut.replace(new RegExp(`(?<=^|[\\s'"\`])${escaped}(?=$|[\\s'"\`])`, 'g'), '<redacted>');
}

/**
 * A host as a replica may announce it (REPLCONF ip-address) or REPLICAOF may name it: an IPv4/IPv6 address or a
 * DNS name (letters, digits, `-`, `_` and dots, labels up to 63, one trailing dot allowed), shorter than Redis's
 * NET_HOST_STR_LEN (256).
 * Nothing else, so it can never carry a CR, LF, comma or `=` into INFO or CLIENT LIST.
 */
export function validHost(s: string): boolean {
  if (s.length === 0 || s.length > 255) return false;
  if (isIP(s) !== 0) return true;
  // A fully qualified name may end in a dot (`redis.example.com.`).
  const name = s.length > 1 && s.endsWith('.') ? s.slice(0, -1) : s;
  return name.split('.').every((label) => /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label));
}

/** CLIENT SETNAME's rule (Redis clientSetName): printable ASCII from `!` to `~`, so no spaces or newlines. */
export function validClientName(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}
