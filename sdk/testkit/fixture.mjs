#!/usr/bin/env node
// keygate SDK test fixture: a real `keygate serve`, a fake upstream API, and the set-up
// every client SDK test needs. Node 20+, ESM, no dependencies.
//
// ─── Interface ──────────────────────────────────────────────────────────────────────────
//
// As a program:   node sdk/testkit/fixture.mjs [--access-ttl 30s]
//   1. Starts keygate (binary: $KEYGATE_BIN, else $CARGO_TARGET_DIR/debug/keygate, else
//      <repo>/target/debug/keygate; exit code 2 and a message on stderr when missing) on a
//      free port of 127.0.0.1, with server DPoP nonces on and the given access-token TTL
//      (also settable with env KEYGATE_FIXTURE_ACCESS_TTL; default 30s).
//   2. Prints EXACTLY ONE LINE of JSON to stdout, then nothing else ever:
//        {"base":"http://127.0.0.1:PORT",        keygate's base URL (no trailing slash)
//         "admin_token":"…",                     Bearer token for /admin/v1/*
//         "client_id":"…",                       a public client
//         "attested_client_id":"…",              a public client with App Attest configured
//                                                (POST /oauth2/attestation/challenge works
//                                                for it; see the token's `att` claim)
//         "redirect_uri":"com.example.sdk:/oauth/callback",
//         "scope":"ai",
//         "user":"sdk-user-…","password":"…",    a user with scope ai (no MFA)
//         "secret":"sk-test-…",                  the value keygate injects upstream
//         "upstream":"http://127.0.0.1:PORT2",   the fake upstream API
//         "routes":{"echo":"/proxy/echo","limited":"/proxy/limited"},
//         "access_ttl_secs":30}
//   3. Stays up until stdin is closed (EOF) or it receives SIGTERM/SIGINT; then stops
//      keygate, the upstream, and deletes its temporary directory. Exit code 0.
//   Logs: keygate's own output goes to <repo>/target/sdk-testkit/keygate-PORT.log; the
//   fixture's messages go to stderr. On a start-up failure: one line on stderr, exit 1
//   (exit 2 when the binary is missing), and nothing on stdout.
//
// As a module:    import { startFixture } from '<repo>/sdk/testkit/fixture.mjs'
//   const fx = await startFixture({ accessTtl: '30s' });
//   fx.info             the JSON object above
//   fx.admin(method, path, body?)       admin API call → parsed JSON (throws on non-2xx)
//   fx.listSessions()                   → [{id, user_id, client_id, revoked, …}]
//   fx.revokeSession(id)                → {id, revoked}
//   fx.addUser(name, password, scopes)  → {id, name, …}
//   fx.upstreamRequests                 every request the upstream received, in order:
//                                       {method, path, query, authorization, dpop, body}
//   await fx.stop()
//   signInHeadless(authorizeUrl, user, password) → the redirect URL (…?code=…&state=…)
//
// Routes (both to the upstream, injecting `Authorization: Bearer <secret>`, scope ai,
// allow "GET /v1/**" and "POST /v1/**"):
//   echo     rate 6000/min, burst 200, per user
//   limited  rate 3/min, burst 3, per user (the 4th call within a minute gets 429)
//
// Upstream: every request → 200 JSON {"method","path","query","authorization","dpop",
// "body","authorization_sha256"} where authorization/dpop are the headers it received
// (or null). keygate redacts the injected secret from what the app receives, so the app
// sees "Bearer [REDACTED]"; authorization_sha256 (hex SHA-256 of the whole header value)
// survives, and so does the unredacted record GET <upstream>/_fixture/requests (called
// directly, not through keygate) which answers {"requests":[…]} with the same fields.
// GET /v1/stream answers text/event-stream: `data: 1`, `data: 2`, `data: 3`, ~100 ms apart.

import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, mkdirSync, openSync, closeSync, rmSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (sdk/testkit/../..). */
export const repoRoot = resolve(here, '..', '..');

export const REDIRECT_URI = 'com.example.sdk:/oauth/callback';
export const SCOPE = 'ai';
export const ATTESTED_CLIENT = 'sdk-attested-app';

/** Where the keygate binary is, or an Error saying where it was looked for. */
export function locateKeygate(env = process.env) {
  const candidates = [];
  if (env.KEYGATE_BIN) candidates.push(['KEYGATE_BIN', env.KEYGATE_BIN]);
  else if (env.CARGO_TARGET_DIR) {
    candidates.push(['CARGO_TARGET_DIR', join(env.CARGO_TARGET_DIR, 'debug', 'keygate')]);
  } else candidates.push(['default', join(repoRoot, 'target', 'debug', 'keygate')]);
  for (const [, path] of candidates) if (existsSync(path)) return resolve(path);
  const [how, path] = candidates[0];
  const err = new Error(
    `keygate binary not found at ${path} (from ${how}); build it with \`cargo build -p keygate\` ` +
      'or set KEYGATE_BIN to a prebuilt binary',
  );
  err.code = 'KEYGATE_BIN_MISSING';
  throw err;
}

