// The Raspberry Pi Camera Module (`[video] source = "rpicam"`) dialled from Chromium, in both
// modes, with the stand-in rpicam-vid (tests/standin/rpicam_vid.rs, the cargo example
// `rpicam_vid_standin` beside PEERCAM_BIN) first on the daemon's PATH:
// - `format = "h264"`: rpicam-vid's H.264 reaches Chromium untouched (the daemon counts it as
//   `peercam_frames_encoded_total{codec="h264-camera"}`; its own H.264 encoder encodes nothing);
// - `format = "yu12"`: raw I420 frames that peercam encodes (`{codec="h264"}`), at 600x480: a
//   width that is not a multiple of 64, so rpicam-vid is asked for 640 and peercam crops.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  dialAndWaitForFrames, launchChromium, openPage, pageState, rpicamStandin, startDaemon,
} from './helpers.mjs';

/** `peercam_frames_encoded_total{codec="<label>"}`, 0 when the daemon has no such output. */
function encoded(metrics, label) {
  return metrics[`peercam_frames_encoded_total{codec="${label}"}`] ?? 0;
}

/** The frames-encoded counters, for failure messages. */
function counters(metrics) {
  return JSON.stringify(Object.fromEntries(Object.entries(metrics)
    .filter(([key]) => key.startsWith('peercam_frames_'))));
}

let browser;
before(async () => { browser = await launchChromium({ fakeMedia: false }); });
after(async () => { await browser?.close(); });

/** Starts the daemon on the stand-in with `video`, dials it, returns what the test checks. */
async function dial({ video, width, height }) {
  const standin = rpicamStandin();
  let daemon;
  try {
    daemon = await startDaemon({
      video: `source = "rpicam"\n${video}`, width, height, fps: 30, env: standin.env,
    });
    const context = await browser.newContext();
    const page = await openPage(context, daemon.url);
    const s = await dialAndWaitForFrames(page, 60, 15_000);
    const state = await pageState(page);
    const metrics = await daemon.metrics();
    const result = {
      stats: s, state, metrics, runs: standin.runs(), log: daemon.log.join('\n'),
      errors: page.errors,
    };
    await context.close();
    return result;
  } finally {
    await daemon?.stop();
    standin.cleanUp();
  }
}

/** What both modes show: ≥ 60 H.264 frames decoded at `width`x`height`, one rpicam-vid run. */
function assertStreamed(r, width, height) {
  assert.equal(r.stats.codec, 'video/H264');
  assert.ok(r.stats.framesDecoded >= 60, `frames decoded: ${r.stats.framesDecoded}`);
  assert.equal(r.stats.frameWidth, width);
  assert.equal(r.stats.frameHeight, height);
  assert.equal(r.state.state, 'connected');
  assert.deepEqual(r.errors, []);
  assert.equal(r.runs.length, 1, `rpicam-vid runs: ${JSON.stringify(r.runs)}`);
}

describe('Camera Module (stand-in rpicam-vid) in Chromium', () => {
  test('h264: rpicam-vid\'s H.264 is passed through', { timeout: 30_000 }, async () => {
    const r = await dial({ video: 'format = "h264"\ncodecs = ["h264"]', width: 640, height: 480 });
    assertStreamed(r, 640, 480);
    assert.match(r.runs[0], /--width 640 --height 480 --framerate 30 --codec h264 /);
    const passed = encoded(r.metrics, 'h264-camera');
    assert.ok(passed >= 30, `frames passed through: ${counters(r.metrics)}`);
    // peercam's own H.264 encoder (there for viewers the camera's profile does not suit)
    // encoded nothing.
    assert.equal(encoded(r.metrics, 'h264'), 0, counters(r.metrics));
    console.log(`rpicam h264: Chromium decoded ${r.stats.framesDecoded} frames `
      + `${r.stats.frameWidth}x${r.stats.frameHeight}, ${passed} passed through`);
  });

  test('yu12: raw frames encoded by peercam, cropped from 640 to 600 wide', { timeout: 30_000 },
    async () => {
      const r = await dial({ video: 'format = "yu12"\ncodecs = ["h264"]', width: 600, height: 480 });
      assertStreamed(r, 600, 480);
      assert.match(r.runs[0], /--width 640 --height 480 --framerate 30 --codec yuv420 /);
      assert.match(r.log, /cropped to 600x480/);
      assert.doesNotMatch(r.log, /frame skipped/);
      const frames = encoded(r.metrics, 'h264');
      assert.ok(frames >= 30, `frames encoded by peercam: ${counters(r.metrics)}`);
      assert.equal(encoded(r.metrics, 'h264-camera'), 0, counters(r.metrics));
      console.log(`rpicam yu12: Chromium decoded ${r.stats.framesDecoded} frames `
        + `${r.stats.frameWidth}x${r.stats.frameHeight}, ${frames} encoded by peercam`);
    });
});
