// Benchmark, not a test: CPU% and RSS of the daemon with N headless Chromium viewers.
// `PEERCAM_BIN=target/release/peercam node tests/browser/bench-viewers.mjs [codec] [viewers...]`
// e.g. `... bench-viewers.mjs h264 1 4`. Prints one line per viewer count.

import { readFileSync } from 'node:fs';
import { dialAndWaitForFrames, launchChromium, openPage, sleep, startDaemon, stats }
  from './helpers.mjs';

const codec = process.argv[2] || 'h264';
const counts = process.argv.slice(3).map(Number).filter((n) => n > 0);
if (counts.length === 0) counts.push(1);
const WARMUP_MS = 5_000;
const MEASURE_MS = 20_000;
const CLOCK_TICKS = 100; // USER_HZ on Linux

function cpuTicks(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

function rssKb(pid) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return m ? Number(m[1]) : NaN;
}

for (const viewers of counts) {
  const daemon = await startDaemon({ video: `codecs = ["${codec}"]` });
  const idleRss = rssKb(daemon.pid);
  const browser = await launchChromium();
  try {
    const pages = [];
    for (let i = 0; i < viewers; i += 1) {
      const page = await openPage(browser, daemon.url);
      await dialAndWaitForFrames(page, 10, 30_000);
      pages.push(page);
    }
    await sleep(WARMUP_MS);
    const t0 = cpuTicks(daemon.pid);
    const frames0 = await Promise.all(pages.map((p) => stats(p).then((s) => s.framesDecoded)));
    await sleep(MEASURE_MS);
    const t1 = cpuTicks(daemon.pid);
    const frames1 = await Promise.all(pages.map((p) => stats(p).then((s) => s.framesDecoded)));
    const cpu = ((t1 - t0) / CLOCK_TICKS) / (MEASURE_MS / 1000) * 100;
    const fps = frames1.map((f, i) => ((f - frames0[i]) / (MEASURE_MS / 1000)).toFixed(1));
    console.log(`${codec} viewers=${viewers} daemon_cpu=${cpu.toFixed(1)}% (of one core) `
      + `rss=${(rssKb(daemon.pid) / 1024).toFixed(1)}MB idle_rss=${(idleRss / 1024).toFixed(1)}MB `
      + `viewer_fps=${fps.join(',')}`);
  } finally {
    await browser.close();
    await daemon.stop();
  }
}
