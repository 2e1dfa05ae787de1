// Benchmark, not a test: the device's CPU when the crowd watches through an SFU. peercam's
// own CPU with (a) one Chromium viewer on its page, (b) one WHIP publication to Janus
// (VideoRoom, tests/sfu/) watched by four Chromium subscribers of Janus, and, for reference,
// (c) four Chromium viewers on peercam's page; Janus's CPU in (b) separately (the SFU's cost,
// not the device's). Runs in tests/sfu/run.sh's namespaces (Janus gathers no loopback
// candidates):
//
//   PEERCAM_BIN=target/release/peercam \
//     tests/sfu/run.sh --exec node benches/browser/sfu.mjs [--size WxH]... [--runs N] [--out DIR]
//
// Defaults: 640x480 and 320x240, 3 runs, H.264, 30 fps test pattern + test tone. Each run
// measures every size and case in turn (a, b, c, a, b, c, ...), each case with a fresh daemon
// (and a fresh Janus): once every viewer decodes, a 5 s warm-up, then the CPU time (utime +
// stime from /proc/PID/stat) of peercam and of Janus over 20 s, as a percentage of one core,
// and each viewer's decoded frame rate over the same window. Prints a line per measurement
// and the medians; writes sfu.json into DIR (default target/bench).

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  dialAndWaitForFrames, launchChromium, openPage, repoRoot, sleep, startDaemon, stats,
} from '../../tests/browser/helpers.mjs';
import {
  ICE_ADDRESS, cpuTicks, startJanus, startWhipFront, waitForMedia, watchInPage,
} from '../../tests/sfu/janus.mjs';

const WARMUP_MS = 5_000;
const MEASURE_MS = 20_000;
const CLOCK_TICKS = 100; // USER_HZ on Linux
const SFU_VIEWERS = 4;
const CASES = ['local-1', 'sfu-4', 'local-4'];

function parseArgs(argv) {
  const options = { sizes: [], runs: 3, out: path.join(repoRoot, 'target', 'bench'), cases: CASES };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--size') {
      const m = /^(\d+)x(\d+)$/.exec(argv[++i] ?? '');
      if (!m) throw new Error('--size: WIDTHxHEIGHT, e.g. 640x480');
      options.sizes.push([Number(m[1]), Number(m[2])]);
    } else if (arg === '--runs') {
      options.runs = Number(argv[++i]);
      if (!(options.runs >= 1)) throw new Error('--runs: a number, at least 1');
    } else if (arg === '--cases') {
      options.cases = (argv[++i] ?? '').split(',');
      if (!options.cases.every((c) => CASES.includes(c))) throw new Error(`--cases: of ${CASES}`);
    } else if (arg === '--out') {
      options.out = path.resolve(argv[++i] ?? '');
    } else {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  if (options.sizes.length === 0) options.sizes = [[640, 480], [320, 240]];
  return options;
}

function rssMb(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return +(Number(/VmRSS:\s+(\d+)/.exec(status)[1]) / 1024).toFixed(1);
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : +((sorted[mid - 1] + sorted[mid]) / 2).toFixed(2);
};

