// keygate's login page in a real browser (Debian's Chromium through Playwright), as an app's
// sign-in sheet (AppAuth, ASWebAuthenticationSession, Custom Tabs) shows it: the user signs
// in, and the browser must reach the app's redirect URI with a code, which the app then
// exchanges for a DPoP-bound token with proofs signed by `jose`.
//
// Screenshots of every step go to target/browser-tests/ (override with
// KEYGATE_BROWSER_ARTIFACTS).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  Device,
  Keygate,
  artifacts,
  chromiumPath,
  jwtPayload,
  pkce,
  startLoopbackApp,
  totp,
} from './harness.js';

const PASSWORD = 'correct horse battery staple';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 }; // an iPhone-sized viewport
const CUSTOM_REDIRECT = 'com.example.app:/oauth/callback';

let kg;
let browser;
let appLoopback; // the app's loopback listener (RFC 8252 §7.3)

before(async () => {
  kg = await Keygate.start();
  browser = await chromium.launch({
    executablePath: chromiumPath(),
    // CI runs as root, where Chromium's sandbox cannot start.
    args: ['--no-sandbox'],
  });
  appLoopback = await startLoopbackApp();
  await kg.addUser('alice', PASSWORD, ['ai']);
  await kg.addUser('bob', PASSWORD, ['ai']);
});

after(async () => {
  await browser?.close();
  await kg?.stop();
  appLoopback?.server.close();
});

/**
 * A browser page that records what a person would not see: Content-Security-Policy
 * violations in the console, and navigation requests to the app's custom scheme.
 */
async function openPage(viewport, name) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const cspViolations = [];
  page.on('console', (m) => {
    if (m.text().includes('Content Security Policy')) cspViolations.push(m.text());
  });
  let shot = 0;
  const screenshot = async (step) => {
    shot += 1;
    await page.screenshot({
      path: join(artifacts, `${name}-${String(shot).padStart(2, '0')}-${step}.png`),
      fullPage: true,
    });
  };
  return { context, page, cspViolations, screenshot };
}

async function assertFitsViewport(page) {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  assert.ok(scrollWidth <= innerWidth, `page scrolls sideways: ${scrollWidth} > ${innerWidth}`);
}

async function fillPassword(page, username, password) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
}

/**
 * Presses Continue and waits until the browser reaches the app's loopback listener with no
 * CSP violation on the way; returns the code it brought, after checking `state` and `iss`.
 */
async function continueToLoopbackApp(page, screenshot, cspViolations, state) {
  await Promise.all([
    page.waitForURL((u) => u.toString().startsWith(appLoopback.redirectUri), { timeout: 10_000 }),
    page.getByRole('button', { name: 'Continue' }).click(),
  ]);
  await screenshot('back-in-app');
  assert.deepEqual(cspViolations, []);
  const hit = appLoopback.hits.at(-1);
  assert.equal(hit.pathname, '/callback');
  assert.equal(hit.searchParams.get('state'), state);
  assert.equal(hit.searchParams.get('iss'), kg.base);
  const code = hit.searchParams.get('code');
  assert.match(code ?? '', /^kgc_/);
  return code;
}

/** Redeems `code` for tokens with a DPoP proof by `device`; checks the binding. */
async function redeem({ clientId, redirectUri, code, verifier, device }) {
  const r = await kg.token(device, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    client_id: clientId,
    code_verifier: verifier,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.token_type, 'DPoP');
  assert.equal(r.body.scope, 'ai');
  const claims = jwtPayload(r.body.access_token);
  assert.equal(claims.cnf?.jkt, device.jkt, 'the access token is bound to the device key');
  assert.ok(r.body.refresh_token, 'a refresh token is issued');

  // The refresh token is bound to the same key: a proof by that key rotates it.
  const refreshed = await kg.token(device, {
    grant_type: 'refresh_token',
    refresh_token: r.body.refresh_token,
    client_id: clientId,
  });
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  assert.notEqual(refreshed.body.refresh_token, r.body.refresh_token, 'the refresh token rotates');
  assert.equal(jwtPayload(refreshed.body.access_token).cnf?.jkt, device.jkt);
  return refreshed.body;
}

