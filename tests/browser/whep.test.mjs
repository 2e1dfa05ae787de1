// Chromium as a WHEP player (draft-ietf-wish-whep) on a page of another origin: whep-player.html
// uses only fetch and RTCPeerConnection, is served by a small HTTP server on its own port, and
// reaches the daemon's /whep across origins. The daemon has a password and lists that origin in
// [server] cors_origins; a page served from a third port is not listed and is refused.
//
// Chromium's host candidates are mDNS names (<uuid>.local: the page never asked for a camera).
// The page trickles them and the daemon takes them (204), but webrtc-rs resolves no mDNS, so
// they are of no use: the call connects because Chromium checks the daemon's 127.0.0.1 from the
// answer and the daemon learns Chromium's address from those checks (peer-reflexive).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { launchChromium, sleep, startDaemon } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PLAYER = readFileSync(path.join(here, 'whep-player.html'));
const PASSWORD = 'whep player secret';

/** Serves the player page at / on a free port of 127.0.0.1: one origin of its own. */
async function servePlayer() {
  const server = http.createServer((request, response) => {
    if (request.method === 'GET' && new URL(request.url, 'http://x').pathname === '/') {
      response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      response.end(PLAYER);
    } else {
      response.writeHead(404, { 'Content-Type': 'text/plain' });
      response.end('not found\n');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return { origin, url: `${origin}/`, close: () => new Promise((r) => server.close(r)) };
}

let browser;
let daemon;
let allowed; // the player's origin, in cors_origins
let other; // the same page from an origin that is not
before(async () => {
  allowed = await servePlayer();
  other = await servePlayer();
  browser = await launchChromium({ fakeMedia: false });
  daemon = await startDaemon({
    password: PASSWORD,
    width: 320,
    height: 240,
    video: 'codecs = ["h264"]',
    server: `cors_origins = ["${allowed.origin}"]`,
  });
});
after(async () => {
  await browser?.close();
  await daemon?.stop();
  await allowed?.close();
  await other?.close();
});

/** Opens the player from `site` in a new context, pointed at the daemon with the password. */
async function openPlayer(site) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(error.message));
  page.consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') page.consoleErrors.push(m.text()); });
  page.failedResponses = [];
  page.on('response', (r) => {
    if (r.status() >= 400) page.failedResponses.push(`${r.request().method()} ${r.url()} ${r.status()}`);
  });
  await page.goto(site.url);
  await page.fill('#endpoint', `${daemon.url}whep`);
  await page.fill('#token', PASSWORD);
  return { context, page };
}

/** window.whep and window.whepStats, for assertions and failure messages. */
function playerState(page) {
  return page.evaluate(() => ({ whep: window.whep, stats: window.whepStats }));
}

/** Waits until the player decoded `frames` frames (and has audio); returns its state. */
async function waitForPlayback(page, frames, timeoutMs = 20_000) {
  try {
    await page.waitForFunction((n) => window.whepStats && window.whepStats.framesDecoded >= n
      && window.whepStats.audioSamples > 0, frames, { timeout: timeoutMs, polling: 100 });
  } catch {
    const state = await playerState(page).catch(() => ({}));
    throw new Error(`no ${frames} frames and audio within ${timeoutMs} ms: ${JSON.stringify(state)}\n`
      + daemon.log.slice(-15).join('\n'));
  }
  return playerState(page);
}

/** Polls the daemon's /metrics until `check(values)` holds; returns the values. */
async function metricsUntil(check, what, timeoutMs = 5000) {
  const started = Date.now();
  for (;;) {
    const values = await daemon.metrics();
    if (check(values)) return values;
    if (Date.now() - started > timeoutMs) {
      throw new Error(`metrics never showed ${what}: ${JSON.stringify(Object.fromEntries(
        Object.entries(values).filter(([k]) => /whep|limit_hits/.test(k))))}`);
    }
    await sleep(100);
  }
}

const REFUSED = 'peercam_limit_hits_total{limit="cors_origins"}';

describe('WHEP player page (chromium)', () => {
  test('a page on a cors_origins origin plays H.264 and audio, then hangs up with DELETE',
    { timeout: 60_000 }, async () => {
      const { context, page } = await openPlayer(allowed);
      const started = Date.now();
      await page.click('#play');
      const { whep, stats } = await waitForPlayback(page, 60);
      const playMs = Date.now() - started;
      assert.equal(whep.postStatus, 201);
      assert.match(whep.location, new RegExp(`^${daemon.url}whep/[0-9a-f]{32}$`));
      assert.match(whep.etag, /^".+"$/);
      assert.equal(whep.acceptPatch, 'application/trickle-ice-sdpfrag');
      assert.ok(whep.answerCandidates > 0, 'the answer carries the daemon\'s candidates');
      assert.equal(whep.state, 'playing');
      assert.equal(whep.error, null);
      assert.equal(stats.codec, 'video/H264');
      assert.equal(stats.frameWidth, 320);
      assert.equal(stats.frameHeight, 240);
      assert.equal(stats.audioCodec, 'audio/opus');
      assert.ok(stats.audioSamples > 0, `audio samples ${stats.audioSamples}`);
      // The page trickled what Chromium gathered; every PATCH was taken.
      await page.waitForFunction(() => window.whep.endOfCandidates
        && window.whep.patchStatuses.length > 0, null, { timeout: 5000 });
      const trickle = await playerState(page);
      assert.ok(trickle.whep.patchStatuses.every((s) => s === 204),
        `PATCH statuses ${JSON.stringify(trickle.whep.patchStatuses)}`);
      const during = await daemon.metrics();
      assert.equal(during.peercam_whep_sessions, 1);

      await page.click('#hangup');
      await page.waitForFunction(() => window.whep.deleteStatus !== null, null, { timeout: 5000 });
      const ended = await playerState(page);
      assert.equal(ended.whep.deleteStatus, 200);
      assert.equal(ended.whep.state, 'ended');
      const values = await metricsUntil((v) => v.peercam_whep_sessions === 0,
        'peercam_whep_sessions 0');
      assert.equal(values.peercam_whep_sessions_total, 1);
      assert.equal(values[REFUSED], 0);
      assert.deepEqual(page.errors, []);
      assert.deepEqual(page.failedResponses, []);
      assert.deepEqual(page.consoleErrors, []);
      console.log(`# WHEP: ${stats.framesDecoded} frames in ${playMs} ms from Play; trickled `
        + `${trickle.whep.trickled.length} candidates (${trickle.whep.trickled.map((c) =>
          c.split(' ')[4]).join(', ')}) in ${trickle.whep.patchStatuses.length} PATCH; `
        + `selected pair ${stats.localCandidateType} -> ${stats.remoteCandidateType}`);
      await context.close();
    });

  test('refused: an origin not in cors_origins, a wrong password; a listed page plays on',
    { timeout: 60_000 }, async () => {
      const start = await daemon.metrics();
      // A viewer from the listed origin keeps watching through the refusal.
      const watcher = await openPlayer(allowed);
      await watcher.page.click('#play');
      const first = await waitForPlayback(watcher.page, 30);

      const { context, page } = await openPlayer(other);
      await page.click('#play');
      await page.waitForFunction(() => window.whep.state === 'failed', null, { timeout: 10_000 });
      const refused = await playerState(page);
      // The preflight (OPTIONS) got 403 without CORS headers: fetch rejects, no status to read.
      assert.equal(refused.whep.postStatus, null);
      assert.match(refused.whep.error, /^POST .*\/whep: Failed to fetch$/);
      assert.equal(refused.whep.location, null);
      assert.ok(refused.stats === null, 'no stats: no call');
      assert.ok(page.consoleErrors.some((e) => /CORS/.test(e)),
        `Chromium names CORS: ${JSON.stringify(page.consoleErrors)}`);
      const values = await metricsUntil((v) => v[REFUSED] >= 1, `${REFUSED} >= 1`);
      assert.equal(values.peercam_whep_sessions, 1, 'only the listed page\'s session');
      assert.equal(values.peercam_whep_sessions_total, start.peercam_whep_sessions_total + 1);

      // A script (no browser) sending that Origin sees why.
      const response = await fetch(`${daemon.url}whep`, {
        method: 'POST',
        headers: { ...daemon.headers, Origin: other.origin, 'Content-Type': 'application/sdp' },
        body: 'v=0\r\n',
      });
      assert.equal(response.status, 403);
      assert.equal(response.headers.get('access-control-allow-origin'), null);
      assert.match(await response.text(), /cors_origins/);

      // A wrong password from the listed origin: the 401 carries the CORS headers, so the page
      // can read it.
      const guesser = await openPlayer(allowed);
      await guesser.page.fill('#token', 'not the password');
      await guesser.page.click('#play');
      await guesser.page.waitForFunction(() => window.whep.state === 'failed', null,
        { timeout: 10_000 });
      const wrong = (await playerState(guesser.page)).whep;
      assert.equal(wrong.postStatus, 401);
      assert.match(wrong.error, /^POST answered 401: 401 Unauthorized: .*Authorization: Bearer/);
      await guesser.context.close();

      // Nothing else broke: the listed page still decodes and hangs up cleanly.
      const later = await waitForPlayback(watcher.page, first.stats.framesDecoded + 30);
      assert.equal(later.whep.state, 'playing');
      await watcher.page.click('#hangup');
      await watcher.page.waitForFunction(() => window.whep.deleteStatus !== null, null,
        { timeout: 5000 });
      assert.equal((await playerState(watcher.page)).whep.deleteStatus, 200);
      await metricsUntil((v) => v.peercam_whep_sessions === 0, 'peercam_whep_sessions 0');
      assert.deepEqual(watcher.page.errors, []);
      assert.deepEqual(page.errors, []);
      await context.close();
      await watcher.context.close();
    });

  test('ICE restart from the page: PATCH with new credentials and If-Match, the video goes on',
    { timeout: 60_000 }, async () => {
      const { context, page } = await openPlayer(allowed);
      await page.click('#play');
      const first = await waitForPlayback(page, 30);
      const oldEtag = first.whep.etag;
      await page.click('#restart');
      await page.waitForFunction(() => window.whep.restarts === 1 || window.whep.state === 'failed',
        null, { timeout: 10_000 });
      const restarted = await playerState(page);
      assert.equal(restarted.whep.error, null);
      assert.equal(restarted.whep.restartStatus, 200);
      assert.notEqual(restarted.whep.etag, oldEtag, 'a new ETag for the new ICE session');
      // Frames keep coming over the restarted ICE session, and its candidates trickle with the
      // new ETag (204).
      const later = await waitForPlayback(page, restarted.stats.framesDecoded + 30, 10_000);
      assert.equal(later.whep.state, 'playing');
      await page.waitForFunction(() => window.whep.endOfCandidates, null, { timeout: 5000 });
      const { whep } = await playerState(page);
      assert.ok(whep.trickled.some((c) => / generation 1 /.test(c)), 'the restart\'s candidates');
      assert.ok(whep.patchStatuses.every((s) => s === 204),
        `PATCH statuses ${JSON.stringify(whep.patchStatuses)}`);
      // The ETag of the ICE session before the restart no longer matches.
      const stale = await page.evaluate(async ([tag, token]) => {
        const r = await fetch(window.whep.location, {
          method: 'PATCH',
          headers: {
            Authorization: `Bearer ${token}`, 'If-Match': tag,
            'Content-Type': 'application/trickle-ice-sdpfrag',
          },
          body: 'a=end-of-candidates\r\n',
        });
        return r.status;
      }, [oldEtag, PASSWORD]);
      assert.equal(stale, 412);
      await page.click('#hangup');
      await page.waitForFunction(() => window.whep.deleteStatus !== null, null, { timeout: 5000 });
      assert.equal((await playerState(page)).whep.deleteStatus, 200);
      await metricsUntil((v) => v.peercam_whep_sessions === 0, 'peercam_whep_sessions 0');
      assert.deepEqual(page.errors, []);
      await context.close();
    });
});
