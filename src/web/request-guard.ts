import { isIP } from 'node:net';
import { hostname } from 'node:os';

/**
 * Why a request was refused: a Host or an Origin not allowed, or a request a page on another site made without an
 * Origin (`cross-site`: web.allowed-origins `*` is the key that allows it).
 */
export type GuardRefusal = 'web.allowed-hosts' | 'web.allowed-origins' | 'cross-site';

/** The Fetch Metadata headers a browser sends (Sec-Fetch-Site, -Mode, -Dest; '' = absent). */
export interface FetchMetadata {
  readonly site: string;
  readonly mode: string;
  readonly dest: string;
}

/**
 * Same-host checks for every HTTP request and WebSocket upgrade, against DNS rebinding and cross-site WebSocket
 * hijacking (OWASP WebSocket guidance: check Origin on the handshake against an allow-list).
 *
 * Host: an IP address (no page on another site can make a browser send one of ours), `localhost`, this machine's
 * host name, or a name in web.allowed-hosts. A rebinding page's requests carry its own DNS name and are refused.
 * Origin, when sent (browsers always send it on WebSocket upgrades and cross-site requests): the same host and port
 * as Host (the dashboard's own page), or one of web.allowed-origins. Tools that send no Origin are not browsers.
 * A browser's request from another site without an Origin (Sec-Fetch-Site: a tag or a no-cors fetch) is refused
 * too, unless web.allowed-origins is `*` (see crossSite).
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

  /** null when the request may be served; else why not. Header values as received ('' = absent). */
  check(host: string, origin: string, fetch: FetchMetadata = NO_METADATA): GuardRefusal | null {
    if (!this.#hostAllowed(host)) return 'web.allowed-hosts';
    if (origin !== '' && !this.#originAllowed(origin, host)) return 'web.allowed-origins';
    if (origin === '' && !this.#anyOrigin && crossSite(fetch)) return 'cross-site';
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

const NO_METADATA: FetchMetadata = { site: '', mode: '', dest: '' };

/**
 * A request a page on another site (or another port of this host: `same-site`) made with no Origin: `<img>`,
 * `<script>`, `<object>`, `<iframe>`, a no-cors fetch. Its answer is opaque to the page, but whether it loaded is
 * not: `<object data=/status?token=guess>` fired `load` for the right token and `error` for a wrong one, a token
 * oracle for any page. Browsers send Sec-Fetch-Site on these (Chromium, Firefox, Safari 16.4+); tools send none.
 * A top-level navigation (a link to the dashboard) stays allowed: its page is not the one that sees the answer.
 */
function crossSite(f: FetchMetadata): boolean {
  const site = f.site.toLowerCase();
  if (site !== 'cross-site' && site !== 'same-site') return false;
  return !(f.mode.toLowerCase() === 'navigate' && f.dest.toLowerCase() === 'document');
}

/** A Host header: `name`, `name:port` or `[v6]:port`. */
const HOST_RE = /^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$/i;

/** The name part of a Host header, lower case; null when malformed or empty. */
function hostName(header: string): string | null {
  const m = HOST_RE.exec(header);
  return m ? m[1]!.toLowerCase() : null;
}
