// The operator console in a real browser (Debian's Chromium through Playwright): an
// operator signs in with a password and a TOTP code, sees the traffic chart, revokes a
// user's session (and the user's next proxied call is refused), acknowledges the alert
// the user's burst raised, rotates a secret, searches the audit log, and a forged post
// is refused. A read-only operator, on a phone-width screen, sees every page and can
// change nothing. No page may trip the content security policy.
//
// Screenshots of every page: target/browser-tests/console-*.png
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  Device,
  Keygate,
  artifacts,
  chromiumPath,
  pkce,
  startLoopbackApp,
  totp,
} from './harness.js';

const PASSWORD = 'console operator password';
const USER_PASSWORD = 'correct horse battery staple';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

// The monitor evaluates every second, with a rule that fires on a user's fourth call in
// a minute; a rotation hook that makes a new value from nothing.
const EXTRA_TOML = `
[monitor]
interval = "1s"

[[monitor.rules]]
name    = "console-test-ceiling"
kind    = "ceiling"
scope   = "user"
calls_per_minute = 3
actions = ["alert"]

[rotation.hooks.regen]
command = ["/bin/sh", "-c", "cat >/dev/null; echo rotated-value-$(date +%s%N)"]
`;

let kg;
let browser;
let upstream;
let appLoopback;
let clientId;

before(async () => {
  upstream = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
  await new Promise((ok) => upstream.listen(0, '127.0.0.1', ok));
  kg = await Keygate.start({ extraToml: EXTRA_TOML });
  browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
  appLoopback = await startLoopbackApp();

  await kg.admin('PUT', '/admin/v1/secrets/upstream-key', { value: 'upstream-key-v1' });
  await kg.admin('PUT', '/admin/v1/routes', {
    toml: [
      '[routes.echo]',
      `upstream = "http://127.0.0.1:${upstream.address().port}"`,
      'secret   = "upstream-key"',
      'inject   = { header = "Authorization", value = "Bearer {secret}" }',
      'allow    = ["GET /v1/**"]',
      'scopes   = ["ai"]',
      '',
    ].join('\n'),
  });
  await kg.admin('PUT', '/admin/v1/secrets/upstream-key/schedule', {
    rotate_every: '30d',
    hook: 'regen',
  });
  await kg.addUser('alice', USER_PASSWORD, ['ai']);
  clientId = await kg.addPublicClient('console-test-app', ['http://127.0.0.1/callback'], ['ai']);
});

after(async () => {
  await browser?.close();
  await kg?.stop();
  appLoopback?.server.close();
  upstream?.close();
});

/** A browser context that records CSP violations and screenshots each step. */
async function openPage(viewport, name) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const cspViolations = [];
  page.on('console', (m) => {
    if (m.text().includes('Content Security Policy')) cspViolations.push(m.text());
  });
  page.on('dialog', (d) => d.accept()); // the "are you sure?" of destructive buttons
  const screenshot = (step) =>
    page.screenshot({ path: join(artifacts, `console-${name}-${step}.png`), fullPage: true });
  return { context, page, cspViolations, screenshot };
}

