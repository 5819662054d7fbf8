/**
 * Configuration checks and the RFC 8414 metadata document.
 *
 * @module
 */

import { ConfigError, InvalidResponseError, IssuerMismatchError } from './errors.js';

/** The path of the metadata document under the base URL. */
export const METADATA_PATH = '/.well-known/oauth-authorization-server';

/** The parts of keygate's metadata the SDK uses. */
export interface ServerMetadata {
  readonly issuer: string;
  readonly authorization_endpoint: string;
  readonly token_endpoint: string;
  readonly revocation_endpoint?: string;
  readonly dpop_signing_alg_values_supported: readonly string[];
}

function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === 'localhost' || h === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Parses a URL that tokens will be sent to: `https`, or `http` on a loopback address
 * (development and tests); never with credentials. Throws {@link ConfigError}.
 */
export function checkTransport(text: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${what} is not a valid URL`);
  }
  if (url.username || url.password) throw new ConfigError(`${what} must not contain credentials`);
  const ok = url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
  if (!ok) throw new ConfigError(`${what} must be https (plain http only on a loopback address)`);
  return url;
}

/** The base URL, checked, without a trailing slash, query or fragment. */
export function normaliseBaseUrl(text: string): string {
  const url = checkTransport(text, 'baseUrl');
  if (url.search || url.hash) throw new ConfigError('baseUrl must not have a query or fragment');
  return url.href.replace(/\/+$/, '');
}

/**
 * Checks a metadata document fetched from `base`: `issuer` must be the base URL (RFC 8414
 * §3.3), endpoints must be https (or loopback http), and ES256 must be a DPoP algorithm.
 */
export function parseMetadata(base: string, json: unknown): ServerMetadata {
  const m = json as Partial<Record<string, unknown>> | null;
  if (!m || typeof m !== 'object') throw new InvalidResponseError('the metadata document is not a JSON object');
  const str = (k: string, required: boolean): string | undefined => {
    const v = m[k];
    if (v === undefined && !required) return undefined;
    if (typeof v !== 'string') throw new InvalidResponseError(`the metadata document has no valid ${k}`);
    checkTransport(v, k);
    return v;
  };
  const issuer = m.issuer;
  if (typeof issuer !== 'string') throw new InvalidResponseError('the metadata document has no issuer');
  if (issuer.replace(/\/+$/, '') !== base) throw new IssuerMismatchError();
  const algs = m.dpop_signing_alg_values_supported;
  if (!Array.isArray(algs) || !algs.includes('ES256')) {
    throw new InvalidResponseError('keygate does not offer DPoP with ES256');
  }
  const revocation = str('revocation_endpoint', false);
  return {
    issuer,
    authorization_endpoint: str('authorization_endpoint', true)!,
    token_endpoint: str('token_endpoint', true)!,
    ...(revocation !== undefined ? { revocation_endpoint: revocation } : {}),
    dpop_signing_alg_values_supported: algs.filter((a): a is string => typeof a === 'string'),
  };
}
