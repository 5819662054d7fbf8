/**
 * React Native adapters. This entry point only has type-level references to
 * `react-native-keychain`: the app passes the module in, so the SDK never imports it.
 *
 * - {@link KeychainTokenStore}: tokens in the iOS Keychain / Android Keystore-encrypted
 *   storage via `react-native-keychain`.
 * - {@link NativeKeyStore}: the DPoP key in the Secure Enclave / Android Keystore via a
 *   small native module the app provides ({@link NativeDpopKeyModule}).
 *
 * React Native has no WebCrypto: the SDK hashes with its own SHA-256, and needs
 * `crypto.getRandomValues` (import `react-native-get-random-values` first).
 *
 * @module
 */

import type * as Keychain from 'react-native-keychain';
import { derToRaw } from './der.js';
import { b64decode, b64std, b64url } from './encoding.js';
import { KeyStoreError, TokenStoreError } from './errors.js';
import { toEcPublicJwk, type EcPublicJwk, type KeyStore } from './keystore.js';
import { parseTokens, serialiseTokens, type TokenSet, type TokenStore } from './tokens.js';

/** The parts of `react-native-keychain` the token store uses. */
export type KeychainModule = Pick<
  typeof Keychain,
  'setGenericPassword' | 'getGenericPassword' | 'resetGenericPassword' | 'ACCESSIBLE'
>;

/**
 * Tokens in the platform keychain through `react-native-keychain`, as one generic
 * password item (so a save replaces access and refresh token together), readable only
 * while the device is unlocked and never migrated to another device.
 *
 * ```ts
 * import * as Keychain from 'react-native-keychain';
 * const tokenStore = new KeychainTokenStore(Keychain, { service: 'com.example.app.keygate' });
 * ```
 */
export class KeychainTokenStore implements TokenStore {
  readonly #keychain: KeychainModule;
  readonly #service: string;

  constructor(keychain: KeychainModule, options: { service?: string } = {}) {
    this.#keychain = keychain;
    this.#service = options.service ?? 'keygate.tokens';
  }

  async load(): Promise<TokenSet | null> {
    let item: Awaited<ReturnType<KeychainModule['getGenericPassword']>>;
    try {
      item = await this.#keychain.getGenericPassword({ service: this.#service });
    } catch (cause) {
      throw new TokenStoreError('could not read the tokens from the keychain', { cause });
    }
    return item ? parseTokens(item.password) : null;
  }

  async save(tokens: TokenSet): Promise<void> {
    let ok: Awaited<ReturnType<KeychainModule['setGenericPassword']>>;
    try {
      ok = await this.#keychain.setGenericPassword('keygate', serialiseTokens(tokens), {
        service: this.#service,
        accessible: this.#keychain.ACCESSIBLE.WHEN_UNLOCKED_THIS_DEVICE_ONLY,
      });
    } catch (cause) {
      throw new TokenStoreError('could not save the tokens to the keychain', { cause });
    }
    if (ok === false) throw new TokenStoreError('the keychain refused to save the tokens');
  }

  async clear(): Promise<void> {
    try {
      await this.#keychain.resetGenericPassword({ service: this.#service });
    } catch (cause) {
      throw new TokenStoreError('could not clear the tokens from the keychain', { cause });
    }
  }
}

/**
 * What a native module must offer for {@link NativeKeyStore}: a P-256 key that never
 * leaves the hardware.
 *
 * - iOS: `SecKeyCreateRandomKey` with `kSecAttrTokenIDSecureEnclave`,
 *   `kSecAttrKeyTypeECSECPrimeRandom`, 256 bits, a permanent tag `alias`;
 *   `SecKeyCreateSignature(key, .ecdsaSignatureMessageX962SHA256, data)` returns DER;
 *   the public key is `SecKeyCopyExternalRepresentation(SecKeyCopyPublicKey(key))`
 *   (65 bytes `04 || X || Y`).
 * - Android: `KeyPairGenerator.getInstance("EC", "AndroidKeyStore")` with
 *   `KeyGenParameterSpec.Builder(alias, PURPOSE_SIGN)`, `ECGenParameterSpec("secp256r1")`,
 *   `setDigests(DIGEST_SHA256)` (and `setIsStrongBoxBacked(true)` where available);
 *   `Signature.getInstance("SHA256withECDSA")` returns DER; the public key is
 *   `publicKey.encoded` (X.509 SubjectPublicKeyInfo, 91 bytes).
 *
 * Every method rejects when the hardware refuses; it must never create a software key
 * instead.
 */
