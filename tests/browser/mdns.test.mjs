// Browsers' .local candidates (issue 20): headless Chromium, then Firefox ESR, in one network
// namespace dials the daemon in another. The daemon advertises a candidate the browser cannot
// reach ([webrtc] nat_1to1_ips = 192.0.2.1), so the call connects only if the daemon sends its
// checks to the browser: to the address behind the browser's <uuid>.local name, which the
// browser's own mDNS responder gives. With resolve_mdns = false it never connects.
// The two namespaces are joined only to each other by one veth pair (nothing in them
// reaches the test's namespace or the machine's network), so no multicast leaves them; both
// are deleted at the end. Needs root (ip netns). Default browser tier; ~35 s.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, firefox } from 'playwright-core';
import net from 'node:net';
import { freePort, peercamBin } from './helpers.mjs';

const ip = (...args) => execFileSync('ip', args, { stdio: 'pipe' });
const id = `${process.pid % 100000}`;
const A = `pcmdns-a${id}`, B = `pcmdns-b${id}`;

function setUp() {
  ip('netns', 'add', A);
  ip('netns', 'add', B);
  ip('link', 'add', `pma${id}`, 'type', 'veth', 'peer', 'name', `pmb${id}`);
  ip('link', 'set', `pma${id}`, 'netns', A);
  ip('link', 'set', `pmb${id}`, 'netns', B);
  ip('-n', A, 'addr', 'add', '10.99.0.1/24', 'dev', `pma${id}`);
  ip('-n', B, 'addr', 'add', '10.99.0.2/24', 'dev', `pmb${id}`);
  for (const [ns, dev] of [[A, `pma${id}`], [B, `pmb${id}`]]) {
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'link', 'set', dev, 'up');
  }
  // Chromium gathers host candidates only on the interface of its default route.
  ip('-n', B, 'route', 'add', 'default', 'via', '10.99.0.1');
}

function tearDown() {
  for (const ns of [A, B]) {
    try { ip('netns', 'del', ns); } catch { /* already gone */ }
  }
}

/** Starts the daemon in namespace A; resolves when it serves. */
async function daemon(dir, resolve) {
  const config = path.join(dir, `peercam-${resolve}.toml`);
  writeFileSync(config, `
[server]
listen = "10.99.0.1:7000"
[video]
source = "test"
width = 320
height = 240
fps = 15
[audio]
source = "test"
[webrtc]
ip_addresses = ["10.99.0.1"]
nat_1to1_ips = ["192.0.2.1"]
resolve_mdns = ${resolve}
[limits]
ice_timeout_s = 8
`);
  const child = spawn('ip', ['netns', 'exec', A, peercamBin, '--config', config], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      ip('netns', 'exec', A, 'bash', '-c', 'exec 3<>/dev/tcp/10.99.0.1/7000');
      break;
    } catch { await new Promise((r) => setTimeout(r, 100)); }
  }
  return child;
}

/**
 * Firefox in namespace B. Its WebDriver BiDi server listens on loopback there, which the
 * test's namespace cannot reach: the wrapper gives it a fixed port and a relay inside B joins
 * that port to a Unix socket (the file system is shared), which a relay here serves on the
 * same port, where Playwright connects.
 */
