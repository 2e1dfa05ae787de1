// Watching from outside the home (issue 20): peercam behind a home router's NAT, headless
// Chromium behind a mobile network's symmetric NAT, coturn (Debian's package) and `peercam relay`
// on the "internet" between them, all in network namespaces (nat.mjs) built here and deleted at the
// end. Each case dials from the real page, waits for 60 decoded frames, and asserts from
// getStats() which candidate pair carried them (the page's window.peercamStats.path):
//
//   (a) the home router forwards the one UDP port      -> direct (no relay)
//   (b) no UDP forward, symmetric NAT                   -> relayed through TURN over UDP
//   (c) the mobile network blocks UDP                   -> ICE-TCP to the forwarded TCP port,
//                                                          or TURN over TCP, or over TLS
//   (d) no forward at all; the device connects out to   -> set up through the relay, media
//       `peercam relay` on the internet                    through TURN
//   (e) the relay restarts mid-call                     -> media goes on, the device
//                                                          registers again within 10 s
//   and: STUN gives peercam a server-reflexive candidate; TURN with coturn's REST-API
//   (use-auth-secret) credentials; a TURN server that refuses the credentials is named on
//   the page and in peercam's log.
//
// The page itself reaches peercam through a forward of TCP 7000 (signaling). Each case prints
// its time from Dial to the first decoded frame (BENCHMARKS.md; also appended to the file
// $PEERCAM_NAT_RESULTS names). Needs root. Default browser tier; about 40 s.
//
// When a case fails: NAT_DEBUG=1 prints the browser's candidate pairs and runs coturn with
// --Verbose; NAT_RUST_LOG sets peercam's RUST_LOG; NAT_CHROMIUM_LOG=turn_port=3,... turns on
// Chromium's WebRTC logging (with DEBUG=pw:browser to see it).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { peercamBin, recordPeerConnections } from './helpers.mjs';
import { ADDR, Network } from './nat.mjs';

const FRAMES = 60;
const TURN_USER = 'viewer';
const TURN_PASSWORD = 'turn-password-1';
const TURN_SECRET = 'north-secret-for-tests';
const RELAY_PASSWORD = 'relay-password-1';
const DEVICE = 'home-cam';
const DEVICE_TOKEN = 'home-cam-token-0123456789';
const RELAY_PORT = 8443;

let net;
let dir;

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'peercam-nat-'));
  // coturn's and the relay's TLS certificate, for the internet's address: the device trusts
  // it through [relay] ca_file, the browser is told to accept it (--ignore-certificate-errors).
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt',
    'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=relay.test',
    '-addext', `subjectAltName=IP:${ADDR.internet}`, '-addext', 'basicConstraints=critical,CA:FALSE',
    '-keyout', path.join(dir, 'turn.key'), '-out', path.join(dir, 'turn.crt')], { stdio: 'pipe' });
  net = new Network();
  net.up(); // after() deletes what up() built even if it fails halfway
});

