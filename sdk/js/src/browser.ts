/**
 * Browser storage: the DPoP key as a non-extractable WebCrypto `CryptoKey` kept in
 * IndexedDB (the browser stores the key object itself; script can sign with it but can
 * never read its private bytes), tokens in IndexedDB, and Web Locks so that tabs never
 * refresh concurrently.
 *
 * Nothing here uses `localStorage`.
 *
 * @module
 */

import type { CrossContextLock } from './client.js';
import { KeyStoreError, TokenStoreError } from './errors.js';
import {
  exportPublicJwk,
  generateNonExtractableKeyPair,
  requireSubtle,
  signWithCryptoKey,
  type EcPublicJwk,
  type KeyStore,
} from './keystore.js';
import type { TokenSet, TokenStore } from './tokens.js';

/** Where the IndexedDB stores keep their data. */
export interface IndexedDbOptions {
  /** Database name (default `keygate`). */
  readonly database?: string;
  /** Record key, so several clients can share a database (default `default`). */
  readonly name?: string;
  /** The `IDBFactory` (default `globalThis.indexedDB`). */
  readonly indexedDB?: IDBFactory;
  /** The WebCrypto to use (default `globalThis.crypto.subtle`). */
  readonly subtle?: SubtleCrypto;
}

const KEYS = 'keys';
const TOKENS = 'tokens';

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'));
  });
}

function openDb(factory: IDBFactory | undefined, name: string): Promise<IDBDatabase> {
  const f = factory ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  if (!f) return Promise.reject(new Error('IndexedDB is not available'));
  const open = f.open(name, 1);
  open.onupgradeneeded = () => {
    const db = open.result;
    if (!db.objectStoreNames.contains(KEYS)) db.createObjectStore(KEYS);
    if (!db.objectStoreNames.contains(TOKENS)) db.createObjectStore(TOKENS);
  };
  return request(open);
}

async function withStore<T>(
  options: IndexedDbOptions,
  store: string,
  mode: IDBTransactionMode,
  work: (s: IDBObjectStore) => IDBRequest<T>,
): Promise<T> {
  const db = await openDb(options.indexedDB, options.database ?? 'keygate');
  try {
    const tx = db.transaction(store, mode);
    const result = await request(work(tx.objectStore(store)));
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
      tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
    });
    return result;
  } finally {
    db.close();
  }
}

interface StoredKey {
  readonly pair: CryptoKeyPair;
  readonly jwk: EcPublicJwk;
}

/**
 * The DPoP key as a non-extractable ES256 `CryptoKey` pair stored in IndexedDB (structured
 * clone keeps the key object, not its bytes). Failing to create or store the key is a
 * {@link KeyStoreError}; there is no fallback.
 */
export class IndexedDbKeyStore implements KeyStore {
  readonly #options: IndexedDbOptions;
  #cached: Promise<StoredKey> | undefined;

  constructor(options: IndexedDbOptions = {}) {
    this.#options = options;
  }

  #id(): string {
    return this.#options.name ?? 'default';
  }

  async #loadOrCreate(): Promise<StoredKey> {
    const s = requireSubtle(this.#options.subtle);
    let existing: StoredKey | undefined;
    try {
      existing = await withStore<StoredKey | undefined>(this.#options, KEYS, 'readonly', (st) => st.get(this.#id()));
    } catch (cause) {
      throw new KeyStoreError('could not read the DPoP key from IndexedDB', { cause });
    }
    if (existing?.pair?.privateKey) {
      if (existing.pair.privateKey.extractable !== false) {
        throw new KeyStoreError('the stored DPoP key is extractable; refusing to use it');
      }
      return existing;
    }
    const pair = await generateNonExtractableKeyPair(s);
    const created: StoredKey = { pair, jwk: await exportPublicJwk(s, pair.publicKey) };
    try {
      // `add` fails if another tab stored a key first; then use that one.
      await withStore(this.#options, KEYS, 'readwrite', (st) => st.add(created, this.#id()));
      return created;
    } catch (cause) {
      const winner = await withStore<StoredKey | undefined>(this.#options, KEYS, 'readonly', (st) => st.get(this.#id())).catch(
        () => undefined,
      );
      if (winner?.pair?.privateKey && winner.pair.privateKey.extractable === false) return winner;
      throw new KeyStoreError('could not store the DPoP key in IndexedDB', { cause });
    }
  }

  #load(): Promise<StoredKey> {
    if (!this.#cached) {
      const attempt = this.#loadOrCreate();
      attempt.catch(() => {
        if (this.#cached === attempt) this.#cached = undefined;
      });
      this.#cached = attempt;
    }
    return this.#cached;
  }

  async getOrCreate(): Promise<EcPublicJwk> {
    return (await this.#load()).jwk;
  }

  async sign(data: Uint8Array): Promise<Uint8Array> {
    const { pair } = await this.#load();
    return signWithCryptoKey(requireSubtle(this.#options.subtle), pair.privateKey, data);
  }

  async delete(): Promise<void> {
    this.#cached = undefined;
    try {
      await withStore(this.#options, KEYS, 'readwrite', (st) => st.delete(this.#id()));
    } catch (cause) {
      throw new KeyStoreError('could not delete the DPoP key from IndexedDB', { cause });
    }
  }
}

/**
 * Tokens in IndexedDB. They are bound to the non-extractable DPoP key, so a copied token
 * is useless without that key; still, any script on the origin can read them, as with
 * every browser storage: keep XSS out (CSP).
 */
export class IndexedDbTokenStore implements TokenStore {
  readonly #options: IndexedDbOptions;

  constructor(options: IndexedDbOptions = {}) {
    this.#options = options;
  }

  #id(): string {
    return this.#options.name ?? 'default';
  }

  async load(): Promise<TokenSet | null> {
    try {
      const v = await withStore<TokenSet | undefined>(this.#options, TOKENS, 'readonly', (st) => st.get(this.#id()));
      return v && typeof v.accessToken === 'string' && typeof v.expiresAt === 'number' ? v : null;
    } catch (cause) {
      throw new TokenStoreError('could not read the tokens from IndexedDB', { cause });
    }
  }

  async save(tokens: TokenSet): Promise<void> {
    try {
      await withStore(this.#options, TOKENS, 'readwrite', (st) => st.put({ ...tokens }, this.#id()));
    } catch (cause) {
      throw new TokenStoreError('could not save the tokens to IndexedDB', { cause });
    }
  }

  async clear(): Promise<void> {
    try {
      await withStore(this.#options, TOKENS, 'readwrite', (st) => st.delete(this.#id()));
    } catch (cause) {
      throw new TokenStoreError('could not clear the tokens from IndexedDB', { cause });
    }
  }
}

interface LockManagerLike {
  request<T>(name: string, callback: () => Promise<T>): Promise<T>;
}

/**
 * A {@link CrossContextLock} on the Web Locks API, so tabs sharing one IndexedDB token
 * store never refresh at the same time (two refreshes with one rotating token would
 * revoke the session). Returns `undefined` where the API is missing.
 */
export function webLocks(name = 'keygate-refresh'): CrossContextLock | undefined {
  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks;
  if (!locks) return undefined;
  return <T>(task: () => Promise<T>) => locks.request(name, task);
}
