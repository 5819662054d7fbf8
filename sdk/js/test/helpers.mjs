// Test helpers: a fake keygate behind a fake `fetch`, and DPoP proof verification with
// node's WebCrypto (independent of the SDK's own signing code).
import { createHash } from 'node:crypto';

export const BASE = 'https://gate.example.com';
export const CLIENT_ID = 'test-app';
export const REDIRECT = 'com.example.app:/oauth/callback';

export function metadataFor(base = BASE) {
  return {
    issuer: base,
    authorization_endpoint: `${base}/oauth2/authorize`,
    token_endpoint: `${base}/oauth2/token`,
    revocation_endpoint: `${base}/oauth2/revoke`,
    dpop_signing_alg_values_supported: ['EdDSA', 'ES256'],
  };
}

export function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

function b64urlDecode(s) {
  return Buffer.from(s, 'base64url');
}

/** Decodes a JWT-shaped proof without checking it. */
export function decodeProof(proof) {
  const [h, p] = proof.split('.');
  return { header: JSON.parse(b64urlDecode(h)), claims: JSON.parse(b64urlDecode(p)) };
}

/** Verifies a DPoP proof's ES256 signature with the JWK in its header; returns header and claims. */
export async function verifyProof(proof) {
  const [h, p, s] = proof.split('.');
  const { header, claims } = decodeProof(proof);
  if (header.typ !== 'dpop+jwt' || header.alg !== 'ES256') throw new Error('bad proof header');
  if ('d' in header.jwk) throw new Error('private key in proof');
  const key = await crypto.subtle.importKey('jwk', header.jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  const ok = await crypto.subtle.verify(
    { name: 'ECDSA', hash: 'SHA-256' },
    key,
    b64urlDecode(s),
    new TextEncoder().encode(`${h}.${p}`),
  );
  if (!ok) throw new Error('proof signature does not verify');
  return { header, claims };
}

export function athOf(token) {
  return createHash('sha256').update(token).digest('base64url');
}

/**
 * A fake keygate. `fetch` records each request as {method, url, path, headers, form,
 * body, proof} and answers through overridable handlers. Tokens are `at-N` / `rt-N`;
 * refresh rotates and, like keygate, treats reuse of a spent refresh token as theft
 * (invalid_grant).
 */
export class FakeKeygate {
  constructor({ base = BASE, expiresIn = 300, date } = {}) {
    this.base = base;
    this.expiresIn = expiresIn;
    this.date = date; // () => Date, for the Date header
    this.requests = [];
    this.n = 0;
    this.validAccess = new Set();
    this.validRefresh = new Set();
    this.revokedFamily = false;
    this.tokenType = 'DPoP';
    this.handlers = {};
    this.fetch = this.fetch.bind(this);
  }

  get tokenRequests() {
    return this.requests.filter((r) => r.path === '/oauth2/token');
  }

  get refreshRequests() {
    return this.tokenRequests.filter((r) => r.form?.get('grant_type') === 'refresh_token');
  }

  issue() {
    this.n += 1;
    const at = `at-${this.n}`;
    const rt = `rt-${this.n}`;
    this.validAccess.add(at);
    this.validRefresh.add(rt);
    return { access_token: at, refresh_token: rt, token_type: this.tokenType, expires_in: this.expiresIn, scope: 'ai' };
  }

  headers(extra = {}) {
    const h = { ...extra };
    if (this.date) h.date = this.date().toUTCString();
    return h;
  }

  async fetch(url, init = {}) {
    const u = new URL(url);
    const headers = new Headers(init.headers);
    let body;
    if (init.body !== undefined) body = typeof init.body === 'string' ? init.body : Buffer.from(init.body).toString('utf8');
    const form = headers.get('content-type')?.startsWith('application/x-www-form-urlencoded') ? new URLSearchParams(body) : undefined;
    const rec = {
      method: init.method ?? 'GET',
      url,
      path: u.pathname,
      headers,
      body,
      form,
      proof: headers.get('dpop') ?? undefined,
    };
    this.requests.push(rec);
    const handler = this.handlers[u.pathname] ?? this.handlers[`${rec.method} ${u.pathname}`];
    if (handler) {
      const r = await handler(rec, this);
      if (r) return r;
    }
    return this.defaultAnswer(rec);
  }

  defaultAnswer(rec) {
    if (rec.path === '/.well-known/oauth-authorization-server') return json(200, metadataFor(this.base), this.headers());
    if (rec.path === '/oauth2/token') {
      const grant = rec.form.get('grant_type');
      if (grant === 'refresh_token') {
        const rt = rec.form.get('refresh_token');
        if (this.revokedFamily || !this.validRefresh.has(rt)) {
          this.revokedFamily = true;
          return json(400, { error: 'invalid_grant', error_description: 'the refresh token is invalid' }, this.headers());
        }
        this.validRefresh.delete(rt);
        for (const at of this.validAccess) this.validAccess.delete(at);
      }
      return json(200, this.issue(), this.headers({ 'cache-control': 'no-store' }));
    }
    if (rec.path === '/oauth2/revoke') {
      this.revokedFamily = true;
      this.validAccess.clear();
      this.validRefresh.clear();
      return new Response(null, { status: 200, headers: this.headers() });
    }
    if (rec.path.startsWith('/proxy/')) {
      const auth = rec.headers.get('authorization') ?? '';
      const token = auth.replace(/^DPoP /, '');
      if (this.revokedFamily || !this.validAccess.has(token)) {
        return json(401, { error: 'invalid_token' }, this.headers({ 'www-authenticate': 'DPoP error="invalid_token", algs="ES256"' }));
      }
      return json(200, { ok: true, path: rec.path, body: rec.body ?? null }, this.headers());
    }
    return json(404, { error: 'not_found' }, this.headers());
  }
}

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/**
 * A real `fetch` that records every request to keygate: method, path, status, the form
 * sent (and its grant type), the DPoP proof, the `DPoP-Nonce` answered and a token error.
 */
export function recordingFetch() {
  const log = [];
  const f = async (url, init = {}) => {
    const r = await fetch(url, init);
    const headers = new Headers(init.headers);
    const form = typeof init.body === 'string' && headers.get('content-type')?.includes('form-urlencoded') ? new URLSearchParams(init.body) : undefined;
    let error;
    if (new URL(url).pathname === '/oauth2/token' && r.status === 400) {
      error = (await r.clone().json().catch(() => ({}))).error;
    }
    log.push({
      method: init.method ?? 'GET',
      path: new URL(url).pathname,
      status: r.status,
      form,
      grant: form?.get('grant_type'),
      proof: headers.get('dpop'),
      nonceHeader: r.headers.get('dpop-nonce'),
      error,
    });
    return r;
  };
  return { fetch: f, log };
}
