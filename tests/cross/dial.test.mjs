// A cross-built peercam (aarch64 by default) runs under qemu-user with the test pattern and
// tone; the host's headless Chromium dials it and decodes its H.264. Proves the cross binary
// does the real work (capture, openh264, Opus, webrtc-rs, SRTP) and that the emulated daemon
// keeps up with the frame rate. Every number comes from getStats() or the daemon's /metrics.
//
// Env: PEERCAM_CROSS_BIN  the binary (default target/aarch64-unknown-linux-gnu/release/peercam)
//      PEERCAM_CROSS_ARCH aarch64 (default) or armv7: which qemu-user runs it
//      PEERCAM_LOG=1      echo the daemon's log
// Run: node --test --test-reporter=spec tests/cross/dial.test.mjs (tests/cross/smoke.sh does).

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  dialAndWaitForFrames, launchChromium, openPage, pageState, repoRoot, sleep, startDaemon, stats,
} from '../browser/helpers.mjs';

const arch = process.env.PEERCAM_CROSS_ARCH || 'aarch64';
const triple = { aarch64: 'aarch64-unknown-linux-gnu', armv7: 'armv7-unknown-linux-gnueabihf' }[arch];
const bin = process.env.PEERCAM_CROSS_BIN
  ? path.resolve(repoRoot, process.env.PEERCAM_CROSS_BIN)
  : path.join(repoRoot, 'target', triple ?? arch, 'release', 'peercam');

// Small enough for the emulated encoder: 320x240 at 15 fps.
const WIDTH = 320;
const HEIGHT = 240;
const FPS = 15;
const WINDOW_S = 10; // how long the frame rate is measured
// Emulated, on a busy 2-core CI machine: at least 75% of the frame rate must arrive.
const MIN_FPS = FPS * 0.75;

/**
 * The qemu-user command line for a binary of `arch`. No -L: the loader and libraries come from
 * the host's multiarch directories (libc6:arm64/armhf, libopus0, ...; tests/cross/smoke.sh
 * installs them). With the cross gcc's sysroot as -L the arm64 daemon hung in pthread_create
 * and the armhf one crashed.
 */
function qemuWrapper(arch) {
  switch (arch) {
    case 'aarch64': return ['qemu-aarch64-static'];
    case 'armv7': return ['qemu-arm-static'];
    default: throw new Error(`PEERCAM_CROSS_ARCH=${arch}: expected aarch64 or armv7`);
  }
}

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test(`Chromium decodes H.264 from peercam ${arch} under qemu-user`, { timeout: 240_000 }, async (t) => {
  const daemon = await startDaemon({
    bin, wrapper: qemuWrapper(arch), width: WIDTH, height: HEIGHT, fps: FPS,
    video: 'codecs = ["h264"]', readyTimeoutMs: 90_000,
  });
  t.diagnostic(`daemon served / after ${daemon.startupMs} ms under ${qemuWrapper(arch)[0]}`);
  try {
    const context = await browser.newContext();
    const page = await openPage(context, daemon.url);
    const dialed = Date.now();
    const first = await dialAndWaitForFrames(page, 30, 90_000);
    t.diagnostic(`30 frames decoded ${Date.now() - dialed} ms after Dial`);
    assert.equal(first.codec, 'video/H264');
    assert.equal(first.frameWidth, WIDTH);
    assert.equal(first.frameHeight, HEIGHT);

    // Keeping up: frames decoded by the browser and encoded by the daemon over WINDOW_S.
    const m0 = await daemon.metrics();
    const s0 = await stats(page);
    const t0 = Date.now();
    await sleep(WINDOW_S * 1000);
    const m1 = await daemon.metrics();
    const s1 = await stats(page);
    const seconds = (Date.now() - t0) / 1000;
    const delta = (key) => (m1[key] ?? 0) - (m0[key] ?? 0);
    const decodedFps = (s1.framesDecoded - s0.framesDecoded) / seconds;
    const encodedFps = delta('peercam_frames_encoded_total{codec="h264"}') / seconds;
    const capturedFps = delta('peercam_frames_captured_total') / seconds;
    const queueDropped = delta('peercam_video_queue_dropped_total{codec="h264"}');
    const fanoutDropped = delta('peercam_fanout_dropped_total{codec="h264"}');
    const summary = {
      size: `${s1.frameWidth}x${s1.frameHeight}`, configuredFps: FPS,
      capturedFps: +capturedFps.toFixed(1), encodedFps: +encodedFps.toFixed(1),
      decodedFps: +decodedFps.toFixed(1), queueDropped, fanoutDropped,
      framesDecoded: s1.framesDecoded, bitrateKbps: s1.bitrateKbps, codec: s1.codec,
    };
    t.diagnostic(`over ${seconds.toFixed(1)} s: ${JSON.stringify(summary)}`);
    assert.ok(s1.framesDecoded > 30 + MIN_FPS * WINDOW_S * 0.9,
      `framesDecoded ${s1.framesDecoded}`);
    assert.ok(decodedFps >= MIN_FPS, `decoded ${decodedFps.toFixed(1)} fps < ${MIN_FPS}: ${JSON.stringify(summary)}`);
    assert.ok(encodedFps >= MIN_FPS, `encoded ${encodedFps.toFixed(1)} fps < ${MIN_FPS}: ${JSON.stringify(summary)}`);
    assert.equal(s1.codec, 'video/H264');
    assert.equal(s1.frameWidth, WIDTH);

    // The Opus test tone arrives too.
    await page.waitForFunction(() => window.peercamStats.audioSamples > 0, null, { timeout: 15_000 });
    const state = await pageState(page);
    assert.equal(state.state, 'connected');
    assert.match(state.stats.audioCodec ?? '', /^audio\/opus$/i);
    assert.deepEqual(page.errors, []);
    await context.close();
  } catch (error) {
    t.diagnostic(`daemon log (last 30 lines):\n${daemon.log.slice(-30).join('\n')}`);
    throw error;
  } finally {
    await daemon.stop();
  }
});
