// Audio captured from a real ALSA device reaches the browser. The daemon opens the capture PCM
// `peercamtest`, an ALSA `file` plugin device (as in tests/it/alsa_capture.rs) whose input is a
// 1000 Hz tone at -6 dBFS, not the built-in 440 Hz / -12 dBFS test tone; Chromium dials,
// WebAudio finds the dominant frequency of what it plays and getStats() its level. A control
// run against `source = "test"` must find 440 Hz with the same measurement.
//
// The file plugin is not paced in real time. With a plain file as `infile` the daemon reads
// the whole file in well under a second and sends the browser 2000-4500 Opus packets a second
// (not 50); past the end of the file alsa-lib 1.2.8 returns full reads without writing the
// buffer, so the daemon re-sends its last period forever (a seamless tone when the period holds
// whole cycles, as here: the frequency alone cannot tell). So `infile` here is a FIFO that the
// test fills from the tone file one 20 ms period per 20 ms of wall clock, as a microphone's
// sample clock would, and the test checks the packet rate.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { launchChromium, openPage, startDaemon } from './helpers.mjs';

const RATE = 48_000;
/** One ALSA period as the daemon configures it: 20 ms. */
const PERIOD_FRAMES = 960;
/** The file's tone: distinctive, and a whole number of cycles in every 20 ms period. */
const TONE_HZ = 1000;
const AMPLITUDE = 16_000; // -6.2 dBFS
const FILE_SECONDS = 60; // longer than the test runs; the feeder wraps around (whole cycles)
/** The built-in test tone (src/capture/test_tone.rs): 440 Hz beeps at BEEP_AMPLITUDE. */
const TEST_TONE_HZ = 440;
const TEST_TONE_AMPLITUDE = 8231;
const MEASURE_MS = 2500;

let dir;
let browser;
before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'peercam-alsa-tone-'));
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The tone as raw S16_LE 48 kHz mono. */
function toneFile(file) {
  const samples = RATE * FILE_SECONDS;
  const raw = Buffer.alloc(samples * 2);
  for (let n = 0; n < samples; n += 1) {
    raw.writeInt16LE(Math.round(AMPLITUDE * Math.sin((2 * Math.PI * TONE_HZ * n) / RATE)), 2 * n);
  }
  writeFileSync(file, raw);
}

/**
 * The plugin's `infile`: a FIFO that a worker thread (its own event loop, so the test's awaits
 * and the browser traffic do not delay it) fills from the tone file like a microphone's sample
 * clock would: one 20 ms period as each 20 ms passes, from the moment the daemon opens it. The
 * daemon cannot tell how long a period sat in the FIFO (the plugin reports no delay), so the
 * feeder's timing is the capture timing. A period (1920 bytes, less than PIPE_BUF) is written
 * atomically, so each of the daemon's period reads gets a whole one; the daemon's reads block
 * until the next period is written. Periods whose time passed while the thread was not
 * running are skipped, not sent late in a burst.
 */
