// Camera H.264 passthrough in real browsers, with the simulated H.264 camera
// (`[video] format = "h264"` with the test source: Main profile 4d4c28, SPS/PPS only once).
// Chromium offers Main (4d001f) and gets the camera's stream untouched, announced with the
// camera's level; Firefox ESR (no H.264 here) gets the same camera decoded and sent as AV1.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  dialAndWaitForFrames, launchChromium, launchFirefox, openPage, pageState, startDaemon,
} from './helpers.mjs';

const CAMERA = 'format = "h264"\ncodecs = ["h264", "av1"]';

describe('camera H.264 passthrough', () => {
  let daemon;
  before(async () => { daemon = await startDaemon({ video: CAMERA }); });
  after(async () => { await daemon?.stop(); });

  test('Chromium decodes the camera stream with its profile and level', { timeout: 60_000 }, async () => {
    const browser = await launchChromium();
    try {
      const context = await browser.newContext();
      // Keep the daemon's answer: its fmtp is what the daemon announced (getStats' codec
      // sdpFmtpLine shows the browser's own receive parameters instead).
      await context.addInitScript(() => {
        const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
        RTCPeerConnection.prototype.setRemoteDescription = function keep(d) {
          window.answerSdp = d && d.sdp;
          return setRemote.call(this, d);
        };
      });
      const page = await openPage(context, daemon.url);
      const s = await dialAndWaitForFrames(page, 90);
      assert.equal(s.codec, 'video/H264');
      assert.equal(s.frameWidth, 640);
      assert.equal(s.frameHeight, 480);
      const answer = await page.evaluate(() => window.answerSdp);
      const fmtp = /a=fmtp:\d+ .*profile-level-id=[0-9a-f]{6}.*/.exec(answer)?.[0];
      assert.match(fmtp, /profile-level-id=4d0028/, answer);
      // The barcode survives: the capture time read back from decoded frames.
      await page.waitForFunction(() => window.peercamLatency.samples.length >= 30, null,
        { timeout: 10_000 });
      const latency = await page.evaluate(() => window.peercamLatency);
      assert.ok(latency.p50 > 0 && latency.p50 < 1000, `latency p50 ${latency.p50} ms`);
      console.log(`passthrough: Chromium ${s.framesDecoded} frames, answer ${fmtp}, latency p50 ${latency.p50} ms`);
      assert.equal((await pageState(page)).state, 'connected');
      assert.deepEqual(page.errors, []);
      const metrics = await (await fetch(`${daemon.url}metrics`)).text();
      const passed = Number(/peercam_frames_encoded_total\{codec="h264-camera"\} (\d+)/.exec(metrics)?.[1]);
      assert.ok(passed >= 60, `frames passed through: ${passed}`);
    } finally {
      await browser.close();
    }
  });

  test('Firefox gets the camera decoded and encoded as AV1', { timeout: 90_000 }, async () => {
    const browser = await launchFirefox();
    try {
      const page = await openPage(await browser.newContext(), daemon.url);
      const s = await dialAndWaitForFrames(page, 30, 40_000);
      assert.equal(s.codec, 'video/AV1');
      assert.equal(s.frameWidth, 640);
      assert.equal(s.frameHeight, 480);
      console.log(`passthrough: Firefox ${s.framesDecoded} AV1 frames from the H.264 camera`);
      assert.deepEqual(page.errors, []);
    } finally {
      await browser.close();
    }
  });
});
