// Benchmark, not a test: glass-to-glass latency of peercam in headless Chromium.
//
//   PEERCAM_BIN=target/x86_64-unknown-linux-gnu/release/peercam \
//     node benches/browser/latency.mjs [--frames N] [--runs R] [--out DIR] [CASE...]
//
// CASE is codec-WIDTHxHEIGHT (30 fps), default: h264-640x480 h264-1280x720 av1-640x480
// av1-320x240. For each case the daemon runs with the test pattern at that size; one Chromium
// page dials it, and after a 3 s warm-up the page's own latency reader (src/http/assets/app.js:
// requestVideoFrameCallback, the frame copied to a canvas, the capture-time barcode decoded and
// compared with the page clock at the frame's expected display time) collects N samples
// (default 300, at most 600), one per displayed frame. This repeats R times (default 3), each
// with a fresh daemon and page: the phase between the capture clock and the browser's display
// refresh differs from run to run and shifts the whole distribution by up to a refresh
// interval, so one run alone can mislead. Reported over all samples of a case, with each
// run's p50: p50/p95/p99/max latency;
// frames the daemon captured in that window and how many of them the browser decoded, how
// many it dropped (getStats framesDropped) and how many never arrived; daemon-side queue drops;
// the daemon's share (mean frame age when encoded and when its RTP was written, from the
// peercam_frame_age_seconds histograms); Chromium's jitter-buffer delay and decode time.
// Writes latency.json (with every sample) and, when gnuplot is installed, latency.png (the
// latency distribution of each case) into DIR (default target/bench).

import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  dialAndWaitForFrames, launchChromium, openPage, recordPeerConnections, repoRoot, sleep,
  startDaemon,
} from '../../tests/browser/helpers.mjs';

const DEFAULT_CASES = ['h264-640x480', 'h264-1280x720', 'av1-640x480', 'av1-320x240'];
const FPS = 30;
const WARMUP_MS = 3_000;

function parseArgs(argv) {
  const options = { frames: 300, runs: 3, out: path.join(repoRoot, 'target', 'bench'), cases: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--frames') {
      options.frames = Number(argv[++i]);
      if (!Number.isInteger(options.frames) || options.frames < 30 || options.frames > 600) {
        throw new Error('--frames: a whole number from 30 to 600 (the page keeps 600 samples)');
      }
    } else if (arg === '--runs') {
      options.runs = Number(argv[++i]);
      if (!Number.isInteger(options.runs) || options.runs < 1 || options.runs > 20) {
        throw new Error('--runs: a whole number from 1 to 20');
      }
    } else if (arg === '--out') {
      options.out = path.resolve(argv[++i] ?? '');
    } else if (/^(h264|av1)-\d+x\d+$/.test(arg)) {
      options.cases.push(arg);
    } else {
      throw new Error(`unknown argument ${arg}: expected --frames N, --runs R, --out DIR or codec-WxH`);
    }
  }
  if (options.cases.length === 0) options.cases = DEFAULT_CASES;
  return options;
}

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * q))];
}

/** Video inbound-rtp counters of every open RTCPeerConnection the page made. */
function videoCounters(page) {
  return page.evaluate(async () => {
    const totals = { framesDecoded: 0, framesDropped: 0, framesReceived: 0, jitterBufferDelay: 0,
      jitterBufferEmittedCount: 0, totalDecodeTime: 0 };
    for (const pc of window.testPeers || []) {
      if (pc.connectionState === 'closed') continue;
      const report = await pc.getStats();
      report.forEach((r) => {
        if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
        for (const key of Object.keys(totals)) totals[key] += r[key] || 0;
      });
    }
    return totals;
  });
}

