/**
 * DPoP proofs (RFC 9449 §4), server nonces (§8, §9) and the HTTP header parsing they need.
 *
 * @module
 */

import { b64url, b64urlJson, randomToken, sha256, utf8 } from './encoding.js';
import { KeyStoreError } from './errors.js';
import type { KeyStore } from './keystore.js';
import { toEcPublicJwk } from './keystore.js';

/**
 * The `htu` of a request URL (RFC 9449 §4.2): scheme, host, port and path; no query,
 * no fragment, scheme and host in lower case, no default port (RFC 3986 §6.2.3), dot
 * segments resolved. Throws a `TypeError` on a URL that cannot be parsed.
 */
export function htu(url: string | URL): string {
  const u = new URL(url.toString());
  // WHATWG URL parsing already lower-cases scheme and host of http(s) URLs, drops their
  // default port and resolves dot segments; only query and fragment remain to be removed.
  return `${u.protocol.toLowerCase()}//${u.host.toLowerCase()}${u.pathname}`;
}

/** `ath`: base64url SHA-256 of the access token (RFC 9449 §4.2). */
export async function ath(accessToken: string): Promise<string> {
  return b64url(await sha256(utf8(accessToken)));
}

/** What one proof asserts. */
export interface ProofInput {
  /** The HTTP method, e.g. `POST`. */
  readonly method: string;
  /** The request URL (query and fragment are dropped for `htu`). */
  readonly url: string | URL;
  /** `iat`, seconds since the epoch. */
  readonly iat: number;
  /** The server's latest nonce for this origin. */
  readonly nonce?: string | undefined;
  /** At a resource: the access token, whose hash becomes `ath`. */
  readonly accessToken?: string | undefined;
}

/** Creates and signs one DPoP proof (ES256, fresh 128-bit `jti`). */
export async function createProof(keys: KeyStore, input: ProofInput): Promise<string> {
  let jwk;
  try {
    jwk = toEcPublicJwk(await keys.getOrCreate());
  } catch (cause) {
    if (cause instanceof KeyStoreError) throw cause;
    throw new KeyStoreError('the key store could not provide the DPoP key', { cause });
  }
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk };
  const claims: Record<string, string | number> = {
    jti: randomToken(16),
    htm: input.method.toUpperCase(),
    htu: htu(input.url),
    iat: Math.floor(input.iat),
  };
  if (input.nonce !== undefined) claims.nonce = input.nonce;
  if (input.accessToken !== undefined) claims.ath = await ath(input.accessToken);
  const signingInput = `${b64urlJson(header)}.${b64urlJson(claims)}`;
  let sig: Uint8Array;
  try {
    sig = await keys.sign(utf8(signingInput));
  } catch (cause) {
    if (cause instanceof KeyStoreError) throw cause;
    throw new KeyStoreError('the key store could not sign the DPoP proof', { cause });
  }
  if (!(sig instanceof Uint8Array) || sig.length !== 64) {
    throw new KeyStoreError('the key store returned a signature that is not a raw 64-byte ES256 signature (DER? use derToRaw)');
  }
  return `${signingInput}.${b64url(sig)}`;
}

/** The longest nonce accepted from a server. */
const MAX_NONCE_LEN = 512;

/** RFC 9449 §8.1's nonce syntax: one or more NQCHAR. */
export function validNonce(value: string): boolean {
  return value.length > 0 && value.length <= MAX_NONCE_LEN && /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(value);
}

/** The well-formed `DPoP-Nonce` of a response, if any. */
export function nonceFrom(headers: Headers): string | undefined {
  const v = headers.get('dpop-nonce');
  // `Headers.get` joins repeated headers with ", ", which `validNonce` then refuses.
  return v !== null && validNonce(v) ? v : undefined;
}

/** The latest nonce of each origin, so the next proof to that origin carries it. */
export class NonceCache {
  readonly #byOrigin = new Map<string, string>();

  get(url: string | URL): string | undefined {
    return this.#byOrigin.get(new URL(url.toString()).origin);
  }

  set(url: string | URL, nonce: string): void {
    this.#byOrigin.set(new URL(url.toString()).origin, nonce);
  }

  /** Remembers a response's `DPoP-Nonce` (a server may send one with any answer). */
  observe(url: string | URL, headers: Headers): string | undefined {
    const nonce = nonceFrom(headers);
    if (nonce !== undefined) this.set(url, nonce);
    return nonce;
  }
}

/**
 * Parses a `WWW-Authenticate` value into challenges: `[scheme, {param: value}]`.
 * Tolerant of anything (the value comes from the network).
 */
export function parseChallenges(value: string): Array<[scheme: string, params: Map<string, string>]> {
  const out: Array<[string, Map<string, string>]> = [];
  const token = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/;
  let rest = value;
  for (;;) {
    rest = rest.replace(/^[\s,]+/, '');
    if (rest === '') break;
    const word = token.exec(rest);
    if (!word) {
      rest = rest.slice(1);
      continue;
    }
    rest = rest.slice(word[0].length);
    const afterWs = rest.replace(/^[ \t]+/, '');
    if (afterWs.startsWith('=') && out.length > 0 && !/^=+\s*(,|$)/.test(afterWs)) {
      rest = afterWs.slice(1).replace(/^[ \t]+/, '');
      let v = '';
      if (rest.startsWith('"')) {
        let i = 1;
        for (; i < rest.length; i++) {
          const c = rest[i]!;
          if (c === '\\' && i + 1 < rest.length) v += rest[++i]!;
          else if (c === '"') break;
          else v += c;
        }
        rest = rest.slice(i + 1);
      } else {
        const m = token.exec(rest);
        v = m ? m[0] : '';
        rest = rest.slice(v.length);
      }
      out[out.length - 1]![1].set(word[0].toLowerCase(), v);
    } else {
      out.push([word[0], new Map()]);
      // A token68 after the scheme (e.g. `Basic abc==`) is skipped as junk.
    }
  }
  return out;
}

/** The `error` of the response's `DPoP` challenge, if it is a 401 with one. */
export function dpopChallengeError(response: Response): string | undefined {
  if (response.status !== 401) return undefined;
  const value = response.headers.get('www-authenticate');
  if (!value) return undefined;
  for (const [scheme, params] of parseChallenges(value)) {
    if (scheme.toLowerCase() === 'dpop' && params.has('error')) return params.get('error');
  }
  return undefined;
}

/** The `error` of any challenge of a 401 (`DPoP` or `Bearer`). */
export function anyChallengeError(response: Response): string | undefined {
  if (response.status !== 401) return undefined;
  const value = response.headers.get('www-authenticate');
  if (!value) return undefined;
  for (const [, params] of parseChallenges(value)) {
    const e = params.get('error');
    if (e !== undefined) return e;
  }
  return undefined;
}

/** `Retry-After` in seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3). */
export function retryAfterSeconds(headers: Headers, nowMs: number): number | undefined {
  const v = headers.get('retry-after')?.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - nowMs) / 1000));
}

/** The server's clock minus ours in seconds, from a response's `Date` header. */
export function serverClockOffset(headers: Headers, nowMs: number): number | undefined {
  const v = headers.get('date');
  if (!v) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.round((at - nowMs) / 1000);
}
