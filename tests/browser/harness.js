// The browser suite's harness: a real `keygate serve` in a temporary directory, the admin
// calls that set up users and clients, PKCE, RFC 6238 codes, and DPoP proofs signed by
// `jose` (a JOSE library keygate did not write).
import { spawn, execFileSync } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as jose from 'jose';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..');
export const artifacts = resolve(
  process.env.KEYGATE_BROWSER_ARTIFACTS ?? join(repoRoot, 'target', 'browser-tests'),
);
mkdirSync(artifacts, { recursive: true });

const keygateBin =
  process.env.KEYGATE_BIN ??
  join(process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target'), 'debug', 'keygate');

export function chromiumPath() {
  return process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
}

export function b64url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

async function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/**
 * The environment for `keygate serve`: this process's, less every `KEYGATE_…` variable,
 * since keygate reads those as configuration and refuses fields it does not know (the
 * harness's own `KEYGATE_BIN`, CI's `KEYGATE_TEST_…`).
 */
function serverEnv() {
  return Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('KEYGATE_')),
  );
}

/** A running `keygate serve` on embedded defaults, with DPoP server nonces required. */
export class Keygate {
  /**
   * `extraToml` is appended to the configuration `keygate init` wrote; `env` adds
   * `KEYGATE_…` settings for the server.
   */
  static async start({ extraToml, env = {} } = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-browser-'));
    const port = await freePort();
    const init = JSON.parse(
      execFileSync(
        keygateBin,
        ['init', '--dir', dir, '--listen', `127.0.0.1:${port}`, '--format', 'json'],
        { encoding: 'utf8' },
      ),
    );
    if (extraToml) appendFileSync(init.config, `\n${extraToml}\n`);
    const log = openSync(join(artifacts, `keygate-${port}.log`), 'a');
    const child = spawn(keygateBin, ['serve', '--config', init.config], {
      stdio: ['ignore', log, log],
      env: { ...serverEnv(), KEYGATE_TOKENS__DPOP_NONCE: 'true', ...env },
    });
    const kg = new Keygate(dir, port, init.admin_token, child);
    await kg.waitReady();
    return kg;
  }

  constructor(dir, port, adminToken, child) {
    this.dir = dir;
    this.base = `http://127.0.0.1:${port}`;
    this.adminToken = adminToken;
    this.child = child;
  }

  async waitReady() {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null) {
        throw new Error(`keygate serve exited with ${this.child.exitCode}; see ${artifacts}`);
      }
      try {
        const r = await fetch(`${this.base}/readyz`);
        if (r.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((ok) => setTimeout(ok, 100));
    }
    throw new Error('keygate serve did not become ready in 30 s');
  }

