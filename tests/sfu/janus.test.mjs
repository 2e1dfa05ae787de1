// Scale-out on a real SFU: peercam publishes its stream once over WHIP to Janus (Debian's
// janus, VideoRoom plugin, behind the WHIP endpoint of janus.mjs), and four headless Chromium
// pages watch it through Janus as VideoRoom subscribers. Every figure is from the pages'
// RTCPeerConnection.getStats(), peercam's /metrics and Janus's own API.
//
// peercam is pointed at the front's /ingest, which answers 307 to /whip: the redirect is
// followed, and the session's relative Location resolves against /whip. Then Janus crashes
// and comes back behind the same URL (peercam publishes again), and peercam stops (DELETE).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import VideoRoomPlugin from 'janode/plugins/videoroom';
import { launchChromium, sleep, startDaemon } from '../browser/helpers.mjs';
import {
  ICE_ADDRESS, ROOM, startJanus, startWhipFront, waitForMedia, watchInPage,
} from './janus.mjs';

const TOKEN = 'sfu test token';
const VIEWERS = 4;
const FRAMES = 60;

let janus;
let front;
let daemon;
let browser;
const viewers = [];
let publishUrl;
const timings = {};

before(async () => {
  let t = Date.now();
  janus = await startJanus();
  timings.janusStartMs = Date.now() - t;
  front = await startWhipFront({ janusUrl: janus.url, token: TOKEN });
  publishUrl = front.redirectingUrl;
  t = Date.now();
  daemon = await startDaemon({
    width: 320,
    height: 240,
    video: 'codecs = ["h264"]',
    // Janus's candidates are on the namespace's address (run.sh), not on loopback.
    ipAddresses: [ICE_ADDRESS],
    extra: `[[publish]]\nurl = "${publishUrl}"\ntoken = "${TOKEN}"\ncodecs = ["h264"]\n`,
  });
  timings.daemonStartMs = Date.now() - t;
});

after(async () => {
  for (const v of viewers) await v.close().catch(() => {});
  await browser?.close().catch(() => {});
  await daemon?.stop().catch(() => {});
  await front?.close().catch(() => {});
  await janus?.stop().catch(() => {});
  if (process.env.SFU_TIMINGS) console.log(JSON.stringify({ timings }));
});

/** Polls `read()` until `check(value)`; fails with the last value and `explain()`. */
async function until(read, check, timeoutMs, explain = async () => '') {
  const deadline = Date.now() + timeoutMs;
  let value;
  for (;;) {
    value = await read();
    if (check(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`not reached within ${timeoutMs} ms: ${JSON.stringify(value)}\n${await explain()}`);
    }
    await sleep(200);
  }
}

const explain = async () => [
  'front:', JSON.stringify(front.stats(), (k, v) => (k.endsWith('Sdp') ? undefined : v)),
  'peercam:', ...daemon.log.filter((l) => /publish|WARN|ERROR/.test(l)).slice(-15),
  'janus:', ...janus.log.filter((l) => /ERR|WARN|videoroom|VideoRoom/.test(l)).slice(-15),
].join('\n');

/** The room's participants, as Janus lists them. */
async function participants() {
  const session = await janus.connection.create();
  try {
    const handle = await session.attach(VideoRoomPlugin);
    const list = await handle.listParticipants({ room: ROOM });
    await handle.detach();
    return list.participants;
  } finally {
    await session.destroy().catch(() => {});
  }
}

test('peercam publishes to Janus over WHIP (307 followed, bearer token) and goes live', async () => {
  const t = Date.now();
  const metric = `peercam_publish_state{target="${publishUrl}"}`;
  await until(() => daemon.metrics().then((m) => m[metric]), (state) => state === 4, 20_000, explain);
  timings.liveMs = Date.now() - t;

  const stats = front.stats();
  assert.equal(stats.redirects, 1, 'one POST to /ingest, redirected');
  assert.equal(stats.posts, 1, 'one POST to /whip');
  assert.equal(stats.created, 1);
  assert.deepEqual(stats.rejected, {}, 'nothing refused (the token was sent after the redirect)');

  // The offer: send-only H.264 Constrained Baseline and Opus, BUNDLE, candidates inside.
  const offer = stats.lastOffer;
  assert.ok(offer.bundle, 'BUNDLE');
  const video = offer.media.find((m) => m.kind === 'video');
  const audio = offer.media.find((m) => m.kind === 'audio');
  assert.equal(video.direction, 'sendonly');
  assert.equal(audio.direction, 'sendonly');
  assert.ok(video.codecs.includes('102 H264'), JSON.stringify(video));
  assert.ok(video.fmtp.some((f) => f.startsWith('102 ') && f.includes('profile-level-id=42e01f')),
    JSON.stringify(video));
  assert.ok(audio.codecs.includes('111 opus'), JSON.stringify(audio));
  assert.ok(offer.media.some((m) => m.candidates > 0), 'candidates in the offer');

  // Janus's answer: H.264 and Opus, its own candidates inside.
  const answer = stats.lastAnswer;
  assert.ok(answer.media.find((m) => m.kind === 'video').codecs.some((c) => / H264$/.test(c)),
    JSON.stringify(answer));
  assert.ok(answer.media.find((m) => m.kind === 'audio').codecs.some((c) => / opus$/.test(c)),
    JSON.stringify(answer));
  assert.ok(answer.media.some((m) => m.candidates > 0), 'candidates in the answer');

  // Janus sees one publisher in the room, with an H.264 and an Opus stream.
  const list = await until(participants, (l) => l.length === 1 && l[0].publisher, 10_000, explain);
  assert.equal(list[0].feed, stats.feed);
});

