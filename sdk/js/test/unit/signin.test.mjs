// Sign-in: the authorization request, callback checks, the code exchange, token exchange.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  AuthorizationError,
  IssuerMismatchError,
  KeygateClient,
  MemoryKeyStore,
  MemoryTokenStore,
  NotDpopBoundError,
  RedirectMismatchError,
  StateMismatchError,
  jwkThumbprint,
} from '../../dist/index.js';
import { BASE, CLIENT_ID, FakeKeygate, REDIRECT, json, verifyProof } from '../helpers.mjs';

function setup(opts = {}) {
  const fake = new FakeKeygate(opts);
  const keyStore = new MemoryKeyStore();
  const tokenStore = new MemoryTokenStore();
  const client = new KeygateClient({
    baseUrl: BASE,
    clientId: CLIENT_ID,
    redirectUri: REDIRECT,
    scopes: ['ai'],
    keyStore,
    tokenStore,
    fetch: fake.fetch,
  });
  return { fake, keyStore, tokenStore, client };
}

test('the authorization URL carries PKCE S256, a random state and dpop_jkt', async () => {
  const { client, keyStore } = setup();
  const { url, pending } = await client.authorize();
  const u = new URL(url);
  assert.equal(u.origin + u.pathname, `${BASE}/oauth2/authorize`);
  const q = Object.fromEntries(u.searchParams);
  assert.equal(q.response_type, 'code');
  assert.equal(q.client_id, CLIENT_ID);
  assert.equal(q.redirect_uri, REDIRECT);
  assert.equal(q.scope, 'ai');
  assert.equal(q.code_challenge_method, 'S256');
  assert.equal(q.state, pending.state);
  assert.equal(q.code_challenge, createHash('sha256').update(pending.codeVerifier).digest('base64url'));
  assert.equal(pending.codeVerifier.length, 43, '32 random bytes, base64url');
  assert.ok(!url.includes(pending.codeVerifier), 'the verifier never appears in the URL');
  assert.equal(q.dpop_jkt, await jwkThumbprint(await keyStore.getOrCreate()));
  const again = await client.authorize();
  assert.notEqual(again.pending.state, pending.state);
  assert.notEqual(again.pending.codeVerifier, pending.codeVerifier);
});