function startFeeder(fifo, file) {
  execFileSync('mkfifo', [fifo]);
  // [0] periods written, [1] longest stall (microseconds), [2] stop flag, [3] periods skipped.
  const shared = new SharedArrayBuffer(4 * 8);
  const worker = new Worker(`
    const { closeSync, constants, openSync, readFileSync, writeSync } = require('node:fs');
    const { workerData } = require('node:worker_threads');
    const { fifo, file, periodBytes, shared } = workerData;
    const raw = readFileSync(file);
    const state = new BigInt64Array(shared);
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const napMs = (ms) => Atomics.wait(nap, 0, 0, ms);
    // Non-blocking write-only open fails (ENXIO) until the daemon opens the FIFO for reading.
    let fd = null;
    while (fd === null && Atomics.load(state, 2) === 0n) {
      try {
        fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (error) {
        if (error.code !== 'ENXIO') throw error;
        napMs(1);
      }
    }
    const start = performance.now();
    let next = 0; // index of the next period, due at start + 20 ms * next
    let written = 0;
    let skipped = 0;
    while (fd !== null && Atomics.load(state, 2) === 0n) {
      const now = performance.now() - start;
      const due = Math.floor(now / 20);
      if (due > next) {
        // This thread did not run for a while (a loaded machine): that audio was never
        // "captured". Writing it now would hand the daemon a burst it can only stamp as
        // arriving now; skipping it is a gap, as a microphone that stopped would leave.
        const late = BigInt(Math.round((now - next * 20) * 1000));
        if (late > Atomics.load(state, 1)) Atomics.store(state, 1, late);
        skipped += due - next;
        next = due;
        Atomics.store(state, 3, BigInt(skipped));
      }
      if (due === next) {
        try {
          writeSync(fd, raw, (next * periodBytes) % raw.length, periodBytes);
          written += 1;
          Atomics.store(state, 0, BigInt(written));
        } catch (error) {
          if (error.code !== 'EAGAIN') throw error; // EAGAIN: pipe full, the daemon is not reading
        }
        next += 1;
      }
      napMs(1);
    }
    if (fd !== null) closeSync(fd);
  `, {
    eval: true,
    workerData: { fifo, file, periodBytes: PERIOD_FRAMES * 2, shared },
  });
  const state = new BigInt64Array(shared);
  let failed = null;
  let exited = false;
  worker.on('error', (error) => { failed = error.message; });
  const exit = new Promise((resolve) => { worker.once('exit', () => { exited = true; resolve(); }); });
  return {
    /** Periods written and skipped, the longest stall (ms), a worker error. */
    progress: () => ({
      periods: Number(state[0]), skipped: Number(state[3]), maxStallMs: Number(state[1]) / 1000,
      failed,
    }),
    async stop() {
      Atomics.store(state, 2, 1n);
      if (!exited) await exit;
    },
  };
}

/**
 * Opens the Dial page in a new context, dials and waits until the page's <video> plays a
 * stream with an audio track and the page's stats count a second of received audio. A hook
 * records the page's RTCPeerConnection as window.peercamTestPc for getStats().
 */
async function dialForAudio(daemon) {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    const set = RTCPeerConnection.prototype.setLocalDescription;
    RTCPeerConnection.prototype.setLocalDescription = function setLocalDescription(...args) {
      window.peercamTestPc = this;
      return set.apply(this, args);
    };
  });
  const page = await openPage(context, daemon.url);
  await page.click('#dial');
  try {
    // Synchronous: waitForFunction does not await a predicate's promise (it is truthy).
    await page.waitForFunction(() => {
      const video = document.getElementById('remote');
      return Boolean(window.peercamTestPc && video.srcObject && !video.paused
        && video.srcObject.getAudioTracks().length === 1
        && (window.peercamStats?.audioSamples ?? 0) >= 48_000);
    }, null, { timeout: 20_000, polling: 250 });
  } catch (error) {
    const state = await page.evaluate(() => ({
      state: window.peercamState, error: window.peercamError, stats: window.peercamStats,
    })).catch(() => ({}));
    await context.close();
    throw new Error(`no audio playing within 20 s: ${JSON.stringify(state)}\n`
      + `${daemon.log.slice(-10).join('\n')}`);
  }
  return { context, page };
}

/**
 * Listens to the remote stream for `ms` with an AnalyserNode (8192-point FFT, 5.9 Hz bins)
 * and reads the inbound audio stats before and after. Returns the dominant frequency of the
 * summed power spectrum (parabolic interpolation between bins), the median and largest peak
 * and the median RMS of the 8192-sample windows (full scale 1.0), and from getStats: packets
 * per second, discarded packets and concealed samples (fractions), audioLevel samples and
 * sqrt(d totalAudioEnergy / d totalSamplesDuration).
 */