async function launchFirefoxInNamespace(dir) {
  const port = await freePort();
  const socket = path.join(dir, 'bidi.sock');
  rmSync(socket, { force: true });
  const relayScript = path.join(dir, 'bidi-relay.mjs');
  writeFileSync(relayScript, `
import net from 'node:net';
net.createServer((unix) => {
  const tcp = net.connect(${port}, '127.0.0.1');
  unix.pipe(tcp).pipe(unix);
  const end = () => { unix.destroy(); tcp.destroy(); };
  unix.on('error', end); tcp.on('error', end); unix.on('close', end); tcp.on('close', end);
}).listen(${JSON.stringify(socket)});
`);
  const wrapper = path.join(dir, 'firefox-in-ns');
  writeFileSync(wrapper, `#!/bin/bash
args=()
for a in "$@"; do
  case "$a" in --remote-debugging-port=*) a=--remote-debugging-port=${port} ;; esac
  args+=("$a")
done
exec ip netns exec ${B} bash -c '${process.execPath} ${relayScript} & relay=$!
/usr/bin/firefox-esr "$@"; status=$?; kill $relay; exit $status' firefox "\${args[@]}"
`, { mode: 0o755 });
  const here = net.createServer((tcp) => {
    const unix = net.connect(socket);
    tcp.pipe(unix).pipe(tcp);
    const end = () => { unix.destroy(); tcp.destroy(); };
    unix.on('error', end); tcp.on('error', end); unix.on('close', end); tcp.on('close', end);
  });
  await new Promise((resolve) => here.listen(port, '127.0.0.1', resolve));
  try {
    const browser = await firefox.launch({ channel: 'moz-firefox', executablePath: wrapper, headless: true });
    browser.on('disconnected', () => here.close());
    return browser;
  } catch (error) {
    here.close();
    throw error;
  }
}

/** Launches `which` browser in namespace B (with its defaults: .local host names). */
function launchInNamespace(which, dir) {
  if (which === 'firefox') return launchFirefoxInNamespace(dir);
  const wrapper = path.join(dir, 'chromium-in-ns');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${B} /usr/bin/chromium "$@"\n`, { mode: 0o755 });
  return chromium.launch({
    executablePath: wrapper,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

/** `which` browser in namespace B dials; the ICE state after at most 6 s and the selected pair. */
async function dial(dir, which = 'chromium') {
  const browser = await launchInNamespace(which, dir);
  try {
    const page = await browser.newPage();
    await page.goto('http://10.99.0.1:7000/?autodial=0'); // only the call made below
    return await page.evaluate(async () => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      const ws = new WebSocket('ws://10.99.0.1:7000/ws');
      await new Promise((r) => { ws.onopen = r; });
      const mine = [];
      pc.onicecandidate = (e) => {
        if (e.candidate && e.candidate.candidate) mine.push(e.candidate.address);
        ws.send(JSON.stringify({ candidate: e.candidate ? e.candidate.toJSON() : null }));
      };
      ws.onmessage = async (m) => {
        const x = JSON.parse(m.data);
        if (x.sdp) await pc.setRemoteDescription(x.sdp);
        else if (x.candidate) await pc.addIceCandidate(x.candidate).catch(() => {});
      };
      await pc.setLocalDescription(await pc.createOffer());
      ws.send(JSON.stringify({ sdp: pc.localDescription }));
      const t0 = Date.now();
      while (!['connected', 'completed'].includes(pc.iceConnectionState) && Date.now() - t0 < 6000) {
        await new Promise((r) => setTimeout(r, 100));
      }
      let remote = null;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
          remote = stats.get(s.remoteCandidateId)?.candidateType;
        }
      });
      return { state: pc.iceConnectionState, mine, remote };
    });
  } finally {
    await browser.close();
  }
}

/** Both settings of resolve_mdns against `which` browser. */
async function resolutionDecides(which) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercam-mdns-'));
  setUp();
  try {
    for (const resolve of [true, false]) {
      const child = await daemon(dir, resolve);
      try {
        const r = await dial(dir, which);
        assert.ok(r.mine.length > 0 && r.mine.every((a) => a.endsWith('.local')),
          `the browser's candidates are .local names: ${JSON.stringify(r)}`);
        if (resolve) {
          assert.equal(r.state, 'connected', JSON.stringify(r));
          // The daemon's advertised 192.0.2.1 is unreachable: its checks from 10.99.0.1,
          // sent to the resolved address, are what the browser paired with (peer-reflexive).
          assert.equal(r.remote, 'prflx', JSON.stringify(r));
        } else {
          assert.notEqual(r.state, 'connected', JSON.stringify(r));
        }
      } finally {
        child.kill();
        await new Promise((r) => child.once('exit', r));
      }
    }
  } finally {
    tearDown();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('Chromium behind .local names connects only thanks to the daemon resolving them', () =>
  resolutionDecides('chromium'));

test('Firefox behind .local names connects only thanks to the daemon resolving them', () =>
  resolutionDecides('firefox'));
