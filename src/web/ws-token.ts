/**
 * The web token on a WebSocket upgrade, offered as a subprotocol: browsers cannot set headers on a WebSocket, and a
 * `?token=` in its URL goes whole into a TLS proxy's access log. The dashboard offers
 * `Sec-WebSocket-Protocol: psync-relay, psync-relay.token.<base64url of the token>` and the relay answers
 * `psync-relay` (a browser fails a handshake answered with a protocol it did not offer, or with none when it offered
 * some), never the token's. Pure functions.
 */

export const WS_PROTOCOL = 'psync-relay';
const TOKEN_PREFIX = `${WS_PROTOCOL}.token.`;

export interface OfferedProtocols {
  /** The token offered, decoded; null when none is. */
  readonly token: string | null;
  /** The Sec-WebSocket-Protocol to answer with. */
  readonly answer: string;
}

/** `header`: Sec-WebSocket-Protocol as received ('' = absent). */
export function offeredProtocols(header: string): OfferedProtocols {
  const offers = header.split(',').map((o) => o.trim());
  const tokenOffer = offers.find((o) => o.startsWith(TOKEN_PREFIX));
  if (tokenOffer === undefined) return { token: null, answer: header }; // as before: another client's protocols
  const token = Buffer.from(tokenOffer.slice(TOKEN_PREFIX.length), 'base64url').toString('utf8');
  return { token, answer: offers.includes(WS_PROTOCOL) ? WS_PROTOCOL : '' };
}
