/**
 * The tokens a signed-in client holds, and the {@link TokenStore} they live in.
 *
 * @module
 */

import { TokenStoreError } from './errors.js';

/** What the SDK keeps after sign-in. Treat every field but `expiresAt`/`scope` as secret. */
export interface TokenSet {
  /** The DPoP-bound access token. */
  readonly accessToken: string;
  /** The DPoP-bound refresh token; replaced on every refresh (rotation). */
  readonly refreshToken?: string;
  /** When the access token expires, milliseconds since the epoch (device clock). */
  readonly expiresAt: number;
  /** The scopes granted, space-separated. */
  readonly scope?: string;
}

/**
 * Where tokens are kept (memory, IndexedDB, the iOS Keychain / Android Keystore…).
 *
 * Contract: {@link save} replaces the whole set in one step, so a reader never sees a new
 * access token with an old refresh token; after a refresh, the previous refresh token is
 * gone (it is spent: presenting it again revokes the whole session at keygate).
 * Failures reject (the SDK wraps them in {@link TokenStoreError}).
 */
export interface TokenStore {
  load(): Promise<TokenSet | null>;
  save(tokens: TokenSet): Promise<void>;
  clear(): Promise<void>;
}

/** A {@link TokenStore} in process memory (servers, tests, or "sign in every launch"). */
export class MemoryTokenStore implements TokenStore {
  #tokens: TokenSet | null = null;

  async load(): Promise<TokenSet | null> {
    return this.#tokens;
  }

  async save(tokens: TokenSet): Promise<void> {
    this.#tokens = tokens;
  }

  async clear(): Promise<void> {
    this.#tokens = null;
  }
}

/** Serialises a token set for stores that hold strings (Keychain, SecureStore). */
export function serialiseTokens(tokens: TokenSet): string {
  const out: Record<string, string | number> = { v: 1, at: tokens.accessToken, exp: tokens.expiresAt };
  if (tokens.refreshToken !== undefined) out.rt = tokens.refreshToken;
  if (tokens.scope !== undefined) out.scope = tokens.scope;
  return JSON.stringify(out);
}

/** Parses {@link serialiseTokens}'s output; throws {@link TokenStoreError} on anything else. */
export function parseTokens(text: string): TokenSet {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new TokenStoreError('the stored tokens are not readable');
  }
  const r = raw as Partial<Record<string, unknown>> | null;
  if (!r || r.v !== 1 || typeof r.at !== 'string' || typeof r.exp !== 'number') {
    throw new TokenStoreError('the stored tokens are not readable');
  }
  return {
    accessToken: r.at,
    expiresAt: r.exp,
    ...(typeof r.rt === 'string' ? { refreshToken: r.rt } : {}),
    ...(typeof r.scope === 'string' ? { scope: r.scope } : {}),
  };
}
