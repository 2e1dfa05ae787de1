// Starts the daemon, dials from headless Chromium, waits for 60 decoded frames and saves a
// PNG of the page: `node screenshot.mjs [out.png] [codec]` (default /tmp/peercam-page.png, h264).

import { dialAndWaitForFrames, launchChromium, openPage, pageState, screenshot, sleep, startDaemon }
  from './helpers.mjs';

const file = process.argv[2] || '/tmp/peercam-page.png';
const codec = process.argv[3] || 'h264';
const daemon = await startDaemon({ video: `codecs = ["${codec}"]` });
const browser = await launchChromium();
try {
  const page = await openPage(browser, daemon.url);
  await dialAndWaitForFrames(page, 60, 30_000);
  await sleep(1500); // let the stats line show bitrate and latency
  await screenshot(page, file);
  console.log(JSON.stringify(await pageState(page)));
  console.log(`saved ${file}`);
} finally {
  await browser.close();
  await daemon.stop();
}
