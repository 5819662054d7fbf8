// Integration: the SDK against a real `keygate serve` started by sdk/testkit/fixture.mjs
// (server DPoP nonces on, 30 s access tokens), through its real login page and proxy.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startFixture, signInHeadless } from '../../../testkit/fixture.mjs';
import {
  KeygateClient,
  MemoryKeyStore,
  MemoryTokenStore,
  RateLimitedError,
  SignedOutError,
} from '../../dist/index.js';
import { decodeProof, recordingFetch } from '../helpers.mjs';

let fx;

before(async () => {
  fx = await startFixture({ accessTtl: '30s' });
});

after(async () => {
  await fx?.stop();
});

/** A fresh user (so per-user limits and sessions do not mix between tests). */
async function newUser() {
  const name = `it-${randomBytes(4).toString('hex')}`;
  const password = `pw-${randomBytes(12).toString('hex')}`;
  const user = await fx.addUser(name, password, ['ai']);
  return { name, password, id: user.id };
}

/** A client signed in through keygate's real login page. */
async function signedInClient(options = {}) {
  const rec = recordingFetch();
  const user = options.user ?? (await newUser());
  const tokenStore = options.tokenStore ?? new MemoryTokenStore();
  const keyStore = options.keyStore ?? new MemoryKeyStore();
  const signedOut = [];
  const client = new KeygateClient({
    baseUrl: fx.info.base,
    clientId: fx.info.client_id,
    redirectUri: fx.info.redirect_uri,
    scopes: [fx.info.scope],
    keyStore,
    tokenStore,
    fetch: rec.fetch,
    onSignedOut: (reason) => signedOut.push(reason),
    ...(options.refreshMarginSeconds !== undefined ? { refreshMarginSeconds: options.refreshMarginSeconds } : {}),
  });
  const { url, pending } = await client.authorize();
  const callback = await signInHeadless(url, user.name, user.password);
  const result = await client.handleCallback(pending, callback);
  return { client, rec, user, tokenStore, keyStore, signedOut, result };
}

test('sign-in through the login page gives DPoP-bound tokens; the server nonce was retried once', async () => {
  const { rec, tokenStore, keyStore, result } = await signedInClient();
  assert.equal(result.scope, 'ai');
  const tokens = await tokenStore.load();
  assert.ok(tokens.accessToken && tokens.refreshToken);
  // The access token is bound to our key (cnf.jkt).
  const claims = JSON.parse(Buffer.from(tokens.accessToken.split('.')[1], 'base64url'));
  const jwk = await keyStore.getOrCreate();
  const jkt = createHash('sha256').update(`{"crv":"P-256","kty":"EC","x":"${jwk.x}","y":"${jwk.y}"}`).digest('base64url');
  assert.equal(claims.cnf.jkt, jkt);
  // keygate asked for a nonce (400 use_dpop_nonce + DPoP-Nonce); the SDK retried once with it.
  const token = rec.log.filter((e) => e.path === '/oauth2/token');
  assert.equal(token.length, 2, JSON.stringify(token.map((t) => [t.status, t.error])));
  assert.equal(token[0].status, 400);
  assert.equal(token[0].error, 'use_dpop_nonce');
  assert.ok(token[0].nonceHeader);
  assert.equal(decodeProof(token[0].proof).claims.nonce, undefined);
  assert.equal(decodeProof(token[1].proof).claims.nonce, token[0].nonceHeader);
  assert.equal(token[1].status, 200);
});

test('a proxied POST reaches the upstream with the injected key and without DPoP', async () => {
  const { client } = await signedInClient();
  const marker = `hello-${randomBytes(4).toString('hex')}`;
  const r = await client.fetch(`${fx.info.routes.echo}/v1/chat/completions?stream=false`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ marker }),
  });
  assert.equal(r.status, 200);
  const echoed = await r.json();
  assert.equal(echoed.method, 'POST');
  assert.equal(echoed.path, '/v1/chat/completions');
  assert.equal(echoed.dpop, null, 'the DPoP proof is not forwarded');
  // keygate redacts the key from what the app sees; its hash survives.
  assert.ok(!JSON.stringify(echoed).includes(fx.info.secret), 'the secret never reaches the app');
  assert.equal(echoed.authorization_sha256, createHash('sha256').update(`Bearer ${fx.info.secret}`).digest('hex'));
  // The upstream's own record: the injected key, not the app's token.
  const seen = fx.upstreamRequests.find((q) => q.body.includes(marker));
  assert.equal(seen.authorization, `Bearer ${fx.info.secret}`);
  assert.equal(seen.dpop, null);
  assert.ok(!seen.authorization.includes('DPoP'));
});