test(`${VIEWERS} Chromium viewers watch through Janus: ${FRAMES} H.264 frames at 320x240 and Opus each`,
  async () => {
    const { feed } = front.stats();
    assert.ok(feed, 'a publisher feed');
    const before = await daemon.metrics();
    browser = await launchChromium({ fakeMedia: false });
    const t = Date.now();
    const pages = [];
    for (let i = 0; i < VIEWERS; i += 1) {
      const page = await browser.newPage();
      page.errors = [];
      page.on('pageerror', (error) => page.errors.push(error.message));
      viewers.push(await watchInPage(page, { connection: janus.connection, feed }));
      pages.push(page);
    }
    const results = await Promise.all(pages.map(async (page) => {
      const s = await waitForMedia(page, { frames: FRAMES, audioPackets: 50 }, 30_000)
        .catch(async (error) => { throw new Error(`${error.message}\n${await explain()}`); });
      return { ...s, ms: Date.now() - t, errors: page.errors };
    }));
    timings.viewersMs = results.map((r) => r.ms);
    for (const [i, r] of results.entries()) {
      const where = `viewer ${i + 1}: ${JSON.stringify(r)}`;
      assert.equal(r.videoCodec, 'video/H264', where);
      assert.ok(r.framesDecoded >= FRAMES, where);
      assert.equal(r.frameWidth, 320, where);
      assert.equal(r.frameHeight, 240, where);
      assert.equal(r.audioCodec, 'audio/opus', where);
      assert.ok(r.audioPackets >= 50, where);
      assert.ok(r.audioSamples > 0, where);
      assert.deepEqual(r.errors, [], where);
    }
    // Four viewers, and peercam still sends one stream: no viewer of its own, the
    // publication live all along, its bytes going up.
    const now = await daemon.metrics();
    assert.equal(now.peercam_viewers ?? 0, 0, 'the viewers are Janus\'s, not peercam\'s');
    assert.equal(now[`peercam_publish_state{target="${publishUrl}"}`], 4);
    assert.equal(now[`peercam_publish_reconnects_total{target="${publishUrl}"}`], 0);
    const sent = `peercam_publish_sent_bytes_total{target="${publishUrl}"}`;
    assert.ok(now[sent] > before[sent], `${before[sent]} -> ${now[sent]} bytes`);
    assert.equal(front.stats().posts, 1, 'still the first session');
    const list = await participants();
    assert.equal(list.length, 1, JSON.stringify(list));
  });

test('Janus killed and started again behind the same WHIP URL: peercam publishes again', async () => {
  const port = Number(new URL(front.url).port);
  const state = `peercam_publish_state{target="${publishUrl}"}`;
  const reconnects = `peercam_publish_reconnects_total{target="${publishUrl}"}`;
  // The SFU crashes; its viewers and the WHIP front go with it.
  viewers.length = 0;
  await browser.close();
  browser = null;
  await janus.kill();
  await front.close();
  await janus.stop();
  const t = Date.now();
  janus = await startJanus();
  front = await startWhipFront({ janusUrl: janus.url, token: TOKEN, port });
  const m = await until(() => daemon.metrics(), (v) => v[state] === 4 && v[reconnects] >= 1,
    30_000, explain);
  timings.republishMs = Date.now() - t;
  const stats = front.stats();
  assert.equal(stats.created, 1, JSON.stringify(stats.requests));
  assert.ok(m[reconnects] >= 1);
  // A new viewer of the new Janus sees the camera.
  browser = await launchChromium({ fakeMedia: false });
  const page = await browser.newPage();
  viewers.push(await watchInPage(page, { connection: janus.connection, feed: stats.feed }));
  const s = await waitForMedia(page, { frames: 30, audioPackets: 20 }, 20_000)
    .catch(async (error) => { throw new Error(`${error.message}\n${await explain()}`); });
  assert.equal(s.videoCodec, 'video/H264', JSON.stringify(s));
  assert.equal(s.frameWidth, 320, JSON.stringify(s));
});

test('stopping peercam DELETEs the WHIP session and Janus drops the publisher', async () => {
  await daemon.stop();
  assert.equal(daemon.exited, 'exit code 0');
  daemon = null;
  const stats = front.stats();
  assert.equal(stats.deletes, 1, JSON.stringify(stats.requests));
  assert.deepEqual(stats.deleted, ['1']);
  assert.equal(stats.live, 0);
  await until(participants, (l) => l.length === 0, 10_000);
});
