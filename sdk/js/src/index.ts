/**
 * `@keygate/client`: the TypeScript client for keygate. Zero runtime dependencies:
 * WebCrypto (`globalThis.crypto`) and `fetch`.
 *
 * Platform adapters live in their own entry points so the core never pulls them in:
 * `@keygate/client/browser` (IndexedDB, Web Locks), `@keygate/client/react-native`
 * (react-native-keychain, hardware keys through a native module) and
 * `@keygate/client/expo` (expo-secure-store).
 *
 * @module
 */

export { KeygateClient } from './client.js';
export type { CrossContextLock, FetchLike, KeygateClientOptions, SignInResult } from './client.js';
export type { PendingAuthorization } from './authorize.js';
export type {
  AttestationEvidence,
  AttestationGrant,
  AttestationProvider,
  AttestationRequest,
  AttestationType,
} from './attestation.js';
export { ATTESTATION_CHALLENGE_PATH, attestationClientData } from './attestation.js';
export { pkceChallenge } from './authorize.js';
export type { ServerMetadata } from './metadata.js';
export { METADATA_PATH } from './metadata.js';
export type { EcPublicJwk, KeyStore } from './keystore.js';
export { MemoryKeyStore, jwkThumbprint } from './keystore.js';
export type { TokenSet, TokenStore } from './tokens.js';
export { MemoryTokenStore, parseTokens, serialiseTokens } from './tokens.js';
export { ath, createProof, htu, parseChallenges } from './dpop.js';
export type { ProofInput } from './dpop.js';
export { derToRaw, rawToDer } from './der.js';
export { b64url, sha256Sync } from './encoding.js';
export {
  AuthorizationError,
  ConfigError,
  DpopNonceError,
  InvalidResponseError,
  IssuerMismatchError,
  KeyStoreError,
  KeygateError,
  NetworkError,
  NotDpopBoundError,
  NotSignedInError,
  OAuthError,
  RateLimitedError,
  RedirectMismatchError,
  SignedOutError,
  StateMismatchError,
  TokenStoreError,
} from './errors.js';
export type { KeygateErrorCode, SignedOutReason } from './errors.js';
