/**
 * Every error the SDK throws is a {@link KeygateError} subclass with a stable `code`, so
 * callers can branch with `instanceof` or on `error.code`.
 *
 * Messages never contain tokens, proofs, codes, PKCE verifiers or key material: only
 * protocol error codes, HTTP statuses and fixed text written here.
 *
 * @module
 */

/** The stable codes of {@link KeygateError}. */
export type KeygateErrorCode =
  | 'config'
  | 'invalid_response'
  | 'issuer_mismatch'
  | 'state_mismatch'
  | 'redirect_mismatch'
  | 'authorization_denied'
  | 'not_dpop_bound'
  | 'oauth'
  | 'dpop_nonce_loop'
  | 'signed_out'
  | 'not_signed_in'
  | 'key_store'
  | 'token_store'
  | 'rate_limited'
  | 'network';

/** The base class of every error thrown by `@keygate/client`. */
export class KeygateError extends Error {
  /** A stable, machine-readable code. */
  readonly code: KeygateErrorCode;

  constructor(code: KeygateErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The client configuration or a URL given to it is unusable. */
export class ConfigError extends KeygateError {
  constructor(message: string) {
    super('config', message);
  }
}

/** keygate answered with something the SDK cannot use (bad JSON, missing field…). */
export class InvalidResponseError extends KeygateError {
  constructor(message: string) {
    super('invalid_response', message);
  }
}

/** The metadata `issuer`, or the `iss` of an authorization response, is not keygate's. */
export class IssuerMismatchError extends KeygateError {
  constructor() {
    super('issuer_mismatch', 'the issuer does not match the configured keygate base URL');
  }
}

/**
 * The `state` of the authorization response does not match the pending request (a
 * forged or stale redirect). Nothing was exchanged.
 */
export class StateMismatchError extends KeygateError {
  constructor() {
    super('state_mismatch', 'the authorization response state does not match the request');
  }
}

/** The callback URL is not the registered redirect URI, or is malformed. Nothing was exchanged. */
export class RedirectMismatchError extends KeygateError {
  constructor(message = 'the callback URL is not the registered redirect URI') {
    super('redirect_mismatch', message);
  }
}

/** The authorization server redirected back with an `error` (e.g. `access_denied`). */
export class AuthorizationError extends KeygateError {
  /** The OAuth error code from the redirect, reduced to RFC 6749's character set. */
  readonly error: string;
  /** `error_description`, if any, reduced to printable ASCII and 256 characters. */
  readonly errorDescription: string | undefined;

  constructor(error: string, errorDescription: string | undefined) {
    super('authorization_denied', `authorization failed: ${error}`);
    this.error = error;
    this.errorDescription = errorDescription;
  }
}

/** The token endpoint issued a token that is not DPoP-bound; it was discarded. */
export class NotDpopBoundError extends KeygateError {
  constructor() {
    super('not_dpop_bound', 'the token response is not DPoP-bound (token_type is not "DPoP"); nothing was stored');
  }
}

/** An OAuth error answer (RFC 6749 §5.2) from the token or revocation endpoint. */
export class OAuthError extends KeygateError {
  /** The HTTP status. */
  readonly status: number;
  /** The `error` code, e.g. `invalid_grant`; empty when the body had none. */
  readonly error: string;
  /** `error_description`, sanitised. */
  readonly errorDescription: string | undefined;

  constructor(status: number, error: string, errorDescription: string | undefined) {
    super('oauth', `keygate refused the request: HTTP ${status}${error ? ` ${error}` : ''}`);
    this.status = status;
    this.error = error;
    this.errorDescription = errorDescription;
  }
}

/** The server asked for a fresh DPoP nonce twice in a row; the SDK stops instead of looping. */
export class DpopNonceError extends KeygateError {
  constructor() {
    super('dpop_nonce_loop', 'the server rejected the DPoP nonce twice in a row');
  }
}

/** Why the SDK signed out. */
export type SignedOutReason =
  /** Refresh answered `invalid_grant`/`invalid_client`. */
  | 'the session was revoked or expired'
  /** The access token expired and there is no refresh token. */
  | 'the access token expired and there is no refresh token';

/**
 * The session is over (revoked by an administrator, expired, or its refresh token was
 * reused): the tokens have been cleared and the user must sign in again.
 */
export class SignedOutError extends KeygateError {
  /** A human-readable reason, safe to show and log. */
  readonly reason: SignedOutReason;

  constructor(reason: SignedOutReason) {
    super('signed_out', `signed out: ${reason}`);
    this.reason = reason;
  }
}

/** A call needed tokens and there are none: sign in first. */
export class NotSignedInError extends KeygateError {
  constructor() {
    super('not_signed_in', 'not signed in');
  }
}

/**
 * The key store could not create, load or use the DPoP key. The SDK never falls back to
 * another (extractable or software) key when this happens.
 */
export class KeyStoreError extends KeygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('key_store', message, options);
  }
}

/** The token store could not load, save or clear the tokens. */
export class TokenStoreError extends KeygateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('token_store', message, options);
  }
}

/**
 * keygate (or the upstream behind it) answered 429: a rate limit, quota or budget was hit.
 * The SDK does not retry; wait `retryAfterSeconds` (when known) before calling again.
 */
export class RateLimitedError extends KeygateError {
  /** Seconds to wait, from `Retry-After`; `undefined` when the header was absent or unreadable. */
  readonly retryAfterSeconds: number | undefined;
  /** The untouched 429 response, for callers that want its body. */
  readonly response: Response;

  constructor(retryAfterSeconds: number | undefined, response: Response) {
    super(
      'rate_limited',
      retryAfterSeconds === undefined
        ? 'rate limited (HTTP 429)'
        : `rate limited (HTTP 429); retry after ${retryAfterSeconds} s`,
    );
    this.retryAfterSeconds = retryAfterSeconds;
    this.response = response;
  }
}

/** keygate could not be reached. `cause` holds the underlying fetch error. */
export class NetworkError extends KeygateError {
  constructor(what: string, cause: unknown) {
    super('network', `could not reach keygate (${what})`, { cause });
  }
}

/** An OAuth error code reduced to the characters RFC 6749 allows, so it is safe to show. */
export function sanitiseCode(code: string): string {
  let out = '';
  for (const ch of code) {
    const c = ch.charCodeAt(0);
    if (c === 0x20 || c === 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e)) out += ch;
    if (out.length >= 64) break;
  }
  return out;
}

/** A free-text description reduced to printable ASCII, at most 256 characters. */
export function sanitiseDescription(text: unknown): string | undefined {
  if (typeof text !== 'string') return undefined;
  return text.replace(/[^\x20-\x7e]/g, '').slice(0, 256);
}