async function freePort() {
  return new Promise((ok, fail) => {
    const srv = createNetServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** This process's environment without any KEYGATE_* variable (keygate reads them as config). */
function serverEnv(overrides) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('KEYGATE_')),
  );
  return { ...env, ...overrides };
}

function parseTtlSecs(ttl) {
  const m = /^(\d+)\s*(s|m|min|h)?$/.exec(String(ttl).trim());
  if (!m) throw new Error(`accessTtl must look like "30s", "5m" or "1h", got ${ttl}`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return unit === 's' ? n : unit === 'h' ? n * 3600 : n * 60;
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** The fake third-party API. */
async function startUpstream() {
  const requests = [];
  const server = createHttpServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://upstream');
      if (req.method === 'GET' && url.pathname === '/_fixture/requests') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ requests }));
        return;
      }
      const authorization = req.headers.authorization ?? null;
      const record = {
        method: req.method,
        path: url.pathname,
        query: url.search.replace(/^\?/, ''),
        authorization,
        dpop: req.headers.dpop ?? null,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(record);
      if (req.method === 'GET' && url.pathname === '/v1/stream') {
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-cache',
        });
        let i = 0;
        const tick = () => {
          i += 1;
          res.write(`data: ${i}\n\n`);
          if (i < 3) setTimeout(tick, 100);
          else setTimeout(() => res.end(), 100);
        };
        tick();
        return;
      }
      const authorization_sha256 =
        authorization === null ? null : createHash('sha256').update(authorization).digest('hex');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ...record, authorization_sha256 }));
    });
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections?.();
        server.close(() => ok());
      }),
  };
}

function routesToml(upstream) {
  const route = (name, limits) =>
    [
      `[routes.${name}]`,
      `upstream = "${upstream}"`,
      `secret   = "sdk-test"`,
      `inject   = { header = "Authorization", value = "Bearer {secret}" }`,
      `allow    = ["GET /v1/**", "POST /v1/**"]`,
      `scopes   = ["ai"]`,
      `limits   = ${limits}`,
      '',
    ].join('\n');
  return (
    route('echo', '{ rate = "6000/min", burst = 200, per = "user" }') +
    route('limited', '{ rate = "3/min", burst = 3, per = "user" }')
  );
}

/**
 * Plays the browser on keygate's login page: GETs `authorizeUrl`, keeps the CSRF cookie
 * and every hidden input, POSTs the form with `user`/`password`, and returns the
 * `Location` it redirects to (the app's redirect URI with `code` and `state`).
 */
export async function signInHeadless(authorizeUrl, user, password) {
  const page = await fetch(authorizeUrl, { redirect: 'manual' });
  const setCookie = page.headers.get('set-cookie');
  if (!setCookie) throw new Error(`the login page set no CSRF cookie (HTTP ${page.status})`);
  const cookie = setCookie.split(';')[0];
  const html = await page.text();
  const form = new URLSearchParams();
  for (const piece of html.split('<input type="hidden" name="').slice(1)) {
    const q = piece.indexOf('"');
    if (q < 0) continue;
    const name = piece.slice(0, q);
    const m = /value="([^"]*)"/.exec(piece.slice(q));
    if (!m) continue;
    const value = m[1]
      .replaceAll('&quot;', '"')
      .replaceAll('&lt;', '<')
      .replaceAll('&gt;', '>')
      .replaceAll('&#39;', "'")
      .replaceAll('&amp;', '&');
    form.append(name, value);
  }
  form.append('username', user);
  form.append('password', password);
  const post = new URL(authorizeUrl);
  post.search = '';
  const r = await fetch(post, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  });
  const location = r.headers.get('location');
  if (!location) throw new Error(`sign-in did not redirect back to the app (HTTP ${r.status})`);
  return location;
}

/**
 * Starts keygate, the upstream and the set-up described at the top of this file.
 * @param {{accessTtl?: string, dpopNonce?: boolean, logDir?: string}} [options]
 */