test('20 concurrent calls across access-token expiry share exactly one refresh', { timeout: 90_000 }, async () => {
  // Two sessions at once: one fires just before expiry (inside the refresh margin), the
  // other just after it.
  const [before, afterExpiry] = await Promise.all([
    signedInClient({ refreshMarginSeconds: 5 }),
    signedInClient({ refreshMarginSeconds: 0 }),
  ]);
  const fire = async (s, at) => {
    await new Promise((ok) => setTimeout(ok, Math.max(0, at - Date.now())));
    const old = (await s.tokenStore.load()).accessToken;
    const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => s.client.fetch(`${fx.info.routes.echo}/v1/concurrent/${i}`)));
    const statuses = responses.map((r) => r.status);
    await Promise.all(responses.map((r) => r.arrayBuffer()));
    const refreshes = s.rec.log.filter((e) => e.path === '/oauth2/token' && e.grant === 'refresh_token' && e.status === 200);
    const now = await s.tokenStore.load();
    return { statuses, refreshes: refreshes.length, rotated: now.accessToken !== old };
  };
  const [a, b] = await Promise.all([
    fire(before, before.result.expiresAt - 2_000),
    fire(afterExpiry, afterExpiry.result.expiresAt + 1_000),
  ]);
  for (const [name, r] of [['before expiry', a], ['after expiry', b]]) {
    assert.deepEqual(r.statuses, Array(20).fill(200), name);
    assert.equal(r.refreshes, 1, `${name}: exactly one refresh`);
    assert.ok(r.rotated, name);
  }
  // Neither session was revoked (a refresh token presented twice would have revoked it).
  const sessions = await fx.listSessions();
  for (const s of [before, afterExpiry]) {
    const mine = sessions.filter((x) => x.user_id === s.user.id);
    assert.equal(mine.length, 1);
    assert.equal(mine[0].revoked, false);
  }
});

test('20 concurrent calls with a token keygate has expired: keygate says invalid_token, one refresh, every call retried', { timeout: 150_000 }, async () => {
  const s = await signedInClient();
  const issued = await s.tokenStore.load();
  // An app that believes its token good for another hour (its bookkeeping is wrong): only
  // keygate's 401 tells it otherwise.
  await s.tokenStore.save({ ...issued, expiresAt: Date.now() + 3_600_000 });
  const rec = recordingFetch();
  const client = new KeygateClient({
    baseUrl: fx.info.base,
    clientId: fx.info.client_id,
    redirectUri: fx.info.redirect_uri,
    scopes: [fx.info.scope],
    keyStore: s.keyStore,
    tokenStore: s.tokenStore,
    fetch: rec.fetch,
  });
  // keygate accepts a token up to 60 s past its expiry (leeway for replicas' clocks).
  await new Promise((ok) => setTimeout(ok, Math.max(0, issued.expiresAt + 63_000 - Date.now())));
  const responses = await Promise.all(
    Array.from({ length: 20 }, (_, i) => client.fetch(`${fx.info.routes.echo}/v1/expired/${i}`)),
  );
  await Promise.all(responses.map((r) => r.arrayBuffer()));
  assert.deepEqual(responses.map((r) => r.status), Array(20).fill(200));
  // One refresh: a first attempt answered use_dpop_nonce (the nonce went stale while we
  // waited) is the same refresh, retried with the new nonce, not a second rotation.
  const refreshes = rec.log.filter(
    (e) => e.path === '/oauth2/token' && e.grant === 'refresh_token' && e.error !== 'use_dpop_nonce',
  );
  assert.equal(refreshes.length, 1, `exactly one refresh: ${JSON.stringify(refreshes)}`);
  assert.equal(refreshes[0].status, 200);
  const refused = rec.log.filter((e) => e.path.startsWith('/proxy/') && e.status === 401);
  assert.ok(refused.length >= 1, 'keygate refused the expired token at least once');
  assert.notEqual((await s.tokenStore.load()).accessToken, issued.accessToken);
});