async function runOnce(browser, name, frames) {
  const [codec, size] = name.split('-');
  const [width, height] = size.split('x').map(Number);
  const daemon = await startDaemon({ video: `codecs = ["${codec}"]`, width, height, fps: FPS });
  const context = await browser.newContext();
  // A handle on the page's peer connection, for getStats counters the page does not show.
  await context.addInitScript(recordPeerConnections);
  try {
    const page = await openPage(context, daemon.url);
    await dialAndWaitForFrames(page, 30, 60_000);
    await sleep(WARMUP_MS);
    const m0 = await daemon.metrics();
    const c0 = await videoCounters(page);
    await page.evaluate(() => { window.peercamLatency.samples.length = 0; });
    const started = Date.now();
    const budgetMs = (frames / FPS) * 3000 + 10_000;
    await page.waitForFunction((n) => window.peercamLatency.samples.length >= n, frames,
      { timeout: budgetMs, polling: 200 }).catch(() => {});
    const samples = await page.evaluate(() => window.peercamLatency.samples.slice());
    const seconds = (Date.now() - started) / 1000;
    const m1 = await daemon.metrics();
    const c1 = await videoCounters(page);
    const delta = (key) => (m1[key] ?? 0) - (m0[key] ?? 0);
    // The daemon's share: mean frame age when encoded and when its RTP was written.
    const age = (stage) => {
      const labels = `{codec="${codec}",stage="${stage}"}`;
      const count = delta(`peercam_frame_age_seconds_count${labels}`);
      return count > 0 ? +((delta(`peercam_frame_age_seconds_sum${labels}`) / count) * 1000).toFixed(1) : null;
    };
    const captured = delta('peercam_frames_captured_total');
    const decoded = c1.framesDecoded - c0.framesDecoded;
    const result = {
      case: name, codec, width, height, fps: FPS, seconds,
      capturedFrames: captured,
      encodedFrames: delta(`peercam_frames_encoded_total{codec="${codec}"}`),
      decodedFrames: decoded,
      droppedByBrowser: c1.framesDropped - c0.framesDropped,
      notDecoded: Math.max(0, captured - decoded),
      daemonQueueDropped: delta(`peercam_video_queue_dropped_total{codec="${codec}"}`),
      daemonFanoutDropped: delta(`peercam_fanout_dropped_total{codec="${codec}"}`),
      daemonEncodedMs: age('encoded'),
      daemonSentMs: age('sent'),
      jitterBufferMs: +(((c1.jitterBufferDelay - c0.jitterBufferDelay)
        / Math.max(1, c1.jitterBufferEmittedCount - c0.jitterBufferEmittedCount)) * 1000).toFixed(1),
      decodeMs: +(((c1.totalDecodeTime - c0.totalDecodeTime) / Math.max(1, decoded)) * 1000).toFixed(2),
      pageErrors: page.errors,
      sampleValues: samples,
    };
    if (samples.length < frames) result.note = `only ${samples.length} of ${frames} frames read`;
    return result;
  } finally {
    await context.close();
    await daemon.stop();
  }
}

/** `runs` runs of one case, merged: counters summed, samples pooled, each run's p50 kept. */
async function runCase(browser, name, frames, runs) {
  const each = [];
  for (let i = 0; i < runs; i += 1) each.push(await runOnce(browser, name, frames));
  const sum = (key) => each.reduce((total, r) => total + r[key], 0);
  const samples = each.flatMap((r) => r.sampleValues);
  const sorted = samples.slice().sort((a, b) => a - b);
  const { codec, width, height, fps } = each[0];
  return {
    case: name, codec, width, height, fps, runs,
    seconds: +sum('seconds').toFixed(1), samples: samples.length,
    p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), p99: percentile(sorted, 0.99),
    min: sorted[0], max: sorted[sorted.length - 1],
    mean: +(samples.reduce((a, b) => a + b, 0) / Math.max(1, samples.length)).toFixed(1),
    runP50: each.map((r) => percentile(r.sampleValues.slice().sort((a, b) => a - b), 0.5)),
    capturedFrames: sum('capturedFrames'), encodedFrames: sum('encodedFrames'),
    decodedFrames: sum('decodedFrames'), droppedByBrowser: sum('droppedByBrowser'),
    notDecoded: sum('notDecoded'), daemonQueueDropped: sum('daemonQueueDropped'),
    daemonFanoutDropped: sum('daemonFanoutDropped'),
    daemonEncodedMs: +(sum('daemonEncodedMs') / runs).toFixed(1),
    daemonSentMs: +(sum('daemonSentMs') / runs).toFixed(1),
    jitterBufferMs: +(sum('jitterBufferMs') / runs).toFixed(1),
    decodeMs: +(sum('decodeMs') / runs).toFixed(2),
    pageErrors: each.flatMap((r) => r.pageErrors),
    notes: each.map((r) => r.note).filter(Boolean),
    sampleValues: samples,
  };
}