after(async () => {
  await net?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** coturn on the internet: long-term credentials (`auth: 'static'`) or REST API ('secret'). */
async function startCoturn(auth) {
  const authArgs = auth === 'secret'
    ? ['--use-auth-secret', `--static-auth-secret=${TURN_SECRET}`]
    : ['--lt-cred-mech', `--user=${TURN_USER}:${TURN_PASSWORD}`];
  const turn = net.spawn('internet', ['turnserver', '-n', '--no-cli', '--no-dtls',
    `--listening-ip=${ADDR.internet}`, `--relay-ip=${ADDR.internet}`,
    '--listening-port=3478', '--tls-listening-port=5349', '--realm=peercam.test',
    '--fingerprint', `--cert=${path.join(dir, 'turn.crt')}`, `--pkey=${path.join(dir, 'turn.key')}`,
    `--userdb=${path.join(dir, 'turndb')}`, `--pidfile=${path.join(dir, 'turn.pid')}`,
    '--log-file=stdout', '--simple-log', process.env.NAT_DEBUG ? '--Verbose' : '--verbose', ...authArgs]);
  await net.waitForTcp('mobileRouter', ADDR.internet, 3478);
  return turn;
}

/** peercam in the home namespace with `webrtc` lines; resolves once its page answers. */
async function startPeercam(name, webrtc) {
  const config = path.join(dir, `${name}.toml`);
  writeFileSync(config, `
[server]
listen = "0.0.0.0:7000"
[video]
source = "test"
width = 320
height = 240
fps = 30
[audio]
source = "test"
[webrtc]
ip_addresses = ["${ADDR.home}"]
udp_port = 8555
tcp_port = 8555
resolve_mdns = false
${webrtc}
[limits]
ice_timeout_s = 10
`.replace('[relay]\n', `[relay]\nca_file = "${path.join(dir, 'turn.crt')}"\n`));
  // ca_file: the relay's certificate (cases d and e).
  const daemon = net.spawn('home', [peercamBin, '--config', config],
    { env: { ...process.env, RUST_LOG: process.env.NAT_RUST_LOG || 'info', JOURNAL_STREAM: '' } });
  await net.waitForTcp('home', ADDR.home, 7000);
  return daemon;
}

/** `peercam relay` on the internet, with one device; resolves once it accepts connections. */
async function startRelay() {
  const config = path.join(dir, 'relay.toml');
  writeFileSync(config, `
[relay_server]
listen = "${ADDR.internet}:${RELAY_PORT}"
password = "${RELAY_PASSWORD}"
tls = { cert = "${path.join(dir, 'turn.crt')}", key = "${path.join(dir, 'turn.key')}" }
[[relay_server.devices]]
name = "${DEVICE}"
token = "${DEVICE_TOKEN}"
`);
  const relay = net.spawn('internet', [peercamBin, 'relay', '--config', config],
    { env: { ...process.env, RUST_LOG: 'info', JOURNAL_STREAM: '' } });
  await net.waitForTcp('mobileRouter', ADDR.internet, RELAY_PORT);
  return relay;
}

/** The device's [relay] table, and TURN (its calls must cross two NATs). */
const DEVICE_VIA_RELAY = `
[[webrtc.ice_servers]]
urls = ["stun:${ADDR.internet}:3478", "turn:${ADDR.internet}:3478?transport=udp"]
secret = "${TURN_SECRET}"
[relay]
url = "wss://${ADDR.internet}:${RELAY_PORT}/link"
token = "${DEVICE_TOKEN}"
name = "${DEVICE}"
`;

/** Waits until `child`'s output has `count` lines matching `pattern`. */
async function waitForLines(child, pattern, count, timeoutMs) {
  const started = Date.now();
  for (;;) {
    const lines = child.output.split('\n').filter((l) => pattern.test(l));
    if (lines.length >= count) return;
    if (Date.now() - started > timeoutMs) {
      throw new Error(`no ${count} lines matching ${pattern} in ${timeoutMs} ms:\n${child.output.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Headless Chromium in the mobile namespace. */
function launchMobileChromium() {
  const wrapper = path.join(dir, 'chromium-mobile');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${net.ns.mobile} /usr/bin/chromium "$@"\n`,
    { mode: 0o755 });
  return chromium.launch({
    executablePath: wrapper,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic',
      '--autoplay-policy=no-user-gesture-required', '--ignore-certificate-errors',
      ...(process.env.NAT_CHROMIUM_LOG ? ['--enable-logging=stderr', `--vmodule=${process.env.NAT_CHROMIUM_LOG}`] : [])],
  });
}

/** The page's state, stats and (for failure messages) the ICE servers its call used. */
function pageNow(page) {
  return page.evaluate(() => ({
    state: window.peercamState,
    error: window.peercamError,
    iceErrors: window.peercamIceErrors,
    status: document.getElementById('status').textContent,
    stats: window.peercamStats,
    iceServers: window.testPeers.at(-1)?.getConfiguration().iceServers,
    firstFrameMs: window.testFirstFrameMs,
  }));
}

/**
 * Opens the page at `url` from the mobile network (logging in with `password` if given),
 * dials, and waits for FRAMES decoded frames (or the page giving up). Then runs
 * `afterFrames(page)`, whose result is returned as `after`, with the page's state: its stats
 * and `firstFrameMs`, the ms from Dial to the first decoded frame.
 */
async function watch(url, {
  expectFailure = false, timeoutMs = 25_000, password = null, afterFrames = null,
} = {}) {
  const browser = await launchMobileChromium();
  try {
    const page = await browser.newPage();
    await page.addInitScript(recordPeerConnections);
    // The page waits for the click (no auto-dial, no redial): the dial is timed, and a call
    // that cannot connect shows as failed.
    const manual = new URL(url);
    manual.searchParams.set('autodial', '0');
    await page.goto(manual.href);
    if (password) {
      await page.waitForSelector('#password', { timeout: 10_000 });
      await page.fill('#password', password);
      await Promise.all([page.waitForNavigation(), page.click('#login')]);
      await page.goto(manual.href); // the login leads back to the page without the query
    }
    await page.waitForSelector('#dial');
    // The page's stats tick once a second; the first frame is timed by polling the call's
    // getStats() every 20 ms in the page, from just before the click.
    await page.evaluate((limit) => {
      window.testFirstFrameMs = null;
      const t0 = performance.now();
      const tick = async () => {
        const pc = window.testPeers.at(-1);
        const report = pc ? await pc.getStats() : new Map();
        for (const r of report.values()) {
          if (r.type === 'inbound-rtp' && r.kind === 'video' && r.framesDecoded > 0) {
            window.testFirstFrameMs = Math.round(performance.now() - t0);
            return;
          }
        }
        if (performance.now() - t0 < limit) setTimeout(tick, 20);
      };
      tick();
    }, timeoutMs);
    await page.click('#dial');
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = await pageNow(page);
      const frames = s.stats ? s.stats.framesDecoded : 0;
      if (process.env.NAT_DEBUG && (s.state === 'failed' || Date.now() > until)) {
        console.log(JSON.stringify(await page.evaluate(async () => {
          const out = [];
          (await window.testPeers.at(-1).getStats()).forEach((r) => {
            if (['candidate-pair', 'local-candidate', 'remote-candidate'].includes(r.type)) out.push(r);
          });
          return out;
        }).catch((e) => String(e))));
      }
      if (frames >= FRAMES || s.state === 'failed' || Date.now() > until) {
        if (!expectFailure) {
          assert.ok(frames >= FRAMES, `no ${FRAMES} frames decoded: ${JSON.stringify(s)}`);
        }
        if (afterFrames && frames >= FRAMES) s.after = await afterFrames(page);
        return s;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await browser.close();
  }
}

/** Records a case's time to first frame (printed, and appended to $PEERCAM_NAT_RESULTS). */
function record(name, r) {
  const line = `${name}: first frame ${r.firstFrameMs} ms after Dial, path ` +
    `${r.stats.path.kind} ${r.stats.path.protocol} (${r.stats.path.local} -> ${r.stats.path.remote})`;
  console.log(line);
  if (process.env.PEERCAM_NAT_RESULTS) appendFileSync(process.env.PEERCAM_NAT_RESULTS, `${line}\n`);
}

const PAGE = `http://${ADDR.homeWan}:7000/`;

test('(a) one forwarded UDP port: a direct connection, and STUN gives the reflexive address', async () => {
  net.clearForwards();
  net.forward('tcp', 7000);
  net.forward('udp', 8555);
  const turn = await startCoturn('static');
  // STUN only for peercam; the page gets the same stun: URL and no TURN.
  const daemon = await startPeercam('a', `ice_servers = [{ urls = ["stun:${ADDR.internet}:3478"] }]`);
  try {
    const r = await watch(PAGE);
    assert.equal(r.stats.path.kind === 'relayed', false, JSON.stringify(r.stats.path));
    // The browser reached peercam at the router's public address and forwarded port: the
    // server-reflexive candidate STUN gave (the host candidate is 192.168.1.10).
    assert.equal(r.stats.path.remote, 'srflx', JSON.stringify(r.stats.path));
    record('(a) UDP port forwarded', r);
  } finally {
    await Network.stop(daemon);
    await Network.stop(turn);
  }
});

test('(b) no UDP forward, symmetric NAT: TURN over UDP with REST-API credentials', async () => {
  net.clearForwards();
  net.forward('tcp', 7000);
  const turn = await startCoturn('secret');
  const daemon = await startPeercam('b', `
[[webrtc.ice_servers]]
urls = ["turn:${ADDR.internet}:3478?transport=udp"]
secret = "${TURN_SECRET}"
`);
  try {
    const r = await watch(PAGE);
    assert.equal(r.stats.path.kind, 'relayed', JSON.stringify(r.stats.path));
    assert.equal(r.stats.path.protocol, 'UDP', JSON.stringify(r.stats.path));
    record('(b) symmetric NAT, TURN/UDP', r);
    // coturn accepted time-limited user names `<expiry>:peercam` (peercam's and the page's).
    assert.match(turn.output, /user <\d+:peercam>/, turn.output.slice(-2000));
  } finally {
    await Network.stop(daemon);
    await Network.stop(turn);
  }
});

test('(c) UDP blocked for the viewer: ICE-TCP on the forwarded TCP port', async () => {
  net.clearForwards();
  net.forward('tcp', 7000);
  net.forward('tcp', 8555);
  net.blockMobileUdp(true);
  // The router's public address is advertised for the TCP candidate (no STUN over TCP).
  const daemon = await startPeercam('c-ice-tcp', `nat_1to1_ips = ["${ADDR.homeWan}"]`);
  try {
    const r = await watch(PAGE);
    assert.equal(r.stats.path.protocol, 'TCP', JSON.stringify(r.stats.path));
    assert.notEqual(r.stats.path.kind, 'relayed', JSON.stringify(r.stats.path));
    record('(c) UDP blocked, ICE-TCP', r);
  } finally {
    net.blockMobileUdp(false);
    await Network.stop(daemon);
  }
});

for (const [transport, url] of [
  ['TCP', `turn:${ADDR.internet}:3478?transport=tcp`],
  ['TLS', `turns:${ADDR.internet}:5349?transport=tcp`],
]) {
  test(`(c) UDP blocked for the viewer: TURN over ${transport}`, async () => {
    net.clearForwards();
    net.forward('tcp', 7000);
    net.blockMobileUdp(true);
    const turn = await startCoturn('static');
    // peercam learns its public address over STUN and allocates over UDP (it reaches
    // coturn); the browser allocates over TCP or TLS.
    const daemon = await startPeercam(`c-turn-${transport}`, `
[[webrtc.ice_servers]]
urls = ["stun:${ADDR.internet}:3478", "turn:${ADDR.internet}:3478?transport=udp", "${url}"]
username = "${TURN_USER}"
credential = "${TURN_PASSWORD}"
`);
    try {
      const r = await watch(PAGE);
      assert.equal(r.stats.path.kind, 'relayed', JSON.stringify(r.stats.path));
      assert.equal(r.stats.path.protocol, transport, JSON.stringify(r.stats.path));
      record(`(c) UDP blocked, TURN/${transport}`, r);
    } finally {
      net.blockMobileUdp(false);
      await Network.stop(daemon);
      await Network.stop(turn);
    }
  });
}

test('a TURN server that refuses the credentials is named on the page and in the log', async () => {
  net.clearForwards();
  net.forward('tcp', 7000);
  const turn = await startCoturn('static');
  const daemon = await startPeercam('refused', `
[[webrtc.ice_servers]]
urls = ["turn:${ADDR.internet}:3478?transport=udp"]
username = "${TURN_USER}"
credential = "not-the-password"
`);
  try {
    const r = await watch(PAGE, { expectFailure: true });
    assert.equal(r.state, 'failed', JSON.stringify(r));
    assert.match(r.error, /turn:203\.0\.113\.1:3478\?transport=udp refused the credentials \(401/,
      JSON.stringify(r));
    // One line for the episode, naming the server and the keys to check.
    const lines = daemon.output.split('\n').filter((l) => l.includes("refused peercam's credentials"));
    assert.equal(lines.length, 1, daemon.output.slice(-3000));
    assert.match(lines[0], /WARN .*TURN server 203\.0\.113\.1:3478 refused peercam's credentials \(401 Unauthorized\): check username and credential, or secret/);
  } finally {
    await Network.stop(daemon);
    await Network.stop(turn);
  }
});

const REGISTERED = new RegExp(`relay: registered as '${DEVICE}'`);
const RELAY_PAGE = `https://${ADDR.internet}:${RELAY_PORT}/d/${DEVICE}/`;

test('(d) no router changes: the call is set up through peercam relay', async () => {
  net.clearForwards(); // nothing reaches the device from outside
  const turn = await startCoturn('secret');
  const relay = await startRelay();
  const daemon = await startPeercam('d', DEVICE_VIA_RELAY);
  try {
    await waitForLines(daemon, REGISTERED, 1, 10_000);
    const r = await watch(RELAY_PAGE, { password: RELAY_PASSWORD });
    // Symmetric NAT against a port-restricted one: only TURN gets media through.
    assert.equal(r.stats.path.kind, 'relayed', JSON.stringify(r.stats.path));
    // The device answered a browser it knows only through the relay.
    assert.match(daemon.output, /relayed viewer 203\.0\.113\.3:\d+: answering with h264/,
      daemon.output.slice(-3000));
    record('(d) through peercam relay', r);
  } finally {
    await Network.stop(daemon);
    await Network.stop(relay);
    await Network.stop(turn);
  }
});

test('(e) the relay restarts mid-call: media goes on and the device registers again within 10 s', async () => {
  net.clearForwards();
  const turn = await startCoturn('secret');
  let relay = await startRelay();
  const daemon = await startPeercam('e', DEVICE_VIA_RELAY);
  try {
    await waitForLines(daemon, REGISTERED, 1, 10_000);
    const r = await watch(RELAY_PAGE, {
      password: RELAY_PASSWORD,
      afterFrames: async (page) => {
        const before = (await pageNow(page)).stats.framesDecoded;
        const stopped = Date.now();
        await Network.stop(relay);
        relay = await startRelay();
        await waitForLines(daemon, REGISTERED, 2, 10_000 - (Date.now() - stopped));
        const registeredMs = Date.now() - stopped;
        // Frames keep coming through the call's own path the whole time.
        await page.waitForFunction((n) => window.peercamStats.framesDecoded >= n,
          before + 60, { timeout: 10_000, polling: 100 }).catch(async (error) => {
          throw new Error(`${error.message}: ${JSON.stringify(await pageNow(page))}\n` +
            `${daemon.output.slice(-4000)}`);
        });
        const now = await pageNow(page);
        return { before, registeredMs, ...now };
      },
    });
    assert.ok(r.after, JSON.stringify(r));
    assert.equal(r.after.state, 'connected', JSON.stringify(r.after));
    assert.match(r.after.status, /signaling lost, media continues/, r.after.status);
    const line = `(e) relay restarted: the device registered again ${r.after.registeredMs} ms ` +
      `after the relay was stopped; ${r.after.stats.framesDecoded - r.after.before} frames meanwhile`;
    console.log(line);
    if (process.env.PEERCAM_NAT_RESULTS) appendFileSync(process.env.PEERCAM_NAT_RESULTS, `${line}\n`);
  } finally {
    await Network.stop(daemon);
    await Network.stop(relay);
    await Network.stop(turn);
  }
});
