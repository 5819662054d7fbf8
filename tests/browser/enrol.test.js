// Two-step sign-in set up on the login page itself (`tokens.mfa = "required"`), on a
// phone-width screen: after the password, a user without TOTP gets a key to add to an
// authenticator app (a tappable otpauth:// link, and the key as text), enters the code it
// shows, and reaches the app; the next sign-in asks for a code.
//
// Screenshots: target/browser-tests/enrol-*.png
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  Device,
  Keygate,
  artifacts,
  base32Decode,
  chromiumPath,
  pkce,
  startLoopbackApp,
  totp,
} from './harness.js';

const PASSWORD = 'correct horse battery staple';
const PHONE = { width: 390, height: 844 };

let kg;
let browser;
let appLoopback;
let clientId;

before(async () => {
  kg = await Keygate.start({ env: { KEYGATE_TOKENS__MFA: 'required' } });
  browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
  appLoopback = await startLoopbackApp();
  await kg.addUser('carol', PASSWORD, ['ai']);
  clientId = await kg.addPublicClient('enrol-app', ['http://127.0.0.1/callback'], ['ai']);
});

after(async () => {
  await browser?.close();
  await kg?.stop();
  appLoopback?.server.close();
});

async function openLogin(page, state) {
  const device = await Device.create('ES256');
  await page.goto(
    kg.authorizeUrl({
      clientId,
      redirectUri: appLoopback.redirectUri,
      scope: 'ai',
      pkce: pkce(),
      state,
      dpopJkt: device.jkt,
    }),
  );
  await page.getByLabel('Username').fill('carol');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Continue' }).click();
}

test('a user without TOTP sets it up after the password, then signs in with codes (phone)', async () => {
  const context = await browser.newContext({ viewport: PHONE });
  const page = await context.newPage();
  const cspViolations = [];
  page.on('console', (m) => {
    if (m.text().includes('Content Security Policy')) cspViolations.push(m.text());
  });
  const shot = (step) =>
    page.screenshot({ path: join(artifacts, `enrol-${step}.png`), fullPage: true });
  try {
    await openLogin(page, 'st-enrol');
    const link = page.getByRole('link', { name: 'Add to an authenticator app on this device' });
    await assert.doesNotReject(link.waitFor());
    await shot('01-key-offered');
    const uri = await link.getAttribute('href');
    assert.match(uri, /^otpauth:\/\/totp\//);
    const secret = new URL(uri).searchParams.get('secret');
    // The key as text, in groups of four, is the same key.
    const shown = (await page.locator('.key code').textContent()).replaceAll(' ', '');
    assert.equal(shown, secret);
    const { scrollWidth, innerWidth } = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
    }));
    assert.ok(scrollWidth <= innerWidth, `page scrolls sideways: ${scrollWidth} > ${innerWidth}`);

    const seed = base32Decode(secret);
    await page.getByLabel('The code the app shows').fill(totp(seed));
    await Promise.all([
      page.waitForURL((u) => u.toString().startsWith(appLoopback.redirectUri)),
      page.getByRole('button', { name: 'Continue' }).click(),
    ]);
    assert.equal(appLoopback.hits.at(-1).searchParams.get('state'), 'st-enrol');
    assert.match(appLoopback.hits.at(-1).searchParams.get('code') ?? '', /^kgc_/);
    const { users } = await kg.admin('GET', '/admin/v1/users');
    assert.equal(users.find((u) => u.name === 'carol').mfa, true);

    // The next sign-in asks for a code, and offers no key.
    await openLogin(page, 'st-again');
    await assert.doesNotReject(page.getByLabel('One-time code from your authenticator app').waitFor());
    assert.equal(await page.getByRole('link', { name: /authenticator app/ }).count(), 0);
    await shot('02-next-sign-in-asks-for-a-code');
    assert.deepEqual(cspViolations, []);
  } finally {
    await context.close();
  }
});