const options = parseArgs(process.argv.slice(2));
mkdirSync(options.out, { recursive: true });
const browser = await launchChromium();
const results = [];
try {
  for (const name of options.cases) {
    const r = await runCase(browser, name, options.frames, options.runs);
    results.push(r);
    const { sampleValues, ...shown } = r;
    console.log(JSON.stringify(shown));
  }
} finally {
  await browser.close();
}
console.log('\n| case | samples | p50 ms | p95 ms | p99 ms | max ms | p50 of each run | captured | decoded | dropped (browser) | never decoded | daemon drops | daemon: capture → encoded / → sent ms | jitter buffer ms | decode ms |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of results) {
  console.log(`| ${r.codec === 'h264' ? 'H.264' : 'AV1'} ${r.width}x${r.height}@${r.fps} | ${r.samples} | ${r.p50} | ${r.p95} | ${r.p99} | ${r.max} `
    + `| ${r.runP50.join(', ')} | ${r.capturedFrames} | ${r.decodedFrames} | ${r.droppedByBrowser} | ${r.notDecoded} `
    + `| ${r.daemonQueueDropped + r.daemonFanoutDropped} | ${r.daemonEncodedMs} / ${r.daemonSentMs} | ${r.jitterBufferMs} | ${r.decodeMs} |`);
}
const file = path.join(options.out, 'latency.json');
writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), results }, null, 1)}\n`);
console.log(`\nwrote ${file}`);
plot(results, options.out);

/** latency.png: the cumulative distribution of each case's samples, drawn by gnuplot. */
function plot(all, dir) {
  const lines = [];
  for (const [i, r] of all.entries()) {
    const sorted = r.sampleValues.slice().sort((a, b) => a - b);
    const data = sorted.map((v, k) => `${v} ${((k + 1) / sorted.length).toFixed(4)}`).join('\n');
    const dat = path.join(dir, `latency-${i}.dat`);
    writeFileSync(dat, `${data}\n`);
    const title = `${r.codec === 'h264' ? 'H.264' : 'AV1'} ${r.width}x${r.height}@${r.fps}: p50 ${r.p50} ms, p95 ${r.p95} ms`;
    lines.push(`'${dat}' using 1:2 with steps linewidth 2 title '${title}'`);
  }
  const png = path.join(dir, 'latency.png');
  const script = [
    'set terminal pngcairo noenhanced size 900,500 font "sans,10"',
    `set output '${png}'`,
    'set title "peercam glass-to-glass latency, headless Chromium on loopback (test-pattern barcode)"',
    'set xlabel "latency (ms)"', 'set ylabel "fraction of frames"',
    'set yrange [0:1]', 'set xrange [0:*]', 'set grid', 'set key right bottom',
    `plot ${lines.join(', ')}`,
  ].join('\n');
  const result = spawnSync('gnuplot', [], { input: script, encoding: 'utf8' });
  if (result.error || result.status !== 0) {
    console.log(`(no plot: gnuplot ${result.error ? 'not found' : `failed: ${result.stderr}`})`);
    return;
  }
  console.log(`wrote ${png}`);
}
