// KeygateClient against a fake keygate: nonces, refresh, sign-out, 429, clock skew, logout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConfigError,
  DpopNonceError,
  KeygateClient,
  MemoryKeyStore,
  MemoryTokenStore,
  NotSignedInError,
  RateLimitedError,
  SignedOutError,
} from '../../dist/index.js';
import { BASE, CLIENT_ID, FakeKeygate, REDIRECT, athOf, decodeProof, json, sleep, verifyProof } from '../helpers.mjs';

/** A client signed in against `fake` (one token request already made). */
async function signedIn(fakeOpts = {}, clientOpts = {}) {
  const fake = new FakeKeygate(fakeOpts);
  const tokenStore = new MemoryTokenStore();
  const signedOut = [];
  const client = new KeygateClient({
    baseUrl: BASE,
    clientId: CLIENT_ID,
    redirectUri: REDIRECT,
    scopes: ['ai'],
    keyStore: new MemoryKeyStore(),
    tokenStore,
    fetch: fake.fetch,
    onSignedOut: (reason) => signedOut.push(reason),
    ...clientOpts,
  });
  const { pending } = await client.authorize();
  await client.handleCallback(pending, `${REDIRECT}?code=kgc_1&state=${pending.state}`);
  return { fake, client, tokenStore, signedOut };
}

const nonceAnswer = (nonce) =>
  json(400, { error: 'use_dpop_nonce', error_description: 'nonce required' }, { 'dpop-nonce': nonce });

const resourceNonceAnswer = (nonce) =>
  json(401, { error: 'use_dpop_nonce' }, {
    'dpop-nonce': nonce,
    'www-authenticate': 'DPoP error="use_dpop_nonce", error_description="A DPoP nonce is required", algs="EdDSA ES256"',
  });

test('proxied calls carry DPoP token, proof with ath, htu without query', async () => {
  const { client, fake } = await signedIn();
  const r = await client.fetch('/proxy/echo/v1/chat?x=1#frag', { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } });
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { ok: true, path: '/proxy/echo/v1/chat', body: '{"a":1}' });
  const req = fake.requests.at(-1);
  assert.equal(req.headers.get('authorization'), 'DPoP at-1');
  assert.equal(req.headers.get('content-type'), 'application/json');
  const { claims } = await verifyProof(req.proof);
  assert.equal(claims.htm, 'POST');
  assert.equal(claims.htu, `${BASE}/proxy/echo/v1/chat`);
  assert.equal(claims.ath, athOf('at-1'));
});

test('requests outside the base URL are refused before anything is sent', async () => {
  const { client, fake } = await signedIn();
  const before = fake.requests.length;
  await assert.rejects(client.fetch('https://evil.example/proxy/x'), ConfigError);
  await assert.rejects(client.fetch('https://gate.example.com.evil.example/proxy/x'), ConfigError);
  await assert.rejects(client.fetch('http://gate.example.com/proxy/x'), ConfigError);
  assert.equal(fake.requests.length, before);
});

test('not signed in: fetch throws NotSignedInError', async () => {
  const fake = new FakeKeygate();
  const client = new KeygateClient({ baseUrl: BASE, clientId: CLIENT_ID, redirectUri: REDIRECT, keyStore: new MemoryKeyStore(), tokenStore: new MemoryTokenStore(), fetch: fake.fetch });
  await assert.rejects(client.fetch('/proxy/echo/v1/x'), NotSignedInError);
});

