// Chromium against the real daemon (test pattern + test tone): H.264, AV1, two viewers with a
// misbehaving third client, and the viewer limit. Every number asserted comes from getStats().

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  dialAndWaitForFrames, freeUdpPort, launchChromium, openPage, pageState, rawClient,
  recordPeerConnections, screenshot, sleep, startDaemon, stats, waitForFrames,
} from './helpers.mjs';

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

/** Runs `body(daemon)` with a daemon started with `options`, stopping it afterwards. */
async function withDaemon(options, body) {
  const daemon = await startDaemon(options);
  try {
    await body(daemon);
  } finally {
    await daemon.stop();
  }
}

describe('chromium', () => {
  test('H.264: Dial streams 640x480 video and audio', { timeout: 60_000 }, () =>
    withDaemon({ video: 'codecs = ["h264"]' }, async (daemon) => {
      const context = await browser.newContext();
      const page = await openPage(context, daemon.url);
      const s = await dialAndWaitForFrames(page, 60);
      assert.equal(s.codec, 'video/H264');
      assert.equal(s.frameWidth, 640);
      assert.equal(s.frameHeight, 480);
      // Audio arrives slightly after video may start; give the next stats sample a chance.
      await page.waitForFunction(() => window.peercamStats.audioSamples > 0, null,
        { timeout: 5000 });
      const state = await pageState(page);
      assert.equal(state.state, 'connected');
      assert.equal(state.status, 'connected');
      assert.ok(state.stats.bitrateKbps > 0, `bitrate ${state.stats.bitrateKbps}`);
      assert.ok(state.stats.rttMs !== null && state.stats.rttMs < 1000, `rtt ${state.stats.rttMs}`);
      // Glass-to-glass latency read back from the test pattern's barcode (same machine clock).
      await page.waitForFunction(() => window.peercamLatency.samples.length >= 30, null,
        { timeout: 5000 });
      const latency = await page.evaluate(() => window.peercamLatency);
      assert.ok(latency.p50 > 0 && latency.p50 < 1000, `latency p50 ${latency.p50} ms`);
      await page.waitForFunction(() => /latency \d+ ms/.test(
        document.getElementById('stats').textContent), null, { timeout: 3000 });
      const text = await page.textContent('#stats');
      assert.match(text, /H264 · 640×480/);
      await screenshot(page);
      // Hang up returns to idle and the daemon frees the viewer slot.
      await page.click('#hangup');
      assert.equal(await page.evaluate(() => window.peercamState), 'idle');
      // The daemon's reply to our bye must not end the next call on the same socket.
      const again = await dialAndWaitForFrames(page, 30);
      assert.equal(again.codec, 'video/H264');
      await sleep(1500);
      assert.equal((await pageState(page)).state, 'connected');
      assert.deepEqual(page.errors, []);
      await context.close();
    }));

  test('[webrtc] udp_port: two pages stream at once through the one UDP port',
    { timeout: 60_000 }, async () => {
      const udpPort = await freeUdpPort();
      await withDaemon({ video: 'codecs = ["h264"]', udpPort }, async (daemon) => {
        const context = await browser.newContext();
        await context.addInitScript(recordPeerConnections);
        const pages = [await openPage(context, daemon.url), await openPage(context, daemon.url)];
        for (const page of pages) await dialAndWaitForFrames(page, 60);
        for (const page of pages) {
          // The selected pair's remote end (the daemon) is the one port.
          const remote = await page.evaluate(async () => {
            const report = await window.testPeers.at(-1).getStats();
            const all = [...report.values()];
            const pair = all.find((s) => s.type === 'candidate-pair' && s.nominated
              && s.state === 'succeeded');
            const candidate = pair && all.find((s) => s.id === pair.remoteCandidateId);
            return candidate ? { port: candidate.port, type: candidate.candidateType } : null;
          });
          assert.deepEqual(remote, { port: udpPort, type: 'host' });
          // The stats line says how the media travels: here straight over the LAN.
          const { path } = await stats(page);
          assert.deepEqual(path, {
            kind: 'direct', local: 'host', remote: 'host', protocol: 'UDP',
          });
          await page.waitForFunction(() => /direct UDP/.test(
            document.getElementById('stats').textContent), null, { timeout: 3000 });
          const before = (await stats(page)).framesDecoded;
          await sleep(1000);
          assert.ok((await stats(page)).framesDecoded >= before + 20, 'both keep streaming');
        }
        assert.deepEqual(pages.flatMap((p) => p.errors), []);
        await context.close();
      });
    });

  test('reload with a new frame size: the page dials again by itself', { timeout: 60_000 }, () =>
    withDaemon({ video: 'codecs = ["h264"]' }, async (daemon) => {
      const context = await browser.newContext();
      const page = await openPage(context, daemon.url);
      const first = await dialAndWaitForFrames(page, 30);
      assert.equal(first.frameWidth, 640);
      const config = readFileSync(daemon.configPath, 'utf8');
      writeFileSync(daemon.configPath, config.replace('width = 640', 'width = 320')
        .replace('height = 480', 'height = 240'));
      process.kill(daemon.pid, 'SIGHUP');
      // The call ends with bye {reason: "reload"}; the page reconnects and decodes 320x240.
      await page.waitForFunction(() => window.peercamStats && window.peercamStats.frameWidth === 320
        && window.peercamStats.framesDecoded >= 30, null, { timeout: 20_000, polling: 250 });
      const state = await pageState(page);
      assert.equal(state.state, 'connected');
      assert.equal(state.stats.frameHeight, 240);
      assert.ok(daemon.log.some((l) => l.includes('reload:') && l.includes('[video] changed')),
        daemon.log.slice(-10).join('\n'));
      assert.deepEqual(page.errors, []);
      await context.close();
    }));

  test('AV1: Dial decodes AV1 when it is the only codec', { timeout: 60_000 }, () =>
    withDaemon({ video: 'codecs = ["av1"]' }, async (daemon) => {
      const context = await browser.newContext();
      const page = await openPage(context, daemon.url);
      const s = await dialAndWaitForFrames(page, 60, 30_000);
      assert.equal(s.codec, 'video/AV1');
      assert.equal(s.frameWidth, 640);
      assert.equal((await pageState(page)).state, 'connected');
      assert.deepEqual(page.errors, []);
      await context.close();
    }));

  test('two viewers stream while a third client sends garbage', { timeout: 90_000 }, () =>
    withDaemon({ video: 'codecs = ["h264"]', limits: 'max_message_bytes = 65536' },
      async (daemon) => {
        const contexts = [await browser.newContext(), await browser.newContext()];
        const pages = await Promise.all(contexts.map((c) => openPage(c, daemon.url)));
        await Promise.all(pages.map((p) => p.click('#dial')));
        await Promise.all(pages.map((p) => waitForFrames(p, 60)));

        const { client, hello } = await rawClient(daemon.wsUrl);
        assert.equal(hello.hello.mode, 'viewer');
        assert.equal(hello.hello.viewers, 2);
        const garbage = [
          ['this is not JSON {', 'bad_json'],
          ['[1, 2, 3]', 'bad_json'],
          ['{"dance": {"with": "me"}}', 'unknown_type'],
          [`{"sdp": {"type": "offer", "sdp": "${'a'.repeat(100_000)}"}}`, 'too_large'],
          ['{"candidate": {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host",'
            + ' "sdpMid": "0", "sdpMLineIndex": 0}}', 'unexpected'],
          ['{"sdp": {"type": "answer", "sdp": "v=0"}}', 'unexpected'],
          ['{"sdp": {"type": "offer", "sdp": "not an sdp"}}', null],
        ];
        for (const [text, code] of garbage) {
          client.send(text);
          const reply = await client.next();
          assert.ok(reply.error, `expected an error for ${text.slice(0, 60)}, got ${JSON.stringify(reply)}`);
          assert.ok(reply.error.message.length > 0);
          if (code) assert.equal(reply.error.code, code, reply.error.message);
        }
        client.close();

        const before = await Promise.all(pages.map(stats));
        await sleep(2500);
        const later = await Promise.all(pages.map(stats));
        for (let i = 0; i < pages.length; i++) {
          assert.ok(later[i].framesDecoded > before[i].framesDecoded + 20,
            `viewer ${i}: ${before[i].framesDecoded} -> ${later[i].framesDecoded} frames`);
          assert.equal((await pageState(pages[i])).state, 'connected');
          assert.deepEqual(pages[i].errors, []);
        }
        await Promise.all(contexts.map((c) => c.close()));
      }));

  test('viewer limit: the second Dial shows the server error', { timeout: 60_000 }, () =>
    withDaemon({ video: 'codecs = ["h264"]', limits: 'max_viewers = 1' }, async (daemon) => {
      const contexts = [await browser.newContext(), await browser.newContext()];
      // One after the other: each page dials as it opens.
      const first = await openPage(contexts[0], daemon.url);
      await dialAndWaitForFrames(first, 10);
      const second = await openPage(contexts[1], daemon.url);
      await second.click('#dial'); // it dialled already; Dial after a refusal tries again
      await second.waitForFunction(() => window.peercamState === 'failed', null,
        { timeout: 10_000 });
      const state = await pageState(second);
      assert.match(state.error, /viewer limit 1 reached/);
      assert.match(state.status, /viewer limit 1 reached/);
      // The first viewer is unaffected; after it hangs up the second one gets in.
      assert.equal((await pageState(first)).state, 'connected');
      await first.click('#hangup');
      await sleep(500);
      await dialAndWaitForFrames(second, 10);
      assert.equal((await pageState(second)).state, 'connected');
      await Promise.all(contexts.map((c) => c.close()));
    }));

  test('room mode: two browsers call each other, a third is refused', { timeout: 60_000 }, () =>
    withDaemon({ video: 'codecs = ["h264"]' }, async (daemon) => {
      const roomUrl = `${daemon.url}?room=kitchen`;
      const contexts = [await browser.newContext(), await browser.newContext()];
      const [caller, callee] = await Promise.all(contexts.map((c) => openPage(c, roomUrl)));
      await callee.waitForFunction(() => /room kitchen/.test(
        document.getElementById('server').textContent), null, { timeout: 5000 });
      // Chromium's fake camera: both directions carry video and audio (browser-chosen codec).
      await caller.click('#dial');
      const [a, b] = await Promise.all([waitForFrames(caller, 30), waitForFrames(callee, 30)]);
      for (const s of [a, b]) assert.ok(s.frameWidth > 0 && s.codec, JSON.stringify(s));
      await Promise.all([caller, callee].map((p) => p.waitForFunction(
        () => window.peercamStats.audioSamples > 0, null, { timeout: 5000 })));
      const third = await openPage(await browser.newContext(), roomUrl);
      await third.waitForFunction(() => window.peercamState === 'failed', null, { timeout: 5000 });
      const refused = await pageState(third);
      assert.match(refused.error, /kitchen/, refused.error); // the server names the full room
      // Hanging up on one side returns both to idle.
      await callee.click('#hangup');
      await caller.waitForFunction(() => window.peercamState === 'idle', null, { timeout: 5000 });
      assert.match((await pageState(caller)).status, /hung up/);
      for (const p of [caller, callee, third]) assert.deepEqual(p.errors, []);
      await third.context().close();
      await Promise.all(contexts.map((c) => c.close()));
    }));

  test('daemon shutdown: the page says the camera is offline and retries', { timeout: 60_000 }, async () => {
    const daemon = await startDaemon({ video: 'codecs = ["h264"]' });
    const context = await browser.newContext();
    try {
      const page = await openPage(context, daemon.url);
      await dialAndWaitForFrames(page, 10);
      await daemon.stop(); // SIGTERM: the daemon says bye to every viewer
      await page.waitForFunction(() => window.peercamState === 'retrying', null,
        { timeout: 10_000 });
      const state = await pageState(page);
      assert.match(state.status, /^camera offline — retrying in \d+ s$/, JSON.stringify(state));
      assert.match(state.error, /camera stopped or is restarting/);
      assert.equal(state.stats, null, 'no stale numbers');
      assert.equal(await page.textContent('#stats'), '');
      assert.equal(await page.isEnabled('#dial'), true);
      // Hang up stops the retries.
      await page.click('#hangup');
      assert.equal((await pageState(page)).state, 'idle');
      await sleep(2500);
      assert.equal((await pageState(page)).state, 'idle');
      assert.deepEqual(page.errors, []);
    } finally {
      await context.close();
      await daemon.stop();
    }
  });
});
