/**
 * Expo adapter: tokens in `expo-secure-store` (iOS Keychain, Android Keystore-encrypted
 * SharedPreferences). Type-level reference only: the app passes the module in.
 *
 * For the DPoP key on Expo, use `NativeKeyStore` from `@keygate/client/react-native` with
 * a config-plugin native module (Secure Enclave / Android Keystore).
 *
 * @module
 */

import type * as SecureStore from 'expo-secure-store';
import { TokenStoreError } from './errors.js';
import { parseTokens, serialiseTokens, type TokenSet, type TokenStore } from './tokens.js';

/** The parts of `expo-secure-store` the token store uses. */
export type SecureStoreModule = Pick<
  typeof SecureStore,
  'getItemAsync' | 'setItemAsync' | 'deleteItemAsync' | 'WHEN_UNLOCKED_THIS_DEVICE_ONLY'
>;

/**
 * Tokens in `expo-secure-store` under one key (one write replaces both tokens), readable
 * only while unlocked, never migrated to another device.
 *
 * ```ts
 * import * as SecureStore from 'expo-secure-store';
 * const tokenStore = new SecureStoreTokenStore(SecureStore);
 * ```
 */
export class SecureStoreTokenStore implements TokenStore {
  readonly #store: SecureStoreModule;
  readonly #key: string;

  constructor(store: SecureStoreModule, options: { key?: string } = {}) {
    this.#store = store;
    this.#key = options.key ?? 'keygate.tokens';
  }

  #options(): SecureStore.SecureStoreOptions {
    return { keychainAccessible: this.#store.WHEN_UNLOCKED_THIS_DEVICE_ONLY };
  }

  async load(): Promise<TokenSet | null> {
    let text: string | null;
    try {
      text = await this.#store.getItemAsync(this.#key, this.#options());
    } catch (cause) {
      throw new TokenStoreError('could not read the tokens from SecureStore', { cause });
    }
    return text === null ? null : parseTokens(text);
  }

  async save(tokens: TokenSet): Promise<void> {
    try {
      await this.#store.setItemAsync(this.#key, serialiseTokens(tokens), this.#options());
    } catch (cause) {
      throw new TokenStoreError('could not save the tokens to SecureStore', { cause });
    }
  }

  async clear(): Promise<void> {
    try {
      await this.#store.deleteItemAsync(this.#key, this.#options());
    } catch (cause) {
      throw new TokenStoreError('could not clear the tokens from SecureStore', { cause });
    }
  }
}
