// The daemon in the VM (tests/vm/run.sh boots it), dialed from the host: the page and a
// signaling hello over the forwarded TCP port, then headless Chromium over the forwarded UDP
// ports. PEERCAM_VM_URL is the forwarded page (http://127.0.0.1:17000/ by default).
// On failure the ICE candidates and pairs Chromium saw are printed (getStats of every peer).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { chromium } from '../browser/node_modules/playwright-core/index.mjs';
import { openPage, pageState, rawClient, waitForFrames } from '../browser/helpers.mjs';

const url = process.env.PEERCAM_VM_URL || 'http://127.0.0.1:17000/';
const wsUrl = `${url.replace(/^http/, 'ws')}ws`;
const frames = Number(process.env.PEERCAM_VM_FRAMES || 30);
/** Stand in for the daemon's missing NAT 1:1 setting (see recordPeers). */
const rewrite = process.env.PEERCAM_VM_REWRITE_CANDIDATES === '1';
const extraArgs = (process.env.PEERCAM_VM_CHROMIUM_ARGS || '').split(' ').filter(Boolean);

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
      ...extraArgs,
    ],
  });
});
after(async () => { await browser?.close(); });

/**
 * Runs in the page before its own script: keeps every RTCPeerConnection in window.vmPeers and
 * a snapshot of its ICE stats (taken on every ICE state change, before the page closes a
 * failed peer) in window.vmIce. With `rewrite` set, the daemon's candidates for the guest
 * address 10.0.2.15 are rewritten to 127.0.0.1, where run.sh forwards the same UDP ports:
 * what `[webrtc] nat_1to1_ips = ["127.0.0.1"]` would do in the daemon.
 */
function recordPeers(rewrite) {
  const Original = window.RTCPeerConnection;
  window.vmPeers = [];
  window.vmIce = [];
  const fix = (text) => (rewrite && typeof text === 'string'
    ? text.replaceAll(' 10.0.2.15 ', ' 127.0.0.1 ').replaceAll('IN IP4 10.0.2.15', 'IN IP4 127.0.0.1')
    : text);
  async function snapshot(pc) {
    const lines = [`pc ice=${pc.iceConnectionState} conn=${pc.connectionState}`];
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === 'local-candidate' || r.type === 'remote-candidate') {
        lines.push(`${r.type} ${r.candidateType} ${r.protocol} ${r.address}:${r.port}`);
      } else if (r.type === 'candidate-pair') {
        const l = stats.get(r.localCandidateId);
        const m = stats.get(r.remoteCandidateId);
        lines.push(`pair ${r.state} ${l?.address}:${l?.port} -> ${m?.address}:${m?.port}`
          + ` sent=${r.requestsSent} recv=${r.responsesReceived} nominated=${r.nominated}`);
      }
    });
    return lines.join('\n');
  }
  window.RTCPeerConnection = function RTCPeerConnection(...args) {
    const pc = new Original(...args);
    const index = window.vmPeers.push(pc) - 1;
    pc.addEventListener('iceconnectionstatechange', () => {
      snapshot(pc).then((text) => { window.vmIce[index] = text; }, () => {});
    });
    const setRemote = pc.setRemoteDescription.bind(pc);
    pc.setRemoteDescription = (d) => setRemote(d && { type: d.type, sdp: fix(d.sdp) });
    const addCandidate = pc.addIceCandidate.bind(pc);
    pc.addIceCandidate = (c) => addCandidate(c && c.candidate ? { ...c, candidate: fix(c.candidate) } : c);
    window.vmSnapshot = () => snapshot(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
}

/** Chromium's view of ICE: candidates and pairs, live if the peer is open, else the last. */
async function iceReport(page) {
  await page.evaluate(async () => {
    const last = window.vmPeers.length - 1;
    if (last >= 0 && window.vmPeers[last].signalingState !== 'closed') {
      window.vmIce[last] = await window.vmSnapshot();
    }
  });
  return page.evaluate(() => window.vmIce.join('\n'));
}

describe('peercam in a VM (vivid + snd-aloop, qemu user networking)', () => {
  test('HTTP: the Dial page and /healthz through the forwarded port', async () => {
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /id="dial"/);
    const health = await fetch(`${url}healthz`);
    assert.equal((await health.text()).trim(), 'ok');
  });

  test('signaling: hello over the forwarded WebSocket', async () => {
    const { client, hello } = await rawClient(wsUrl);
    try {
      assert.equal(hello.hello.version, 1);
      assert.equal(hello.hello.mode, 'viewer');
      assert.deepEqual(hello.hello.codecs, ['h264']);
    } finally {
      client.close();
    }
  });

  test(`Chromium: Dial decodes ${frames} frames at 640x480`, { timeout: 90_000 }, async () => {
    const context = await browser.newContext();
    try {
      await context.addInitScript(recordPeers, rewrite);
      const page = await openPage(context, url);
      await page.click('#dial');
      let s;
      try {
        s = await waitForFrames(page, frames, 45_000);
      } catch (error) {
        const ice = await iceReport(page).catch((e) => `(no ICE report: ${e.message})`);
        throw new Error(`${error.message}\nChromium ICE:\n${ice}`);
      }
      console.log(`vm: decoded ${s.framesDecoded} frames ${s.frameWidth}x${s.frameHeight}`
        + ` ${s.codec}, ${s.bitrateKbps} kbit/s, rtt ${s.rttMs} ms`);
      console.log(`vm: Chromium ICE:\n${await iceReport(page)}`);
      assert.equal(s.codec, 'video/H264');
      assert.equal(s.frameWidth, 640);
      assert.equal(s.frameHeight, 480);
      assert.ok(s.bitrateKbps > 0, `bitrate ${s.bitrateKbps}`);
      assert.equal((await pageState(page)).state, 'connected');
      assert.deepEqual(page.errors, []);
    } finally {
      await context.close();
    }
  });
});