/** Alice signs in on the login page (in the browser) and her app redeems the code. */
async function aliceSignsIn() {
  const device = await Device.create('ES256');
  const p = pkce();
  const { context, page } = await openPage(DESKTOP, 'alice');
  try {
    await page.goto(
      kg.authorizeUrl({
        clientId,
        redirectUri: appLoopback.redirectUri,
        scope: 'ai',
        pkce: p,
        state: 'st-console',
        dpopJkt: device.jkt,
      }),
    );
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill(USER_PASSWORD);
    await Promise.all([
      page.waitForURL((u) => u.toString().startsWith(appLoopback.redirectUri)),
      page.getByRole('button', { name: 'Continue' }).click(),
    ]);
  } finally {
    await context.close();
  }
  const code = appLoopback.hits.at(-1).searchParams.get('code');
  const r = await kg.token(device, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: appLoopback.redirectUri,
    client_id: clientId,
    code_verifier: p.verifier,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { device, accessToken: r.body.access_token };
}

/** One proxied call with a DPoP proof (retried once with the server's nonce); its status. */
async function proxied({ device, accessToken }) {
  const url = `${kg.base}/proxy/echo/v1/ping`;
  let nonce = device.nonce;
  for (let attempt = 0; attempt < 2; attempt++) {
    const proof = await device.proof('GET', url, { nonce, accessToken });
    const r = await fetch(url, {
      headers: { authorization: `DPoP ${accessToken}`, dpop: proof },
    });
    await r.arrayBuffer();
    const next = r.headers.get('dpop-nonce');
    if (next) device.nonce = next;
    const challenge = r.headers.get('www-authenticate') ?? '';
    if (r.status === 401 && challenge.includes('use_dpop_nonce') && next && attempt === 0) {
      nonce = next;
      continue;
    }
    return r.status;
  }
  throw new Error('unreachable');
}

async function signInToConsole(page, screenshot, name, seed) {
  await page.goto(`${kg.base}/console/`);
  await page.waitForURL(`${kg.base}/console/login`);
  await screenshot('01-sign-in');
  await page.getByLabel('Name').fill(name);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByLabel('Code from your authenticator app').fill(totp(seed));
  await Promise.all([
    page.waitForURL(`${kg.base}/console/overview`),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
}

async function assertFitsViewport(page, path) {
  const { scrollWidth, innerWidth, widest } = await page.evaluate(() => {
    // The element that sticks out furthest, to name in the failure.
    let widest = '';
    let right = 0;
    for (const el of document.querySelectorAll('body *')) {
      const r = el.getBoundingClientRect().right;
      if (r > right) {
        right = r;
        widest = `${el.tagName.toLowerCase()}.${el.className}`;
      }
    }
    return {
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
      widest,
    };
  });
  assert.ok(
    scrollWidth <= innerWidth,
    `${path} scrolls sideways: ${scrollWidth} > ${innerWidth} (${widest})`,
  );
}

async function waitFor(what, check, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 250));
  }
}

