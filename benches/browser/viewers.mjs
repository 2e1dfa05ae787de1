// Benchmark, not a test: CPU and memory of the daemon with N headless Chromium viewers, and
// the fan-out ratio (CPU with the most viewers ÷ CPU with one: the video is encoded once).
//
//   PEERCAM_BIN=target/x86_64-unknown-linux-gnu/release/peercam \
//     node benches/browser/viewers.mjs [--codec h264|av1] [--size WxH] [--out DIR] [N...]
//
// Defaults: H.264, 640x480@30 test pattern + test tone, viewers 1 4 8. For each N a fresh
// daemon starts; RSS is read before any viewer ("idle"); N pages of one headless Chromium
// dial it; after a 5 s warm-up the daemon's user+system CPU time (/proc/PID/stat) is sampled
// over 20 s, as a percentage of one core; RSS (VmRSS) at the end and its peak (VmHWM). Each
// viewer's decoded frame rate over the same window shows whether it kept up. Writes
// viewers-<codec>.json into DIR (default target/bench). The browsers share the machine's cores with
// the daemon, so N is bounded by what Chromium can decode here.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  dialAndWaitForFrames, launchChromium, openPage, repoRoot, sleep, startDaemon, stats,
} from '../../tests/browser/helpers.mjs';

const WARMUP_MS = 5_000;
const MEASURE_MS = 20_000;
const CLOCK_TICKS = 100; // USER_HZ on Linux

function parseArgs(argv) {
  const options = { codec: 'h264', width: 640, height: 480, out: path.join(repoRoot, 'target', 'bench'), counts: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--codec') {
      options.codec = argv[++i];
      if (!['h264', 'av1'].includes(options.codec)) throw new Error('--codec: h264 or av1');
    } else if (arg === '--size') {
      const m = /^(\d+)x(\d+)$/.exec(argv[++i] ?? '');
      if (!m) throw new Error('--size: WIDTHxHEIGHT, e.g. 640x480');
      [options.width, options.height] = [Number(m[1]), Number(m[2])];
    } else if (arg === '--out') {
      options.out = path.resolve(argv[++i] ?? '');
    } else if (/^\d+$/.test(arg) && Number(arg) > 0) {
      options.counts.push(Number(arg));
    } else {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  if (options.counts.length === 0) options.counts = [1, 4, 8];
  return options;
}

function cpuTicks(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

/** VmRSS and VmHWM of `pid` in MB. */
function memoryMb(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { rss: +(kb('VmRSS') / 1024).toFixed(1), peak: +(kb('VmHWM') / 1024).toFixed(1) };
}

async function run(options, viewers) {
  const { codec, width, height } = options;
  const daemon = await startDaemon({ video: `codecs = ["${codec}"]`, width, height, fps: 30 });
  await sleep(1000);
  const idle = memoryMb(daemon.pid);
  const browser = await launchChromium();
  try {
    const pages = [];
    for (let i = 0; i < viewers; i += 1) {
      const page = await openPage(browser, daemon.url);
      await dialAndWaitForFrames(page, 10, 60_000);
      pages.push(page);
    }
    await sleep(WARMUP_MS);
    const t0 = cpuTicks(daemon.pid);
    const frames0 = await Promise.all(pages.map((p) => stats(p).then((s) => s.framesDecoded)));
    const m0 = await daemon.metrics();
    await sleep(MEASURE_MS);
    const t1 = cpuTicks(daemon.pid);
    const frames1 = await Promise.all(pages.map((p) => stats(p).then((s) => s.framesDecoded)));
    const m1 = await daemon.metrics();
    const seconds = MEASURE_MS / 1000;
    const memory = memoryMb(daemon.pid);
    const fps = frames1.map((f, i) => +((f - frames0[i]) / seconds).toFixed(1));
    const encoded = (m1[`peercam_frames_encoded_total{codec="${codec}"}`] ?? 0)
      - (m0[`peercam_frames_encoded_total{codec="${codec}"}`] ?? 0);
    const dropped = (m1[`peercam_fanout_dropped_total{codec="${codec}"}`] ?? 0)
      - (m0[`peercam_fanout_dropped_total{codec="${codec}"}`] ?? 0);
    return {
      codec, width, height, viewers,
      cpuPercent: +((((t1 - t0) / CLOCK_TICKS) / seconds) * 100).toFixed(1),
      rssMb: memory.rss, peakRssMb: memory.peak, idleRssMb: idle.rss,
      encodedFps: +(encoded / seconds).toFixed(1), fanoutDropped: dropped, viewerFps: fps,
    };
  } finally {
    await browser.close();
    await daemon.stop();
  }
}

const options = parseArgs(process.argv.slice(2));
mkdirSync(options.out, { recursive: true });
const results = [];
for (const viewers of options.counts) {
  const r = await run(options, viewers);
  results.push(r);
  console.log(JSON.stringify(r));
}
console.log('\n| codec | viewers | daemon CPU (% of one core) | RSS MB (peak) | idle RSS MB | encoded fps | fps each viewer decoded | fan-out drops |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of results) {
  console.log(`| ${r.codec === 'h264' ? 'H.264' : 'AV1'} ${r.width}x${r.height}@30 | ${r.viewers} | ${r.cpuPercent} % `
    + `| ${r.rssMb} (${r.peakRssMb}) | ${r.idleRssMb} | ${r.encodedFps} | ${r.viewerFps.join(', ')} | ${r.fanoutDropped} |`);
}
const one = results.find((r) => r.viewers === 1);
const most = results.reduce((a, b) => (b.viewers > a.viewers ? b : a), results[0]);
let fanout = null;
if (one && most.viewers > 1 && one.cpuPercent > 0) {
  fanout = +(most.cpuPercent / one.cpuPercent).toFixed(2);
  console.log(`\nfan-out: CPU with ${most.viewers} viewers ÷ CPU with 1 = ${fanout}`);
}
const file = path.join(options.out, `viewers-${options.codec}.json`);
writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), fanout, results }, null, 1)}\n`);
console.log(`wrote ${file}`);
