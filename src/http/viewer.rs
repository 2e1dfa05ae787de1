//! One viewer's WebSocket: runs the [`ViewerSession`] state machine and carries out its
//! actions against the socket, the viewer limit and the peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use log::{debug, info, warn};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use super::limits::LimitLog;
use super::{AppState, Media};
use crate::peer::{MediaTap, ViewerPeer, PEER_EVENT_CAPACITY};
use crate::session::plan::PeerEvent;
use crate::session::protocol::{
    BitrateTarget, ErrorBody, ErrorCode, Hello, Message, PROTOCOL_VERSION,
};
use crate::session::viewer::{Action, Input, State, ViewerSession};

/// Outgoing messages queued per socket before the writer applies back-pressure.
pub(super) const OUTBOX_CAPACITY: usize = 64;

/// Dials refused by `[limits] max_viewers`.
static VIEWER_LIMIT: LimitLog = LimitLog::new("[limits] max_viewers");
/// Dials refused by `[limits] max_pending_dials`.
static DIAL_LIMIT: LimitLog = LimitLog::new("[limits] max_pending_dials");
/// Dials refused by `[limits] dials_per_minute`.
static DIAL_RATE: LimitLog = LimitLog::new("[limits] dials_per_minute");
/// Calls closed by `[limits] ice_timeout_s`.
static ICE_TIMEOUT: LimitLog = LimitLog::new("[limits] ice_timeout_s");
/// Sockets closed by `[limits] idle_timeout_s`.
static IDLE_TIMEOUT: LimitLog = LimitLog::new("[limits] idle_timeout_s");

/// How often each limit of a viewer's socket was hit, for `/metrics`.
pub(super) fn limit_hits() -> impl Iterator<Item = (&'static str, u64)> {
    [
        ("viewers", VIEWER_LIMIT.hits()),
        ("pending_dials", DIAL_LIMIT.hits()),
        ("dials_per_minute", DIAL_RATE.hits()),
        ("ice_timeout", ICE_TIMEOUT.hits()),
        ("idle_timeout", IDLE_TIMEOUT.hits()),
    ]
    .into_iter()
}

/// A call in progress: the peer, the viewer slot it holds, and the encoder's adaptive bitrate
/// target (none for camera H.264 passthrough).
struct Call {
    peer: ViewerPeer,
    _slot: OwnedSemaphorePermit,
    bitrate: Option<watch::Receiver<u32>>,
    /// Until the peer connects: its `max_pending_dials` slot and the ICE deadline.
    dialing: Option<Dialing>,
}

/// A call that has not connected yet.
struct Dialing {
    _slot: OwnedSemaphorePermit,
    started: Instant,
    deadline: tokio::time::Instant,
}

impl Call {
    /// The peer connected: free its dial slot and drop the deadline.
    fn connected(&mut self, remote: SocketAddr) {
        if let Some(dialing) = self.dialing.take() {
            info!(
                "viewer {remote}: connected {} ms after the offer",
                dialing.started.elapsed().as_millis()
            );
        }
    }
}

/// Waits for `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The call's new bitrate target, when it changes; pending forever without one.
async fn target_changed(call: &mut Option<Call>) -> u32 {
    if let Some(rx) = call.as_mut().and_then(|c| c.bitrate.as_mut()) {
        if rx.changed().await.is_ok() {
            return *rx.borrow_and_update();
        }
        // The pipeline is gone (a reload ends this connection anyway): stop watching.
        if let Some(c) = call.as_mut() {
            c.bitrate = None;
        }
    }
    std::future::pending().await
}