test('token endpoint use_dpop_nonce: one retry with the nonce, nonce cached per origin', async () => {
  const fake = new FakeKeygate();
  let asked = 0;
  fake.handlers['/oauth2/token'] = (req) => {
    if (decodeProof(req.proof).claims.nonce !== 'n-1') {
      asked++;
      return nonceAnswer('n-1');
    }
    return undefined;
  };
  const client = new KeygateClient({ baseUrl: BASE, clientId: CLIENT_ID, redirectUri: REDIRECT, scopes: ['ai'], keyStore: new MemoryKeyStore(), tokenStore: new MemoryTokenStore(), fetch: fake.fetch });
  const { pending } = await client.authorize();
  await client.handleCallback(pending, `${REDIRECT}?code=c&state=${pending.state}`);
  assert.equal(asked, 1);
  assert.equal(fake.tokenRequests.length, 2);
  // The cached nonce is used straight away next time, and for the proxy on the same origin.
  await client.refresh();
  assert.equal(fake.tokenRequests.length, 3);
  await client.fetch('/proxy/echo/v1/x');
  assert.equal(decodeProof(fake.requests.at(-1).proof).claims.nonce, 'n-1');
});

test('token endpoint asking for a nonce twice in a row: DpopNonceError, no loop', async () => {
  const fake = new FakeKeygate();
  let n = 0;
  fake.handlers['/oauth2/token'] = () => nonceAnswer(`n-${++n}`);
  const client = new KeygateClient({ baseUrl: BASE, clientId: CLIENT_ID, redirectUri: REDIRECT, scopes: ['ai'], keyStore: new MemoryKeyStore(), tokenStore: new MemoryTokenStore(), fetch: fake.fetch });
  const { pending } = await client.authorize();
  await assert.rejects(client.handleCallback(pending, `${REDIRECT}?code=c&state=${pending.state}`), DpopNonceError);
  assert.equal(fake.tokenRequests.length, 2);
});

test('resource use_dpop_nonce: one retry; twice in a row: DpopNonceError', async () => {
  const { client, fake } = await signedIn();
  let challenges = 0;
  fake.handlers['/proxy/echo/v1/once'] = (req) => {
    if (decodeProof(req.proof).claims.nonce !== 'r-1') {
      challenges++;
      return resourceNonceAnswer('r-1');
    }
    return undefined;
  };
  const ok = await client.fetch('/proxy/echo/v1/once');
  assert.equal(ok.status, 200);
  assert.equal(challenges, 1);
  let m = 0;
  fake.handlers['/proxy/echo/v1/always'] = () => resourceNonceAnswer(`q-${++m}`);
  const before = fake.requests.length;
  await assert.rejects(client.fetch('/proxy/echo/v1/always'), DpopNonceError);
  assert.equal(fake.requests.length - before, 2);
});

test('refresh answered invalid_grant: signed out with a reason, tokens cleared, listener called', async () => {
  const { client, fake, tokenStore, signedOut } = await signedIn();
  fake.revokedFamily = true; // the administrator revoked the session
  const err = await client.fetch('/proxy/echo/v1/x').catch((e) => e);
  assert.ok(err instanceof SignedOutError, String(err));
  assert.equal(err.code, 'signed_out');
  assert.equal(err.reason, 'the session was revoked or expired');
  assert.deepEqual(signedOut, ['the session was revoked or expired']);
  assert.equal(await tokenStore.load(), null);
  assert.equal(await client.isSignedIn(), false);
  assert.ok(!err.message.includes('rt-1') && !err.message.includes('at-1'));
  await assert.rejects(client.fetch('/proxy/echo/v1/x'), NotSignedInError);
  assert.equal(signedOut.length, 1);
});

test('single-flight: 20 concurrent calls with an expiring token cause one refresh', async () => {
  let now = Date.now();
  const { client, fake } = await signedIn({ expiresIn: 30 }, { now: () => now, refreshMarginSeconds: 10 });
  now += 25_000; // inside the refresh margin
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => client.fetch(`/proxy/echo/v1/c${i}`)));
  assert.deepEqual(results.map((r) => r.status), Array(20).fill(200));
  assert.equal(fake.refreshRequests.length, 1);
  const proxied = fake.requests.filter((r) => r.path.startsWith('/proxy/'));
  assert.ok(proxied.every((r) => r.headers.get('authorization') === 'DPoP at-2'));
});

