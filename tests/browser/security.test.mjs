// Chromium against a daemon with a password and HTTPS (self-signed): the page asks for the
// password once, keeps an HttpOnly session cookie, and dials over wss://; a daemon without a
// password says so on the page.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  launchChromium, logIn, openPage, pageState, startDaemon, waitForFrames,
} from './helpers.mjs';

const PASSWORD = 'correct horse battery';

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

describe('security (chromium)', () => {
  test('password + self-signed HTTPS: log in once, then Dial streams over wss://', { timeout: 90_000 },
    async () => {
      const daemon = await startDaemon({ password: PASSWORD, tls: true, video: 'codecs = ["h264"]' });
      try {
        assert.match(daemon.url, /^https:/);
        const context = await browser.newContext({ ignoreHTTPSErrors: true });
        const page = await openPage(context, daemon.url);
        // The login form, not the app.
        assert.equal(await page.locator('#dial').count(), 0, 'the Dial page before logging in');
        await page.fill('#password', 'a wrong guess');
        await Promise.all([page.waitForNavigation(), page.click('#login')]);
        assert.match(await page.textContent('body'), /Wrong password/);

        await logIn(page, PASSWORD);
        const [cookie] = (await context.cookies()).filter((c) => c.name === 'peercam_session');
        assert.ok(cookie, 'a session cookie');
        assert.equal(cookie.httpOnly, true);
        assert.equal(cookie.secure, true);
        assert.equal(cookie.sameSite, 'Strict');
        assert.ok(!(await page.evaluate(() => document.cookie)).includes('peercam_session'),
          'scripts cannot read the session');
        assert.equal(await page.locator('#open-warning').count(), 0);

        await page.click('#dial');
        const s = await waitForFrames(page, 30, 30_000);
        assert.equal(s.codec, 'video/H264');
        assert.equal((await pageState(page)).state, 'connected');

        // The session survives a reload of the page: no second login.
        await page.reload();
        await page.waitForSelector('#dial', { timeout: 10_000 });

        // Log out: back to the form, and the session no longer opens /metrics.
        await Promise.all([page.waitForNavigation(), page.click('.logout button')]);
        await page.waitForSelector('#password', { timeout: 10_000 });
        const status = await page.evaluate(async () => (await fetch('metrics')).status);
        assert.equal(status, 401);
        await context.close();
      } finally {
        await daemon.stop();
      }
    });

  test('no password: the page warns that anyone can watch', { timeout: 30_000 }, async () => {
    const daemon = await startDaemon({});
    try {
      const context = await browser.newContext();
      const page = await openPage(context, daemon.url);
      const warning = await page.textContent('#open-warning');
      assert.match(warning, /No password is set: anyone who can reach this address can watch/);
      // It names the file this daemon reads, not a default one.
      assert.ok(warning.includes(`Set [server] password in ${daemon.configPath}.`), warning);
      await context.close();
    } finally {
      await daemon.stop();
    }
  });
});