function measure(page, ms) {
  return page.evaluate(async (durationMs) => {
    const video = document.getElementById('remote');
    const pc = window.peercamTestPc;
    if (!video.srcObject) {
      throw new Error(`the call ended: ${window.peercamState}, ${window.peercamError}, `
        + `${document.getElementById('status').textContent}`);
    }
    const inbound = async () => {
      let audio = null;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') audio = r;
      });
      if (!audio) {
        throw new Error(`no inbound audio stats: ${window.peercamState}, ${window.peercamError}, `
          + `${document.getElementById('status').textContent}, pc ${pc.connectionState}`);
      }
      return audio;
    };
    const ctx = new AudioContext({ sampleRate: 48_000 });
    await ctx.resume();
    const source = ctx.createMediaStreamSource(new MediaStream(video.srcObject.getAudioTracks()));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    source.connect(analyser);
    await new Promise((resolve) => { setTimeout(resolve, 250); }); // fill the FFT window
    const bins = analyser.frequencyBinCount;
    const power = new Float64Array(bins);
    const db = new Float32Array(bins);
    const wave = new Float32Array(analyser.fftSize);
    const rms = [];
    const peaks = [];
    const levels = [];
    const s0 = await inbound();
    const t0 = performance.now();
    for (let i = 0; performance.now() - t0 < durationMs; i += 1) {
      await new Promise((resolve) => { setTimeout(resolve, 50); });
      analyser.getFloatFrequencyData(db);
      for (let k = 0; k < bins; k += 1) power[k] += 10 ** (db[k] / 10);
      analyser.getFloatTimeDomainData(wave);
      let sum = 0;
      let peak = 0;
      for (const x of wave) {
        sum += x * x;
        peak = Math.max(peak, Math.abs(x));
      }
      rms.push(Math.sqrt(sum / wave.length));
      peaks.push(peak);
      if (i % 2 === 1) levels.push((await inbound()).audioLevel);
    }
    const s1 = await inbound();
    source.disconnect();
    await ctx.close();
    let best = 2;
    for (let k = 3; k < bins - 1; k += 1) if (power[k] > power[best]) best = k;
    const [a, b, c] = [power[best - 1], power[best], power[best + 1]].map((p) => 10 * Math.log10(p));
    const binHz = ctx.sampleRate / analyser.fftSize;
    const dbAt = (hz) => 10 * Math.log10(power[Math.round(hz / binHz)] / power[best]);
    const median = (values) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)];
    const seconds = (s1.timestamp - s0.timestamp) / 1000;
    const samples = s1.totalSamplesReceived - s0.totalSamplesReceived;
    return {
      hz: (best + (0.5 * (a - c)) / (a - 2 * b + c)) * binHz,
      binHz,
      sampleRate: ctx.sampleRate,
      db440: dbAt(440),
      db1000: dbAt(1000),
      peak: median(peaks),
      peakMax: Math.max(...peaks),
      rms: median(rms),
      snapshots: rms.length,
      levels,
      energyLevel: Math.sqrt((s1.totalAudioEnergy - s0.totalAudioEnergy)
        / (s1.totalSamplesDuration - s0.totalSamplesDuration)),
      packetsPerSecond: (s1.packetsReceived - s0.packetsReceived) / seconds,
      concealed: (s1.concealedSamples - s0.concealedSamples) / samples,
      discarded: (s1.packetsDiscarded - s0.packetsDiscarded)
        / Math.max(1, s1.packetsReceived - s0.packetsReceived),
      seconds,
    };
  }, ms);
}

const median = (values) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)];
/** `actual` within `tolerance` (a fraction) of `expected`. */
function assertNear(actual, expected, tolerance, what) {
  assert.ok(Math.abs(actual - expected) <= tolerance * expected,
    `${what}: ${actual.toFixed(4)}, expected ${expected.toFixed(4)} ±${tolerance * 100}%`);
}

/**
 * The audio came in real time: 50 Opus packets a second (an unpaced source sends thousands),
 * RTP timestamps exactly 960 apart (a packet overlapping the previous one is discarded, a gap
 * concealed: timestamps a few samples off on every packet lost about half of them, ~50%
 * discarded and ~45% concealed). The concealment bound is loose: on a loaded machine up to
 * ~20% was seen for the built-in tone too.
 */
function assertRealTime(m) {
  assert.ok(m.packetsPerSecond > 40 && m.packetsPerSecond < 60, `${m.packetsPerSecond} packets/s`);
  assert.ok(m.discarded < 0.1, `discarded fraction ${m.discarded}`);
  assert.ok(m.concealed < 0.3, `concealed fraction ${m.concealed}`);
}

