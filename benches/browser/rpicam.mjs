// Benchmark, not a test: the daemon's CPU per frame with the Camera Module (`[video] source =
// "rpicam"`) in its two modes, passthrough (`format = "h264"`: rpicam-vid's H.264 sent as it
// is) and raw (`format = "yu12"`: I420 frames peercam encodes), played by the stand-in
// rpicam-vid (tests/standin/rpicam_vid.rs), with one headless Chromium viewer.
//
//   PEERCAM_BIN=target/release/peercam \
//     node benches/browser/rpicam.mjs [--runs N] [--seconds S] [--audio none|test] [--out DIR] [CASE...]
//
// CASE: h264-640x480, yu12-640x480, h264-1280x720, yu12-1280x720 (default: all four), 30 fps.
// The stand-in is `<dir of PEERCAM_BIN>/examples/rpicam_vid_standin` (build it with
// `cargo build --release --example rpicam_vid_standin`). For each case and run a fresh daemon
// starts with the stand-in first on its PATH; one Chromium page dials it; after a 5 s warm-up
// the daemon's own user+system CPU time (/proc/PID/stat utime+stime: not the stand-in, a child
// process that plays the camera, whose CPU is reported apart) is read over S seconds
// (default 20). CPU per frame = that CPU time ÷ frames captured from the camera in the window
// (`peercam_frames_captured_total`). Runs are interleaved (every case once, then again) and
// the table gives each figure's median over the runs (min–max beside it). No audio track by
// default (`[audio] source = "none"`), so the figures are the video's; `--audio test` adds the
// test tone (Opus), a cost the same in both modes. Writes rpicam.json into DIR (default
// target/bench).

import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  dialAndWaitForFrames, launchChromium, openPage, repoRoot, rpicamStandin, sleep, startDaemon,
  stats,
} from '../../tests/browser/helpers.mjs';

const WARMUP_MS = 5_000;
const CLOCK_TICKS = 100; // USER_HZ on Linux
const ALL_CASES = ['h264-640x480', 'yu12-640x480', 'h264-1280x720', 'yu12-1280x720'];

function parseArgs(argv) {
  const options = { runs: 3, seconds: 20, audio: 'none', out: path.join(repoRoot, 'target', 'bench'), cases: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--runs') {
      options.runs = Number(argv[++i]);
      if (!(options.runs >= 1)) throw new Error('--runs: 1 or more');
    } else if (arg === '--seconds') {
      options.seconds = Number(argv[++i]);
      if (!(options.seconds > 0)) throw new Error('--seconds: more than 0');
    } else if (arg === '--audio') {
      options.audio = argv[++i];
      if (!['none', 'test'].includes(options.audio)) throw new Error('--audio: none or test');
    } else if (arg === '--out') {
      options.out = path.resolve(argv[++i] ?? '');
    } else if (/^(h264|yu12)-\d+x\d+$/.test(arg)) {
      options.cases.push(arg);
    } else {
      throw new Error(`unknown argument ${arg} (cases look like h264-640x480 or yu12-1280x720)`);
    }
  }
  if (options.cases.length === 0) options.cases = ALL_CASES;
  return options;
}

/** utime + stime of `pid` in clock ticks (its own threads, not its children). */
function cpuTicks(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** The pids whose parent is `pid` (the stand-in rpicam-vid). */
function children(pid) {
  const pids = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const rest = readFileSync(`/proc/${name}/stat`, 'utf8').split(') ')[1].split(' ');
      if (Number(rest[1]) === pid) pids.push(Number(name));
    } catch {
      // gone
    }
  }
  return pids;
}

function childTicks(pid) {
  let sum = 0;
  for (const child of children(pid)) {
    try { sum += cpuTicks(child); } catch { /* gone */ }
  }
  return sum;
}

