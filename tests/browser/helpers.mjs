// Shared helpers for the browser tests: start the real peercam daemon with the test sources,
// launch Debian's Chromium or Firefox ESR through playwright-core, and read the numbers the
// Dial page exposes (window.peercamStats etc., all taken from RTCPeerConnection.getStats()).

import dgram from 'node:dgram';
import { spawn } from 'node:child_process';
import {
  existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, firefox } from 'playwright-core';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository root (tests/browser/../..). */
export const repoRoot = path.resolve(here, '..', '..');

/** The daemon binary: $PEERCAM_BIN or target/debug/peercam. */
export const peercamBin = process.env.PEERCAM_BIN
  ? path.resolve(repoRoot, process.env.PEERCAM_BIN)
  : path.join(repoRoot, 'target', 'debug', 'peercam');

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';

/** Returns a UDP port that was free a moment ago on 127.0.0.1. */
export function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

/** Returns a TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * A config with the test pattern and tone at `width`x`height`@`fps`, loopback only.
 * `video`/`audio`/`limits`: extra TOML lines; `video` lines that set `source` replace the test
 * pattern (e.g. `source = "rpicam"`), `audio` lines that set `source` replace the test tone.
 * `extra`: TOML appended at the end (e.g. `[[publish]]` tables). `ipAddresses`: the host
 * candidates' addresses (`[webrtc] ip_addresses`). `udpPort`: `[webrtc] udp_port` (0, a port
 * per call, by default: tests run side by side).
 */
export function testConfig({
  port, video = '', audio = '', limits = '', width = 640, height = 480, fps = 30, extra = '',
  ipAddresses = ['127.0.0.1'], udpPort = 0,
}) {
  const videoSource = /^\s*source\s*=/m.test(video) ? '' : 'source = "test"';
  const audioSource = /^\s*source\s*=/m.test(audio) ? '' : 'source = "test"';
  return `
[server]
listen = "127.0.0.1:${port}"

[video]
${videoSource}
width = ${width}
height = ${height}
fps = ${fps}
${video}

[audio]
${audioSource}
${audio}

[webrtc]
ip_addresses = ${JSON.stringify(ipAddresses)}
udp_port = ${udpPort}
tcp_port = 0
udp_port_min = 0
udp_port_max = 0

[limits]
max_viewers = 8
${limits}
${extra}
`;
}

/**
 * Starts the daemon and waits until GET / answers. `limits` lines override max_viewers when
 * they set it (TOML forbids a key twice, so it is replaced, not appended). `env`: extra
 * environment variables for the daemon (e.g. ALSA_CONFIG_PATH). `bin`: another binary (a
 * cross build); `wrapper`: argv prefix that runs it (e.g. ['qemu-aarch64-static']).
 * `width`/`height`/`fps`: the test pattern's size and rate. `server`: extra `[server]` lines
 * (e.g. `cors_origins = [...]`). `extra`: TOML appended at the end (e.g. `[[publish]]`).
 * `ipAddresses`: `[webrtc] ip_addresses` (default 127.0.0.1). `udpPort`: `[webrtc] udp_port`.
 */