test('single-flight: 20 concurrent calls answered 401 invalid_token cause one refresh, then retry', async () => {
  const { client, fake } = await signedIn({ expiresIn: 300 });
  fake.validAccess.clear(); // keygate says the access token expired (server-side clock)
  // Slow the refresh down so every call is waiting on it.
  fake.handlers['/oauth2/token'] = async () => {
    await sleep(50);
    return undefined;
  };
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => client.fetch(`/proxy/echo/v1/c${i}`)));
  assert.deepEqual(results.map((r) => r.status), Array(20).fill(200));
  assert.equal(fake.refreshRequests.length, 1);
  assert.equal(fake.revokedFamily, false, 'no refresh token was presented twice');
});

test('a second 401 after the refresh is returned as is (one retry only)', async () => {
  const { client, fake } = await signedIn();
  fake.handlers['/proxy/echo/v1/nope'] = () =>
    json(401, { error: 'invalid_token' }, { 'www-authenticate': 'DPoP error="invalid_token"' });
  const r = await client.fetch('/proxy/echo/v1/nope');
  assert.equal(r.status, 401);
  assert.equal(fake.refreshRequests.length, 1);
});

test('429 becomes RateLimitedError with Retry-After seconds, not retried', async () => {
  const { client, fake } = await signedIn();
  fake.handlers['/proxy/limited/v1/x'] = () => json(429, { error: 'rate_limited' }, { 'retry-after': '17' });
  const before = fake.requests.length;
  const err = await client.fetch('/proxy/limited/v1/x').catch((e) => e);
  assert.ok(err instanceof RateLimitedError);
  assert.equal(err.retryAfterSeconds, 17);
  assert.equal(err.response.status, 429);
  assert.equal(fake.requests.length - before, 1);
  fake.handlers['/proxy/limited/v1/x'] = () =>
    json(429, {}, { 'retry-after': new Date(Date.now() + 42_000).toUTCString() });
  const err2 = await client.fetch('/proxy/limited/v1/x').catch((e) => e);
  assert.ok(err2.retryAfterSeconds >= 41 && err2.retryAfterSeconds <= 43, String(err2.retryAfterSeconds));
});

test('clock skew: a Date header 10 minutes off moves iat to server time', async () => {
  const skew = 10 * 60 * 1000;
  const { client, fake } = await signedIn({ date: () => new Date(Date.now() + skew) });
  // The metadata response already carried the Date: the very first proof used server time.
  const first = decodeProof(fake.tokenRequests[0].proof).claims.iat;
  assert.ok(Math.abs(first - (Date.now() + skew) / 1000) < 3, `iat ${first}`);
  await client.fetch('/proxy/echo/v1/x');
  const iat = decodeProof(fake.requests.at(-1).proof).claims.iat;
  assert.ok(Math.abs(iat - (Date.now() + skew) / 1000) < 3);
  // Expiry stays on the device clock.
  assert.equal(fake.refreshRequests.length, 0);
});

test("a proxied answer's Date (the upstream's) does not move iat", async () => {
  const { client, fake } = await signedIn();
  fake.handlers['/proxy/echo/v1/x'] = () =>
    json(200, { ok: true }, { date: new Date(Date.now() + 10 * 60 * 1000).toUTCString() });
  await client.fetch('/proxy/echo/v1/x');
  await client.fetch('/proxy/echo/v1/x');
  const iat = decodeProof(fake.requests.at(-1).proof).claims.iat;
  assert.ok(Math.abs(iat - Date.now() / 1000) < 3, `iat ${iat}`);
});

test('clock skew below 60 s is left alone', async () => {
  const { fake } = await signedIn({ date: () => new Date(Date.now() + 30_000) });
  const iat = decodeProof(fake.tokenRequests[0].proof).claims.iat;
  assert.ok(Math.abs(iat - Date.now() / 1000) < 3);
});

test('logout revokes the refresh token with client_id and clears the tokens', async () => {
  const { client, fake, tokenStore, signedOut } = await signedIn();
  await client.logout();
  const revoke = fake.requests.find((r) => r.path === '/oauth2/revoke');
  assert.equal(revoke.form.get('token'), 'rt-1');
  assert.equal(revoke.form.get('token_type_hint'), 'refresh_token');
  assert.equal(revoke.form.get('client_id'), CLIENT_ID);
  assert.equal(await tokenStore.load(), null);
  assert.deepEqual(signedOut, [], 'logout is not a session ending by itself');
  await assert.rejects(client.fetch('/proxy/echo/v1/x'), NotSignedInError);
});

