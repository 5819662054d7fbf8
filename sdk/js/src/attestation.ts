/**
 * App attestation (Apple App Attest, Google Play Integrity): the hook an app plugs its
 * native attestation module into, and the protocol pieces keygate expects at its token
 * endpoint.
 *
 * Before each authorization-code exchange and each refresh, the SDK asks keygate for a
 * single-use challenge (`POST /oauth2/attestation/challenge`), builds the *client data*
 * `keygate-attestation/v1 LF challenge LF jkt` (`jkt`: the RFC 7638 thumbprint of the
 * DPoP key, the `dpop_jkt` of the authorization request), and calls the app's
 * {@link AttestationProvider}. The evidence it returns goes into the token request.
 *
 * @module
 */

import { b64url, sha256, utf8 } from './encoding.js';

/** The path of keygate's challenge endpoint under the base URL. */
export const ATTESTATION_CHALLENGE_PATH = '/oauth2/attestation/challenge';

/** The prefix line of the client data (format version). */
const CLIENT_DATA_PREFIX = 'keygate-attestation/v1';

/** The longest challenge accepted from the server. */
const MAX_CHALLENGE_LEN = 1024;

/** The grants that carry attestation evidence. */
export type AttestationGrant = 'authorization_code' | 'refresh_token';

/** The kinds of evidence keygate understands (`attestation_type`). */
export type AttestationType = 'apple-app-attest' | 'play-integrity' | 'none';

/** What the SDK hands an {@link AttestationProvider}. */
export interface AttestationRequest {
  /** `authorization_code` at sign-in (App Attest: `attestKey`), `refresh_token` at refresh (App Attest: `generateAssertion`). */
  readonly grant: AttestationGrant;
  /** keygate's single-use challenge. */
  readonly challenge: string;
  /** The RFC 7638 SHA-256 thumbprint (base64url) of the DPoP public key. */
  readonly jkt: string;
  /** The UTF-8 bytes of `keygate-attestation/v1\n{challenge}\n{jkt}`. */
  readonly clientData: Uint8Array;
  /** SHA-256 of `clientData`: App Attest's `clientDataHash`. */
  readonly clientDataHash: Uint8Array;
  /** base64url (no padding) of `clientDataHash`: Play Integrity's `nonce`. */
  readonly nonce: string;
}

/** What an {@link AttestationProvider} returns. */
export interface AttestationEvidence {
  readonly type: AttestationType;
  /** App Attest: the attestation object, base64url (sign-in). Play Integrity: the integrity token (sign-in and refresh). */
  readonly attestation?: string;
  /** App Attest: the key id, base64url (sign-in). */
  readonly keyId?: string;
  /** App Attest: the assertion, base64url (refresh). */
  readonly assertion?: string;
}

/**
 * The app's attestation hook: produces platform evidence over
 * `request.clientDataHash` / `request.nonce`. Resolve `null` (or throw) when no evidence
 * can be had (older OS, emulator, the platform's service down): the SDK then sends
 * `attestation_type=none` and keygate issues an `unattested` token; sign-in and refresh
 * never fail because of the hook. It may be called more than once per sign-in or
 * refresh (a retried token request needs a fresh, single-use challenge).
 */
export type AttestationProvider = (request: AttestationRequest) => Promise<AttestationEvidence | null>;

/** The client data of a challenge and a DPoP key thumbprint: `keygate-attestation/v1\n{challenge}\n{jkt}` in UTF-8. */
export function attestationClientData(challenge: string, jkt: string): Uint8Array {
  return utf8(`${CLIENT_DATA_PREFIX}\n${challenge}\n${jkt}`);
}

/** Builds the {@link AttestationRequest} for a challenge. */
export async function attestationRequest(grant: AttestationGrant, challenge: string, jkt: string): Promise<AttestationRequest> {
  const clientData = attestationClientData(challenge, jkt);
  const clientDataHash = await sha256(clientData);
  return { grant, challenge, jkt, clientData, clientDataHash, nonce: b64url(clientDataHash) };
}

/** The `challenge` of a challenge-endpoint answer, or `undefined` when it is unusable. */
export function parseChallenge(json: unknown): string | undefined {
  const c = (json as Partial<Record<string, unknown>> | null)?.challenge;
  if (typeof c !== 'string' || c.length === 0 || c.length > MAX_CHALLENGE_LEN) return undefined;
  // Printable ASCII only: it goes into the client data and a form field verbatim.
  return /^[\x21-\x7e]+$/.test(c) ? c : undefined;
}

const TYPES: readonly string[] = ['apple-app-attest', 'play-integrity', 'none'];

/**
 * The token-request form fields for a challenge and the provider's evidence. Evidence
 * that is missing or not understood is sent as `attestation_type=none`.
 */
export function attestationFields(challenge: string, evidence: AttestationEvidence | null | undefined): Record<string, string> {
  if (!evidence || typeof evidence !== 'object' || !TYPES.includes(evidence.type) || evidence.type === 'none') {
    return { attestation_type: 'none', attestation_challenge: challenge };
  }
  const fields: Record<string, string> = { attestation_type: evidence.type, attestation_challenge: challenge };
  const str = (v: unknown): v is string => typeof v === 'string' && v !== '';
  if (str(evidence.attestation)) fields.attestation = evidence.attestation;
  if (str(evidence.keyId)) fields.attestation_key_id = evidence.keyId;
  if (str(evidence.assertion)) fields.attestation_assertion = evidence.assertion;
  return fields;
}
