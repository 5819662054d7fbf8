/**
 * Where the DPoP key lives. The SDK only ever asks a {@link KeyStore} for the public key
 * and for signatures: the private key never passes through SDK code, so a hardware key
 * (Secure Enclave, Android Keystore, a WebCrypto non-extractable key) works the same as
 * a software one.
 *
 * @module
 */

import { b64url, sha256, subtle, toArrayBufferView, utf8 } from './encoding.js';
import { KeyStoreError } from './errors.js';

/** A P-256 public key as a JWK (RFC 7517/7518), the only members the SDK sends. */
export interface EcPublicJwk {
  readonly kty: 'EC';
  readonly crv: 'P-256';
  /** base64url of the 32-byte X coordinate. */
  readonly x: string;
  /** base64url of the 32-byte Y coordinate. */
  readonly y: string;
}

/**
 * A DPoP signing key (ES256: ECDSA P-256 with SHA-256).
 *
 * Contract:
 * - {@link getOrCreate} returns the public half of the store's key, creating the key on
 *   first use. When the key cannot be created or loaded it rejects with a
 *   {@link KeyStoreError}; it must NEVER fall back to a weaker (extractable, exported,
 *   software) key.
 * - {@link sign} signs `data` with ES256 (SHA-256 is part of the algorithm: pass the
 *   message, not its hash) and returns the raw 64-byte `r || s`. Native stores that get
 *   DER from the platform convert with {@link derToRaw}.
 * - {@link delete} removes the key; the next {@link getOrCreate} makes a new one (and
 *   tokens bound to the old one become useless).
 */
export interface KeyStore {
  getOrCreate(): Promise<EcPublicJwk>;
  sign(data: Uint8Array): Promise<Uint8Array>;
  delete(): Promise<void>;
}

/** Checks a JWK is a well-formed P-256 public key and keeps only its public members. */
export function toEcPublicJwk(jwk: unknown): EcPublicJwk {
  const j = jwk as Partial<Record<string, unknown>> | null;
  if (!j || j.kty !== 'EC' || j.crv !== 'P-256' || typeof j.x !== 'string' || typeof j.y !== 'string') {
    throw new KeyStoreError('the key store returned a public key that is not an EC P-256 JWK');
  }
  if (j.d !== undefined) {
    throw new KeyStoreError('the key store returned private key material as its public key');
  }
  if (!/^[A-Za-z0-9_-]{43}$/.test(j.x) || !/^[A-Za-z0-9_-]{43}$/.test(j.y)) {
    throw new KeyStoreError('the key store returned a malformed P-256 JWK');
  }
  return { kty: 'EC', crv: 'P-256', x: j.x, y: j.y };
}

/** The RFC 7638 JWK thumbprint (SHA-256, base64url): `dpop_jkt` and a token's `cnf.jkt`. */
export async function jwkThumbprint(jwk: EcPublicJwk): Promise<string> {
  // Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2).
  const canonical = `{"crv":"${jwk.crv}","kty":"${jwk.kty}","x":"${jwk.x}","y":"${jwk.y}"}`;
  return b64url(await sha256(utf8(canonical)));
}

const ES256_GEN: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const ES256_SIGN: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };

/** The WebCrypto to use: the given one, or the platform's; a KeyStoreError when absent. */
export function requireSubtle(given?: SubtleCrypto): SubtleCrypto {
  const s = given ?? subtle();
  if (!s) throw new KeyStoreError('WebCrypto (crypto.subtle) is not available on this platform');
  return s;
}

/**
 * Generates an ES256 key pair whose private key is non-extractable, and checks that the
 * platform honoured that. Any failure is a {@link KeyStoreError}.
 */
export async function generateNonExtractableKeyPair(s: SubtleCrypto): Promise<CryptoKeyPair> {
  let pair: CryptoKeyPair;
  try {
    pair = await s.generateKey(ES256_GEN, false, ['sign', 'verify']);
  } catch (cause) {
    throw new KeyStoreError('could not create a non-extractable ES256 key', { cause });
  }
  if (!pair?.privateKey || pair.privateKey.extractable !== false) {
    throw new KeyStoreError('the platform created an extractable private key; refusing to use it');
  }
  return pair;
}

/** Exports the public half of a WebCrypto key pair as an {@link EcPublicJwk}. */
export async function exportPublicJwk(s: SubtleCrypto, publicKey: CryptoKey): Promise<EcPublicJwk> {
  try {
    return toEcPublicJwk(await s.exportKey('jwk', publicKey));
  } catch (cause) {
    if (cause instanceof KeyStoreError) throw cause;
    throw new KeyStoreError('could not export the public key', { cause });
  }
}

/** Signs with a WebCrypto private key: ES256, raw `r || s` (WebCrypto's native format). */
export async function signWithCryptoKey(
  s: SubtleCrypto,
  privateKey: CryptoKey,
  data: Uint8Array,
): Promise<Uint8Array> {
  let sig: ArrayBuffer;
  try {
    sig = await s.sign(ES256_SIGN, privateKey, toArrayBufferView(data));
  } catch (cause) {
    throw new KeyStoreError('the key store could not sign', { cause });
  }
  return new Uint8Array(sig);
}

/**
 * A non-extractable WebCrypto key held in memory: for servers, tests and short-lived
 * processes. The key is lost with the process (and with it, the tokens bound to it).
 */
export class MemoryKeyStore implements KeyStore {
  readonly #subtle: SubtleCrypto | undefined;
  #pair: Promise<{ pair: CryptoKeyPair; jwk: EcPublicJwk }> | undefined;

  /** @param options.subtle a WebCrypto implementation (defaults to `globalThis.crypto.subtle`). */
  constructor(options: { subtle?: SubtleCrypto } = {}) {
    this.#subtle = options.subtle;
  }

  #load(): Promise<{ pair: CryptoKeyPair; jwk: EcPublicJwk }> {
    if (!this.#pair) {
      const attempt = (async () => {
        const s = requireSubtle(this.#subtle);
        const pair = await generateNonExtractableKeyPair(s);
        return { pair, jwk: await exportPublicJwk(s, pair.publicKey) };
      })();
      // A failed creation is not cached: the next call tries again (and fails loudly again).
      attempt.catch(() => {
        if (this.#pair === attempt) this.#pair = undefined;
      });
      this.#pair = attempt;
    }
    return this.#pair;
  }

  async getOrCreate(): Promise<EcPublicJwk> {
    return (await this.#load()).jwk;
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    const { pair } = await this.#load();
    return signWithCryptoKey(requireSubtle(this.#subtle), pair.privateKey, data);
  }

  async delete(): Promise<void> {
    this.#pair = undefined;
  }
}