/** One measurement: `kind` is local-1, local-4 or sfu-4. */
async function measure(kind, width, height) {
  const sfu = kind.startsWith('sfu');
  const viewers = Number(kind.split('-')[1]);
  let janus = null;
  let front = null;
  let daemon = null;
  let browser = null;
  const handles = [];
  try {
    if (sfu) {
      janus = await startJanus();
      front = await startWhipFront({ janusUrl: janus.url, token: 'bench' });
    }
    const publish = sfu ? `[[publish]]\nurl = "${front.url}"\ntoken = "bench"\ncodecs = ["h264"]\n` : '';
    daemon = await startDaemon({
      width, height, fps: 30, video: 'codecs = ["h264"]', ipAddresses: [ICE_ADDRESS], extra: publish,
    });
    const target = sfu ? `{target="${front.url}"}` : '';
    browser = await launchChromium({ fakeMedia: false });
    const pages = [];
    if (sfu) {
      for (let i = 0; i < 200 && (await daemon.metrics())[`peercam_publish_state${target}`] !== 4; i += 1) {
        await sleep(100);
      }
      const { feed } = front.stats();
      for (let i = 0; i < viewers; i += 1) {
        const page = await browser.newPage();
        handles.push(await watchInPage(page, { connection: janus.connection, feed }));
        pages.push(page);
      }
      await Promise.all(pages.map((p) => waitForMedia(p, { frames: 10, audioPackets: 1 }, 60_000)));
    } else {
      for (let i = 0; i < viewers; i += 1) {
        const page = await openPage(browser, daemon.url);
        await dialAndWaitForFrames(page, 10, 60_000);
        pages.push(page);
      }
    }
    const frames = () => Promise.all(pages.map((p) => (sfu
      ? p.evaluate(() => window.sfuStats.framesDecoded)
      : stats(p).then((s) => s.framesDecoded))));
    await sleep(WARMUP_MS);
    const m0 = await daemon.metrics();
    const f0 = await frames();
    const p0 = cpuTicks(daemon.pid);
    const j0 = sfu ? cpuTicks(janus.pid) : 0;
    await sleep(MEASURE_MS);
    const p1 = cpuTicks(daemon.pid);
    const j1 = sfu ? cpuTicks(janus.pid) : 0;
    const f1 = await frames();
    const m1 = await daemon.metrics();
    const seconds = MEASURE_MS / 1000;
    const percent = (ticks) => +(((ticks / CLOCK_TICKS) / seconds) * 100).toFixed(1);
    const delta = (name) => (m1[name] ?? 0) - (m0[name] ?? 0);
    return {
      case: kind, width, height, viewers,
      peercamCpu: percent(p1 - p0),
      janusCpu: sfu ? percent(j1 - j0) : null,
      peercamRssMb: rssMb(daemon.pid),
      encodedFps: +(delta('peercam_frames_encoded_total{codec="h264"}') / seconds).toFixed(1),
      viewerFps: f1.map((f, i) => +((f - f0[i]) / seconds).toFixed(1)),
      peercamViewers: m1.peercam_viewers ?? 0,
      publishKbps: sfu ? +((delta(`peercam_publish_sent_bytes_total${target}`) * 8) / seconds / 1000).toFixed(0) : null,
      publishReconnects: sfu ? m1[`peercam_publish_reconnects_total${target}`] : null,
      // The machine's 1-minute load average at the end of the window (this run's own
      // processes included): a high one says others shared the cores.
      load: +os.loadavg()[0].toFixed(2),
    };
  } finally {
    for (const h of handles) await h.close().catch(() => {});
    await browser?.close().catch(() => {});
    await daemon?.stop().catch(() => {});
    await front?.close().catch(() => {});
    await janus?.stop().catch(() => {});
  }
}

const options = parseArgs(process.argv.slice(2));
mkdirSync(options.out, { recursive: true });
const results = [];
for (let run = 1; run <= options.runs; run += 1) {
  for (const [width, height] of options.sizes) {
    for (const kind of options.cases) {
      const r = { run, ...(await measure(kind, width, height)) };
      results.push(r);
      console.log(JSON.stringify(r));
    }
  }
}
writeFileSync(path.join(options.out, 'sfu.json'), `${JSON.stringify(results, null, 1)}\n`);

const label = {
  'local-1': '(a) 1 viewer on peercam\'s page',
  'sfu-4': `(b) 1 WHIP publish to Janus, ${SFU_VIEWERS} viewers on Janus`,
  'local-4': '(c) 4 viewers on peercam\'s page',
};
console.log(`\n${options.runs} run(s); medians, each run's figure in brackets\n`);
console.log('| size | case | peercam CPU (% of one core) | Janus CPU | peercam RSS MB | encoded fps | viewers\' fps (median of each) | publish kbit/s |');
console.log('|---|---|---|---|---|---|---|---|');
for (const [width, height] of options.sizes) {
  for (const kind of options.cases) {
    const rs = results.filter((r) => r.case === kind && r.width === width);
    const cpu = rs.map((r) => r.peercamCpu);
    const janus = rs.map((r) => r.janusCpu);
    const fps = rs.map((r) => median(r.viewerFps));
    console.log(`| ${width}x${height}@30 | ${label[kind]} | **${median(cpu)} %** (${cpu.join(', ')}) `
      + `| ${kind.startsWith('sfu') ? `${median(janus)} % (${janus.join(', ')})` : '–'} `
      + `| ${median(rs.map((r) => r.peercamRssMb))} | ${median(rs.map((r) => r.encodedFps))} `
      + `| ${median(fps)} (${fps.join(', ')}) `
      + `| ${kind.startsWith('sfu') ? median(rs.map((r) => r.publishKbps)) : '–'} |`);
  }
}
