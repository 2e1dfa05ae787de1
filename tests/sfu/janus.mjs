// A real SFU for the tests and benchmarks: Debian's Janus (VideoRoom plugin) as a child process
// with its configuration in a temporary directory, a WHIP endpoint in front of it (RFC 9725,
// written here with janode, Meetecho's Node.js client of the Janus API), and Janus subscribers
// whose offers are answered by a Chromium page.
//
//   startJanus()            janus on a free loopback WebSocket port, VideoRoom and WebSockets only
//   startWhipFront({...})   POST offer -> VideoRoom "joinandconfigure" as publisher -> 201 + answer;
//                           PATCH (trickle-ice-sdpfrag) -> Janus trickle; DELETE -> leave, destroy
//   watchInPage(page, ...)  a VideoRoom subscriber: Janus's offer answered by the page's
//                           RTCPeerConnection; the page keeps getStats() figures in window.sfuStats
//
// Every process started here is killed when this Node process exits, whatever the reason.

import { spawn } from 'node:child_process';
import {
  existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Janode from 'janode';
import VideoRoomPlugin from 'janode/plugins/videoroom';
import { freePort } from '../browser/helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const JANUS_BIN = process.env.JANUS_BIN || '/usr/bin/janus';
/**
 * The address Janus gathers its candidates on: not loopback (Janus skips loopback interfaces),
 * but the one address of the network namespace tests/sfu/run.sh runs the tests in.
 */
export const ICE_ADDRESS = process.env.SFU_ICE_ADDRESS || '';
/** The room of janus/janus.plugin.videoroom.jcfg. */
export const ROOM = 1234;

// janode logs every transaction at "info", and warns of acks it no longer waits for (after
// leave); errors are enough here (JANODE_LOG=info for more).
Janode.Logger.setLevel(process.env.JANODE_LOG || 'error');

// --- children that must not outlive this process ------------------------------------------
const children = new Set();
function killChildren() {
  for (const child of children) {
    try { child.kill('SIGKILL'); } catch { /* gone */ }
  }
  children.clear();
}
let guarded = false;
/** From the first child on: kill the children when this process exits or is signalled. */
function guardChildren() {
  if (guarded) return;
  guarded = true;
  process.once('exit', killChildren);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      killChildren();
      process.exit(128 + os.constants.signals[signal]);
    });
  }
}


/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Janus's module directory (/usr/lib/<multiarch>/janus), where its plugins are. */
function janusLibDir() {
  if (process.env.JANUS_LIB_DIR) return process.env.JANUS_LIB_DIR;
  for (const dir of ['/usr/lib', ...readdirSync('/usr/lib').map((d) => path.join('/usr/lib', d))]) {
    if (existsSync(path.join(dir, 'janus', 'plugins', 'libjanus_videoroom.so'))) {
      return path.join(dir, 'janus');
    }
  }
  throw new Error('Janus\'s VideoRoom plugin is not installed: apt-get install janus '
    + '(tests/sfu/run.sh does it)');
}

