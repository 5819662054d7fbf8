/**
 * The front-channel half of the authorization code flow: PKCE S256 (RFC 7636), `state`,
 * `dpop_jkt` (RFC 9449 §10), and the checks on the redirect that comes back.
 *
 * @module
 */

import { b64url, randomToken, sha256, utf8 } from './encoding.js';
import {
  AuthorizationError,
  ConfigError,
  IssuerMismatchError,
  RedirectMismatchError,
  StateMismatchError,
  InvalidResponseError,
  sanitiseCode,
  sanitiseDescription,
} from './errors.js';

/**
 * What the app keeps between opening the authorization URL and receiving the redirect.
 * `state` and `codeVerifier` are secrets: keep them in memory (or `sessionStorage` across
 * a web redirect), never in a URL or a log. A plain object, so it can be serialised.
 */
export interface PendingAuthorization {
  readonly state: string;
  readonly codeVerifier: string;
  readonly redirectUri: string;
  readonly scope: string;
  /** The DPoP key thumbprint sent as `dpop_jkt`. */
  readonly jkt: string;
}

/** RFC 6749 §3.3 scope-token: `%x21 / %x23-5B / %x5D-7E`, non-empty. */
export function validScopeToken(s: string): boolean {
  return /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s);
}

/** The S256 challenge of a verifier. */
export async function pkceChallenge(verifier: string): Promise<string> {
  return b64url(await sha256(utf8(verifier)));
}

/** Builds the authorization URL and the secrets to keep. */
export async function buildAuthorization(params: {
  authorizationEndpoint: string;
  clientId: string;
  redirectUri: string;
  scopes: readonly string[];
  jkt: string;
}): Promise<{ url: string; pending: PendingAuthorization }> {
  if (params.scopes.length === 0 || !params.scopes.every(validScopeToken)) {
    throw new ConfigError('scopes must be non-empty RFC 6749 scope tokens');
  }
  const scope = params.scopes.join(' ');
  const state = randomToken(32);
  const codeVerifier = randomToken(32);
  const url = new URL(params.authorizationEndpoint);
  const q = url.searchParams;
  q.set('response_type', 'code');
  q.set('client_id', params.clientId);
  q.set('redirect_uri', params.redirectUri);
  q.set('scope', scope);
  q.set('state', state);
  q.set('code_challenge', await pkceChallenge(codeVerifier));
  q.set('code_challenge_method', 'S256');
  q.set('dpop_jkt', params.jkt);
  return {
    url: url.toString(),
    pending: { state, codeVerifier, redirectUri: params.redirectUri, scope, jkt: params.jkt },
  };
}

/** Compares two strings in time independent of where they differ. */
function constantTimeEqual(a: string, b: string): boolean {
  const x = utf8(a);
  const y = utf8(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

function withoutQuery(u: URL): string {
  const c = new URL(u.href);
  c.search = '';
  c.hash = '';
  return c.href;
}

/**
 * Checks a redirect against the pending request and returns the code.
 *
 * Order: the URL must be the registered redirect URI; parameters must not repeat;
 * `state` must match (else {@link StateMismatchError}, before anything else is believed);
 * `iss` (RFC 9207), when present, must be the issuer; an `error` becomes an
 * {@link AuthorizationError}; finally `code` must be present.
 */
export function parseCallback(pending: PendingAuthorization, callbackUrl: string, issuer: string): string {
  let callback: URL;
  let registered: URL;
  try {
    callback = new URL(callbackUrl);
    registered = new URL(pending.redirectUri);
  } catch {
    throw new RedirectMismatchError('the callback is not a URL');
  }
  if (withoutQuery(callback) !== withoutQuery(registered)) throw new RedirectMismatchError();
  const params = new URLSearchParams(callback.search);
  const one = (name: string): string | undefined => {
    const all = params.getAll(name);
    // Repeated parameters are ambiguous (RFC 6749 §3.1): refuse.
    if (all.length > 1) throw new RedirectMismatchError(`the callback repeats the "${name}" parameter`);
    return all[0];
  };
  const state = one('state');
  const code = one('code');
  const error = one('error');
  const description = one('error_description');
  const iss = one('iss');
  if (state === undefined || !constantTimeEqual(state, pending.state)) throw new StateMismatchError();
  if (iss !== undefined && iss.replace(/\/+$/, '') !== issuer.replace(/\/+$/, '')) {
    throw new IssuerMismatchError();
  }
  if (error !== undefined) throw new AuthorizationError(sanitiseCode(error), sanitiseDescription(description));
  if (!code) throw new InvalidResponseError('the callback has no authorization code');
  return code;
}
