// Firefox ESR against the real daemon. Offline Firefox has no OpenH264 plugin, so its offer
// carries no H.264: the daemon (configured to prefer H.264) must fall back to AV1.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dialAndWaitForFrames, launchFirefox, openPage, pageState, startDaemon } from './helpers.mjs';

test('firefox: Dial falls back to AV1 and decodes it', { timeout: 90_000 }, async () => {
  const daemon = await startDaemon({ video: 'codecs = ["h264", "av1"]' });
  let browser;
  try {
    browser = await launchFirefox();
    const page = await openPage(browser, daemon.url);
    const s = await dialAndWaitForFrames(page, 30, 45_000);
    assert.equal(s.codec, 'video/AV1');
    assert.equal(s.frameWidth, 640);
    assert.equal(s.frameHeight, 480);
    assert.equal((await pageState(page)).state, 'connected');
    // The tone arrives too: Firefox counts decoded audio samples.
    await page.waitForFunction(() => (window.peercamStats?.audioSamples ?? 0) > 0, null,
      { timeout: 10_000 });
    // The barcode latency readout works in Firefox too (AV1 here is slow: only a loose bound).
    await page.waitForFunction(() => window.peercamLatency.samples.length >= 10, null,
      { timeout: 10_000 });
    const { p50 } = await page.evaluate(() => window.peercamLatency);
    assert.ok(p50 > 0 && p50 < 5000, `latency p50 ${p50} ms`);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser?.close();
    await daemon.stop();
  }
});