describe('sign-in through the login page in Chromium', () => {
  test('loopback redirect (desktop): the browser reaches the app with a code; ES256 proofs', async () => {
    const clientId = await kg.addPublicClient(
      'desktop-app',
      ['http://127.0.0.1/callback'], // loopback: any port matches (RFC 8252 §7.3)
      ['ai'],
    );
    const device = await Device.create('ES256');
    const p = pkce();
    const { context, page, cspViolations, screenshot } = await openPage(DESKTOP, 'loopback-desktop');
    try {
      await page.goto(
        kg.authorizeUrl({
          clientId,
          redirectUri: appLoopback.redirectUri,
          scope: 'ai',
          pkce: p,
          state: 'st-loopback',
          dpopJkt: device.jkt,
        }),
      );
      await assert.doesNotReject(page.getByRole('heading', { name: 'Sign in' }).waitFor());
      await screenshot('login-page');
      await fillPassword(page, 'alice', PASSWORD);
      await screenshot('filled');
      const code = await continueToLoopbackApp(page, screenshot, cspViolations, 'st-loopback');
      await redeem({ clientId, redirectUri: appLoopback.redirectUri, code, verifier: p.verifier, device });
    } finally {
      await context.close();
    }
  });

  test('custom-scheme redirect (phone): the navigation to the app carries a code; Ed25519 proofs by jose', async () => {
    const clientId = await kg.addPublicClient('phone-app', [CUSTOM_REDIRECT], ['ai']);
    // jose 6 signs Ed25519 under RFC 9864's fully-specified name `Ed25519`.
    const device = await Device.create('Ed25519');
    const p = pkce();
    const { context, page, cspViolations, screenshot } = await openPage(PHONE, 'custom-scheme-phone');
    try {
      await page.goto(
        kg.authorizeUrl({ clientId, redirectUri: CUSTOM_REDIRECT, scope: 'ai', pkce: p, state: 'st-custom' }),
      );
      await assertFitsViewport(page);
      await screenshot('login-page');
      await fillPassword(page, 'bob', PASSWORD);
      await screenshot('filled');
      // The OS would hand this navigation to the app; the test catches it instead.
      const [navigation] = await Promise.all([
        page.waitForRequest((r) => r.url().startsWith(`${CUSTOM_REDIRECT}?`), { timeout: 10_000 }),
        page.getByRole('button', { name: 'Continue' }).click(),
      ]);
      await screenshot('after-continue');
      assert.deepEqual(cspViolations, []);
      assert.ok(navigation.isNavigationRequest(), 'the redirect is a top-level navigation');
      const to = new URL(navigation.url());
      assert.equal(to.searchParams.get('state'), 'st-custom');
      const code = to.searchParams.get('code');
      assert.match(code ?? '', /^kgc_/);
      await redeem({ clientId, redirectUri: CUSTOM_REDIRECT, code, verifier: p.verifier, device });
    } finally {
      await context.close();
    }
  });

  for (const [label, viewport] of [
    ['desktop', DESKTOP],
    ['phone', PHONE],
  ]) {
    test(`TOTP step (${label}): password, then the authenticator code, then the app`, async () => {
      const user = `carol-${label}`;
      await kg.addUser(user, PASSWORD, ['ai']);
      const seed = await kg.enrolTotp(user);
      const clientId = await kg.addPublicClient(`totp-${label}`, ['http://127.0.0.1/callback'], ['ai']);
      const device = await Device.create('ES256');
      const p = pkce();
      const { context, page, cspViolations, screenshot } = await openPage(viewport, `totp-${label}`);
      try {
        await page.goto(
          kg.authorizeUrl({ clientId, redirectUri: appLoopback.redirectUri, scope: 'ai', pkce: p, state: 'st-totp' }),
        );
        await fillPassword(page, user, PASSWORD);
        await page.getByRole('button', { name: 'Continue' }).click();
        const codeField = page.getByLabel('One-time code from your authenticator app');
        await codeField.waitFor();
        // The prompt is an instruction, not announced as an error.
        assert.equal(await page.getByRole('alert').count(), 0);
        await assertFitsViewport(page);
        await screenshot('totp-step');
        await codeField.fill(totp(seed));
        const code = await continueToLoopbackApp(page, screenshot, cspViolations, 'st-totp');
        await redeem({ clientId, redirectUri: appLoopback.redirectUri, code, verifier: p.verifier, device });
      } finally {
        await context.close();
      }
    });

    test(`wrong password (${label}): one clear message, no redirect`, async () => {
      const clientId = await kg.addPublicClient(`wrong-${label}`, [CUSTOM_REDIRECT], ['ai']);
      const p = pkce();
      const { context, page, screenshot } = await openPage(viewport, `wrong-password-${label}`);
      const toApp = [];
      page.on('request', (r) => {
        if (r.url().startsWith(CUSTOM_REDIRECT)) toApp.push(r.url());
      });
      try {
        await page.goto(
          kg.authorizeUrl({ clientId, redirectUri: CUSTOM_REDIRECT, scope: 'ai', pkce: p, state: 'st-wrong' }),
        );
        await fillPassword(page, 'alice', 'not the password');
        const [response] = await Promise.all([
          page.waitForResponse((r) => r.request().method() === 'POST'),
          page.getByRole('button', { name: 'Continue' }).click(),
        ]);
        assert.equal(response.status(), 401);
        const alert = page.getByRole('alert');
        await alert.waitFor();
        assert.equal(await alert.textContent(), 'The username, password or code is not right.');
        // The username is kept, the password is not.
        assert.equal(await page.getByLabel('Username').inputValue(), 'alice');
        assert.equal(await page.getByLabel('Password').inputValue(), '');
        await assertFitsViewport(page);
        await screenshot('message');
        assert.deepEqual(toApp, []);
      } finally {
        await context.close();
      }
    });
  }
});

test('the harness computes RFC 6238 codes (Appendix B, T=59, last 6 of 94287082)', () => {
  assert.equal(totp(Buffer.from('12345678901234567890'), 59), '287082');
  assert.equal(totp(Buffer.from('12345678901234567890'), 1111111109), '081804');
});