test('the limited route answers 429 with Retry-After, surfaced as RateLimitedError', async () => {
  const { client } = await signedInClient();
  const outcomes = [];
  for (let i = 0; i < 4; i++) {
    try {
      const r = await client.fetch(`${fx.info.routes.limited}/v1/models`);
      await r.arrayBuffer();
      outcomes.push(r.status);
    } catch (e) {
      outcomes.push(e);
    }
  }
  assert.deepEqual(outcomes.slice(0, 3), [200, 200, 200]);
  const err = outcomes[3];
  assert.ok(err instanceof RateLimitedError, String(err));
  assert.ok(Number.isInteger(err.retryAfterSeconds) && err.retryAfterSeconds > 0 && err.retryAfterSeconds <= 60, String(err.retryAfterSeconds));
  assert.equal(err.response.status, 429);
});

test('an SSE stream is delivered incrementally', async () => {
  const { client } = await signedInClient();
  const t0 = Date.now();
  const r = await client.fetch(`${fx.info.routes.echo}/v1/stream`, { headers: { accept: 'text/event-stream' } });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /text\/event-stream/);
  const decoder = new TextDecoder();
  const arrivals = [];
  let text = '';
  for await (const chunk of r.body) {
    text += decoder.decode(chunk, { stream: true });
    for (const m of text.matchAll(/data: (\d)\n\n/g)) {
      if (!arrivals.some((a) => a.n === m[1])) arrivals.push({ n: m[1], at: Date.now() - t0 });
    }
  }
  const end = Date.now() - t0;
  assert.deepEqual(arrivals.map((a) => a.n), ['1', '2', '3']);
  assert.ok(end - arrivals[0].at >= 150, `first event at ${arrivals[0].at} ms, end at ${end} ms`);
  assert.ok(arrivals[1].at - arrivals[0].at >= 50, JSON.stringify(arrivals));
});

test('an administrator revoking the session signs the SDK out with a reason', async () => {
  const { client, user, tokenStore, signedOut } = await signedInClient();
  const ok = await client.fetch(`${fx.info.routes.echo}/v1/models`);
  assert.equal(ok.status, 200);
  await ok.arrayBuffer();
  const [session] = (await fx.listSessions()).filter((s) => s.user_id === user.id && !s.revoked);
  await fx.revokeSession(session.id);
  const err = await client.fetch(`${fx.info.routes.echo}/v1/models`).catch((e) => e);
  assert.ok(err instanceof SignedOutError, String(err));
  assert.equal(err.reason, 'the session was revoked or expired');
  assert.deepEqual(signedOut, ['the session was revoked or expired']);
  assert.equal(await tokenStore.load(), null);
});

test('logout revokes the session: the old refresh token no longer works', async () => {
  const { client, tokenStore, keyStore, user } = await signedInClient();
  const old = await tokenStore.load();
  await client.logout();
  assert.equal(await tokenStore.load(), null);
  const sessions = (await fx.listSessions()).filter((s) => s.user_id === user.id);
  assert.equal(sessions.length, 0, 'revoked sessions are not listed');
  // A client holding the old tokens (same DPoP key) cannot refresh with them.
  const stale = new MemoryTokenStore();
  await stale.save(old);
  const zombie = new KeygateClient({
    baseUrl: fx.info.base,
    clientId: fx.info.client_id,
    redirectUri: fx.info.redirect_uri,
    keyStore,
    tokenStore: stale,
  });
  const err = await zombie.refresh().catch((e) => e);
  assert.ok(err instanceof SignedOutError, String(err));
  assert.equal(await stale.load(), null);
});