test('an operator signs in with TOTP, revokes a session, acks an alert, rotates a secret, searches the audit (desktop)', async () => {
  const alice = await aliceSignsIn();
  // Four calls: the fourth in a minute trips the test's ceiling rule.
  for (let i = 0; i < 4; i++) assert.equal(await proxied(alice), 200);
  await waitFor('the ceiling alert', async () => {
    const { alerts } = await kg.admin('GET', '/admin/v1/alerts');
    return alerts.some((a) => a.rule === 'console-test-ceiling');
  });

  await waitFor('the calls in the usage table', async () => {
    const { usage } = await kg.admin('GET', '/admin/v1/usage?minutes=5');
    return usage.reduce((n, row) => n + row.calls, 0) >= 4;
  });

  const seed = await kg.addConsoleAdmin('ops', PASSWORD);
  const { context, page, cspViolations, screenshot } = await openPage(DESKTOP, 'desktop');
  try {
    await signInToConsole(page, screenshot, 'ops', seed);
    // The chart: one bar per minute of the last hour, the calls above among them.
    const bars = page.locator('figure.chart svg rect');
    assert.equal(await bars.count(), 60);
    assert.match(await page.locator('figure.chart svg title').textContent(), /: 4 in all/);
    await assert.doesNotReject(page.getByText('alice — 4').waitFor());
    await screenshot('02-overview');

    // Revoke alice's session; her next proxied call is refused.
    await page.getByRole('link', { name: 'Users and sessions' }).click();
    await screenshot('03-sessions');
    await Promise.all([
      page.waitForURL(/done=revoked/),
      page.getByRole('button', { name: /Revoke the session of alice/ }).click(),
    ]);
    await assert.doesNotReject(page.getByText('Session revoked.').waitFor());
    await screenshot('04-revoked');
    assert.equal(await proxied(alice), 401, 'the revoked session can no longer call');

    // Acknowledge the alert her burst raised.
    await page.getByRole('link', { name: 'Alerts' }).click();
    await screenshot('05-alerts');
    await Promise.all([
      page.waitForURL(/done=acked/),
      page.getByRole('button', { name: /Acknowledge the console-test-ceiling alert/ }).first().click(),
    ]);
    await assert.doesNotReject(page.getByText('Alert acknowledged.').waitFor());
    await assert.doesNotReject(page.getByText(/acknowledged .* by console:ops/).first().waitFor());
    await screenshot('06-acked');

    // Rotate the upstream key through its hook: a second version, value never shown.
    await page.getByRole('link', { name: 'Secrets' }).click();
    await Promise.all([
      page.waitForURL(/done=rotated/),
      page.getByRole('button', { name: 'Rotate upstream-key now' }).click(),
    ]);
    await assert.doesNotReject(page.getByText('Secret rotated.').waitFor());
    const { secrets } = await kg.admin('GET', '/admin/v1/secrets');
    assert.equal(secrets.find((s) => s.name === 'upstream-key').current_version, 2);
    assert.ok(!(await page.content()).includes('rotated-value-'), 'no value on the page');
    await screenshot('07-secrets');
    // Reveal once, after a confirm step.
    await page.getByRole('button', { name: 'Reveal upstream-key' }).click();
    await screenshot('07b-reveal-confirm');
    assert.ok(!(await page.content()).includes('rotated-value-'), 'no value before the confirmation');
    await page.getByRole('button', { name: 'Reveal the value' }).click();
    assert.match(await page.locator('pre.revealed').textContent(), /rotated-value-/);
    await screenshot('07c-revealed');

    // Search the audit log for what the console did.
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.getByLabel('Action starts with').fill('session.revoke');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForURL(/action=session.revoke/);
    await assert.doesNotReject(page.locator('table.audit td', { hasText: 'console:ops' }).first().waitFor());
    await screenshot('08-audit');
    await page.getByRole('button', { name: 'Verify the chain' }).click();
    await assert.doesNotReject(page.getByText(/The chain is intact/).waitFor());
    await screenshot('09-audit-verified');

    // The posture report: the same items as `keygate check`.
    await page.getByRole('link', { name: 'Posture' }).click();
    await assert.doesNotReject(page.getByText('tokens.access_ttl', { exact: true }).waitFor());
    await screenshot('11-posture');

    // A post without the form's token (as a forging page would send): refused.
    await Promise.all([
      page.waitForURL(/\/console\/users\/alice\/disable/),
      page.evaluate(() => {
        const f = document.createElement('form');
        f.method = 'post';
        f.action = '/console/users/alice/disable';
        document.body.append(f);
        f.submit();
      }),
    ]);
    await assert.doesNotReject(page.getByText(/nothing was changed/).waitFor());
    await screenshot('10-csrf-refused');
    const { users } = await kg.admin('GET', '/admin/v1/users');
    assert.equal(users.find((u) => u.name === 'alice').disabled, false, 'alice is still enabled');

    assert.deepEqual(cspViolations, []);
  } finally {
    await context.close();
  }
});

test('a read-only operator on a phone sees every page and can change nothing (390 px)', async () => {
  const seed = await kg.addConsoleAdmin('auditor', PASSWORD, 'read-only');
  const { context, page, cspViolations, screenshot } = await openPage(PHONE, 'phone');
  try {
    await signInToConsole(page, screenshot, 'auditor', seed);
    for (const [path, step] of [
      ['/console/overview', '02-overview'],
      ['/console/secrets', '03-secrets'],
      ['/console/sessions', '04-sessions'],
      ['/console/audit', '05-audit'],
      ['/console/alerts', '06-alerts'],
      ['/console/posture', '07-posture'],
      ['/console/routes', '08-routes'],
      ['/console/clients', '09-clients'],
    ]) {
      await page.goto(`${kg.base}${path}`);
      assert.equal(await page.evaluate(() => document.compatMode), 'CSS1Compat', `${path}: quirks mode`);
      await assertFitsViewport(page, path);
      await screenshot(step);
      for (const button of await page.locator('main form[method="post"] button').all()) {
        assert.ok(await button.isDisabled(), `${path}: an enabled action for a read-only operator`);
      }
    }
    // Keyboard: the skip link is the first stop, and leads to the content.
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
    assert.deepEqual(cspViolations, []);
  } finally {
    await context.close();
  }
});
