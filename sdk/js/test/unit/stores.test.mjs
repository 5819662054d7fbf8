// Key and token stores: memory, IndexedDB (fake-indexeddb), React Native and Expo adapters
// (with fake native modules), and key stores that refuse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, createSign } from 'node:crypto';
import { IDBFactory } from 'fake-indexeddb';
import { KeygateClient, KeyStoreError, MemoryKeyStore, MemoryTokenStore, TokenStoreError, jwkThumbprint } from '../../dist/index.js';
import { IndexedDbKeyStore, IndexedDbTokenStore } from '../../dist/browser.js';
import { KeychainTokenStore, NativeKeyStore, p256PublicKeyToJwk } from '../../dist/react-native.js';
import { SecureStoreTokenStore } from '../../dist/expo.js';
import { BASE, CLIENT_ID, FakeKeygate, REDIRECT, verifyProof } from '../helpers.mjs';
import { createProof } from '../../dist/index.js';

/** A SubtleCrypto whose generateKey is replaced. */
function subtleWith(generateKey) {
  return new Proxy(crypto.subtle, {
    get(target, prop) {
      if (prop === 'generateKey') return generateKey;
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

test('MemoryKeyStore keys are non-extractable ES256 and stable until deleted', async () => {
  let created;
  const s = subtleWith(async (...args) => (created = await crypto.subtle.generateKey(...args)));
  const keys = new MemoryKeyStore({ subtle: s });
  const jwk = await keys.getOrCreate();
  assert.equal(created.privateKey.extractable, false);
  assert.deepEqual(Object.keys(jwk).sort(), ['crv', 'kty', 'x', 'y']);
  assert.deepEqual(await keys.getOrCreate(), jwk);
  await keys.delete();
  assert.notDeepEqual(await keys.getOrCreate(), jwk);
});

test('a key store that cannot create a key: KeyStoreError, no fallback, nothing sent', async () => {
  const refusing = subtleWith(async () => {
    throw new DOMException('The operation is not supported', 'NotSupportedError');
  });
  const keys = new MemoryKeyStore({ subtle: refusing });
  await assert.rejects(keys.getOrCreate(), KeyStoreError);
  await assert.rejects(keys.sign(new Uint8Array(1)), KeyStoreError);

  const fake = new FakeKeygate();
  const client = new KeygateClient({ baseUrl: BASE, clientId: CLIENT_ID, redirectUri: REDIRECT, scopes: ['ai'], keyStore: keys, tokenStore: new MemoryTokenStore(), fetch: fake.fetch });
  const err = await client.authorize().catch((e) => e);
  assert.ok(err instanceof KeyStoreError, String(err));
  assert.equal(err.code, 'key_store');
  assert.equal(fake.tokenRequests.length, 0);
});

test('a platform that hands out an extractable private key is refused', async () => {
  const leaky = subtleWith((alg, _extractable, usages) => crypto.subtle.generateKey(alg, true, usages));
  await assert.rejects(new MemoryKeyStore({ subtle: leaky }).getOrCreate(), /extractable/);
  await assert.rejects(new IndexedDbKeyStore({ indexedDB: new IDBFactory(), subtle: leaky }).getOrCreate(), KeyStoreError);
});

test('a custom key store throwing anything is reported as KeyStoreError', async () => {
  const broken = { getOrCreate: async () => { throw new Error('secure enclave unavailable'); }, sign: async () => new Uint8Array(64), delete: async () => {} };
  await assert.rejects(createProof(broken, { method: 'GET', url: 'https://g.example/', iat: 1 }), KeyStoreError);
  const wrongCurve = { getOrCreate: async () => ({ kty: 'EC', crv: 'P-384', x: 'a', y: 'b' }), sign: async () => new Uint8Array(64), delete: async () => {} };
  await assert.rejects(createProof(wrongCurve, { method: 'GET', url: 'https://g.example/', iat: 1 }), KeyStoreError);
  const privateLeak = { getOrCreate: async () => ({ kty: 'EC', crv: 'P-256', x: 'A'.repeat(43), y: 'A'.repeat(43), d: 'A'.repeat(43) }), sign: async () => new Uint8Array(64), delete: async () => {} };
  await assert.rejects(createProof(privateLeak, { method: 'GET', url: 'https://g.example/', iat: 1 }), /private key/);
});

test('IndexedDbKeyStore stores the non-extractable CryptoKey itself and reuses it', async () => {
  const indexedDB = new IDBFactory();
  const a = new IndexedDbKeyStore({ indexedDB });
  const jwk = await a.getOrCreate();
  // A second instance (a reload) finds the same key and signs with it.
  const b = new IndexedDbKeyStore({ indexedDB });
  assert.deepEqual(await b.getOrCreate(), jwk);
  const proof = await createProof(b, { method: 'POST', url: 'https://g.example/t', iat: 1 });
  const { header } = await verifyProof(proof);
  assert.deepEqual(header.jwk, jwk);
  // What is stored is a CryptoKey that cannot be exported.
  const stored = await new Promise((ok, fail) => {
    const open = indexedDB.open('keygate', 1);
    open.onsuccess = () => {
      const get = open.result.transaction('keys').objectStore('keys').get('default');
      get.onsuccess = () => ok(get.result);
      get.onerror = fail;
    };
  });
  assert.ok(stored.pair.privateKey instanceof CryptoKey);
  assert.equal(stored.pair.privateKey.extractable, false);
  await assert.rejects(crypto.subtle.exportKey('jwk', stored.pair.privateKey));
  await b.delete();
  assert.notDeepEqual(await new IndexedDbKeyStore({ indexedDB }).getOrCreate(), jwk);
});

test('IndexedDbKeyStore: concurrent first use in two "tabs" ends with one key', async () => {
  const indexedDB = new IDBFactory();
  const [x, y] = await Promise.all([new IndexedDbKeyStore({ indexedDB }).getOrCreate(), new IndexedDbKeyStore({ indexedDB }).getOrCreate()]);
  assert.deepEqual(x, y, 'the loser of the race adopts the stored key');
  assert.deepEqual(await new IndexedDbKeyStore({ indexedDB }).getOrCreate(), x);
});

test('IndexedDbKeyStore without IndexedDB: KeyStoreError', async () => {
  const broken = { open() { throw new Error('SecurityError'); } };
  await assert.rejects(new IndexedDbKeyStore({ indexedDB: broken }).getOrCreate(), KeyStoreError);
});

test('IndexedDbTokenStore round-trips and clears', async () => {
  const store = new IndexedDbTokenStore({ indexedDB: new IDBFactory(), name: 'app1' });
  assert.equal(await store.load(), null);
  const t = { accessToken: 'a', refreshToken: 'r', expiresAt: 123, scope: 'ai' };
  await store.save(t);
  assert.deepEqual(await store.load(), t);
  await store.clear();
  assert.equal(await store.load(), null);
});

function fakeKeychain() {
  const items = new Map();
  const calls = [];
  return {
    items,
    calls,
    ACCESSIBLE: { WHEN_UNLOCKED_THIS_DEVICE_ONLY: 'AccessibleWhenUnlockedThisDeviceOnly' },
    async setGenericPassword(username, password, options) {
      calls.push(['set', options]);
      items.set(options.service, { username, password, service: options.service, storage: 'KC' });
      return { service: options.service, storage: 'KC' };
    },
    async getGenericPassword(options) {
      return items.get(options.service) ?? false;
    },
    async resetGenericPassword(options) {
      return items.delete(options.service);
    },
  };
}

test('KeychainTokenStore keeps one item per service, this-device-only', async () => {
  const kc = fakeKeychain();
  const store = new KeychainTokenStore(kc, { service: 'svc' });
  assert.equal(await store.load(), null);
  const t = { accessToken: 'a', refreshToken: 'r', expiresAt: 9 };
  await store.save(t);
  assert.deepEqual(await store.load(), t);
  assert.equal(kc.calls[0][1].accessible, 'AccessibleWhenUnlockedThisDeviceOnly');
  await store.clear();
  assert.equal(await store.load(), null);
  kc.setGenericPassword = async () => false;
  await assert.rejects(store.save(t), TokenStoreError);
});

test('SecureStoreTokenStore round-trips with WHEN_UNLOCKED_THIS_DEVICE_ONLY', async () => {
  const items = new Map();
  const seen = [];
  const ss = {
    WHEN_UNLOCKED_THIS_DEVICE_ONLY: 6,
    async getItemAsync(k, o) { seen.push(o); return items.get(k) ?? null; },
    async setItemAsync(k, v, o) { seen.push(o); items.set(k, v); },
    async deleteItemAsync(k) { items.delete(k); },
  };
  const store = new SecureStoreTokenStore(ss);
  const t = { accessToken: 'a', expiresAt: 1, scope: 'ai' };
  await store.save(t);
  assert.deepEqual(await store.load(), t);
  assert.ok(seen.every((o) => o.keychainAccessible === 6));
  await store.clear();
  assert.equal(await store.load(), null);
});

/** A fake Secure Enclave / Android Keystore module: node keys, DER signatures, SPKI export. */
function fakeNativeModule({ refuse = false } = {}) {
  const keys = new Map();
  return {
    keys,
    async getOrCreateKey(alias) {
      if (refuse) throw new Error('hardware key unavailable');
      if (!keys.has(alias)) keys.set(alias, generateKeyPairSync('ec', { namedCurve: 'P-256' }));
      return keys.get(alias).publicKey.export({ format: 'der', type: 'spki' }).toString('base64');
    },
    async sign(alias, dataBase64) {
      return createSign('SHA256').update(Buffer.from(dataBase64, 'base64')).sign(keys.get(alias).privateKey).toString('base64');
    },
    async deleteKey(alias) {
      keys.delete(alias);
    },
  };
}

test('NativeKeyStore: SPKI public key, DER signatures converted, proofs verify', async () => {
  const native = fakeNativeModule();
  const keys = new NativeKeyStore(native, { alias: 'k1' });
  const jwk = await keys.getOrCreate();
  const nodeJwk = native.keys.get('k1').publicKey.export({ format: 'jwk' });
  assert.deepEqual(jwk, { kty: 'EC', crv: 'P-256', x: nodeJwk.x, y: nodeJwk.y });
  const proof = await createProof(keys, { method: 'POST', url: 'https://g.example/t', iat: 1, accessToken: 'x' });
  await verifyProof(proof);
  assert.equal(await jwkThumbprint(jwk), await jwkThumbprint(p256PublicKeyToJwk(Buffer.from(await native.getOrCreateKey('k1'), 'base64'))));
});

test('NativeKeyStore: a refusing native module is a KeyStoreError', async () => {
  const keys = new NativeKeyStore(fakeNativeModule({ refuse: true }));
  const err = await keys.getOrCreate().catch((e) => e);
  assert.ok(err instanceof KeyStoreError);
  assert.match(err.cause.message, /hardware key unavailable/);
});