export async function startFixture(options = {}) {
  const bin = locateKeygate();
  const accessTtl = options.accessTtl ?? '30s';
  const accessTtlSecs = parseTtlSecs(accessTtl);
  const logDir = options.logDir ?? join(repoRoot, 'target', 'sdk-testkit');
  mkdirSync(logDir, { recursive: true });

  const dir = mkdtempSync(join(tmpdir(), 'keygate-sdk-'));
  let child;
  let upstream;
  let logFd;
  const cleanup = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((ok) => child.once('exit', ok));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    if (upstream) await upstream.close();
    if (logFd !== undefined) {
      try {
        closeSync(logFd);
      } catch {
        // already closed
      }
      logFd = undefined;
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const port = await freePort();
    const init = JSON.parse(
      execFileSync(
        bin,
        ['init', '--dir', dir, '--listen', `127.0.0.1:${port}`, '--format', 'json'],
        { encoding: 'utf8', env: serverEnv({}), stdio: ['ignore', 'pipe', 'pipe'] },
      ),
    );
    // A second client with app attestation (App Attest, Apple's real root): an SDK's
    // attestation hook can be driven end to end with `none` (→ unattested) or evidence
    // that cannot verify (→ failed); the token's `att` claim says which.
    appendFileSync(
      init.config,
      `\n[attestation]\n[[attestation.clients]]\nclient = "${ATTESTED_CLIENT}"\n[attestation.clients.apple]\nteam_id = "ABCDE12345"\nbundle_id = "com.example.sdk"\n`,
    );
    const base = `http://127.0.0.1:${port}`;
    const logFile = join(logDir, `keygate-${port}.log`);
    logFd = openSync(logFile, 'a');
    child = spawn(bin, ['serve', '--config', init.config], {
      stdio: ['ignore', logFd, logFd],
      env: serverEnv({
        KEYGATE_TOKENS__DPOP_NONCE: options.dpopNonce === false ? 'false' : 'true',
        KEYGATE_TOKENS__ACCESS_TTL: accessTtl,
      }),
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) {
        throw new Error(`keygate serve exited with ${child.exitCode}; see ${logFile}`);
      }
      try {
        if ((await fetch(`${base}/readyz`)).ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`keygate did not become ready; see ${logFile}`);
      await sleep(100);
    }

    const admin = async (method, path, body) => {
      const r = await fetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${init.admin_token}`,
          'content-type': 'application/json',
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      if (!r.ok) throw new Error(`admin ${method} ${path} -> HTTP ${r.status} ${text}`);
      return text ? JSON.parse(text) : null;
    };

    upstream = await startUpstream();
    const secret = `sk-test-${randomBytes(24).toString('hex')}`;
    await admin('PUT', '/admin/v1/secrets/sdk-test', { value: secret });
    await admin('PUT', '/admin/v1/routes', { toml: routesToml(upstream.url) });
    const user = `sdk-user-${randomBytes(4).toString('hex')}`;
    const password = `pw-${randomBytes(16).toString('hex')}`;
    await admin('POST', '/admin/v1/users', { name: user, password, scopes: [SCOPE] });
    const client = await admin('POST', '/admin/v1/clients', {
      name: 'sdk-test-app',
      type: 'public',
      redirect_uris: [REDIRECT_URI],
      scopes: [SCOPE],
    });

    const attested = await admin('POST', '/admin/v1/clients', {
      name: ATTESTED_CLIENT,
      type: 'public',
      redirect_uris: [REDIRECT_URI],
      scopes: [SCOPE],
    });

    const info = {
      base,
      admin_token: init.admin_token,
      client_id: client.client_id,
      attested_client_id: attested.client_id,
      redirect_uri: REDIRECT_URI,
      scope: SCOPE,
      user,
      password,
      secret,
      upstream: upstream.url,
      routes: { echo: '/proxy/echo', limited: '/proxy/limited' },
      access_ttl_secs: accessTtlSecs,
    };
    let stopped;
    return {
      info,
      logFile,
      upstreamRequests: upstream.requests,
      admin,
      listSessions: async () => (await admin('GET', '/admin/v1/sessions')).sessions,
      revokeSession: (id) => admin('DELETE', `/admin/v1/sessions/${encodeURIComponent(id)}`),
      addUser: (name, pw, scopes = [SCOPE]) =>
        admin('POST', '/admin/v1/users', { name, password: pw, scopes }),
      stop: () => (stopped ??= cleanup()),
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

async function main() {
  const args = process.argv.slice(2);
  let accessTtl = process.env.KEYGATE_FIXTURE_ACCESS_TTL ?? '30s';
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--access-ttl' && args[i + 1]) accessTtl = args[++i];
    else if (args[i].startsWith('--access-ttl=')) accessTtl = args[i].slice(13);
    else {
      process.stderr.write(`fixture: unknown argument ${args[i]}\n`);
      process.exit(64);
    }
  }
  let fx;
  try {
    fx = await startFixture({ accessTtl });
  } catch (e) {
    process.stderr.write(`fixture: ${e.message}\n`);
    process.exit(e.code === 'KEYGATE_BIN_MISSING' ? 2 : 1);
  }
  process.stdout.write(`${JSON.stringify(fx.info)}\n`);
  process.stderr.write(`fixture: keygate at ${fx.info.base} (log ${fx.logFile}); close stdin to stop\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await fx.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