describe('ALSA capture in the browser', () => {
  test('the tone of an ALSA file-plugin device arrives, not the test tone', { timeout: 60_000 },
    async () => {
      const file = path.join(dir, 'tone-1khz-48k-mono.s16le');
      toneFile(file);
      const fifo = path.join(dir, 'mic.fifo');
      const rc = path.join(dir, 'asoundrc');
      writeFileSync(rc, `pcm.peercamtest {
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "${fifo}"
    format "raw"
}
`);
      const feeder = startFeeder(fifo, file);
      let daemon;
      let context;
      try {
        daemon = await startDaemon({
          audio: 'source = "peercamtest"\nchannels = 1',
          env: { ALSA_CONFIG_PATH: `/usr/share/alsa/alsa.conf:${rc}` },
        });
        let page;
        ({ context, page } = await dialForAudio(daemon));
        const m = await measure(page, MEASURE_MS);
        const fed = feeder.progress();
        console.log(`ALSA ${TONE_HZ} Hz tone: ${JSON.stringify({ ...m, levels: undefined })} `
          + `audioLevel median ${median(m.levels).toFixed(3)}; feeder ${JSON.stringify(fed)}`);
        assert.equal(fed.failed, null);
        // The daemon captured from the ALSA device, at its native format, not the test tone.
        assert.ok(daemon.log.some((l) => l.includes(
          'ALSA capture "peercamtest": 48000 Hz, 1 channel(s), period 960 frames')),
        daemon.log.join('\n'));
        assert.ok(!daemon.log.some((l) => /test tone|sending silence/.test(l)),
          daemon.log.join('\n'));
        assertRealTime(m);
        // The file's frequency, within a bin; the test tone's is far below it.
        assert.equal(m.sampleRate, RATE);
        assert.ok(Math.abs(m.hz - TONE_HZ) <= m.binHz, `dominant ${m.hz} Hz`);
        assert.ok(m.db440 < -40, `440 Hz only ${m.db440} dB below the peak`);
        // The file's level. Chromium's audioLevel is the peak |sample| / 32767 over ~100 ms
        // (webrtc AudioLevel), totalAudioEnergy integrates its square: both AMPLITUDE / 32767
        // for a steady sine. The waveform's RMS is AMPLITUDE / 32768 / sqrt(2).
        const level = AMPLITUDE / 32767;
        assertNear(median(m.levels), level, 0.15, 'audioLevel');
        assertNear(m.energyLevel, level, 0.15, 'sqrt(totalAudioEnergy / totalSamplesDuration)');
        assertNear(m.rms, AMPLITUDE / 32768 / Math.SQRT2, 0.15, 'WebAudio RMS');
        assertNear(m.peak, AMPLITUDE / 32768, 0.15, 'WebAudio peak');
        assert.deepEqual(page.errors, []);
      } finally {
        await context?.close();
        await daemon?.stop();
        await feeder.stop();
      }
    });

  test('control: the same measurement finds the 440 Hz test tone', { timeout: 60_000 },
    async () => {
      const daemon = await startDaemon({ audio: 'source = "test"' });
      let context;
      try {
        let page;
        ({ context, page } = await dialForAudio(daemon));
        const m = await measure(page, MEASURE_MS);
        console.log(`test tone: ${JSON.stringify({ ...m, levels: undefined })} `
          + `audioLevel max ${Math.max(...m.levels).toFixed(3)}`);
        assertRealTime(m);
        assert.ok(Math.abs(m.hz - TEST_TONE_HZ) <= m.binHz, `dominant ${m.hz} Hz`);
        assert.ok(m.db1000 < -40, `1000 Hz only ${m.db1000} dB below the peak`);
        // 200 ms beeps each second: the loudest moments carry the beep's amplitude.
        assertNear(Math.max(...m.levels), TEST_TONE_AMPLITUDE / 32767, 0.2, 'max audioLevel');
        assertNear(m.peakMax, TEST_TONE_AMPLITUDE / 32768, 0.2, 'WebAudio peak');
        assert.deepEqual(page.errors, []);
      } finally {
        await context?.close();
        await daemon.stop();
      }
    });
});
