import { isIP } from 'node:net';
import { hostname } from 'node:os';

/** Why a request was refused: the config key that would allow it. */
export type GuardRefusal = 'web.allowed-hosts' | 'web.allowed-origins';

/**
 * Same-host checks for every HTTP request and WebSocket upgrade, against DNS rebinding and cross-site WebSocket
 * hijacking (OWASP WebSocket guidance: check Origin on the handshake against an allow-list).
 *
 * Host: an IP address (no page on another site can make a browser send one of ours), `localhost`, this machine's
 * host name, or a name in web.allowed-hosts. A rebinding page's requests carry its own DNS name and are refused.
 * Origin, when sent (browsers always send it on WebSocket upgrades and cross-site requests): the same host and port
 * as Host (the dashboard's own page), or one of web.allowed-origins. Tools that send no Origin are not browsers.
 */
export class RequestGuard {
  readonly #hosts: ReadonlySet<string>;
  readonly #anyHost: boolean;
  readonly #origins: ReadonlySet<string>;
  readonly #anyOrigin: boolean;

  constructor(config: { readonly allowedHosts: ReadonlyArray<string>; readonly allowedOrigins: ReadonlyArray<string> }) {
    // Compared as browsers send them, in lower case (the config takes them in any case).
    this.#hosts = new Set(['localhost', hostname().toLowerCase(), ...config.allowedHosts.map((h) => h.toLowerCase())]);
    this.#anyHost = config.allowedHosts.includes('*');
    this.#origins = new Set(config.allowedOrigins.map((o) => o.toLowerCase()));
    this.#anyOrigin = config.allowedOrigins.includes('*');
  }

  /** null when the request may be served; else the key that refused it. Header values as received ('' = absent). */
  check(host: string, origin: string): GuardRefusal | null {
    if (!this.#hostAllowed(host)) return 'web.allowed-hosts';
    if (origin !== '' && !this.#originAllowed(origin, host)) return 'web.allowed-origins';
    return null;
  }

  #hostAllowed(header: string): boolean {
    if (this.#anyHost) return true;
    const name = hostName(header);
    if (name === null) return false;
    return isIP(name.replace(/^\[|\]$/g, '')) !== 0 || this.#hosts.has(name);
  }

  #originAllowed(origin: string, host: string): boolean {
    const o = origin.toLowerCase();
    if (this.#anyOrigin || this.#origins.has(o)) return true;
    // `null` (sandboxed frames, file: pages) and anything but http(s)://host[:port] never match.
    const m = /^(https?):\/\/(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$/.exec(o);
    const h = HOST_RE.exec(host);
    if (!m || !h) return false;
    const defaultPort = m[1] === 'https' ? '443' : '80';
    return m[2] === h[1]!.toLowerCase() && (m[3] ?? defaultPort) === (h[2] ?? defaultPort);
  }
}

/** A Host header: `name`, `name:port` or `[v6]:port`. */
const HOST_RE = /^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$/i;

/** The name part of a Host header, lower case; null when malformed or empty. */
function hostName(header: string): string | null {
  const m = HOST_RE.exec(header);
  return m ? m[1]!.toLowerCase() : null;
}