  async admin(method, path, body) {
    const r = await fetch(`${this.base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.adminToken}`,
        'content-type': 'application/json',
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path} -> ${r.status} ${text}`);
    return JSON.parse(text);
  }

  async addUser(name, password, scopes) {
    return this.admin('POST', '/admin/v1/users', { name, password, scopes });
  }

  /** Enrols TOTP and returns the seed's bytes, read from the otpauth:// URI. */
  async enrolTotp(name) {
    const { otpauth_uri: uri } = await this.admin('POST', `/admin/v1/users/${name}/mfa`);
    const secret = new URL(uri).searchParams.get('secret');
    return base32Decode(secret);
  }

  /** A console account; returns its TOTP seed's bytes, read from the otpauth:// URI. */
  async addConsoleAdmin(name, password, role = 'admin') {
    const { otpauth_uri: uri } = await this.admin('POST', '/admin/v1/console/admins', {
      name,
      password,
      role,
    });
    return base32Decode(new URL(uri).searchParams.get('secret'));
  }

  async addPublicClient(name, redirectUris, scopes) {
    const c = await this.admin('POST', '/admin/v1/clients', {
      name,
      type: 'public',
      redirect_uris: redirectUris,
      scopes,
    });
    return c.client_id;
  }

  /** The authorization request an app (AppAuth, Custom Tabs, …) would open. */
  authorizeUrl({ clientId, redirectUri, scope, pkce, state, dpopJkt }) {
    const u = new URL(`${this.base}/oauth2/authorize`);
    u.searchParams.set('response_type', 'code');
    u.searchParams.set('client_id', clientId);
    u.searchParams.set('redirect_uri', redirectUri);
    u.searchParams.set('scope', scope);
    u.searchParams.set('state', state);
    u.searchParams.set('code_challenge', pkce.challenge);
    u.searchParams.set('code_challenge_method', 'S256');
    if (dpopJkt) u.searchParams.set('dpop_jkt', dpopJkt);
    return u.toString();
  }

  /**
   * A token request with a DPoP proof by `device`, retried once with the server's nonce
   * (RFC 9449 §8) when it answers `use_dpop_nonce`.
   */
  async token(device, form) {
    const htu = `${this.base}/oauth2/token`;
    let nonce = device.nonce;
    for (let attempt = 0; attempt < 2; attempt++) {
      const proof = await device.proof('POST', htu, { nonce });
      const r = await fetch(htu, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: proof },
        body: new URLSearchParams(form).toString(),
      });
      const body = await r.json();
      const next = r.headers.get('dpop-nonce');
      if (next) device.nonce = next;
      if (r.status === 400 && body.error === 'use_dpop_nonce' && next && attempt === 0) {
        nonce = next;
        continue;
      }
      return { status: r.status, body };
    }
    throw new Error('unreachable');
  }

  async stop() {
    if (this.child.exitCode === null) {
      const exited = new Promise((ok) => this.child.once('exit', ok));
      this.child.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A device key in the app's keystore, signing DPoP proofs with `jose`. */
export class Device {
  /** `alg`: 'ES256', or 'Ed25519' (RFC 9864's fully-specified name, as jose 6 emits). */
  static async create(alg) {
    const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true });
    const jwk = await jose.exportJWK(publicKey);
    const jkt = await jose.calculateJwkThumbprint(jwk, 'sha256');
    return new Device(alg, privateKey, jwk, jkt);
  }

  constructor(alg, privateKey, jwk, jkt) {
    this.alg = alg;
    this.privateKey = privateKey;
    this.jwk = jwk;
    this.jkt = jkt;
    this.nonce = undefined;
  }

  async proof(htm, htu, { nonce, accessToken } = {}) {
    const claims = { htm, htu, jti: b64url(randomBytes(16)) };
    if (nonce) claims.nonce = nonce;
    if (accessToken) claims.ath = b64url(createHash('sha256').update(accessToken).digest());
    return new jose.SignJWT(claims)
      .setProtectedHeader({ alg: this.alg, typ: 'dpop+jwt', jwk: this.jwk })
      .setIssuedAt()
      .sign(this.privateKey);
  }
}

export function pkce() {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

export function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of text.replace(/=+$/, '').toUpperCase()) {
    const i = alphabet.indexOf(ch);
    if (i < 0) throw new Error('bad base32 in the otpauth URI');
    value = (value << 5) | i;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 TOTP, SHA-1, 6 digits, 30 s step: what an authenticator app shows. */
export function totp(seed, unixSeconds = Date.now() / 1000) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30)));
  const mac = createHmac('sha1', seed).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const bin = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(bin % 1_000_000).padStart(6, '0');
}

/** The payload of a JWT, unverified (the test compares `cnf.jkt` with its own key). */
export function jwtPayload(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

/** An app's loopback redirect listener (RFC 8252 §7.3): it answers with a page and records each hit. */
export async function startLoopbackApp() {
  const hits = [];
  const server = createHttpServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname !== '/callback') {
      res.writeHead(404).end(); // the browser's favicon request, say
      return;
    }
    hits.push(url);
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>app</title><h1>Back in the app</h1>');
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return { server, hits, redirectUri: `http://127.0.0.1:${port}/callback` };
}