/// Serves one viewer until the socket closes or the daemon stops.
pub async fn run(socket: WebSocket, remote: SocketAddr, state: Arc<AppState>) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<WsMessage>(OUTBOX_CAPACITY);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            let close = matches!(message, WsMessage::Close(_));
            if sink.send(message).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let limits = &state.settings.limits;
    let media = state.media().await;
    let mut session = ViewerSession::new(
        media.hub.video_codecs(),
        media.hub.has_audio(),
        limits.max_message_bytes,
    );
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        server: Some(format!("peercam {}", env!("CARGO_PKG_VERSION"))),
        mode: Some("viewer".to_owned()),
        viewers: Some(state.viewers_in_call()),
        max_viewers: Some(limits.max_viewers),
        codecs: Some(
            media
                .hub
                .video_codecs()
                .iter()
                .map(|c| c.config_name().to_owned())
                .collect(),
        ),
    });
    let _ = out_tx.send(WsMessage::Text(hello.to_json().into())).await;
    info!("viewer {remote} connected");

    let (peer_tx, mut peer_rx) = mpsc::channel::<PeerEvent>(PEER_EVENT_CAPACITY);
    let mut call: Option<Call> = None;
    let idle = Duration::from_secs(u64::from(limits.idle_timeout_s));
    let mut last_heard = tokio::time::Instant::now();
    // Set when the daemon closes the socket over a protocol error with data still unread.
    let mut linger = false;
    let mut io = Io {
        errors: std::sync::atomic::AtomicU32::new(0),
        state: &state,
        media: &media,
        remote,
        out_tx: &out_tx,
        peer_tx: &peer_tx,
    };
    loop {
        let ice_deadline = call
            .as_ref()
            .and_then(|c| c.dialing.as_ref().map(|d| d.deadline));
        let idle_deadline = call.is_none().then_some(last_heard + idle);
        let actions = tokio::select! {
            _ = state.shutdown.cancelled() => session.handle(Input::Shutdown),
            _ = media.retired.cancelled() => session.handle(Input::Reload),
            _ = sleep_until(ice_deadline) => {
                let seconds = limits.ice_timeout_s;
                ICE_TIMEOUT.hit(|| format!("viewer {remote}: closing a call that did not connect within {seconds} s"));
                session.handle(Input::IceTimeout)
            }
            _ = sleep_until(idle_deadline) => {
                let seconds = limits.idle_timeout_s;
                IDLE_TIMEOUT.hit(|| format!("viewer {remote}: closing a socket idle for {seconds} s"));
                session.handle(Input::Idle)
            }
            target_kbps = target_changed(&mut call) => {
                io.send(Message::Bitrate(BitrateTarget { target_kbps })).await;
                continue;
            }
            event = peer_rx.recv() => match event {
                Some(event) => {
                    if let (PeerEvent::Connected, Some(c)) = (&event, call.as_mut()) {
                        c.connected(remote);
                    }
                    session.handle(Input::Peer(event))
                }
                None => continue,
            },
            frame = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    session.set_camera_h264(media.hub.camera_h264_profile());
                    session.handle(Input::Text(text.as_str()))
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    io.send(Message::Error(ErrorBody {
                        code: ErrorCode::BadJson,
                        message: "binary frames are not supported; send JSON text".to_owned(),
                    })).await;
                    continue;
                }
                Some(Ok(WsMessage::Close(_))) | None => break,
                Some(Ok(_)) => continue, // ping/pong are answered by the library
                Some(Err(e)) => {
                    info!("viewer {remote}: WebSocket closed: {e}");
                    if let Some(frame) = close_frame_for(e) {
                        let _ = out_tx.send(WsMessage::Close(Some(frame))).await;
                        linger = true;
                    }
                    break;
                }
            }},
        };
        if io.run(actions, &mut session, &mut call).await {
            break;
        }
    }
    if let Some(call) = call.take() {
        call.peer.close().await;
    }
    let errors = io.errors.into_inner();
    drop(out_tx);
    let _ = writer.await;
    if linger {
        // The rest of the oversized message is still unread: closing the TCP socket now
        // would reset it and could destroy the close frame before the browser reads it.
        tokio::time::sleep(CLOSE_LINGER).await;
    }
    if errors > LOGGED_ERRORS_PER_SOCKET {
        info!("viewer {remote}: {errors} error replies in all");
    }
    info!("viewer {remote} left");
}

/// How long a socket closed over a protocol error is kept before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Error replies logged per socket; a client that keeps sending garbage costs one summary
/// line when it leaves, not a line per message.
const LOGGED_ERRORS_PER_SOCKET: u32 = 5;

/// The close frame for a read error, as RFC 6455 asks: 1009 for a message over the size
/// limit (4x `max_message_bytes`), 1007 for text that is not UTF-8. `None` for errors where
/// the connection is gone anyway.
fn close_frame_for(error: axum::Error) -> Option<axum::extract::ws::CloseFrame> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    // (axum's WebSocket is tokio-tungstenite's: Cargo.toml keeps the two on one version.)
    let error = error.into_inner().downcast::<WsError>().ok()?;
    let (code, reason) = match *error {
        WsError::Capacity(_) => (1009, "message too big"),
        WsError::Utf8(_) => (1007, "text is not UTF-8"),
        _ => return None,
    };
    Some(axum::extract::ws::CloseFrame {
        code,
        reason: reason.into(),
    })
}

/// The IO side of the state machine's actions.
struct Io<'a> {
    /// Error replies sent on this socket.
    errors: std::sync::atomic::AtomicU32,
    state: &'a Arc<AppState>,
    /// The pipeline this connection was opened on (a reload ends the connection).
    media: &'a Arc<Media>,
    remote: SocketAddr,
    out_tx: &'a mpsc::Sender<WsMessage>,
    peer_tx: &'a mpsc::Sender<PeerEvent>,
}

