// peercam Dial page. Plain JavaScript, no build step, no external resources.
//
// Viewer mode (default, `/`): Dial opens the signaling WebSocket `/ws`, sends a receive-only
// offer, trickles ICE candidates; the daemon auto-answers and streams video and audio.
// Through `peercam relay` the page is served at `/d/NAME/` and its relative `ws` reaches that
// camera; a connected call outlives its signaling socket (the relay may restart).
// Room mode (`/?room=NAME`): the seed tutorial's flow between two browsers. Both send their
// camera and microphone; Dial offers to the other browser, which answers automatically.
//
// For tests the page exposes window.peercamState, peercamError, peercamStats, peercamLatency.
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const room = params.get('room');
  const $ = (id) => document.getElementById(id);
  const ui = {
    remote: $('remote'), local: $('local'), unmute: $('unmute'), dial: $('dial'),
    hangup: $('hangup'), status: $('status'), stats: $('stats'), server: $('server'),
  };

  window.peercamState = 'idle';
  window.peercamError = null;
  window.peercamStats = null;
  window.peercamLatency = { samples: [], p50: null };

  let ws = null; // the signaling socket, kept open between calls
  let wsReady = null; // promise resolved when `ws` is open
  let pc = null; // the current RTCPeerConnection
  let remoteApplied = false; // remote description set: candidates can be added
  let queuedCandidates = []; // remote candidates that arrived before the description
  let answering = false; // room mode: an offer came in, the camera is being opened
  let byeEchoes = 0; // viewer mode: the daemon answers each of our byes with a bye
  let localStream = null; // room mode: own camera and microphone
  let statsTimer = null;
  let targetKbps = null; // the daemon's video encoder target ({"bitrate": ...}), if adaptive
  let helloIceServers = []; // the STUN/TURN servers the daemon's hello named
  let greeted = null; // resolves `wsReady` when the daemon's hello arrives
  const iceErrors = new Map(); // TURN/STUN server URL -> what went wrong, this call

  // ---- status -------------------------------------------------------------------------

  function setState(state, text) {
    window.peercamState = state;
    ui.status.dataset.state = state;
    ui.status.textContent = text || state;
    const inCall = state === 'connecting' || state === 'connected';
    ui.dial.disabled = inCall;
    ui.hangup.disabled = !inCall;
  }

  /**
   * Ends the call with an error. Unless the other side reported the error itself (and has
   * already dropped the call), it is told with a bye so it frees the viewer slot at once.
   */
  function fail(reason, reportedByOtherSide = false) {
    window.peercamError = reason;
    if (pc && !reportedByOtherSide) sendBye();
    closePeer();
    setState('failed', 'failed: ' + reason);
  }

  // ---- signaling ----------------------------------------------------------------------

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  function openSocket() {
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      return wsReady;
    }
    const url = new URL('ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.search = room ? '?room=' + encodeURIComponent(room) : '';
    const socket = new WebSocket(url);
    ws = socket;
    byeEchoes = 0;
    // Ready once the daemon spoke: its hello names the ICE servers the first call needs (a
    // refusal, such as a full room, comes instead of hello and is shown first).
    wsReady = new Promise((resolve, reject) => {
      greeted = () => resolve(socket);
      socket.onerror = () => reject(new Error('cannot reach the signaling server at ' + url));
      socket.addEventListener('close', () => reject(new Error('signaling connection closed')));
    });
    socket.onmessage = (event) => {
      if (socket !== ws) return;
      onMessage(event.data);
      if (greeted) {
        greeted();
        greeted = null;
      }
    };
    socket.onclose = (event) => {
      if (socket !== ws) return;
      ws = null;
      const why = 'signaling connection closed' + (event.code ? ' (code ' + event.code + ')' : '');
      // A call that is up needs no signaling: its media goes on (e.g. while a relay
      // restarts) until the call itself fails or is hung up. A call being set up fails.
      if (pc && pc.connectionState === 'connected') {
        setState('connected', 'connected (signaling lost, media continues)');
        return;
      }
      if (window.peercamState === 'connecting' || window.peercamState === 'connected') fail(why);
    };
    return wsReady;
  }

  function onMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch (e) {
      console.warn('peercam: ignoring a message that is not JSON', data);
      return;
    }
    if (!message || typeof message !== 'object') return;
    const [type] = Object.keys(message);
    const body = message[type];
    switch (type) {
      case 'hello': return onHello(body || {});
      case 'sdp': return onDescription(body).catch((e) => fail('cannot apply the ' +
        (body && body.type) + ': ' + e.message));
      case 'candidate': return onRemoteCandidate(body);
      case 'error': return onError(body || {});
      case 'bye': return onBye(body || {});
      case 'bitrate': return onBitrate(body || {});
      default: console.warn('peercam: unknown message type', type);
    }
  }

  /** The daemon's adaptive bitrate target for this call's video encoder. */
  function onBitrate(body) {
    if (Number.isFinite(body.target_kbps)) targetKbps = body.target_kbps;
  }

  function onHello(hello) {
    if (Array.isArray(hello.ice_servers)) {
      helloIceServers = hello.ice_servers.filter((s) => s && (typeof s.urls === 'string' ||
        Array.isArray(s.urls)));
    }
    const parts = [hello.server || 'peercam'];
    if (hello.mode === 'room') {
      parts.push('room ' + room);
    } else if (hello.max_viewers !== undefined) {
      parts.push((hello.viewers || 0) + '/' + hello.max_viewers + ' viewers');
    }
    if (Array.isArray(hello.codecs) && hello.codecs.length) parts.push(hello.codecs.join(', '));
    ui.server.textContent = parts.join(' · ');
  }

  function onError(body) {
    const message = body.message || body.code || 'unknown error';
    console.warn('peercam: server error', body.code, message);
    // A rejected candidate does not end a call (others may work); everything else the
    // server reports does (it drops the call and returns to idle).
    if (body.code === 'bad_candidate' && pc) {
      window.peercamError = message;
      return;
    }
    if (pc || window.peercamState === 'connecting') {
      fail(message, true);
    } else if (window.peercamState === 'failed') {
      // Keep the first reason: later errors are echoes of messages that were already in
      // flight (e.g. trickled candidates after the offer was refused).
    } else {
      window.peercamError = message;
      setState('failed', message);
    }
  }

  function onBye(body) {
    if (!room && body.reason === 'reload') {
      // The daemon reloaded its configuration with new video/audio settings and closes this
      // socket: dial again on a new one (once; a failure then shows as usual).
      const wasInCall = !!pc;
      ws = null; // the server closes it; do not treat that as a failure
      closePeer();
      if (wasInCall) {
        setState('connecting', 'camera settings changed; reconnecting…');
        setTimeout(() => { if (window.peercamState === 'connecting') dial(); }, 500);
      }
      return;
    }
    if (!room && body.reason === 'ice_timeout' && pc) {
      fail('no connection to the camera in time (ICE): check the firewall for its UDP ports' +
        iceServerTrouble(), true);
      return;
    }
    if (!room && byeEchoes > 0) {
      byeEchoes -= 1; // the answer to our own hang-up
      return;
    }
    if (!pc) return;
    closePeer();
    setState('idle', 'idle: ' + (room ? 'the other browser hung up' : 'the camera ended the call'));
  }

  // ---- peer connection ----------------------------------------------------------------

  /** What went wrong with the STUN/TURN servers in this call, to add to a failure. */
  function iceServerTrouble() {
    if (!iceErrors.size) return '';
    return '; ICE servers: ' + [...iceErrors].map(([url, what]) => url + ' ' + what).join('; ');
  }

  function newPeer() {
    const config = {};
    const ice = params.get('ice'); // optional, e.g. ?ice=stun:stun.example.org:3478
    if (ice) config.iceServers = ice.split(',').map((u) => ({ urls: u }));
    else if (helloIceServers.length) config.iceServers = helloIceServers;
    const peer = new RTCPeerConnection(config);
    const mine = () => peer === pc;
    iceErrors.clear();
    // A STUN/TURN server that refuses or does not answer: said when the call fails, and
    // kept in window.peercamIceErrors.
    peer.onicecandidateerror = (event) => {
      if (!mine() || !event.url) return;
      let what = event.errorCode + ' ' + (event.errorText || '');
      if (event.errorCode === 401) what = 'refused the credentials (401 Unauthorized)';
      else if (event.errorCode === 701) what = 'did not answer';
      iceErrors.set(event.url, what.trim());
      window.peercamIceErrors = Object.fromEntries(iceErrors);
    };
    const remoteStream = new MediaStream();
    peer.onicecandidate = (event) => {
      if (mine()) send({ candidate: event.candidate ? event.candidate.toJSON() : null });
    };
    peer.ontrack = (event) => {
      if (!mine()) return;
      remoteStream.addTrack(event.track);
      if (ui.remote.srcObject !== remoteStream) ui.remote.srcObject = remoteStream;
      playWithSound();
    };
    peer.onconnectionstatechange = () => {
      if (!mine()) return;
      switch (peer.connectionState) {
        case 'connected': setState('connected', 'connected'); break;
        case 'disconnected': setState('connecting', 'connection interrupted, waiting…'); break;
        case 'failed': {
          const other = room ? 'the other browser' : 'the camera';
          fail('ICE connection failed: no network path to ' + other + iceServerTrouble());
          break;
        }
        default: break;
      }
    };
    pc = peer;
    remoteApplied = false;
    if (room) {
      localStream.getTracks().forEach((track) => peer.addTrack(track, localStream));
    } else {
      peer.addTransceiver('video', { direction: 'recvonly' });
      peer.addTransceiver('audio', { direction: 'recvonly' });
    }
    startStats();
    return peer;
  }

  function closePeer() {
    stopStats();
    if (pc) {
      const peer = pc;
      pc = null;
      peer.close();
    }
    remoteApplied = false;
    queuedCandidates = [];
    ui.remote.srcObject = null;
    ui.unmute.hidden = true;
  }

  async function onDescription(desc) {
    if (!desc || (desc.type !== 'offer' && desc.type !== 'answer')) return;
    if (desc.type === 'offer') {
      // Room mode only: the other browser dialled; answer automatically.
      if (!room) return;
      closePeer();
      // The caller's candidates keep coming while the camera opens (a permission prompt can
      // take a while): queue them for the new peer.
      answering = true;
      try {
        await getCamera();
      } finally {
        answering = false;
      }
      const peer = newPeer();
      setState('connecting', 'answering…');
      await peer.setRemoteDescription(desc);
      await applyQueuedCandidates(peer);
      await peer.setLocalDescription(await peer.createAnswer());
      send({ sdp: { type: 'answer', sdp: peer.localDescription.sdp } });
      return;
    }
    if (!pc || pc.signalingState !== 'have-local-offer') return;
    const peer = pc;
    await peer.setRemoteDescription(desc);
    await applyQueuedCandidates(peer);
  }

  async function applyQueuedCandidates(peer) {
    remoteApplied = true;
    const queued = queuedCandidates;
    queuedCandidates = [];
    for (const candidate of queued) await addCandidate(peer, candidate);
  }

  function onRemoteCandidate(candidate) {
    if (!pc && !answering) return; // left over from a call that has ended
    if (!pc || !remoteApplied) {
      queuedCandidates.push(candidate);
      return;
    }
    addCandidate(pc, candidate);
  }

  async function addCandidate(peer, candidate) {
    try {
      if (candidate && candidate.candidate) {
        await peer.addIceCandidate(candidate);
      } else {
        await peer.addIceCandidate(); // end of candidates; not every browser accepts it
      }
    } catch (e) {
      if (candidate && candidate.candidate) console.warn('peercam: candidate rejected', e);
    }
  }

  async function getCamera() {
    if (localStream) return localStream;
    localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    ui.local.srcObject = localStream;
    ui.local.hidden = false;
    return localStream;
  }

  // ---- buttons ------------------------------------------------------------------------

  async function dial() {
    window.peercamError = null;
    window.peercamIceErrors = {};
    window.peercamStats = null; // numbers of this call only
    window.peercamLatency.samples.length = 0;
    window.peercamLatency.p50 = null;
    targetKbps = null;
    setState('connecting', 'connecting to the server…');
    try {
      if (room) await getCamera();
      await openSocket();
      if (window.peercamState !== 'connecting') return; // hung up meanwhile
      const peer = newPeer();
      setState('connecting', 'dialling…');
      await peer.setLocalDescription(await peer.createOffer());
      if (peer !== pc) return;
      send({ sdp: { type: 'offer', sdp: peer.localDescription.sdp } });
    } catch (e) {
      fail(e.message || String(e));
    }
  }

  function sendBye() {
    if (ws && ws.readyState === WebSocket.OPEN) {
      send({ bye: {} });
      if (!room) byeEchoes += 1;
    }
  }

  function hangUp() {
    sendBye();
    closePeer();
    setState('idle', 'idle: hung up');
  }

  function playWithSound() {
    ui.remote.muted = false;
    const playing = ui.remote.play();
    if (!playing) return;
    playing.then(() => { ui.unmute.hidden = true; }).catch(() => {
      // Autoplay with sound refused: play muted and let the user turn the sound on.
      ui.remote.muted = true;
      ui.remote.play().catch(() => {});
      ui.unmute.hidden = false;
    });
  }

  ui.dial.addEventListener('click', dial);
  ui.hangup.addEventListener('click', hangUp);
  ui.unmute.addEventListener('click', playWithSound);
  window.addEventListener('pagehide', () => { if (pc) hangUp(); });

  // ---- live statistics ----------------------------------------------------------------

  let previous = null; // { bytes, at } of the last sample, for the bitrate

  function startStats() {
    stopStats();
    previous = null;
    statsTimer = setInterval(sampleStats, 1000);
  }

  function stopStats() {
    if (statsTimer) clearInterval(statsTimer);
    statsTimer = null;
  }

  async function sampleStats() {
    const peer = pc;
    if (!peer) return;
    let report;
    try {
      report = await peer.getStats();
    } catch (e) {
      return;
    }
    if (peer !== pc) return;
    const stats = summarize(report);
    const now = performance.now();
    if (previous && now > previous.at) {
      stats.bitrateKbps = Math.round(((stats.bytesReceived - previous.bytes) * 8) / (now - previous.at));
    }
    previous = { bytes: stats.bytesReceived, at: now };
    stats.targetKbps = targetKbps;
    window.peercamStats = stats;
    showStats(stats);
  }

  /** Picks the numbers the page shows out of an RTCStatsReport. */
  function summarize(report) {
    const s = {
      framesDecoded: 0, frameWidth: 0, frameHeight: 0, fps: null, codec: null, videoFmtp: null,
      audioCodec: null, audioSamples: 0, audioEnergy: 0, audioLevel: null,
      bytesReceived: 0, bitrateKbps: null, targetKbps: null, rttMs: null, path: null,
    };
    let selectedPairId = null;
    const pairs = [];
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        s.framesDecoded = r.framesDecoded || 0;
        s.frameWidth = r.frameWidth || 0;
        s.frameHeight = r.frameHeight || 0;
        s.fps = r.framesPerSecond === undefined ? null : r.framesPerSecond;
        s.bytesReceived += r.bytesReceived || 0;
        s.codec = codecOf(report, r);
        const codec = r.codecId && report.get(r.codecId);
        s.videoFmtp = (codec && codec.sdpFmtpLine) || null;
      } else if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        s.audioSamples = r.totalSamplesReceived || 0;
        s.audioEnergy = r.totalAudioEnergy || 0;
        s.audioLevel = r.audioLevel === undefined ? null : r.audioLevel;
        s.bytesReceived += r.bytesReceived || 0;
        s.audioCodec = codecOf(report, r);
      } else if (r.type === 'transport' && r.selectedCandidatePairId) {
        selectedPairId = r.selectedCandidatePairId;
      } else if (r.type === 'candidate-pair') {
        pairs.push(r);
      }
    });
    const pair = pairs.find((p) => p.id === selectedPairId) ||
      pairs.find((p) => p.selected) || // Firefox
      pairs.find((p) => p.nominated && p.state === 'succeeded');
    if (pair && pair.currentRoundTripTime !== undefined) {
      s.rttMs = Math.round(pair.currentRoundTripTime * 1000);
    }
    if (pair) s.path = pathOf(report.get(pair.localCandidateId), report.get(pair.remoteCandidateId));
    return s;
  }

  /**
   * How the call's media travels, from the selected pair's two candidates: `relayed` when
   * either end is a TURN relay, `reflexive` when either is a NAT's address (srflx, prflx),
   * else `direct`; over UDP or TCP (for a relay, how the browser reaches the TURN server).
   */
  function pathOf(local, remote) {
    if (!local || !remote) return null;
    const types = [local.candidateType, remote.candidateType];
    const kind = types.includes('relay') ? 'relayed'
      : types.some((t) => t === 'srflx' || t === 'prflx') ? 'reflexive' : 'direct';
    const via = local.candidateType === 'relay' && local.relayProtocol
      ? local.relayProtocol : local.protocol;
    return {
      kind,
      local: local.candidateType || null,
      remote: remote.candidateType || null,
      protocol: (via || 'udp').toUpperCase(),
    };
  }

  function codecOf(report, rtp) {
    const codec = rtp.codecId && report.get(rtp.codecId);
    return codec ? codec.mimeType : null;
  }

  function showStats(s) {
    const parts = [];
    if (s.codec) parts.push(s.codec.replace(/^video\//, ''));
    if (s.frameWidth) parts.push(s.frameWidth + '×' + s.frameHeight);
    if (s.fps !== null) parts.push(Math.round(s.fps) + ' fps');
    if (s.bitrateKbps !== null) {
      const target = s.targetKbps === null ? '' : ' (target ' + s.targetKbps + ')';
      parts.push(s.bitrateKbps + ' kbit/s' + target);
    }
    if (s.rttMs !== null) parts.push('rtt ' + s.rttMs + ' ms');
    if (s.path) parts.push(s.path.kind + ' ' + s.path.protocol);
    if (s.audioCodec) {
      const level = s.audioLevel === null ? '' : ' level ' + s.audioLevel.toFixed(2);
      parts.push(s.audioCodec.replace(/^audio\//, '') + level + ' ' + s.audioSamples + ' samples');
    }
    const latency = window.peercamLatency.p50;
    if (latency !== null) parts.push('latency ' + latency + ' ms');
    parts.push(s.framesDecoded + ' frames');
    ui.stats.textContent = parts.join(' · ');
  }

  // ---- latency from the test pattern's barcode ----------------------------------------

  const LATENCY_SAMPLES = 600;
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d', { willReadFrequently: true });

  function onVideoFrame(callbackNow, metadata) {
    const video = ui.remote;
    if (video.videoWidth && video.videoHeight && context) {
      // The time the frame reaches the screen; read before decoding, which takes time too.
      const shown = metadata && metadata.expectedDisplayTime ? metadata.expectedDisplayTime
        : performance.now();
      const area = barcodeArea(video.videoWidth, video.videoHeight);
      if (canvas.width !== area.width || canvas.height !== area.height) {
        canvas.width = area.width;
        canvas.height = area.height;
      }
      // Source rectangle in the decoded frame's own pixels, copied 1:1 into the canvas.
      context.drawImage(video, 0, 0, area.width, area.height, 0, 0, area.width, area.height);
      const encoded = decodeBarcode(context.getImageData(0, 0, area.width, area.height));
      if (encoded !== null) addLatencySample(performance.timeOrigin + shown, encoded);
    }
    scheduleFrame();
  }

  function addLatencySample(nowMs, encodedLow32) {
    // Both are wall-clock milliseconds; the barcode carries the low 32 bits only.
    let latency = (Math.floor(nowMs) - encodedLow32) % 2 ** 32;
    if (latency < 0) latency += 2 ** 32;
    if (latency >= 2 ** 31) latency -= 2 ** 32; // the page clock is behind the camera's
    const samples = window.peercamLatency.samples;
    samples.push(latency);
    if (samples.length > LATENCY_SAMPLES) samples.splice(0, samples.length - LATENCY_SAMPLES);
    const sorted = samples.slice().sort((a, b) => a - b);
    window.peercamLatency.p50 = sorted[Math.floor(sorted.length / 2)];
  }

  function scheduleFrame() {
    const video = ui.remote;
    if ('requestVideoFrameCallback' in video) {
      video.requestVideoFrameCallback(onVideoFrame);
    } else {
      requestAnimationFrame(onVideoFrame); // fallback: reads repeated frames too
    }
  }

  scheduleFrame();
  setState('idle', room ? 'idle: room ' + room + ' — Dial calls the other browser' : 'idle');
  // Room mode: be reachable before dialling, the other browser may call first.
  if (room) openSocket().catch((e) => fail(e.message));
})();

// ---- test-pattern barcode (layout: README.md, "Test pattern and latency barcode") ----
//
// The test pattern draws the wall-clock capture time (low 32 bits of UNIX ms) as 40 grey
// cells across the top rows: start marker 1 0 1, 32 data bits MSB first, even parity, stop
// marker 0 1 0 1. Only the top strip of the frame is read.

/** Cell size in pixels of a frame `width` pixels wide (even; 0 when too narrow). */
function barcodeCell(width) {
  return Math.floor(width / 40) & ~1;
}

/** The part of a `width` x `height` frame that holds the barcode: the full-width top strip. */
function barcodeArea(width, height) {
  const c = barcodeCell(width);
  return { x: 0, y: 0, width, height: Math.max(1, Math.min(height, c)) };
}

/**
 * Reads the barcode from RGBA pixels of the frame's top rows (ImageData at the frame's full
 * width). Returns the encoded value (0 .. 2^32-1), or null when markers or parity do not match.
 */
function decodeBarcode(imageData) {
  const { width: w, height: h, data } = imageData;
  const c = barcodeCell(w);
  if (c < 2 || h < c) return null;
  const x0 = Math.floor((w - 40 * c) / 2) & ~1;
  const a = Math.floor(c / 4);
  const n = Math.floor(c / 2);
  const bits = [];
  for (let i = 0; i < 40; i++) {
    // Mean luma of the cell's central n x n square: the edges ring after compression.
    let sum = 0;
    for (let y = a; y < a + n; y++) {
      for (let x = x0 + i * c + a; x < x0 + i * c + a + n; x++) {
        const p = (y * w + x) * 4;
        sum += 0.299 * data[p] + 0.587 * data[p + 1] + 0.114 * data[p + 2];
      }
    }
    bits.push(sum / (n * n) >= 128 ? 1 : 0);
  }
  const matches = (from, pattern) => pattern.every((bit, k) => bits[from + k] === bit);
  if (!matches(0, [1, 0, 1]) || !matches(36, [0, 1, 0, 1])) return null;
  let value = 0;
  let ones = 0;
  for (let k = 0; k < 32; k++) {
    value = value * 2 + bits[3 + k];
    ones += bits[3 + k];
  }
  if (bits[35] !== ones % 2) return null;
  return value;
}