async function run(name, seconds, audio) {
  const [, format, width, height] = /^(h264|yu12)-(\d+)x(\d+)$/.exec(name);
  const standin = rpicamStandin();
  let daemon;
  let browser;
  try {
    daemon = await startDaemon({
      video: `source = "rpicam"\nformat = "${format}"\ncodecs = ["h264"]`,
      audio: `source = "${audio}"`,
      width: Number(width), height: Number(height), fps: 30, env: standin.env,
    });
    browser = await launchChromium({ fakeMedia: false });
    const page = await openPage(browser, daemon.url);
    await dialAndWaitForFrames(page, 10, 60_000);
    await sleep(WARMUP_MS);
    const label = format === 'h264' ? 'h264-camera' : 'h264';
    const m0 = await daemon.metrics();
    const s0 = await stats(page);
    const t0 = cpuTicks(daemon.pid);
    const c0 = childTicks(daemon.pid);
    const started = Date.now();
    await sleep(seconds * 1000);
    const t1 = cpuTicks(daemon.pid);
    const c1 = childTicks(daemon.pid);
    const elapsed = (Date.now() - started) / 1000;
    const m1 = await daemon.metrics();
    const s1 = await stats(page);
    const delta = (key) => (m1[key] ?? 0) - (m0[key] ?? 0);
    const captured = delta('peercam_frames_captured_total');
    const sent = delta(`peercam_frames_encoded_total{codec="${label}"}`);
    const cpuMs = ((t1 - t0) / CLOCK_TICKS) * 1000;
    return {
      case: name, format, width: Number(width), height: Number(height),
      cpuPercent: +((cpuMs / 1000 / elapsed) * 100).toFixed(2),
      cpuMsPerFrame: +(cpuMs / captured).toFixed(3),
      standinCpuPercent: +((((c1 - c0) / CLOCK_TICKS) / elapsed) * 100).toFixed(1),
      capturedFps: +(captured / elapsed).toFixed(1),
      sentFps: +(sent / elapsed).toFixed(1),
      label,
      viewerFps: +((s1.framesDecoded - s0.framesDecoded) / elapsed).toFixed(1),
      viewerKbps: s1.bitrateKbps,
      rpicamVid: standin.runs()[0],
    };
  } finally {
    await browser?.close();
    await daemon?.stop();
    standin.cleanUp();
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : +((sorted[mid - 1] + sorted[mid]) / 2).toFixed(3);
}

const options = parseArgs(process.argv.slice(2));
mkdirSync(options.out, { recursive: true });
const results = [];
for (let i = 0; i < options.runs; i += 1) {
  for (const name of options.cases) {
    const r = await run(name, options.seconds, options.audio);
    results.push({ run: i + 1, ...r });
    console.log(JSON.stringify(results.at(-1)));
  }
}

const figure = (rows, key) => {
  const values = rows.map((r) => r[key]);
  const m = median(values);
  return rows.length > 1 ? `${m} (${Math.min(...values)}–${Math.max(...values)})` : `${m}`;
};
console.log(`\nmedian (min–max) over ${options.runs} run(s), ${options.seconds} s each after a `
  + `${WARMUP_MS / 1000} s warm-up, one Chromium viewer, audio ${options.audio}:\n`);
console.log('| mode | size | daemon CPU (% of one core) | daemon CPU ms per frame | captured fps | '
  + 'frames sent as | viewer decoded fps | viewer kbit/s | stand-in CPU (% of one core, not counted) |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const name of options.cases) {
  const rows = results.filter((r) => r.case === name);
  const r = rows[0];
  const mode = r.format === 'h264' ? 'passthrough (`format = "h264"`)' : 'raw (`format = "yu12"`)';
  console.log(`| ${mode} | ${r.width}x${r.height}@30 | ${figure(rows, 'cpuPercent')} % `
    + `| ${figure(rows, 'cpuMsPerFrame')} | ${figure(rows, 'capturedFps')} | \`${r.label}\` `
    + `| ${figure(rows, 'viewerFps')} | ${figure(rows, 'viewerKbps')} `
    + `| ${figure(rows, 'standinCpuPercent')} % |`);
}
const file = path.join(options.out, 'rpicam.json');
writeFileSync(file, `${JSON.stringify({
  date: new Date().toISOString(), runs: options.runs, seconds: options.seconds,
  audio: options.audio, results,
}, null, 1)}\n`);
console.log(`wrote ${file}`);
