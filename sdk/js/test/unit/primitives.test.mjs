// htu, ath, proofs, DER↔raw, SHA-256, challenge parsing, token serialisation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createSign, generateKeyPairSync, randomBytes } from 'node:crypto';
import {
  MemoryKeyStore,
  ath,
  b64url,
  createProof,
  derToRaw,
  htu,
  parseChallenges,
  parseTokens,
  rawToDer,
  serialiseTokens,
  sha256Sync,
  KeyStoreError,
} from '../../dist/index.js';
import { verifyProof } from '../helpers.mjs';

test('htu normalisation: no query/fragment, lower-case scheme and host, no default port', () => {
  const cases = [
    ['https://gate.example.com/proxy/a?x=1#f', 'https://gate.example.com/proxy/a'],
    ['HTTPS://Gate.Example.COM:443/proxy/A', 'https://gate.example.com/proxy/A'],
    ['http://127.0.0.1:80/oauth2/token', 'http://127.0.0.1/oauth2/token'],
    ['http://127.0.0.1:8080/oauth2/token?', 'http://127.0.0.1:8080/oauth2/token'],
    ['https://gate.example.com:8443/x/../y/./z', 'https://gate.example.com:8443/y/z'],
    ['https://gate.example.com', 'https://gate.example.com/'],
  ];
  for (const [input, want] of cases) assert.equal(htu(input), want, input);
});

test('ath is base64url SHA-256 of the access token', async () => {
  assert.equal(await ath('at-123'), createHash('sha256').update('at-123').digest('base64url'));
});

test('proofs verify, carry fresh jti, nonce and ath when given', async () => {
  const keys = new MemoryKeyStore();
  const p1 = await createProof(keys, { method: 'get', url: 'https://g.example/p?q', iat: 1000, nonce: 'n1', accessToken: 'tok' });
  const p2 = await createProof(keys, { method: 'GET', url: 'https://g.example/p', iat: 1000 });
  const a = await verifyProof(p1);
  const b = await verifyProof(p2);
  assert.deepEqual(a.claims, { jti: a.claims.jti, htm: 'GET', htu: 'https://g.example/p', iat: 1000, nonce: 'n1', ath: await ath('tok') });
  assert.notEqual(a.claims.jti, b.claims.jti);
  assert.equal(b.claims.nonce, undefined);
  assert.equal(b.claims.ath, undefined);
  assert.deepEqual(a.header.jwk, b.header.jwk);
});

test('a key store returning a DER signature is refused (raw r||s required)', async () => {
  const inner = new MemoryKeyStore();
  const derStore = {
    getOrCreate: () => inner.getOrCreate(),
    sign: async (d) => rawToDer(await inner.sign(d)),
    delete: () => inner.delete(),
  };
  await assert.rejects(createProof(derStore, { method: 'GET', url: 'https://g.example/', iat: 1 }), KeyStoreError);
});

test('DER → raw: signatures from node (DER) verify with WebCrypto (raw)', async () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  for (let i = 0; i < 64; i++) {
    const data = randomBytes(40);
    const der = createSign('SHA256').update(data).sign(privateKey);
    const raw = derToRaw(new Uint8Array(der));
    assert.equal(raw.length, 64);
    assert.ok(await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, raw, data));
    assert.deepEqual(Buffer.from(rawToDer(raw)), der, 'round trip');
  }
});

test('DER → raw: leading-zero and short integers, and malformed input', () => {
  // r = 0x80 followed by 31 bytes (needs a 0x00 pad), s = 1 (short).
  const r = new Uint8Array(32).fill(0x11);
  r[0] = 0x80;
  const s = new Uint8Array(32);
  s[31] = 1;
  const raw = new Uint8Array([...r, ...s]);
  const der = rawToDer(raw);
  assert.deepEqual([...der.subarray(0, 5)], [0x30, 2 + 33 + 2 + 1, 0x02, 33, 0x00]);
  assert.deepEqual(derToRaw(der), raw);
  for (const bad of [
    [],
    [0x31, 0x00],
    [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01],
    [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00],
    [0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01],
    [0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01],
  ]) {
    assert.throws(() => derToRaw(Uint8Array.from(bad)), KeyStoreError, JSON.stringify(bad));
  }
});

test('the built-in SHA-256 (for platforms without WebCrypto) matches node', () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 1000]) {
    const data = randomBytes(n);
    assert.equal(b64url(sha256Sync(data)), createHash('sha256').update(data).digest('base64url'), `length ${n}`);
  }
});

test('WWW-Authenticate parsing finds the DPoP error among challenges', () => {
  const c = parseChallenges('Bearer realm="x", DPoP error="use_dpop_nonce", error_description="A \\"nonce\\"", algs="ES256"');
  assert.equal(c.length, 2);
  assert.equal(c[1][0], 'DPoP');
  assert.equal(c[1][1].get('error'), 'use_dpop_nonce');
  assert.equal(c[1][1].get('error_description'), 'A "nonce"');
  assert.deepEqual(parseChallenges('dpop error=invalid_token')[0][1].get('error'), 'invalid_token');
  for (const junk of ['', '=', ',,,', '"', 'Basic abc==', 'DPoP error="unterminated']) parseChallenges(junk);
});

test('token serialisation round-trips and refuses junk', () => {
  const t = { accessToken: 'a', refreshToken: 'r', expiresAt: 5, scope: 'ai' };
  assert.deepEqual(parseTokens(serialiseTokens(t)), t);
  assert.deepEqual(parseTokens(serialiseTokens({ accessToken: 'a', expiresAt: 1 })), { accessToken: 'a', expiresAt: 1 });
  assert.throws(() => parseTokens('{"v":2}'), { name: 'TokenStoreError' });
  assert.throws(() => parseTokens('nope'), { name: 'TokenStoreError' });
});
