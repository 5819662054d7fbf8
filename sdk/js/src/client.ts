/**
 * {@link KeygateClient}: sign-in (code flow + PKCE, or token exchange), DPoP-bound tokens
 * kept fresh with single-flight refresh, and a `fetch` for keygate's proxy.
 *
 * @module
 */

import {
  ATTESTATION_CHALLENGE_PATH,
  attestationFields,
  attestationRequest,
  parseChallenge,
  type AttestationEvidence,
  type AttestationGrant,
  type AttestationProvider,
} from './attestation.js';
import { buildAuthorization, parseCallback, validScopeToken, type PendingAuthorization } from './authorize.js';
import {
  NonceCache,
  anyChallengeError,
  createProof,
  dpopChallengeError,
  retryAfterSeconds,
  serverClockOffset,
} from './dpop.js';
import {
  ConfigError,
  DpopNonceError,
  InvalidResponseError,
  KeyStoreError,
  KeygateError,
  NetworkError,
  NotDpopBoundError,
  NotSignedInError,
  OAuthError,
  RateLimitedError,
  SignedOutError,
  TokenStoreError,
  sanitiseCode,
  sanitiseDescription,
  type SignedOutReason,
} from './errors.js';
import { jwkThumbprint, toEcPublicJwk, type KeyStore } from './keystore.js';
import { METADATA_PATH, normaliseBaseUrl, parseMetadata, type ServerMetadata } from './metadata.js';
import type { TokenSet, TokenStore } from './tokens.js';

/** The subset of `fetch` the client uses; the URL is always an absolute string. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** Serialises work across tabs/processes (e.g. the Web Locks API); see `webLocks()` in `@keygate/client/browser`. */
export type CrossContextLock = <T>(task: () => Promise<T>) => Promise<T>;

/** How a {@link KeygateClient} reaches keygate and where it keeps its key and tokens. */
export interface KeygateClientOptions {
  /** keygate's public base URL (its issuer): `https://…`, or `http://` on loopback only. */
  readonly baseUrl: string;
  /** The public client's id (`keygate client add`). */
  readonly clientId: string;
  /** The registered redirect URI (custom scheme, claimed https, or loopback). */
  readonly redirectUri: string;
  /** Scopes requested by default. */
  readonly scopes?: readonly string[];
  /** Where the DPoP key lives. */
  readonly keyStore: KeyStore;
  /** Where the tokens live. */
  readonly tokenStore: TokenStore;
  /** The `fetch` to use (default `globalThis.fetch`). */
  readonly fetch?: FetchLike;
  /** Metadata the app already has; fetched from `/.well-known/oauth-authorization-server` otherwise. */
  readonly metadata?: ServerMetadata;
  /** Refresh when the access token expires within this many seconds (default 10). */
  readonly refreshMarginSeconds?: number;
  /** Called once each time the SDK signs out because the session ended. */
  readonly onSignedOut?: (reason: SignedOutReason) => void;
  /** Serialises refreshes with other tabs/processes sharing the same token store. */
  readonly crossContextLock?: CrossContextLock;
  /**
   * App attestation (App Attest / Play Integrity): called before each code exchange and
   * each refresh with a fresh keygate challenge; its evidence goes into the token
   * request. Failures degrade (no evidence), they never block sign-in or refresh.
   */
  readonly attestation?: AttestationProvider;
  /** The clock, milliseconds since the epoch (tests). */
  readonly now?: () => number;
}

/** The outcome of a sign-in or refresh, without the tokens. */
export interface SignInResult {
  readonly scope: string | undefined;
  /** When the access token expires, ms since the epoch. */
  readonly expiresAt: number;
}

/** Device clocks further than this from the server's `Date` are corrected for `iat`. */
const MAX_CLOCK_DRIFT_SECS = 60;
/** After a refused proof, a smaller drift is corrected too (keygate allows 5 s ahead). */
const MAX_CLOCK_DRIFT_AFTER_REFUSAL_SECS = 5;
/** Assumed lifetime when a token response has no `expires_in`. */
const DEFAULT_EXPIRES_IN = 60;
/** The largest OAuth response body read. */
const MAX_OAUTH_BODY = 64 * 1024;

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';