export interface NativeDpopKeyModule {
  /**
   * Returns the public key of `alias`, creating the key if it does not exist: standard
   * base64 of either the uncompressed point (65 bytes) or a P-256 SubjectPublicKeyInfo.
   */
  getOrCreateKey(alias: string): Promise<string>;
  /** Signs the bytes of `dataBase64` (standard base64) with ECDSA P-256 SHA-256; returns the signature, base64. */
  sign(alias: string, dataBase64: string): Promise<string>;
  /** Deletes the key (no error if absent). */
  deleteKey(alias: string): Promise<void>;
}

/** The fixed 26-byte prefix of a P-256 SubjectPublicKeyInfo before its 65-byte point. */
const P256_SPKI_PREFIX = Uint8Array.from([
  0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
  0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
]);

/** An uncompressed P-256 point (or SPKI holding one) as an {@link EcPublicJwk}. */
export function p256PublicKeyToJwk(bytes: Uint8Array): EcPublicJwk {
  let point = bytes;
  if (bytes.length === P256_SPKI_PREFIX.length + 65) {
    if (!P256_SPKI_PREFIX.every((b, i) => bytes[i] === b)) {
      throw new KeyStoreError('the native key is not a P-256 public key');
    }
    point = bytes.subarray(P256_SPKI_PREFIX.length);
  }
  if (point.length !== 65 || point[0] !== 0x04) throw new KeyStoreError('the native key is not an uncompressed P-256 point');
  return toEcPublicJwk({ kty: 'EC', crv: 'P-256', x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) });
}

/**
 * The DPoP key in hardware (Secure Enclave, Android Keystore/StrongBox) through a native
 * module implementing {@link NativeDpopKeyModule}. Native signatures are DER (default) or
 * raw; DER is converted with `derToRaw`.
 */
export class NativeKeyStore implements KeyStore {
  readonly #native: NativeDpopKeyModule;
  readonly #alias: string;
  readonly #format: 'der' | 'raw';
  #jwk: EcPublicJwk | undefined;

  constructor(native: NativeDpopKeyModule, options: { alias?: string; signatureFormat?: 'der' | 'raw' } = {}) {
    this.#native = native;
    this.#alias = options.alias ?? 'keygate.dpop';
    this.#format = options.signatureFormat ?? 'der';
  }

  async getOrCreate(): Promise<EcPublicJwk> {
    if (this.#jwk) return this.#jwk;
    let encoded: string;
    try {
      encoded = await this.#native.getOrCreateKey(this.#alias);
    } catch (cause) {
      throw new KeyStoreError('the native key store could not create or load the DPoP key', { cause });
    }
    let bytes: Uint8Array;
    try {
      bytes = b64decode(encoded);
    } catch {
      throw new KeyStoreError('the native key store returned a public key that is not base64');
    }
    this.#jwk = p256PublicKeyToJwk(bytes);
    return this.#jwk;
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    let encoded: string;
    try {
      encoded = await this.#native.sign(this.#alias, b64std(data));
    } catch (cause) {
      throw new KeyStoreError('the native key store could not sign', { cause });
    }
    let sig: Uint8Array;
    try {
      sig = b64decode(encoded);
    } catch {
      throw new KeyStoreError('the native key store returned a signature that is not base64');
    }
    return this.#format === 'der' ? derToRaw(sig) : sig;
  }

  async delete(): Promise<void> {
    this.#jwk = undefined;
    try {
      await this.#native.deleteKey(this.#alias);
    } catch (cause) {
      throw new KeyStoreError('the native key store could not delete the DPoP key', { cause });
    }
  }
}

export { derToRaw } from './der.js';
