// App attestation hook: the challenge, the client data handed to the provider, the token
// request fields for both grants, and degrading (never locking out) on every failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  ATTESTATION_CHALLENGE_PATH,
  ConfigError,
  KeygateClient,
  MemoryKeyStore,
  MemoryTokenStore,
  attestationClientData,
  jwkThumbprint,
} from '../../dist/index.js';
import { BASE, CLIENT_ID, FakeKeygate, REDIRECT, decodeProof, json } from '../helpers.mjs';

const CHALLENGE_PATH = '/oauth2/attestation/challenge';
const FIELDS = ['attestation_type', 'attestation_challenge', 'attestation', 'attestation_key_id', 'attestation_assertion'];

/** A fake keygate whose challenge endpoint hands out `ch-1`, `ch-2`, … (or `answer()`). */
function fakeWithChallenges(answer) {
  const fake = new FakeKeygate();
  fake.challenges = [];
  fake.handlers[CHALLENGE_PATH] = (req, f) => {
    if (answer) return answer(req, f);
    const challenge = `ch-${f.challenges.length + 1}`;
    f.challenges.push(challenge);
    return json(200, { challenge, expires_in: 300 }, { 'cache-control': 'no-store' });
  };
  return fake;
}

/** A client with a recording provider; `provider(req)` decides the evidence. */
function setup({ fake = fakeWithChallenges(), provider = async () => ({ type: 'none' }) } = {}) {
  const calls = [];
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
    attestation: async (req) => {
      calls.push(req);
      return provider(req);
    },
  });
  return { fake, client, keyStore, tokenStore, calls };
}

async function signIn(client) {
  const { url, pending } = await client.authorize();
  await client.handleCallback(pending, `${REDIRECT}?code=kgc_1&state=${pending.state}`);
  return new URL(url).searchParams.get('dpop_jkt');
}

const attFields = (form) => Object.fromEntries(FIELDS.filter((k) => form.has(k)).map((k) => [k, form.get(k)]));

test('the challenge endpoint path is exported and the client data format is exact', () => {
  assert.equal(ATTESTATION_CHALLENGE_PATH, CHALLENGE_PATH);
  assert.deepEqual(
    Buffer.from(attestationClientData('c.h.x', 'jkt-1')).toString('utf8'),
    'keygate-attestation/v1\nc.h.x\njkt-1',
  );
});

test('a non-function attestation option is a ConfigError', () => {
  assert.throws(
    () => new KeygateClient({ baseUrl: BASE, clientId: CLIENT_ID, redirectUri: REDIRECT, keyStore: new MemoryKeyStore(), tokenStore: new MemoryTokenStore(), attestation: 'yes' }),
    ConfigError,
  );
});

test('sign-in: challenge for our client_id, exact client data/hash/nonce over dpop_jkt, fields in the code exchange', async () => {
  const { fake, client, keyStore, calls } = setup({
    provider: async () => ({ type: 'apple-app-attest', attestation: 'b2JqZWN0', keyId: 'a2V5' }),
  });
  const jkt = await signIn(client);
  assert.equal(jkt, await jwkThumbprint(await keyStore.getOrCreate()));

  const challengeReqs = fake.requests.filter((r) => r.path === CHALLENGE_PATH);
  assert.equal(challengeReqs.length, 1);
  assert.equal(challengeReqs[0].method, 'POST');
  assert.equal(challengeReqs[0].headers.get('content-type'), 'application/x-www-form-urlencoded');
  assert.deepEqual([...challengeReqs[0].form], [['client_id', CLIENT_ID]]);
  assert.equal(challengeReqs[0].proof, undefined, 'no DPoP proof on the challenge request');

  assert.equal(calls.length, 1);
  const req = calls[0];
  assert.equal(req.grant, 'authorization_code');
  assert.equal(req.challenge, 'ch-1');
  assert.equal(req.jkt, jkt);
  const expected = Buffer.from(`keygate-attestation/v1\nch-1\n${jkt}`, 'utf8');
  assert.ok(req.clientData instanceof Uint8Array);
  assert.deepEqual(Buffer.from(req.clientData), expected);
  const hash = createHash('sha256').update(expected).digest();
  assert.deepEqual(Buffer.from(req.clientDataHash), hash);
  assert.equal(req.nonce, hash.toString('base64url'));
  assert.ok(!req.nonce.includes('='), 'no padding');

  // The challenge came before the code exchange, which carries the evidence.
  const tokenIdx = fake.requests.findIndex((r) => r.path === '/oauth2/token');
  assert.ok(fake.requests.indexOf(challengeReqs[0]) < tokenIdx);
  const form = fake.tokenRequests[0].form;
  assert.equal(form.get('grant_type'), 'authorization_code');
  assert.deepEqual(attFields(form), {
    attestation_type: 'apple-app-attest',
    attestation_challenge: 'ch-1',
    attestation: 'b2JqZWN0',
    attestation_key_id: 'a2V5',
  });
});

test('refresh: a fresh challenge, grant refresh_token, the assertion in the refresh request', async () => {
  const { fake, client, calls } = setup({
    provider: async (req) =>
      req.grant === 'refresh_token'
        ? { type: 'apple-app-attest', assertion: 'YXNzZXJ0' }
        : { type: 'apple-app-attest', attestation: 'b2JqZWN0', keyId: 'a2V5' },
  });
  const jkt = await signIn(client);
  await client.refresh();
  assert.equal(calls.length, 2);
  assert.equal(calls[1].grant, 'refresh_token');
  assert.equal(calls[1].challenge, 'ch-2');
  assert.equal(calls[1].jkt, jkt);
  assert.deepEqual(Buffer.from(calls[1].clientData).toString(), `keygate-attestation/v1\nch-2\n${jkt}`);
  const form = fake.refreshRequests[0].form;
  assert.equal(form.get('refresh_token'), 'rt-1');
  assert.deepEqual(attFields(form), {
    attestation_type: 'apple-app-attest',
    attestation_challenge: 'ch-2',
    attestation_assertion: 'YXNzZXJ0',
  });
});