test('RFC 7638 thumbprint matches the RFC 7638 §3.1-style computation', async () => {
  const jwk = { kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' };
  const expected = createHash('sha256')
    .update(`{"crv":"P-256","kty":"EC","x":"${jwk.x}","y":"${jwk.y}"}`)
    .digest('base64url');
  assert.equal(await jwkThumbprint(jwk), expected);
});

test('a callback with the wrong state is refused and nothing is exchanged', async () => {
  const { client, fake, tokenStore } = setup();
  const { pending } = await client.authorize();
  await assert.rejects(client.handleCallback(pending, `${REDIRECT}?code=kgc_1&state=forged`), StateMismatchError);
  await assert.rejects(client.handleCallback(pending, `${REDIRECT}?code=kgc_1`), StateMismatchError);
  // An error redirect with a forged state is a state mismatch, not an authorization error.
  await assert.rejects(client.handleCallback(pending, `${REDIRECT}?error=access_denied&state=x`), StateMismatchError);
  assert.equal(fake.tokenRequests.length, 0);
  assert.equal(await tokenStore.load(), null);
});

test('an error callback becomes AuthorizationError with the code and description', async () => {
  const { client, fake } = setup();
  const { pending } = await client.authorize();
  const cb = `${REDIRECT}?error=access_denied&error_description=${encodeURIComponent('The user said no\u0007')}&state=${pending.state}`;
  const err = await client.handleCallback(pending, cb).then(
    () => assert.fail('should throw'),
    (e) => e,
  );
  assert.ok(err instanceof AuthorizationError);
  assert.equal(err.code, 'authorization_denied');
  assert.equal(err.error, 'access_denied');
  assert.equal(err.errorDescription, 'The user said no', 'control characters are stripped');
  assert.equal(fake.tokenRequests.length, 0);
});

test('callbacks to another URI, with repeated parameters or a foreign iss are refused', async () => {
  const { client, fake } = setup();
  const { pending } = await client.authorize();
  await assert.rejects(client.handleCallback(pending, `https://evil.example/cb?code=c&state=${pending.state}`), RedirectMismatchError);
  await assert.rejects(client.handleCallback(pending, `${REDIRECT}?code=c&code=d&state=${pending.state}`), RedirectMismatchError);
  await assert.rejects(
    client.handleCallback(pending, `${REDIRECT}?code=c&state=${pending.state}&iss=${encodeURIComponent('https://evil.example')}`),
    IssuerMismatchError,
  );
  assert.equal(fake.tokenRequests.length, 0);
});

test('the code is exchanged with the verifier and a valid DPoP proof; tokens are stored', async () => {
  const { client, fake, tokenStore } = setup();
  const { pending } = await client.authorize();
  const res = await client.handleCallback(pending, `${REDIRECT}?code=kgc_1&state=${pending.state}&iss=${encodeURIComponent(BASE)}`);
  assert.equal(res.scope, 'ai');
  const [req] = fake.tokenRequests;
  assert.equal(req.form.get('grant_type'), 'authorization_code');
  assert.equal(req.form.get('code'), 'kgc_1');
  assert.equal(req.form.get('code_verifier'), pending.codeVerifier);
  assert.equal(req.form.get('redirect_uri'), REDIRECT);
  assert.equal(req.form.get('client_id'), CLIENT_ID);
  const { header, claims } = await verifyProof(req.proof);
  assert.equal(claims.htm, 'POST');
  assert.equal(claims.htu, `${BASE}/oauth2/token`);
  assert.equal(typeof claims.jti, 'string');
  assert.ok(claims.jti.length >= 22);
  assert.ok(Math.abs(claims.iat - Date.now() / 1000) < 5);
  assert.equal(claims.ath, undefined, 'no ath at the token endpoint');
  assert.deepEqual(Object.keys(header.jwk).sort(), ['crv', 'kty', 'x', 'y']);
  const stored = await tokenStore.load();
  assert.equal(stored.accessToken, 'at-1');
  assert.equal(stored.refreshToken, 'rt-1');
  assert.ok(stored.expiresAt > Date.now() + 290_000);
});

test('a token response that is not DPoP-bound is refused and nothing is stored', async () => {
  const { client, fake, tokenStore } = setup();
  fake.tokenType = 'Bearer';
  const { pending } = await client.authorize();
  const err = await client.handleCallback(pending, `${REDIRECT}?code=kgc_1&state=${pending.state}`).catch((e) => e);
  assert.ok(err instanceof NotDpopBoundError);
  assert.ok(!err.message.includes('at-1'), 'no token in the message');
  assert.equal(await tokenStore.load(), null);
  assert.equal(await client.isSignedIn(), false);
});

test('RFC 8693 token exchange of an ID token', async () => {
  const { client, fake, tokenStore } = setup();
  const idToken = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.sig';
  await client.exchangeIdToken(idToken);
  const [req] = fake.tokenRequests;
  assert.equal(req.form.get('grant_type'), 'urn:ietf:params:oauth:grant-type:token-exchange');
  assert.equal(req.form.get('subject_token'), idToken);
  assert.equal(req.form.get('subject_token_type'), 'urn:ietf:params:oauth:token-type:id_token');
  assert.equal(req.form.get('client_id'), CLIENT_ID);
  assert.equal(req.form.get('scope'), 'ai');
  await verifyProof(req.proof);
  assert.equal((await tokenStore.load()).accessToken, 'at-1');
});

test('token exchange refused by keygate surfaces the OAuth error code, not the token', async () => {
  const { client, fake } = setup();
  fake.handlers['/oauth2/token'] = () => json(400, { error: 'invalid_grant', error_description: 'untrusted issuer' });
  const err = await client.exchangeIdToken('secret-id-token').catch((e) => e);
  assert.equal(err.name, 'OAuthError');
  assert.equal(err.error, 'invalid_grant');
  assert.ok(!err.message.includes('secret-id-token'));
});

test('metadata whose issuer is not the base URL is refused', async () => {
  const { client, fake } = setup();
  fake.handlers['/.well-known/oauth-authorization-server'] = () =>
    json(200, { ...JSON.parse('{}'), issuer: 'https://evil.example', authorization_endpoint: 'https://evil.example/a', token_endpoint: 'https://evil.example/t', dpop_signing_alg_values_supported: ['ES256'] });
  await assert.rejects(client.authorize(), IssuerMismatchError);
});

test('configuration refuses plain http beyond loopback', () => {
  const opts = { clientId: 'c', redirectUri: REDIRECT, keyStore: new MemoryKeyStore(), tokenStore: new MemoryTokenStore() };
  assert.throws(() => new KeygateClient({ ...opts, baseUrl: 'http://gate.example.com' }), { name: 'ConfigError' });
  assert.throws(() => new KeygateClient({ ...opts, baseUrl: 'https://u:p@gate.example.com' }), { name: 'ConfigError' });
  new KeygateClient({ ...opts, baseUrl: 'http://127.0.0.1:8080' });
  new KeygateClient({ ...opts, baseUrl: 'http://localhost:8080/' });
});