export async function startDaemon({
  video = '', audio = '', limits = '', env = {}, bin = peercamBin, wrapper = [],
  width, height, fps, readyTimeoutMs = 20_000, password = '', tls = false, server = '', extra = '',
  ipAddresses, udpPort,
} = {}) {
  if (!existsSync(bin)) {
    throw new Error(`peercam binary not found at ${bin}: run \`cargo build\` or set PEERCAM_BIN`);
  }
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercam-browser-'));
  const configPath = path.join(dir, 'peercam.toml');
  let config = testConfig({
    port, video, audio, limits, width, height, fps, extra, ipAddresses, udpPort,
  });
  // [server] password, and HTTPS with a self-signed certificate kept in the temporary dir.
  const serverLines = [
    password ? `password = "${password}"` : '',
    tls ? `tls = "self-signed"\nstate_dir = "${dir}"` : '',
    server,
  ].join('\n');
  config = config.replace(/^listen = .*$/m, (line) => `${line}\n${serverLines}`);
  if (/^\s*max_viewers\s*=/m.test(limits)) config = config.replace('max_viewers = 8\n', '');
  writeFileSync(configPath, config);
  const argv = [...wrapper, bin, '--config', configPath, '--listen', `127.0.0.1:${port}`];
  const log = [];
  let child;
  let exited = null;
  const cleanUp = () => rmSync(dir, { recursive: true, force: true });
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}/`;
  // Scripts send the password as a bearer token; the page logs in (see logIn).
  const headers = password ? { Authorization: `Bearer ${password}` } : {};
  // The self-signed certificate is not trusted by Node's fetch: this test process only.
  if (tls) process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  /** Spawns the daemon and waits until GET / answers (also for restart()). */
  const launch = async () => {
    exited = null;
    child = spawn(argv[0], argv.slice(1), {
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', JOURNAL_STREAM: '', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      for (const line of chunk.split('\n')) if (line) log.push(line);
      if (process.env.PEERCAM_LOG) process.stderr.write(chunk);
    });
    child.on('error', (error) => { exited = `spawn ${argv[0]}: ${error.message}`; });
    child.on('exit', (code, signal) => { exited = signal || `exit code ${code}`; });
    const begun = Date.now();
    for (;;) {
      if (exited) {
        cleanUp();
        throw new Error(`${argv.join(' ')} exited (${exited}) before serving ${url}:\n`
          + log.slice(-20).join('\n'));
      }
      try {
        const response = await fetch(url);
        if (response.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() - begun > readyTimeoutMs) {
        child.kill('SIGKILL');
        cleanUp();
        throw new Error(`peercam did not serve ${url} within ${readyTimeoutMs} ms:\n`
          + log.slice(-20).join('\n'));
      }
      await sleep(100);
    }
  };
  /** SIGTERM, then SIGKILL after 10 s; resolves when the process is gone. */
  const terminate = async () => {
    if (exited) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  };
  const started = Date.now();
  await launch();
  const startupMs = Date.now() - started;
  try {
    await checkAssetsCurrent(url, bin, headers);
  } catch (error) {
    child.kill('SIGKILL');
    cleanUp();
    throw error;
  }
  return {
    get pid() { return child.pid; },
    /** How it exited (`exit code N` or the signal), null while it runs. */
    get exited() { return exited; },
    port,
    url,
    wsUrl: `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}/ws`,
    /** Headers that authenticate a script (empty without a password). */
    headers,
    configPath,
    log,
    /** Milliseconds from spawn until GET / answered. */
    startupMs,
    /** GET /metrics parsed into { 'name{labels}': number }. */
    async metrics() {
      const text = await (await fetch(`${url}metrics`, { headers })).text();
      const values = {};
      for (const line of text.split('\n')) {
        const m = /^(\S+)\s+([0-9.eE+-]+)$/.exec(line);
        if (m) values[m[1]] = Number(m[2]);
      }
      return values;
    },
    async stop() {
      await terminate();
      cleanUp();
    },
    /**
     * Stops the daemon (SIGTERM: it says bye to every page), waits `downMs`, and starts it
     * again on the same port with the same config; resolves once it serves the page.
     */
    async restart({ downMs = 0 } = {}) {
      await terminate();
      await sleep(downMs);
      await launch();
    },
  };
}

/**
 * The stand-in `rpicam-vid` (tests/standin/rpicam_vid.rs, the cargo example
 * `rpicam_vid_standin`) beside `bin`: `<dir of bin>/examples/rpicam_vid_standin`, linked as
 * `rpicam-vid` into a temporary directory. Returns `env` for startDaemon (that directory first
 * on PATH, the stand-in's run log in it), `runs()` (the argument lines of its streaming runs)
 * and `cleanUp()`. Throws, saying how to build it, when the stand-in is missing.
 */
export function rpicamStandin(bin = peercamBin) {
  const binary = path.join(path.dirname(bin), 'examples', 'rpicam_vid_standin');
  if (!existsSync(binary)) {
    const release = path.basename(path.dirname(bin)) === 'release' ? ' --release' : '';
    throw new Error(`the stand-in rpicam-vid is missing at ${binary}: build it with `
      + `\`cargo build --example rpicam_vid_standin${release}\` (or \`cargo build --all-targets\`)`);
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercam-rpicam-'));
  symlinkSync(binary, path.join(dir, 'rpicam-vid'));
  const log = path.join(dir, 'runs.log');
  return {
    binary,
    env: { PATH: `${dir}:${process.env.PATH || ''}`, RPICAM_STANDIN_LOG: log },
    runs() {
      const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
      return text.split('\n').filter((l) => l.startsWith('start ') && !l.includes('--list-cameras'))
        .map((l) => l.slice('start '.length));
    },
    cleanUp() { rmSync(dir, { recursive: true, force: true }); },
  };
}

/**
 * The page is compiled into the binary (include_str!): a binary older than the files under
 * src/http/assets would test an old page. Fails with what to do instead.
 */
async function checkAssetsCurrent(url, bin, headers) {
  for (const [route, file] of [['', 'index.html'], ['app.js', 'app.js'], ['style.css', 'style.css']]) {
    // The page carries the open-camera warning or the log-out button where index.html has
    // its <!--auth--> placeholder ...
    const served = (await (await fetch(url + route, { headers })).text())
      .replace(/<p id="open-warning"[^]*?<\/p>|<form method="post" action="logout"[^]*?<\/form>/,
        '<!--auth-->');
    let onDisk = readFileSync(path.join(repoRoot, 'src', 'http', 'assets', file), 'utf8');
    // ... and the camera's name (escaped) where it has <!--name-->.
    const name = /<h1 id="name">([^<]*)<\/h1>/.exec(served);
    if (name) onDisk = onDisk.replaceAll('<!--name-->', name[1]);
    if (served !== onDisk) {
      throw new Error(`${bin} serves an older ${file} than src/http/assets/${file}: `
        + 'rebuild it first');
    }
  }
}