test('logout clears local tokens even when keygate is unreachable; deleteKey deletes the key', async () => {
  const keyStore = new MemoryKeyStore();
  const { client, fake, tokenStore } = await signedIn({}, { keyStore });
  const jwk = await keyStore.getOrCreate();
  fake.handlers['/oauth2/revoke'] = () => {
    throw new TypeError('fetch failed');
  };
  const err = await client.logout({ deleteKey: true }).catch((e) => e);
  assert.equal(err?.name, 'NetworkError');
  assert.equal(await tokenStore.load(), null);
  assert.notDeepEqual(await keyStore.getOrCreate(), jwk, 'a new key after deletion');
});

test('a transient refresh failure keeps using a still-valid token', async () => {
  let now = Date.now();
  const { client, fake } = await signedIn({ expiresIn: 30 }, { now: () => now });
  now += 25_000;
  fake.handlers['/oauth2/token'] = () => json(503, { error: 'temporarily_unavailable' });
  const r = await client.fetch('/proxy/echo/v1/x');
  assert.equal(r.status, 200);
  assert.equal(fake.requests.at(-1).headers.get('authorization'), 'DPoP at-1');
});

test('errors never carry tokens or proofs', async () => {
  const { client, fake } = await signedIn();
  fake.handlers['/oauth2/token'] = () => json(400, { error: 'invalid_grant', error_description: 'rt-1 at-1' });
  const err = await client.refresh().catch((e) => e);
  const text = `${err.message} ${JSON.stringify(err)} ${String(err.stack)}`;
  assert.ok(err instanceof SignedOutError);
  for (const secret of ['rt-1', 'at-1', 'eyJ']) assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
});

test('request bodies (including streams) are resent intact after a nonce challenge', async () => {
  const { client, fake } = await signedIn();
  let first = true;
  fake.handlers['/proxy/echo/v1/upload'] = () => {
    if (first) {
      first = false;
      return resourceNonceAnswer('u-1');
    }
    return undefined;
  };
  const stream = new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode('part1,'));
      c.enqueue(new TextEncoder().encode('part2'));
      c.close();
    },
  });
  const r = await client.fetch('/proxy/echo/v1/upload', { method: 'post', body: stream, duplex: 'half' });
  assert.equal(r.status, 200);
  const sent = fake.requests.filter((q) => q.path === '/proxy/echo/v1/upload');
  assert.equal(sent.length, 2);
  assert.deepEqual(sent.map((q) => [q.method, q.body]), [['POST', 'part1,part2'], ['POST', 'part1,part2']]);
});

test('crossContextLock: two clients ("tabs") sharing a token store refresh once', async () => {
  let now = Date.now();
  const keyStore = new MemoryKeyStore();
  const { fake, tokenStore } = await signedIn({ expiresIn: 30 }, { now: () => now, keyStore });
  // A simple async mutex standing in for navigator.locks.
  let tail = Promise.resolve();
  const lock = (task) => {
    const run = tail.then(task);
    tail = run.catch(() => undefined);
    return run;
  };
  const mk = () =>
    new KeygateClient({ baseUrl: BASE, clientId: CLIENT_ID, redirectUri: REDIRECT, keyStore, tokenStore, fetch: fake.fetch, now: () => now, crossContextLock: lock });
  const a = mk();
  const b = mk();
  now += 25_000;
  const [ra, rb] = await Promise.all([a.fetch('/proxy/echo/v1/a'), b.fetch('/proxy/echo/v1/b')]);
  assert.equal(ra.status, 200);
  assert.equal(rb.status, 200);
  assert.equal(fake.refreshRequests.length, 1, 'the second tab adopted the first tab\'s rotated tokens');
  assert.equal(fake.revokedFamily, false);
});