test('Play Integrity: the token goes in `attestation` at sign-in and refresh', async () => {
  const { fake, client, calls } = setup({ provider: async (req) => ({ type: 'play-integrity', attestation: `pi-${req.nonce}` }) });
  await signIn(client);
  await client.refresh();
  assert.deepEqual(attFields(fake.tokenRequests[0].form), {
    attestation_type: 'play-integrity',
    attestation_challenge: 'ch-1',
    attestation: `pi-${calls[0].nonce}`,
  });
  assert.deepEqual(attFields(fake.refreshRequests[0].form), {
    attestation_type: 'play-integrity',
    attestation_challenge: 'ch-2',
    attestation: `pi-${calls[1].nonce}`,
  });
});

test('a provider that throws or returns null or junk: attestation_type=none with the challenge; sign-in works', async () => {
  for (const provider of [
    async () => {
      throw new Error('App Attest unsupported');
    },
    async () => null,
    async () => ({ type: 'something-else', attestation: 'x' }),
  ]) {
    const { fake, client, tokenStore } = setup({ provider });
    await signIn(client);
    assert.deepEqual(attFields(fake.tokenRequests[0].form), { attestation_type: 'none', attestation_challenge: 'ch-1' });
    assert.ok(await tokenStore.load());
    await client.refresh();
    assert.deepEqual(attFields(fake.refreshRequests[0].form), { attestation_type: 'none', attestation_challenge: 'ch-2' });
  }
});

test('challenge refused (400), 5xx, unreadable or unreachable: no attestation fields, provider not called, sign-in works', async () => {
  const answers = [
    () => json(400, { error: 'invalid_request', error_description: 'This client has no app attestation configured' }),
    () => json(503, { error: 'temporarily_unavailable' }),
    () => new Response('not json', { status: 200 }),
    () => json(200, { challenge: 42 }),
    () => {
      throw new TypeError('fetch failed');
    },
  ];
  for (const answer of answers) {
    const { fake, client, tokenStore, calls } = setup({ fake: fakeWithChallenges(answer) });
    await signIn(client);
    assert.equal(fake.requests.filter((r) => r.path === CHALLENGE_PATH).length, 1);
    assert.equal(calls.length, 0);
    assert.deepEqual(attFields(fake.tokenRequests[0].form), {});
    assert.ok(await tokenStore.load());
    await client.refresh();
    assert.deepEqual(attFields(fake.refreshRequests[0].form), {});
  }
});

test('a token request retried after use_dpop_nonce gets a new challenge and new evidence', async () => {
  const fake = fakeWithChallenges();
  let nonceAsked = 0;
  fake.handlers['/oauth2/token'] = (req) => {
    // Ask for a nonce on the first attempt of each grant.
    if (decodeProof(req.proof).claims.nonce !== `n-${nonceAsked}` || nonceAsked === 0) {
      nonceAsked++;
      return json(400, { error: 'use_dpop_nonce' }, { 'dpop-nonce': `n-${nonceAsked}` });
    }
    return undefined;
  };
  const { client, calls } = setup({ fake, provider: async (req) => ({ type: 'play-integrity', attestation: `pi-${req.challenge}` }) });
  await signIn(client);
  assert.equal(fake.tokenRequests.length, 2);
  assert.deepEqual(
    fake.tokenRequests.map((r) => [r.form.get('attestation_challenge'), r.form.get('attestation')]),
    [
      ['ch-1', 'pi-ch-1'],
      ['ch-2', 'pi-ch-2'],
    ],
  );
  assert.deepEqual(calls.map((c) => c.challenge), ['ch-1', 'ch-2']);
  assert.notDeepEqual(calls[0].clientDataHash, calls[1].clientDataHash);

  // The same at refresh: the server rotates its nonce, the SDK retries with a new challenge.
  fake.handlers['/oauth2/token'] = (req) => {
    if (decodeProof(req.proof).claims.nonce === 'n-1') return json(400, { error: 'use_dpop_nonce' }, { 'dpop-nonce': 'n-2' });
    return undefined;
  };
  await client.refresh();
  const refreshes = fake.refreshRequests;
  assert.equal(refreshes.length, 2);
  assert.deepEqual(refreshes.map((r) => r.form.get('attestation_challenge')), ['ch-3', 'ch-4']);
  assert.deepEqual(calls.slice(2).map((c) => [c.grant, c.challenge]), [
    ['refresh_token', 'ch-3'],
    ['refresh_token', 'ch-4'],
  ]);
});

test('without the option no challenge is fetched and no attestation fields are sent', async () => {
  const fake = fakeWithChallenges();
  const client = new KeygateClient({ baseUrl: BASE, clientId: CLIENT_ID, redirectUri: REDIRECT, scopes: ['ai'], keyStore: new MemoryKeyStore(), tokenStore: new MemoryTokenStore(), fetch: fake.fetch });
  await signIn(client);
  await client.refresh();
  assert.equal(fake.requests.filter((r) => r.path === CHALLENGE_PATH).length, 0);
  for (const r of fake.tokenRequests) assert.deepEqual(attFields(r.form), {});
});

test('token exchange (ID token) carries no attestation', async () => {
  const { fake, client, calls } = setup();
  await client.exchangeIdToken('eyJ.id.token');
  assert.equal(calls.length, 0);
  assert.equal(fake.requests.filter((r) => r.path === CHALLENGE_PATH).length, 0);
  assert.deepEqual(attFields(fake.tokenRequests[0].form), {});
});