const SESSION_ENDED: SignedOutReason = 'the session was revoked or expired';

function isAbort(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'AbortError';
}

/** Discards a response body we will not read, so the connection is released. */
function discard(response: Response): void {
  response.body?.cancel().catch(() => undefined);
}

/**
 * A keygate client. One instance per signed-in app/user; share it, since concurrent
 * calls through one instance share one refresh.
 */
export class KeygateClient {
  readonly #base: string;
  readonly #options: KeygateClientOptions;
  readonly #fetch: FetchLike;
  readonly #now: () => number;
  readonly #marginMs: number;
  readonly #nonces = new NonceCache();
  readonly #listeners = new Set<(reason: SignedOutReason) => void>();
  #metadata: Promise<ServerMetadata> | undefined;
  /** `undefined`: not loaded from the store yet. */
  #tokens: TokenSet | null | undefined;
  #refreshing: Promise<TokenSet> | undefined;
  /** Seconds to add to the device clock for `iat`. */
  #clockOffset = 0;

  constructor(options: KeygateClientOptions) {
    this.#base = normaliseBaseUrl(options.baseUrl);
    if (!options.clientId) throw new ConfigError('clientId is required');
    try {
      new URL(options.redirectUri);
    } catch {
      throw new ConfigError('redirectUri is not a valid URL');
    }
    for (const s of options.scopes ?? []) {
      if (!validScopeToken(s)) throw new ConfigError('scopes must be RFC 6749 scope tokens');
    }
    if (options.attestation !== undefined && typeof options.attestation !== 'function') {
      throw new ConfigError('attestation must be a function');
    }
    const margin = options.refreshMarginSeconds ?? 10;
    if (!(margin >= 0)) throw new ConfigError('refreshMarginSeconds must be >= 0');
    this.#options = options;
    this.#marginMs = margin * 1000;
    this.#now = options.now ?? (() => Date.now());
    if (!options.fetch && typeof globalThis.fetch !== 'function') {
      throw new ConfigError('no fetch on this platform: pass options.fetch');
    }
    this.#fetch = options.fetch ?? ((url, init) => globalThis.fetch(url, init));
    if (options.metadata) this.#metadata = Promise.resolve(parseMetadata(this.#base, options.metadata));
    if (options.onSignedOut) this.#listeners.add(options.onSignedOut);
  }

  /** keygate's base URL, normalised. */
  get baseUrl(): string {
    return this.#base;
  }

  // ─── plumbing ────────────────────────────────────────────────────────────────────

