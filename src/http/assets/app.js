// peercam Dial page. Plain JavaScript, no build step, no external resources.
//
// Viewer mode (default, `/`): the page dials by itself when it loads: it opens the signaling
// WebSocket `/ws`, sends a receive-only offer and trickles ICE candidates; the daemon
// auto-answers and streams video and audio. After any drop (the daemon restarting or
// reloading, the network going, ICE failing) the page dials again by itself, waiting 1, 2, 4,
// 8, then 10 s between tries (back to 1 s once a call delivers frames); a dial the daemon
// refuses for now (`dial_limit`, `rate_limited`) is retried after the wait it names, with
// jitter. Hang up stops that until Dial is pressed. `?autodial=0`: the page waits for Dial
// and shows a drop as an error instead of redialling (for tests that time a dial).
// Through `peercam relay` the page is served at `/d/NAME/` and its relative `ws` reaches that
// camera; a connected call outlives its signaling socket (the relay may restart).
// Room mode (`/?room=NAME`): the seed tutorial's flow between two browsers. Both send their
// camera and microphone; Dial offers to the other browser, which answers automatically.
//
// For tests the page exposes window.peercamState (idle, connecting, connected, retrying,
// failed), peercamError, peercamStats, peercamLatency, peercamViewers and peercamRetry.
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const room = params.get('room');
  /** Dial on load and after every drop (viewer mode unless `?autodial=0`). */
  const auto = !room && params.get('autodial') !== '0';
  const $ = (id) => document.getElementById(id);
  const ui = {
    remote: $('remote'), local: $('local'), unmute: $('unmute'), dial: $('dial'),
    hangup: $('hangup'), status: $('status'), stats: $('stats'), server: $('server'),
    name: $('name'), viewers: $('viewers'), mute: $('mute'), fullscreen: $('fullscreen'),
    snapshot: $('snapshot'), detailsToggle: $('details-toggle'), details: $('details'),
    summary: $('summary'), stage: $('stage'),
  };

  /** Seconds between redials after drops in a row (the last one repeats). */
  const BACKOFF_S = [1, 2, 4, 8, 10];
  /** ICE `disconnected` for this long counts as a drop (it often heals by itself sooner). */
  const DISCONNECTED_MS = 4000;
  /** Refusals that waiting does not cure: shown, no redial. */
  const FINAL_ERRORS = new Set(['viewer_limit', 'no_codec', 'room_full']);
  /** Refusals that pass by themselves: redialled after `retry_after_ms` plus jitter. */
  const BUSY_ERRORS = new Set(['dial_limit', 'rate_limited']);

  window.peercamState = 'idle';
  window.peercamError = null;
  window.peercamStats = null;
  window.peercamLatency = { samples: [], p50: null };
  window.peercamViewers = null; // { count, max } from hello and the daemon's pushes
  window.peercamRetry = null; // { at (Date.now() ms), reason } while a redial waits

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
  let wanted = false; // the viewer wants to watch: Dial (or the page's own) until Hang up
  let drops = 0; // drops since a call last delivered frames: picks the backoff
  let retryTimer = null; // the pending redial
  let countdownTimer = null; // updates "retrying in N s"
  let disconnectTimer = null; // ICE `disconnected` turning into a drop
  let userMuted = false; // the viewer turned the sound off
  let cameraName = ui.name.textContent.trim() || 'peercam';

  // ---- status -------------------------------------------------------------------------

  function setState(state, text) {
    window.peercamState = state;
    ui.status.dataset.state = state;
    ui.status.textContent = text || state;
    const inCall = state === 'connecting' || state === 'connected';
    // Dial stays usable (in a call it keeps the call); it looks secondary meanwhile.
    ui.dial.classList.toggle('secondary', inCall);
    ui.hangup.disabled = !(inCall || state === 'retrying');
    ui.snapshot.disabled = state !== 'connected';
  }

  /** Forgets the numbers of a call that is gone: nothing stale stays on screen. */
  function clearStats() {
    window.peercamStats = null;
    ui.stats.textContent = '';
    ui.summary.textContent = '';
  }

  /**
   * Ends the call with an error that stays on screen (no redial). Unless the other side
   * reported the error itself (and has already dropped the call), it is told with a bye so it
   * frees the viewer slot at once.
   */
  function fail(reason, reportedByOtherSide = false) {
    window.peercamError = reason;
    wanted = false;
    cancelRetry();
    if (pc && !reportedByOtherSide) sendBye();
    closePeer();
    setState('failed', 'failed: ' + reason);
  }

  /**
   * The call (or the way to it) dropped for `reason`: dial again after the backoff, or after
   * `waitMs` when the daemon named a wait (`busy`: it refused the dial for now). Without
   * auto-dial, or after Hang up, this is a failure that stays on screen.
   */
  function drop(reason, reportedByOtherSide = false, waitMs = null, busy = false) {
    if (!auto || !wanted) {
      fail(reason, reportedByOtherSide);
      return;
    }
    window.peercamError = reason;
    if (pc && !reportedByOtherSide) sendBye();
    closePeer();
    let delay = waitMs;
    if (delay === null) {
      const base = BACKOFF_S[Math.min(drops, BACKOFF_S.length - 1)] * 1000;
      drops += 1;
      delay = base + Math.random() * base * 0.1; // pages that dropped together spread out
    }
    scheduleRedial(reason, delay, busy ? 'camera busy' : 'camera offline');
  }

  function scheduleRedial(reason, delay, what) {
    cancelRetry();
    const at = Date.now() + delay;
    window.peercamRetry = { at, reason };
    const show = () => {
      const seconds = Math.max(1, Math.ceil((at - Date.now()) / 1000));
      setState('retrying', what + ' — retrying in ' + seconds + ' s');
    };
    show();
    ui.summary.textContent = reason;
    countdownTimer = setInterval(show, 1000);
    retryTimer = setTimeout(() => {
      cancelRetry();
      dial();
    }, delay);
  }

  function cancelRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = null;
    countdownTimer = null;
    window.peercamRetry = null;
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
    let opened = false; // a socket that never opens is the dial's failure, handled there
    socket.onopen = () => { opened = true; };
    ws = socket;
    byeEchoes = 0;
    // Ready once the daemon spoke: its hello names the ICE servers the first call needs (a
    // refusal, such as a full room, comes instead of hello and is shown first).
    wsReady = new Promise((resolve, reject) => {
      greeted = () => resolve(socket);
      socket.onerror = () => reject(new Error('cannot reach the camera at ' + url));
      socket.addEventListener('close', () => reject(new Error('signaling connection closed')));
    });
    wsReady.catch(() => {}); // handled by whoever awaits it
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
      forgetViewers();
      if (!opened) return;
      const why = 'signaling connection closed' + (event.code ? ' (code ' + event.code + ')' : '');
      // A call that is up needs no signaling: its media goes on (e.g. while a relay
      // restarts) until the call itself fails or is hung up. A call being set up drops.
      if (pc && pc.connectionState === 'connected') {
        setState('connected', 'connected (signaling lost, media continues)');
        return;
      }
      if (window.peercamState === 'connecting' || window.peercamState === 'connected') {
        drop('cannot reach the camera: ' + why);
      }
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
      case 'sdp': return onDescription(body).catch((e) => drop('cannot apply the ' +
        (body && body.type) + ': ' + e.message));
      case 'candidate': return onRemoteCandidate(body);
      case 'error': return onError(body || {});
      case 'bye': return onBye(body || {});
      case 'bitrate': return onBitrate(body || {});
      case 'viewers': return showViewers(body || {});
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
    if (typeof hello.name === 'string' && hello.name) {
      cameraName = hello.name;
      ui.name.textContent = cameraName; // text, never markup
      document.title = cameraName + ' · peercam';
    }
    const parts = [hello.server || 'peercam'];
    if (hello.mode === 'room') parts.push('room ' + room);
    ui.server.textContent = parts.join(' · ');
    if (hello.mode !== 'room' && Number.isFinite(hello.viewers)) {
      showViewers({ count: hello.viewers, max: hello.max_viewers });
    }
  }

  /** How many watch: from hello, then from the daemon's `viewers` pushes. */
  function showViewers(body) {
    if (!Number.isFinite(body.count)) return;
    window.peercamViewers = { count: body.count, max: body.max };
    const of = Number.isFinite(body.max) ? ' of ' + body.max : '';
    ui.viewers.textContent = body.count + of + ' watching';
  }

  /** Without a socket the count is not kept current: show none rather than a stale one. */
  function forgetViewers() {
    window.peercamViewers = null;
    ui.viewers.textContent = '';
  }

  function onError(body) {
    const message = body.message || body.code || 'unknown error';
    console.warn('peercam: server error', body.code, message);
    // A rejected candidate does not end a call (others may work).
    if (body.code === 'bad_candidate' && pc) {
      window.peercamError = message;
      return;
    }
    const inCall = pc || window.peercamState === 'connecting';
    if (!inCall) {
      // Keep the first reason: later errors are echoes of messages that were already in
      // flight (e.g. trickled candidates after the offer was refused).
      if (window.peercamState === 'failed' || window.peercamState === 'retrying') return;
      window.peercamError = message;
      setState('failed', message);
      return;
    }
    if (FINAL_ERRORS.has(body.code)) {
      fail(message, true);
    } else if (BUSY_ERRORS.has(body.code)) {
      const named = Number.isFinite(body.retry_after_ms) ? body.retry_after_ms : 1000;
      drop(message, true, named + Math.random() * 1000, true);
    } else {
      drop(message, true);
    }
  }

  /** What a bye from the daemon means, for the status. */
  function byeReason(reason) {
    switch (reason) {
      case 'shutdown': return 'the camera stopped or is restarting';
      case 'reload': return 'the camera\u2019s settings changed';
      case 'ice_timeout': return 'no connection to the camera in time (ICE): check the firewall ' +
        'for its UDP ports' + iceServerTrouble();
      case 'idle': return 'the connection was idle too long';
      default: return 'the camera ended the call';
    }
  }

  function onBye(body) {
    if (!room && !body.reason && byeEchoes > 0) {
      byeEchoes -= 1; // the answer to our own hang-up
      return;
    }
    if (room) {
      if (!pc) return;
      closePeer();
      setState('idle', 'idle: the other browser hung up');
      return;
    }
    // The daemon closes the socket after a bye with a reason: not a failure of its own.
    if (body.reason) {
      ws = null;
      forgetViewers();
    }
    if (body.reason === 'reload' && wanted) {
      // New video/audio settings: dial again on a new socket at once.
      closePeer();
      scheduleRedial(byeReason('reload'), 500, 'camera settings changed');
      return;
    }
    const inCall = pc || window.peercamState === 'connecting';
    if (inCall) drop(byeReason(body.reason), true);
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
    const other = room ? 'the other browser' : 'the camera';
    peer.onconnectionstatechange = () => {
      if (!mine()) return;
      clearTimeout(disconnectTimer);
      switch (peer.connectionState) {
        case 'connected': setState('connected', 'connected'); break;
        case 'disconnected':
          setState('connecting', 'connection interrupted, waiting…');
          disconnectTimer = setTimeout(() => {
            if (mine() && peer.connectionState === 'disconnected') {
              drop('the connection to ' + other + ' was interrupted');
            }
          }, DISCONNECTED_MS);
          break;
        case 'failed':
          drop('ICE connection failed: no network path to ' + other + iceServerTrouble());
          break;
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
    clearTimeout(disconnectTimer);
    if (pc) {
      const peer = pc;
      pc = null;
      peer.close();
    }
    remoteApplied = false;
    queuedCandidates = [];
    ui.remote.srcObject = null;
    ui.unmute.hidden = true;
    clearStats();
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

  /** Dials, unless a call is already up or being set up (then Dial keeps it). */
  async function dial() {
    if (window.peercamState === 'connecting' || window.peercamState === 'connected') return;
    cancelRetry();
    wanted = true;
    window.peercamError = null;
    window.peercamIceErrors = {};
    window.peercamLatency.samples.length = 0;
    window.peercamLatency.p50 = null;
    clearStats(); // numbers of this call only
    targetKbps = null;
    setState('connecting', 'connecting to the camera…');
    try {
      if (room) await getCamera();
      await openSocket();
      if (window.peercamState !== 'connecting') return; // hung up or refused meanwhile
      const peer = newPeer();
      setState('connecting', 'dialling…');
      await peer.setLocalDescription(await peer.createOffer());
      if (peer !== pc) return;
      send({ sdp: { type: 'offer', sdp: peer.localDescription.sdp } });
    } catch (e) {
      if (window.peercamState !== 'connecting') return; // hung up meanwhile
      // A camera that restarted has forgotten the login: show the login form again.
      if (!room && await loggedOut()) {
        setState('failed', 'logged out: log in again');
        location.reload();
        return;
      }
      if (window.peercamState === 'connecting') drop(e.message || String(e));
    }
  }

  /** Whether the camera answers but wants the password (401): the session is gone. */
  async function loggedOut() {
    try {
      return (await fetch('healthz', { cache: 'no-store' })).status === 401;
    } catch (e) {
      return false; // not reachable at all
    }
  }

  function sendBye() {
    if (ws && ws.readyState === WebSocket.OPEN) {
      send({ bye: {} });
      if (!room) byeEchoes += 1;
    }
  }

  /** Hangs up and stays idle (no redial) until Dial. */
  function hangUp() {
    wanted = false;
    cancelRetry();
    sendBye();
    closePeer();
    setState('idle', 'idle: hung up');
  }

  function playWithSound() {
    ui.remote.muted = userMuted;
    showMute();
    const playing = ui.remote.play();
    if (!playing) return;
    playing.then(() => { ui.unmute.hidden = true; }).catch(() => {
      // Autoplay with sound refused: play muted and let the viewer turn the sound on.
      ui.remote.muted = true;
      showMute();
      ui.remote.play().catch(() => {});
      ui.unmute.hidden = false;
    });
  }

  function showMute() {
    const muted = ui.remote.muted;
    ui.mute.textContent = muted ? 'Unmute' : 'Mute';
    ui.mute.setAttribute('aria-pressed', String(muted));
  }

  /** The Mute/Unmute button (and the "click to unmute" overlay): a click lets sound play. */
  function toggleMute() {
    userMuted = !ui.remote.muted;
    if (userMuted) {
      ui.remote.muted = true;
      ui.unmute.hidden = true;
      showMute();
    } else {
      playWithSound();
    }
  }

  function unmute() {
    userMuted = false;
    playWithSound();
  }

  function toggleFullscreen() {
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(() => {});
    } else if (ui.stage.requestFullscreen) {
      ui.stage.requestFullscreen().catch((e) => console.warn('peercam: fullscreen refused', e));
    } else if (ui.remote.webkitEnterFullscreen) {
      ui.remote.webkitEnterFullscreen(); // iPhone: only a video element goes fullscreen
    }
  }

  function showFullscreen() {
    const on = Boolean(document.fullscreenElement);
    ui.fullscreen.textContent = on ? 'Exit fullscreen' : 'Fullscreen';
    ui.fullscreen.setAttribute('aria-pressed', String(on));
  }

  /** Downloads the picture on screen as a JPEG named after the camera and the time. */
  function snapshot() {
    const video = ui.remote;
    if (!video.videoWidth || !video.videoHeight) return;
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext('2d').drawImage(video, 0, 0);
    canvas.toBlob((blob) => {
      if (!blob) return;
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      link.download = snapshotName(new Date());
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    }, 'image/jpeg', 0.92);
  }

  /** `<camera>_2026-12-07_23-59-01.jpg`, safe as a file name on every system. */
  function snapshotName(date) {
    const safe = cameraName.replace(/[^\p{L}\p{N}._-]+/gu, '-').replace(/^[-.]+|-+$/g, '')
      || 'peercam';
    const two = (n) => String(n).padStart(2, '0');
    const stamp = date.getFullYear() + '-' + two(date.getMonth() + 1) + '-' +
      two(date.getDate()) + '_' + two(date.getHours()) + '-' + two(date.getMinutes()) + '-' +
      two(date.getSeconds());
    return safe + '_' + stamp + '.jpg';
  }

  function toggleDetails() {
    const open = ui.detailsToggle.getAttribute('aria-expanded') !== 'true';
    ui.detailsToggle.setAttribute('aria-expanded', String(open));
    ui.details.hidden = !open;
  }

  ui.dial.addEventListener('click', dial);
  ui.hangup.addEventListener('click', hangUp);
  ui.unmute.addEventListener('click', unmute);
  ui.mute.addEventListener('click', toggleMute);
  ui.fullscreen.addEventListener('click', toggleFullscreen);
  ui.remote.addEventListener('dblclick', toggleFullscreen);
  ui.snapshot.addEventListener('click', snapshot);
  ui.detailsToggle.addEventListener('click', toggleDetails);
  ui.remote.addEventListener('volumechange', showMute);
  document.addEventListener('fullscreenchange', showFullscreen);
  // Shortcuts: f fullscreen, m mute, s snapshot; never while typing or with a modifier.
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) {
      return;
    }
    const action = { f: toggleFullscreen, m: toggleMute, s: snapshot }[event.key.toLowerCase()];
    if (action) {
      event.preventDefault();
      action();
    }
  });
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
    if (stats.framesDecoded > 0) drops = 0; // a call that delivers: the next drop waits 1 s
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
    ui.summary.textContent = summaryOf(s);
  }

  /** The short line for people: picture size, rate, codec and how the media travels. */
  function summaryOf(s) {
    if (!s.frameWidth) return window.peercamState === 'connected' ? 'waiting for the picture…' : '';
    const parts = [s.frameWidth + '×' + s.frameHeight];
    if (s.fps !== null) parts.push(Math.round(s.fps) + ' fps');
    if (s.codec) parts.push(s.codec.replace(/^video\//, '').toUpperCase());
    if (s.path) {
      const how = { direct: 'direct', reflexive: 'through NAT', relayed: 'relayed (TURN)' };
      parts.push((how[s.path.kind] || s.path.kind) + ' ' + s.path.protocol);
    }
    return parts.join(' · ');
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
  showMute();
  if (room) {
    setState('idle', 'idle: room ' + room + ' — Dial calls the other browser');
    // Be reachable before dialling, the other browser may call first.
    openSocket().catch((e) => fail(e.message));
  } else if (auto) {
    dial();
  } else {
    setState('idle', 'idle');
  }
})();

// ---- test-pattern barcode (layout: docs/barcode.md) ----
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

