// Integration: the app attestation hook against a real `keygate serve` (sdk/testkit/fixture.mjs).
// The fixture's `attested_client_id` has App Attest configured (Apple's real root), so
// `none` gives an `unattested` token and evidence that cannot verify a `failed` one; its
// plain `client_id` has no attestation (the challenge endpoint answers 400).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startFixture, signInHeadless } from '../../../testkit/fixture.mjs';
import { KeygateClient, MemoryKeyStore, MemoryTokenStore } from '../../dist/index.js';
import { recordingFetch } from '../helpers.mjs';

const CHALLENGE_PATH = '/oauth2/attestation/challenge';

let fx;

before(async () => {
  fx = await startFixture({ accessTtl: '30s' });
});

after(async () => {
  await fx?.stop();
});

async function newUser() {
  const name = `att-${randomBytes(4).toString('hex')}`;
  const password = `pw-${randomBytes(12).toString('hex')}`;
  await fx.addUser(name, password, ['ai']);
  return { name, password };
}

/** Signs in through the real login page with `clientId` and a recording provider. */
async function signIn(clientId, provider) {
  const rec = recordingFetch();
  const calls = [];
  const tokenStore = new MemoryTokenStore();
  const keyStore = new MemoryKeyStore();
  const client = new KeygateClient({
    baseUrl: fx.info.base,
    clientId,
    redirectUri: fx.info.redirect_uri,
    scopes: [fx.info.scope],
    keyStore,
    tokenStore,
    fetch: rec.fetch,
    attestation: async (req) => {
      calls.push(req);
      return provider(req);
    },
  });
  const user = await newUser();
  const { url, pending } = await client.authorize();
  const callback = await signInHeadless(url, user.name, user.password);
  await client.handleCallback(pending, callback);
  return { client, rec, calls, tokenStore, keyStore, dpopJkt: new URL(url).searchParams.get('dpop_jkt') };
}

const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));

test('attested client, provider says none: the access token is unattested', async () => {
  const { rec, calls, tokenStore, dpopJkt } = await signIn(fx.info.attested_client_id, async () => ({ type: 'none' }));
  const challenges = rec.log.filter((e) => e.path === CHALLENGE_PATH);
  assert.ok(challenges.length >= 1);
  assert.ok(challenges.every((c) => c.status === 200 && c.form.get('client_id') === fx.info.attested_client_id));
  assert.ok(calls.length >= 1);
  const req = calls.at(-1);
  assert.equal(req.grant, 'authorization_code');
  assert.equal(req.jkt, dpopJkt);
  const data = `keygate-attestation/v1\n${req.challenge}\n${dpopJkt}`;
  assert.equal(Buffer.from(req.clientData).toString('utf8'), data);
  assert.equal(req.nonce, createHash('sha256').update(data).digest('base64url'));
  const ok = rec.log.filter((e) => e.path === '/oauth2/token' && e.status === 200);
  assert.equal(ok.length, 1);
  assert.equal(ok[0].form.get('attestation_type'), 'none');
  assert.equal(ok[0].form.get('attestation_challenge'), req.challenge);
  // One challenge per token request: a retried request (use_dpop_nonce) had its own.
  const tokenRequests = rec.log.filter((e) => e.path === '/oauth2/token');
  assert.equal(challenges.length, tokenRequests.length);
  assert.equal(new Set(tokenRequests.map((t) => t.form.get('attestation_challenge'))).size, tokenRequests.length);
  const claims = claimsOf((await tokenStore.load()).accessToken);
  assert.equal(claims.att, 'unattested');
});

test('attested client, App Attest evidence that does not verify: failed; refresh asks the provider again', async () => {
  const { client, rec, calls, tokenStore, keyStore } = await signIn(fx.info.attested_client_id, async (req) =>
    req.grant === 'refresh_token' ? { type: 'apple-app-attest', assertion: 'AAAA' } : { type: 'apple-app-attest', attestation: 'AAAA', keyId: 'AAAA' },
  );
  const signInToken = rec.log.filter((e) => e.path === '/oauth2/token' && e.status === 200)[0];
  assert.equal(signInToken.form.get('attestation_type'), 'apple-app-attest');
  assert.equal(signInToken.form.get('attestation'), 'AAAA');
  assert.equal(signInToken.form.get('attestation_key_id'), 'AAAA');
  const first = (await tokenStore.load()).accessToken;
  assert.equal(claimsOf(first).att, 'failed');

  const before = calls.length;
  await client.refresh();
  const refreshCalls = calls.slice(before);
  assert.ok(refreshCalls.length >= 1);
  assert.ok(refreshCalls.every((c) => c.grant === 'refresh_token'));
  const jwk = await keyStore.getOrCreate();
  const jkt = createHash('sha256').update(`{"crv":"P-256","kty":"EC","x":"${jwk.x}","y":"${jwk.y}"}`).digest('base64url');
  assert.equal(refreshCalls.at(-1).jkt, jkt);
  const refreshed = rec.log.filter((e) => e.path === '/oauth2/token' && e.form.get('grant_type') === 'refresh_token' && e.status === 200);
  assert.equal(refreshed.length, 1);
  assert.equal(refreshed[0].form.get('attestation_assertion'), 'AAAA');
  assert.equal(refreshed[0].form.get('attestation_challenge'), refreshCalls.at(-1).challenge);
  const second = (await tokenStore.load()).accessToken;
  assert.notEqual(second, first);
  // Evidence that failed at sign-in marks the session for its lifetime (keygate's rule).
  assert.equal(claimsOf(second).att, 'failed');
});

test('client without attestation: the challenge gets 400, sign-in still works, no att claim', async () => {
  const { client, rec, calls, tokenStore } = await signIn(fx.info.client_id, async () => ({ type: 'none' }));
  const challenges = rec.log.filter((e) => e.path === CHALLENGE_PATH);
  assert.ok(challenges.length >= 1);
  assert.ok(challenges.every((c) => c.status === 400));
  assert.equal(calls.length, 0);
  const tokenRequests = rec.log.filter((e) => e.path === '/oauth2/token');
  for (const t of tokenRequests) {
    assert.equal(t.form.get('attestation_type'), null);
    assert.equal(t.form.get('attestation_challenge'), null);
  }
  const claims = claimsOf((await tokenStore.load()).accessToken);
  assert.ok(!('att' in claims), JSON.stringify(claims));
  // Refresh works too, still without attestation.
  await client.refresh();
  assert.ok(!('att' in claimsOf((await tokenStore.load()).accessToken)));
  assert.equal(calls.length, 0);
});