  /**
   * Sends one request. `keygateAnswers`: whether keygate itself answers (OAuth endpoints,
   * metadata), so its `Date` may set the proof clock; a proxied answer's `Date` is the
   * upstream's. (A proof keygate refuses at the proxy still corrects the clock: see
   * `fetch`.)
   */
  async #send(url: string, init: RequestInit, what: string, keygateAnswers = true): Promise<Response> {
    let response: Response;
    try {
      response = await this.#fetch(url, init);
    } catch (e) {
      if (isAbort(e)) throw e;
      throw new NetworkError(what, e);
    }
    this.#nonces.observe(url, response.headers);
    if (keygateAnswers) this.#observeClock(response.headers, MAX_CLOCK_DRIFT_SECS);
    return response;
  }

  /** Adopts the server's clock when the `Date` header shows the device off by more than `tolerance` s. */
  #observeClock(headers: Headers, tolerance: number): boolean {
    const offset = serverClockOffset(headers, this.#now());
    if (offset === undefined || Math.abs(offset - this.#clockOffset) <= tolerance) return false;
    this.#clockOffset = Math.abs(offset) <= tolerance ? 0 : offset;
    return true;
  }

  /** `iat` for a new proof: the device clock, corrected by the server's when it is off. */
  #proofTime(): number {
    return Math.floor(this.#now() / 1000) + this.#clockOffset;
  }

  /** The server metadata, fetched once. */
  metadata(): Promise<ServerMetadata> {
    if (!this.#metadata) {
      const attempt = (async () => {
        const r = await this.#send(`${this.#base}${METADATA_PATH}`, { headers: { accept: 'application/json' } }, 'metadata');
        if (!r.ok) {
          discard(r);
          throw new InvalidResponseError(`the metadata endpoint answered HTTP ${r.status}`);
        }
        return parseMetadata(this.#base, await readJson(r, 'metadata document'));
      })();
      attempt.catch(() => {
        if (this.#metadata === attempt) this.#metadata = undefined;
      });
      this.#metadata = attempt;
    }
    return this.#metadata;
  }

  async #thumbprint(): Promise<string> {
    try {
      return await jwkThumbprint(toEcPublicJwk(await this.#options.keyStore.getOrCreate()));
    } catch (cause) {
      if (cause instanceof KeyStoreError) throw cause;
      throw new KeyStoreError('the key store could not provide the DPoP key', { cause });
    }
  }

  async #current(): Promise<TokenSet | null> {
    if (this.#tokens === undefined) {
      try {
        this.#tokens = await this.#options.tokenStore.load();
      } catch (cause) {
        throw cause instanceof TokenStoreError ? cause : new TokenStoreError('could not load the tokens', { cause });
      }
    }
    return this.#tokens;
  }

  async #store(tokens: TokenSet): Promise<void> {
    this.#tokens = tokens;
    try {
      await this.#options.tokenStore.save(tokens);
    } catch (cause) {
      throw cause instanceof TokenStoreError ? cause : new TokenStoreError('could not save the tokens', { cause });
    }
  }

  async #clear(): Promise<void> {
    this.#tokens = null;
    try {
      await this.#options.tokenStore.clear();
    } catch (cause) {
      throw cause instanceof TokenStoreError ? cause : new TokenStoreError('could not clear the tokens', { cause });
    }
  }

  /** Clears the tokens, tells the listeners, and returns the error to throw. */
  async #signOut(reason: SignedOutReason): Promise<SignedOutError> {
    try {
      await this.#clear();
    } catch {
      // The memory copy is gone; the session is dead server-side anyway.
    }
    for (const listener of [...this.#listeners]) {
      try {
        listener(reason);
      } catch {
        // A listener's failure must not change the outcome.
      }
    }
    return new SignedOutError(reason);
  }

  /**
   * A single-use attestation challenge from keygate, or `undefined` when there is none
   * (the client has no attestation configured, keygate cannot be reached, a bad answer):
   * the token request then goes without attestation fields.
   */
  async #attestationChallenge(): Promise<string | undefined> {
    try {
      const r = await this.#send(
        `${this.#base}${ATTESTATION_CHALLENGE_PATH}`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
          body: new URLSearchParams({ client_id: this.#options.clientId }).toString(),
          redirect: 'manual',
        },
        'attestation challenge endpoint',
      );
      if (!r.ok) {
        discard(r);
        return undefined;
      }
      return parseChallenge(await readJson(r, 'attestation challenge'));
    } catch {
      return undefined;
    }
  }

  /**
   * The attestation fields for one token request: a fresh challenge (single use, so one
   * per attempt) and the provider's evidence over it. Never throws; never logs evidence.
   */
  async #attestationFields(provider: AttestationProvider, grant: AttestationGrant, jkt: string): Promise<Record<string, string>> {
    const challenge = await this.#attestationChallenge();
    if (challenge === undefined) return {};
    let evidence: AttestationEvidence | null = null;
    try {
      evidence = await provider(await attestationRequest(grant, challenge, jkt));
    } catch {
      // No evidence (older OS, emulator, the platform's service down): `none`.
    }
    return attestationFields(challenge, evidence);
  }

  /**
   * POSTs a form to the token endpoint with a fresh DPoP proof. On `use_dpop_nonce` it
   * retries once with the new nonce (a second one is a {@link DpopNonceError}); on
   * `invalid_dpop_proof` with a `Date` showing the device clock off, once with a
   * corrected `iat`. With `attest` and an attestation provider, every attempt carries
   * fresh attestation fields.
   */
  async #tokenRequest(form: Record<string, string>, attest?: { grant: AttestationGrant; jkt: () => Promise<string> }): Promise<unknown> {
    const endpoint = (await this.metadata()).token_endpoint;
    const provider = this.#options.attestation;
    const attesting = attest && provider ? { provider, grant: attest.grant, jkt: await attest.jkt() } : undefined;
    let nonceRetried = false;
    let clockRetried = false;
    for (;;) {
      const extra = attesting ? await this.#attestationFields(attesting.provider, attesting.grant, attesting.jkt) : {};
      const body = new URLSearchParams({ ...form, ...extra }).toString();
      const proof = await createProof(this.#options.keyStore, {
        method: 'POST',
        url: endpoint,
        iat: this.#proofTime(),
        nonce: this.#nonces.get(endpoint),
      });
      const r = await this.#send(
        endpoint,
        {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            accept: 'application/json',
            dpop: proof,
          },
          body,
          redirect: 'manual',
        },
        'token endpoint',
      );
      if (r.ok) return readJson(r, 'token response');
      const error = await oauthError(r);
      if (r.status === 400 && error.error === 'use_dpop_nonce' && r.headers.has('dpop-nonce')) {
        if (nonceRetried) throw new DpopNonceError();
        nonceRetried = true;
        continue;
      }
      if (error.error === 'invalid_dpop_proof' && !clockRetried && this.#observeClock(r.headers, MAX_CLOCK_DRIFT_AFTER_REFUSAL_SECS)) {
        clockRetried = true;
        continue;
      }
      throw error;
    }
  }

  /** Validates a token response and stores it. Nothing is stored unless it is DPoP-bound. */
  async #acceptTokens(json: unknown, requestedAt: number, previousRefresh?: string): Promise<TokenSet> {
    const r = json as Partial<Record<string, unknown>> | null;
    if (!r || typeof r !== 'object') throw new InvalidResponseError('the token response is not a JSON object');
    if (typeof r.token_type !== 'string' || r.token_type.toLowerCase() !== 'dpop') throw new NotDpopBoundError();
    if (typeof r.access_token !== 'string' || r.access_token === '') {
      throw new InvalidResponseError('the token response has no access token');
    }
    const expiresIn = typeof r.expires_in === 'number' && r.expires_in >= 0 ? r.expires_in : DEFAULT_EXPIRES_IN;
    const refresh = typeof r.refresh_token === 'string' && r.refresh_token !== '' ? r.refresh_token : previousRefresh;
    const tokens: TokenSet = {
      accessToken: r.access_token,
      // Counted from before the request left, so network delay only makes us refresh earlier.
      expiresAt: requestedAt + expiresIn * 1000,
      ...(refresh !== undefined ? { refreshToken: refresh } : {}),
      ...(typeof r.scope === 'string' ? { scope: r.scope } : {}),
    };
    await this.#store(tokens);
    return tokens;
  }

  // ─── sign-in ─────────────────────────────────────────────────────────────────────

  /**
   * Starts sign-in: the URL to open in the system browser (ASWebAuthenticationSession,
   * Custom Tabs, a web redirect) and the {@link PendingAuthorization} to keep until the
   * redirect comes back. Creates the DPoP key if there is none (a {@link KeyStoreError}
   * if that fails).
   */
  async authorize(options: { scopes?: readonly string[] } = {}): Promise<{ url: string; pending: PendingAuthorization }> {
    const scopes = options.scopes ?? this.#options.scopes ?? [];
    const [metadata, jkt] = await Promise.all([this.metadata(), this.#thumbprint()]);
    return buildAuthorization({
      authorizationEndpoint: metadata.authorization_endpoint,
      clientId: this.#options.clientId,
      redirectUri: this.#options.redirectUri,
      scopes,
      jkt,
    });
  }

  /**
   * Completes sign-in with the redirect the app received. Checks it against `pending`
   * (state first: a mismatch is a {@link StateMismatchError} and nothing is exchanged; an
   * `error` parameter is an {@link AuthorizationError}), then redeems the code with the
   * PKCE verifier and a DPoP proof and stores the tokens.
   */
  async handleCallback(pending: PendingAuthorization, callbackUrl: string): Promise<SignInResult> {
    const metadata = await this.metadata();
    const code = parseCallback(pending, callbackUrl, metadata.issuer);
    if ((await this.#thumbprint()) !== pending.jkt) {
      throw new KeyStoreError('the DPoP key changed since the authorization request; start again');
    }
    const requestedAt = this.#now();
    const json = await this.#tokenRequest(
      {
        grant_type: 'authorization_code',
        code,
        redirect_uri: pending.redirectUri,
        client_id: this.#options.clientId,
        code_verifier: pending.codeVerifier,
      },
      { grant: 'authorization_code', jkt: async () => pending.jkt },
    );
    const tokens = await this.#acceptTokens(json, requestedAt);
    return { scope: tokens.scope, expiresAt: tokens.expiresAt };
  }

  /**
   * Signs in with an ID token from an identity provider keygate trusts (RFC 8693 token
   * exchange, `subject_token_type` id_token); keygate answers with DPoP-bound tokens as
   * the code flow would.
   */
  async exchangeIdToken(idToken: string, options: { scopes?: readonly string[] } = {}): Promise<SignInResult> {
    if (!idToken) throw new ConfigError('idToken is empty');
    const scopes = options.scopes ?? this.#options.scopes;
    if (scopes && !scopes.every(validScopeToken)) throw new ConfigError('scopes must be RFC 6749 scope tokens');
    await this.#thumbprint();
    const form: Record<string, string> = {
      grant_type: TOKEN_EXCHANGE,
      subject_token: idToken,
      subject_token_type: ID_TOKEN_TYPE,
      client_id: this.#options.clientId,
    };
    if (scopes && scopes.length > 0) form.scope = scopes.join(' ');
    const requestedAt = this.#now();
    const tokens = await this.#acceptTokens(await this.#tokenRequest(form), requestedAt);
    return { scope: tokens.scope, expiresAt: tokens.expiresAt };
  }

  /** Whether tokens are stored (the access token may still need a refresh). */
  async isSignedIn(): Promise<boolean> {
    return (await this.#current()) !== null;
  }

  /** Subscribes to sign-outs caused by the session ending; returns the unsubscribe function. */
  onSignedOut(listener: (reason: SignedOutReason) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  // ─── refresh ─────────────────────────────────────────────────────────────────────

  /**
   * Refreshes unless another caller already replaced `seen`. Every concurrent caller
   * shares one refresh request: refresh tokens rotate, and presenting one twice revokes
   * the whole session.
   */
  #refreshFrom(seen: TokenSet | null): Promise<TokenSet> {
    if (this.#refreshing) return this.#refreshing;
    if (seen !== null && this.#tokens && this.#tokens.accessToken !== seen.accessToken) {
      return Promise.resolve(this.#tokens);
    }
    const run = (async () => {
      const lock = this.#options.crossContextLock;
      return lock ? lock(() => this.#doRefresh(seen, true)) : this.#doRefresh(seen, false);
    })();
    const shared = run.finally(() => {
      if (this.#refreshing === shared) this.#refreshing = undefined;
    });
    this.#refreshing = shared;
    return shared;
  }

  async #doRefresh(seen: TokenSet | null, reload: boolean): Promise<TokenSet> {
    if (reload) {
      // Another tab or process may have rotated the tokens while we waited for the lock.
      this.#tokens = undefined;
    }
    const current = await this.#current();
    if (current === null) throw new NotSignedInError();
    if (seen !== null && current.accessToken !== seen.accessToken && !this.#expiresSoon(current)) return current;
    if (current.refreshToken === undefined) {
      if (current.expiresAt <= this.#now()) throw await this.#signOut('the access token expired and there is no refresh token');
      return current;
    }
    const requestedAt = this.#now();
    let json: unknown;
    try {
      json = await this.#tokenRequest(
        {
          grant_type: 'refresh_token',
          refresh_token: current.refreshToken,
          client_id: this.#options.clientId,
        },
        { grant: 'refresh_token', jkt: () => this.#thumbprint() },
      );
    } catch (e) {
      if (e instanceof OAuthError && (e.error === 'invalid_grant' || e.error === 'invalid_client')) {
        // The session is revoked, expired, or its refresh token was reused: it is dead.
        throw await this.#signOut(SESSION_ENDED);
      }
      throw e;
    }
    return this.#acceptTokens(json, requestedAt, current.refreshToken);
  }

  #expiresSoon(tokens: TokenSet): boolean {
    return this.#now() + this.#marginMs >= tokens.expiresAt;
  }

  /** Valid tokens: refreshed first (single-flight) when they expire within the margin. */
  async #freshTokens(): Promise<TokenSet> {
    if (this.#refreshing) return this.#refreshing;
    const current = await this.#current();
    if (current === null) throw new NotSignedInError();
    if (!this.#expiresSoon(current)) return current;
    try {
      return await this.#refreshFrom(current);
    } catch (e) {
      // A transient failure of a proactive refresh: keep using a token that is still valid.
      if (!(e instanceof SignedOutError) && !(e instanceof NotSignedInError) && current.expiresAt > this.#now() && this.#tokens === current) {
        return current;
      }
      throw e;
    }
  }

  /** Refreshes now (single-flight with any refresh already running). */
  async refresh(): Promise<SignInResult> {
    const current = await this.#current();
    if (current === null) throw new NotSignedInError();
    const tokens = await this.#refreshFrom(current);
    return { scope: tokens.scope, expiresAt: tokens.expiresAt };
  }

  // ─── resource requests ───────────────────────────────────────────────────────────

  #resolve(pathOrUrl: string | URL): string {
    const text = pathOrUrl.toString();
    let url: URL;
    try {
      url = text.startsWith('/') ? new URL(`${this.#base}${text}`) : new URL(text);
    } catch {
      throw new ConfigError('the request URL is not valid');
    }
    const base = new URL(this.#base);
    const basePath = base.pathname.replace(/\/+$/, '');
    const under = url.pathname === basePath || url.pathname.startsWith(`${basePath}/`);
    // Tokens and proofs go to keygate only.
    if (url.origin !== base.origin || !under || url.username || url.password) {
      throw new ConfigError('the request URL is not under the keygate base URL');
    }
    return url.href;
  }

  /**
   * `fetch` for keygate, usually its proxy (`/proxy/{route}/…`): adds the access token
   * and a fresh DPoP proof; refreshes the token shortly before it expires, and once more
   * (then retries once) when keygate answers 401 `invalid_token`; answers one
   * `use_dpop_nonce` challenge. The response is returned untouched (stream
   * `response.body` for SSE), except:
   *
   * - 429 → {@link RateLimitedError} with `retryAfterSeconds` (never retried);
   * - a session that ended → {@link SignedOutError} (tokens cleared, listeners told);
   * - a second nonce challenge in a row → {@link DpopNonceError}.
   *
   * The request body is buffered so that it can be sent again. Redirects are not
   * followed unless `init.redirect` says so.
   */
  async fetch(pathOrUrl: string | URL, init: RequestInit = {}): Promise<Response> {
    const url = this.#resolve(pathOrUrl);
    const method = (init.method ?? 'GET').toUpperCase();
    const body = await replayableBody(init.body);
    let nonceRetried = false;
    let clockRetried = false;
    let refreshRetried = false;
    for (;;) {
      const tokens = await this.#freshTokens();
      const proof = await createProof(this.#options.keyStore, {
        method,
        url,
        iat: this.#proofTime(),
        nonce: this.#nonces.get(url),
        accessToken: tokens.accessToken,
      });
      const headers = new Headers(init.headers);
      headers.set('authorization', `DPoP ${tokens.accessToken}`);
      headers.set('dpop', proof);
      const requestInit: RequestInit = {
        method,
        headers,
        redirect: init.redirect ?? 'manual',
        ...(body !== undefined ? { body } : {}),
        ...(init.signal ? { signal: init.signal } : {}),
      };
      const response = await this.#send(url, requestInit, 'proxy', false);
      const dpopError = dpopChallengeError(response);
      if (dpopError === 'use_dpop_nonce' && response.headers.has('dpop-nonce')) {
        discard(response);
        if (nonceRetried) throw new DpopNonceError();
        nonceRetried = true;
        continue;
      }
      if (dpopError === 'invalid_dpop_proof' && !clockRetried && this.#observeClock(response.headers, MAX_CLOCK_DRIFT_AFTER_REFUSAL_SECS)) {
        discard(response);
        clockRetried = true;
        continue;
      }
      if (anyChallengeError(response) === 'invalid_token' && !refreshRetried) {
        discard(response);
        refreshRetried = true;
        await this.#refreshFrom(tokens);
        continue;
      }
      if (response.status === 429) {
        throw new RateLimitedError(retryAfterSeconds(response.headers, this.#now()), response);
      }
      return response;
    }
  }

  // ─── sign-out ────────────────────────────────────────────────────────────────────

  /**
   * Signs out: forgets the tokens and revokes the refresh token at keygate (RFC 7009),
   * which ends the session and its access tokens. Local tokens are gone even if keygate
   * cannot be reached (the error is still thrown). `deleteKey` also deletes the DPoP key.
   * Does not call the `onSignedOut` listeners (they report sessions that ended by themselves).
   */
  async logout(options: { deleteKey?: boolean } = {}): Promise<void> {
    await this.#refreshing?.catch(() => undefined);
    const tokens = await this.#current().catch(() => null);
    await this.#clear();
    let failure: unknown;
    if (tokens) {
      try {
        const endpoint = (await this.metadata()).revocation_endpoint;
        if (!endpoint) throw new InvalidResponseError('keygate has no revocation endpoint');
        const form = new URLSearchParams({
          token: tokens.refreshToken ?? tokens.accessToken,
          token_type_hint: tokens.refreshToken !== undefined ? 'refresh_token' : 'access_token',
          client_id: this.#options.clientId,
        });
        const r = await this.#send(
          endpoint,
          {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
            body: form.toString(),
            redirect: 'manual',
          },
          'revocation endpoint',
        );
        if (!r.ok) throw await oauthError(r);
        discard(r);
      } catch (e) {
        failure = e;
      }
    }
    if (options.deleteKey) {
      try {
        await this.#options.keyStore.delete();
      } catch (cause) {
        failure ??= new KeyStoreError('could not delete the DPoP key', { cause });
      }
    }
    if (failure !== undefined) throw failure;
  }
}

/**
 * A body that can be sent more than once (the SDK may resend after a nonce challenge or a
 * refresh): strings, buffers, Blobs, URLSearchParams and FormData are; a stream is read
 * into memory first.
 */
async function replayableBody(body: BodyInit | null | undefined): Promise<BodyInit | undefined> {
  if (body === undefined || body === null) return undefined;
  if (typeof ReadableStream !== 'undefined' && body instanceof ReadableStream) {
    return new Uint8Array(await new Response(body).arrayBuffer());
  }
  return body;
}

async function readText(r: Response, what: string): Promise<string> {
  const text = await r.text().catch(() => {
    throw new InvalidResponseError(`could not read the ${what}`);
  });
  if (text.length > MAX_OAUTH_BODY) throw new InvalidResponseError(`the ${what} is too large`);
  return text;
}

async function readJson(r: Response, what: string): Promise<unknown> {
  const text = await readText(r, what);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new InvalidResponseError(`the ${what} is not JSON`);
  }
}

/** The RFC 6749 §5.2 error of a refused OAuth request. */
async function oauthError(r: Response): Promise<OAuthError> {
  let body: Partial<Record<string, unknown>> | null = null;
  try {
    body = JSON.parse(await readText(r, 'error response')) as Partial<Record<string, unknown>>;
  } catch (e) {
    if (!(e instanceof KeygateError) && !(e instanceof SyntaxError)) throw e;
  }
  const code = body && typeof body.error === 'string' ? sanitiseCode(body.error) : '';
  return new OAuthError(r.status, code, sanitiseDescription(body?.error_description));
}