/** utime + stime of `pid` in clock ticks (USER_HZ, 100 on Linux). */
export function cpuTicks(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * Starts Janus with the configuration in tests/sfu/janus/ (copied into a temporary directory)
 * on a free port of 127.0.0.1 and waits until janode can open a session. `JANUS_LOG=1` echoes
 * its log.
 */
export async function startJanus({ iceAddress = ICE_ADDRESS, readyTimeoutMs = 20_000 } = {}) {
  if (!iceAddress) {
    throw new Error('Janus gathers no loopback candidates: run this in the network namespace '
      + 'of tests/sfu/run.sh (SFU_ICE_ADDRESS names its address)');
  }
  if (!existsSync(JANUS_BIN)) {
    throw new Error(`${JANUS_BIN} not found: apt-get install janus (tests/sfu/run.sh does it)`);
  }
  const lib = janusLibDir();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercam-janus-'));
  const port = await freePort();
  for (const file of readdirSync(path.join(here, 'janus'))) {
    const text = readFileSync(path.join(here, 'janus', file), 'utf8')
      .replaceAll('@DIR@', dir).replaceAll('@ICE_ADDRESS@', iceAddress)
      .replaceAll('@WS_PORT@', String(port));
    writeFileSync(path.join(dir, file), text);
  }
  // Only the modules linked here are loaded.
  for (const sub of ['plugins', 'transports', 'events', 'loggers']) mkdirSync(path.join(dir, sub));
  symlinkSync(path.join(lib, 'plugins', 'libjanus_videoroom.so'),
    path.join(dir, 'plugins', 'libjanus_videoroom.so'));
  symlinkSync(path.join(lib, 'transports', 'libjanus_websockets.so'),
    path.join(dir, 'transports', 'libjanus_websockets.so'));

  const argv = ['--config', path.join(dir, 'janus.jcfg'), '--configs-folder', dir,
    '--disable-colors', '--debug-timestamps'];
  guardChildren();
  const child = spawn(JANUS_BIN, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  children.add(child);
  const log = [];
  const onData = (chunk) => {
    for (const line of chunk.toString('utf8').split('\n')) if (line) log.push(line);
    if (log.length > 5000) log.splice(0, log.length - 5000);
    if (process.env.JANUS_LOG) process.stderr.write(chunk);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  let exited = null;
  child.on('error', (error) => { exited = `spawn ${JANUS_BIN}: ${error.message}`; });
  child.on('exit', (code, signal) => {
    exited = signal || `exit code ${code}`;
    children.delete(child);
  });

  const url = `ws://127.0.0.1:${port}/`;
  const started = Date.now();
  let connection;
  for (;;) {
    if (exited) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`janus exited (${exited}) before it served ${url}:\n${log.slice(-30).join('\n')}`);
    }
    // janode logs an error for every refused try: wait for the port first.
    if (await canConnect(port)) {
      connection = await Janode.connect({ address: { url }, max_retries: 3, retry_time_secs: 1 });
      break;
    }
    if (Date.now() - started > readyTimeoutMs) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`janus did not serve ${url} within ${readyTimeoutMs} ms:\n${log.slice(-30).join('\n')}`);
    }
    await sleep(200);
  }
  const info = await connection.getInfo();
  return {
    pid: child.pid,
    url,
    log,
    /** The connection the test's own requests use (the WHIP front opens its own). */
    connection,
    /** Janus's version string and the plugins it loaded. */
    version: info.version_string,
    plugins: Object.keys(info.plugins || {}),
    startupMs: Date.now() - started,
    get exited() { return exited; },
    /** SIGKILL, as a crash would end it; `stop()` still removes its directory. */
    async kill() {
      if (exited) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await gone;
    },
    async stop() {
      if (!exited) await connection.close().catch(() => {});
      if (!exited) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await gone;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Counts of what an SDP carries, for assertions and failure messages. */
export function sdpSummary(sdp) {
  const sections = sdp.split(/\r?\n(?=m=)/).slice(1);
  return {
    bundle: /^a=group:BUNDLE /m.test(sdp),
    media: sections.map((s) => {
      const m = /^m=(\w+) \d+ \S+ (.*)$/m.exec(s);
      const rtpmaps = [...s.matchAll(/^a=rtpmap:(\d+) ([^/\r\n]+)/gm)].map((r) => `${r[1]} ${r[2]}`);
      const fmtp = [...s.matchAll(/^a=fmtp:(\d+) (.*)$/gm)].map((r) => `${r[1]} ${r[2].trim()}`);
      return {
        kind: m?.[1],
        direction: /^a=(sendonly|recvonly|sendrecv|inactive)/m.exec(s)?.[1] ?? null,
        codecs: rtpmaps,
        fmtp,
        candidates: (s.match(/^a=candidate:/gm) || []).length,
        endOfCandidates: /^a=end-of-candidates/m.test(s),
      };
    }),
  };
}

/** The candidate lines (and the end of candidates) of a trickle-ice-sdpfrag body, per mid. */
function parseSdpFrag(body) {
  const out = { ufrag: null, candidates: [], end: false };
  let mid = null;
  let index = -1;
  for (const raw of body.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('m=')) index += 1;
    else if (line.startsWith('a=mid:')) mid = line.slice(6);
    else if (line.startsWith('a=ice-ufrag:')) out.ufrag = line.slice(12);
    else if (line.startsWith('a=candidate:')) {
      out.candidates.push({ candidate: line.slice(2), sdpMid: mid ?? '0', sdpMLineIndex: Math.max(index, 0) });
    } else if (line === 'a=end-of-candidates') out.end = true;
  }
  return out;
}

/**
 * A WHIP endpoint (RFC 9725) in front of Janus's VideoRoom, on `host`:`port` (default a free
 * port of 127.0.0.1; whip-front.mjs runs it alone):
 *
 * - `POST /whip` (`Content-Type: application/sdp`, `Authorization: Bearer TOKEN` when `token`
 *   is set): a Janus session and VideoRoom handle per POST, `joinandconfigure` as publisher
 *   with the offer; `201`, `Location: /whip/ID`, `ETag`, `Accept-Patch:
 *   application/trickle-ice-sdpfrag`, Janus's answer (its candidates inside). `401`, `415`,
 *   `400` (Janus refused the offer: its error text).
 * - `POST /ingest` answers `307` to `/whip` (the test points peercam there: redirects followed).
 * - `PATCH /whip/ID` (`application/trickle-ice-sdpfrag`): the candidates and end of candidates
 *   trickled to Janus; `204`. An ICE restart (another ufrag) gets `422`.
 * - `DELETE /whip/ID`: `leave`, the session destroyed (its handle with it); `200`. Unknown: `404`.
 * - `GET /stats`: JSON counts (no token), with the last offer's and answer's SDP summaries and
 *   the publisher's feed id.
 */
export async function startWhipFront({
  janusUrl, room = ROOM, token = '', host = '127.0.0.1', port = 0,
}) {
  const connection = await Janode.connect({ address: { url: janusUrl } });
  // Janus gone (killed): nothing left to destroy there.
  let janusGone = false;
  connection.once(Janode.EVENT.CONNECTION_ERROR, () => { janusGone = true; });
  connection.once(Janode.EVENT.CONNECTION_CLOSED, () => { janusGone = true; });
  const sessions = new Map(); // id -> { session, handle, feed, etag }
  const stats = {
    posts: 0, created: 0, redirects: 0, patches: 0, patchCandidates: 0, deletes: 0,
    deleted: [], rejected: {}, live: 0, feed: null, lastOffer: null, lastAnswer: null,
    lastError: null, lastOfferSdp: null, lastAnswerSdp: null, requests: [],
  };
  let nextId = 1;

  const reply = (response, status, headers = {}, body = '') => {
    response.writeHead(status, headers);
    response.end(body);
    return status;
  };
  const reject = (response, status, text) => {
    stats.rejected[status] = (stats.rejected[status] || 0) + 1;
    return reply(response, status, { 'Content-Type': 'text/plain' }, `${text}\n`);
  };
  const readBody = (request) => new Promise((resolve, reject_) => {
    const chunks = [];
    request.on('data', (c) => chunks.push(c));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject_);
  });

  async function post(request, response) {
    stats.posts += 1;
    const type = (request.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/sdp') return reject(response, 415, 'Content-Type must be application/sdp');
    const offer = await readBody(request);
    stats.lastOfferSdp = offer;
    stats.lastOffer = sdpSummary(offer);
    const session = await connection.create();
    let handle;
    try {
      handle = await session.attach(VideoRoomPlugin);
      const joined = await handle.joinConfigurePublisher({
        room, display: 'peercam', jsep: { type: 'offer', sdp: offer },
      });
      if (!joined.jsep || joined.jsep.type !== 'answer') throw new Error('Janus sent no answer');
      const id = String(nextId++);
      const entry = { session, handle, feed: joined.feed, etag: `"${id}-1"` };
      sessions.set(id, entry);
      stats.created += 1;
      stats.live = sessions.size;
      stats.feed = joined.feed;
      stats.lastAnswerSdp = joined.jsep.sdp;
      stats.lastAnswer = sdpSummary(joined.jsep.sdp);
      return reply(response, 201, {
        'Content-Type': 'application/sdp',
        Location: `/whip/${id}`,
        ETag: entry.etag,
        'Accept-Patch': 'application/trickle-ice-sdpfrag',
      }, joined.jsep.sdp);
    } catch (error) {
      stats.lastError = error.message;
      // Destroying the session detaches its handles (Janus does it).
      await session.destroy().catch(() => {});
      return reject(response, 400, `Janus refused the offer: ${error.message}`);
    }
  }

  async function patch(entry, request, response) {
    stats.patches += 1;
    const type = (request.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/trickle-ice-sdpfrag') {
      return reject(response, 415, 'Content-Type must be application/trickle-ice-sdpfrag');
    }
    const frag = parseSdpFrag(await readBody(request));
    const ufrag = /^a=ice-ufrag:(.*)$/m.exec(stats.lastOfferSdp || '')?.[1]?.trim();
    if (frag.ufrag && ufrag && frag.ufrag !== ufrag) {
      return reject(response, 422, 'ICE restarts are not supported here');
    }
    for (const candidate of frag.candidates) {
      stats.patchCandidates += 1;
      await entry.handle.trickle(candidate);
    }
    if (frag.end) await entry.handle.trickleComplete();
    return reply(response, 204, { ETag: entry.etag });
  }

  async function remove(id, entry, response) {
    stats.deletes += 1;
    sessions.delete(id);
    stats.live = sessions.size;
    stats.deleted.push(id);
    await entry.handle.leave().catch(() => {});
    await entry.session.destroy().catch(() => {});
    return reply(response, 200);
  }

  async function route(request, response) {
    const { pathname } = new URL(request.url, 'http://x');
    if (request.method === 'GET' && pathname === '/stats') {
      return reply(response, 200, { 'Content-Type': 'application/json' }, JSON.stringify(stats));
    }
    if (token && request.headers.authorization !== `Bearer ${token}`) {
      return reject(response, 401, 'a bearer token is needed');
    }
    if (request.method === 'POST' && pathname === '/ingest') {
      stats.redirects += 1;
      return reply(response, 307, { Location: '/whip' });
    }
    if (request.method === 'POST' && pathname === '/whip') return post(request, response);
    const m = /^\/whip\/([^/]+)$/.exec(pathname);
    const entry = m && sessions.get(m[1]);
    if (m && !entry) return reject(response, 404, 'no such session');
    if (entry && request.method === 'PATCH') return patch(entry, request, response);
    if (entry && request.method === 'DELETE') return remove(m[1], entry, response);
    return reject(response, 405, 'not allowed');
  }

  const server = http.createServer((request, response) => {
    const started = Date.now();
    route(request, response).then((status) => {
      stats.requests.push(`${request.method} ${request.url} ${status} ${Date.now() - started} ms`);
    }).catch((error) => {
      stats.lastError = error.message;
      if (!response.headersSent) reject(response, 500, error.message);
    });
  });
  await new Promise((resolve, reject_) => {
    server.once('error', reject_);
    server.listen(port, host, resolve);
  });
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${server.address().port}`;
  return {
    origin,
    /** The endpoint itself. */
    url: `${origin}/whip`,
    /** Redirects (307) to the endpoint. */
    redirectingUrl: `${origin}/ingest`,
    stats: () => JSON.parse(JSON.stringify(stats)),
    async close() {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
      if (!janusGone) {
        for (const [, entry] of sessions) await entry.session.destroy().catch(() => {});
        await connection.close().catch(() => {});
      }
      sessions.clear();
    },
  };
}

/**
 * In the page: answers Janus's subscriber offer with an RTCPeerConnection (all candidates in
 * the answer), plays what comes in a <video>, and keeps getStats() figures in window.sfuStats.
 */
async function answerInPage(offerSdp) {
  document.body.innerHTML = '<video id="v" autoplay playsinline></video>';
  const video = document.getElementById('v');
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: [] });
  window.sfuPeer = pc;
  const stream = new MediaStream();
  pc.ontrack = (event) => {
    stream.addTrack(event.track);
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
  };
  const gathered = new Promise((resolve) => {
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    setTimeout(resolve, 3000);
  });
  await pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered;
  window.sfuStats = null;
  setInterval(async () => {
    const report = await pc.getStats();
    const s = {
      connectionState: pc.connectionState, framesDecoded: 0, frameWidth: 0, frameHeight: 0,
      videoCodec: null, videoPackets: 0, audioCodec: null, audioPackets: 0, audioSamples: 0,
      audioEnergy: 0,
    };
    report.forEach((r) => {
      const codec = r.codecId && report.get(r.codecId) ? report.get(r.codecId).mimeType : null;
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        s.framesDecoded = r.framesDecoded || 0;
        s.frameWidth = r.frameWidth || 0;
        s.frameHeight = r.frameHeight || 0;
        s.videoCodec = codec;
        s.videoPackets = r.packetsReceived || 0;
      } else if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        s.audioCodec = codec;
        s.audioPackets = r.packetsReceived || 0;
        s.audioSamples = r.totalSamplesReceived || 0;
        s.audioEnergy = r.totalAudioEnergy || 0;
      }
    });
    window.sfuStats = s;
  }, 250);
  return pc.localDescription.sdp;
}

/**
 * A VideoRoom subscriber to `feed` on `connection` (a janode connection to Janus) whose
 * media goes to `page`: Janus's offer is answered by the page. Returns the handle's state
 * and `close()` (leave, the session destroyed).
 */
export async function watchInPage(page, { connection, feed, room = ROOM }) {
  const session = await connection.create();
  const handle = await session.attach(VideoRoomPlugin);
  const joined = await handle.joinSubscriber({ room, streams: [{ feed }] });
  if (!joined.jsep || joined.jsep.type !== 'offer') throw new Error('Janus sent no subscriber offer');
  const answer = await page.evaluate(answerInPage, joined.jsep.sdp);
  await handle.start({ jsep: { type: 'answer', sdp: answer } });
  return {
    offer: sdpSummary(joined.jsep.sdp),
    answer: sdpSummary(answer),
    async close() {
      await handle.leave().catch(() => {});
      await session.destroy().catch(() => {});
    },
  };
}

/**
 * Waits until the page decoded `frames` video frames and received `audioPackets` audio packets
 * (window.sfuStats); fails with the stats.
 */
export async function waitForMedia(page, { frames, audioPackets }, timeoutMs) {
  try {
    await page.waitForFunction(
      ([f, a]) => window.sfuStats && window.sfuStats.framesDecoded >= f
        && window.sfuStats.audioPackets >= a,
      [frames, audioPackets],
      { timeout: timeoutMs, polling: 250 },
    );
  } catch {
    const stats = await page.evaluate(() => window.sfuStats).catch(() => null);
    throw new Error(`no ${frames} frames and ${audioPackets} audio packets within ${timeoutMs} ms: `
      + JSON.stringify(stats));
  }
  return page.evaluate(() => window.sfuStats);
}