/**
 * Headless Debian Chromium with the flags WebRTC on loopback needs (every browser test here,
 * the VM tests and the cross smoke test launch it through this). `fakeMedia`: a synthetic
 * camera and microphone, for room mode (the viewer page never asks for a camera); `extraArgs`
 * are appended.
 */
export function launchChromium({ fakeMedia = true, extraArgs = [] } = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
      ...(fakeMedia ? ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'] : []),
      ...extraArgs,
    ],
  });
}

/** Headless Firefox ESR driven over WebDriver BiDi (no geckodriver). */
export function launchFirefox() {
  return firefox.launch({
    channel: 'moz-firefox',
    executablePath: FIREFOX,
    headless: true,
    firefoxUserPrefs: {
      'media.autoplay.default': 0,
      'media.peerconnection.ice.loopback': true,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
    },
  });
}

/**
 * An init script (`context.addInitScript(recordPeerConnections)`): runs in the page before its
 * own script and keeps every RTCPeerConnection the page makes in window.testPeers, so a test
 * can read getStats() counters the page does not show, or count redials.
 */
export function recordPeerConnections() {
  const Original = window.RTCPeerConnection;
  window.testPeers = [];
  window.RTCPeerConnection = function RTCPeerConnection(...args) {
    const pc = new Original(...args);
    window.testPeers.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
}

/** Opens the Dial page in a new page of `browser`; collects page errors into `page.errors`. */
export async function openPage(browser, url) {
  const page = await browser.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(error.message));
  await page.goto(url);
  return page;
}

/** Logs in on the page's login form (a daemon with [server] password) and waits for Dial. */
export async function logIn(page, password) {
  await page.waitForSelector('#password', { timeout: 10_000 });
  await page.fill('#password', password);
  await Promise.all([page.waitForNavigation(), page.click('#login')]);
  await page.waitForSelector('#dial', { timeout: 10_000 });
}

/** Clicks Dial and waits until the page decodes `frames` video frames; returns the stats. */
export async function dialAndWaitForFrames(page, frames, timeoutMs = 20_000) {
  await page.click('#dial');
  return waitForFrames(page, frames, timeoutMs);
}

/** Waits until window.peercamStats.framesDecoded >= `frames`; fails with the page's state. */
export async function waitForFrames(page, frames, timeoutMs = 20_000) {
  try {
    await page.waitForFunction(
      (n) => window.peercamStats && window.peercamStats.framesDecoded >= n,
      frames,
      { timeout: timeoutMs, polling: 250 },
    );
  } catch (error) {
    const state = await pageState(page).catch(() => ({}));
    throw new Error(`no ${frames} frames decoded within ${timeoutMs} ms: ${JSON.stringify(state)}`);
  }
  return stats(page);
}

/** The page's latest stats object. */
export function stats(page) {
  return page.evaluate(() => window.peercamStats);
}

/** State, error, status text and stats of the page, for assertions and failure messages. */
export function pageState(page) {
  return page.evaluate(() => ({
    state: window.peercamState,
    error: window.peercamError,
    status: document.getElementById('status').textContent,
    stats: window.peercamStats,
    latency: window.peercamLatency && window.peercamLatency.p50,
  }));
}

/** Saves a PNG of the page for a person to look at. */
export async function screenshot(page, file = '/tmp/peercam-page.png') {
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** A raw signaling client: connects, collects every message, returns the hello. */
export async function rawClient(wsUrl, headers = {}) {
  const socket = new WebSocket(wsUrl, { headers });
  const messages = [];
  const waiters = [];
  socket.on('message', (data) => {
    let message;
    try {
      message = JSON.parse(data.toString());
    } catch {
      message = { unparsable: data.toString() };
    }
    messages.push(message);
    while (waiters.length) waiters.shift()();
  });
  socket.on('close', () => { while (waiters.length) waiters.shift()(); });
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  const client = {
    socket,
    messages,
    send(text) { socket.send(text); },
    /** The next unread message, or an error after `timeoutMs`. */
    async next(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (client.read >= messages.length) {
        if (socket.readyState !== WebSocket.OPEN) {
          throw new Error('signaling socket closed while waiting for a message');
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no message within ${timeoutMs} ms`);
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, left);
          waiters.push(() => { clearTimeout(timer); resolve(); });
        });
      }
      return messages[client.read++];
    },
    read: 0,
    close() { socket.close(); },
  };
  const hello = await client.next();
  return { client, hello };
}

/** Resolves after `ms`. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