impl Io<'_> {
    async fn send(&self, message: Message) {
        if let Message::Error(body) = &message {
            let n = self
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n < LOGGED_ERRORS_PER_SOCKET {
                info!("viewer {}: {}", self.remote, body.message);
            } else if n == LOGGED_ERRORS_PER_SOCKET {
                info!(
                    "viewer {}: {} (further errors on this socket are not logged)",
                    self.remote, body.message
                );
            }
        }
        let _ = self
            .out_tx
            .send(WsMessage::Text(message.to_json().into()))
            .await;
    }

    /// Carries out `actions` (and the actions they lead to). Returns true to close the socket.
    async fn run(
        &mut self,
        actions: Vec<Action>,
        session: &mut ViewerSession,
        call: &mut Option<Call>,
    ) -> bool {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(message) => self.send(message).await,
                Action::StartPeer { offer_sdp, plan } => {
                    let result = self.start_peer(offer_sdp, &plan).await;
                    let ready = match result {
                        Ok((new_call, answer)) => {
                            *call = Some(new_call);
                            Ok(answer)
                        }
                        Err(body) => Err(body),
                    };
                    queue.extend(session.handle(Input::PeerReady(ready)));
                }
                Action::AddCandidate(candidate) => {
                    if let Some(c) = call.as_ref() {
                        if let Err(e) = c.peer.add_remote_candidate(&candidate).await {
                            queue.extend(session.handle(Input::CandidateRejected(e.to_string())));
                        }
                    }
                }
                Action::EndOfRemoteCandidates => {
                    if let Some(c) = call.as_ref() {
                        if let Err(e) = c.peer.end_of_remote_candidates().await {
                            debug!("end of candidates: {e}");
                        }
                    }
                }
                Action::ClosePeer => {
                    if let Some(c) = call.take() {
                        c.peer.close().await;
                        info!("viewer {}: call ended", self.remote);
                    }
                }
                Action::CloseSocket => {
                    let _ = self.out_tx.send(WsMessage::Close(None)).await;
                    return true;
                }
            }
        }
        session.state() == State::Closed
    }

    async fn start_peer(
        &self,
        offer_sdp: String,
        plan: &crate::session::plan::AnswerPlan,
    ) -> Result<(Call, String), ErrorBody> {
        let limits = &self.state.settings.limits;
        let remote = self.remote;
        let ip = remote.ip();
        if let Err(wait) = self.state.dial_rate.take(ip, Instant::now()) {
            let per_minute = limits.dials_per_minute;
            DIAL_RATE.hit(|| {
                format!(
                    "viewer {remote}: refusing a dial: over {per_minute} dials a minute from {ip}"
                )
            });
            return Err(ErrorBody {
                code: ErrorCode::RateLimited,
                message: format!(
                    "too many dials from {ip} (limit {per_minute} a minute); try again in {} s",
                    wait.as_secs() + 1
                ),
            });
        }
        let max = limits.max_viewers;
        let slot = self
            .state
            .viewer_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                VIEWER_LIMIT
                    .hit(|| format!("viewer {remote}: refusing a dial: {max} viewers in a call"));
                ErrorBody {
                    code: ErrorCode::ViewerLimit,
                    message: format!("viewer limit {max} reached; try again when someone hangs up"),
                }
            })?;
        let pending = limits.max_pending_dials;
        let dial_slot = self
            .state
            .dial_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                DIAL_LIMIT.hit(|| {
                    format!("viewer {remote}: refusing a dial: {pending} dials are connecting")
                });
                ErrorBody {
                    code: ErrorCode::DialLimit,
                    message: format!(
                        "{pending} other dials are connecting right now; try again in a moment"
                    ),
                }
            })?;
        let started = Instant::now();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::from(limits.ice_timeout_s));
        let Some((video, keyframes)) = self
            .media
            .hub
            .video(plan.video_codec, plan.video_passthrough)
        else {
            return Err(ErrorBody {
                code: ErrorCode::NoCodec,
                message: format!("the {} encoder is not running", plan.video_codec),
            });
        };
        let bitrate = self
            .media
            .hub
            .bitrate(plan.video_codec, plan.video_passthrough);
        let target = bitrate.as_ref().map(|b| {
            let mut rx = b.subscribe();
            // The page gets the current target right after the answer.
            rx.mark_changed();
            rx
        });
        let tap = MediaTap {
            video,
            audio: self.media.hub.audio(),
            keyframes,
            bitrate,
        };
        match self
            .media
            .peers
            .answer(offer_sdp, plan, tap, self.peer_tx.clone())
            .await
        {
            Ok((peer, answer)) => {
                info!(
                    "viewer {}: answering with {}{} (payload type {}){}",
                    self.remote,
                    plan.video_codec,
                    if plan.video_passthrough {
                        format!(" passed through from the camera ({})", plan.video_fmtp)
                    } else {
                        String::new()
                    },
                    plan.video_payload_type,
                    if plan.opus_payload_type.is_some() {
                        " and opus"
                    } else {
                        ""
                    }
                );
                Ok((
                    Call {
                        peer,
                        _slot: slot,
                        bitrate: target,
                        dialing: Some(Dialing {
                            _slot: dial_slot,
                            started,
                            deadline,
                        }),
                    },
                    answer,
                ))
            }
            Err(e) => {
                warn!("viewer {}: {e}", self.remote);
                Err(ErrorBody {
                    code: match e {
                        crate::peer::PeerError::BadOffer(_) => ErrorCode::BadSdp,
                        _ => ErrorCode::Internal,
                    },
                    message: e.to_string(),
                })
            }
        }
    }
}
