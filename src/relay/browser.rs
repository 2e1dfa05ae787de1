//! The browsers' side of the relay: `/d/NAME/ws`, a signaling socket whose messages go to
//! device NAME over its link and back, unchanged. The device runs the conversation (and
//! answers every malformed message); the relay checks the origin, the rate and number of
//! sockets, the message size (the device's rule: 4 × `max_message_bytes` closes with 1009;
//! text that is not UTF-8 with 1007; both counted),
//! and keeps every queue bounded. A browser dialling a device that is not connected gets
//! `{"error": {"code": "device_offline", …}}` and its socket closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::counters::bump;
use super::links::{Attach, ToBrowser};
use super::RelayState;
use crate::http;
use crate::http::connections::Connection;
use crate::http::socket::ReadError;
use crate::limits::LimitLog;
use crate::session::protocol::{ErrorBody, ErrorCode, Message};
use crate::session::relay_wire::Frame;

/// Messages queued from the device for one browser; one more closes it.
const BROWSER_QUEUE: usize = 64;
/// A message the browser does not take within this closes its socket.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// Browsers refused by a limit, logged at most every 10 s.
static REFUSED: LimitLog = LimitLog::new("relay browser limits");

/// `/d/NAME/ws`.
pub async fn ws(
    slot: Option<axum::Extension<Arc<Connection>>>,
    State(state): State<Arc<RelayState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !state.hosts.same_origin(&headers) {
        bump(&state.counters.browsers_origin);
        http::ORIGIN_REFUSED.hit(|| {
            format!(
                "refusing WebSocket from {remote}: its page comes from another site ({})",
                http::origin_of(&headers)
            )
        });
        return (
            StatusCode::FORBIDDEN,
            "403 Forbidden: WebSocket from a page of another site\n",
        )
            .into_response();
    }
    if let Err(wait) = state.opens.take(remote.ip(), Instant::now()) {
        bump(&state.counters.browsers_rate);
        REFUSED.hit(|| format!("refusing {remote}: over [limits] dials_per_minute"));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", (wait.as_secs() + 1).to_string())],
            "429 Too Many Requests: too many dials from your address\n",
        )
            .into_response();
    }
    let Ok(permit) = state.browser_slots.clone().try_acquire_owned() else {
        bump(&state.counters.browsers_total);
        REFUSED.hit(|| format!("refusing {remote}: [limits] max_connections browsers connected"));
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signaling connections; try again later\n",
        )
            .into_response();
    };
    let token = state.tasks.token();
    let upgrade = http::bounded_upgrade(upgrade, state.settings.limits.max_message_bytes);
    upgrade.on_upgrade(move |ws| async move {
        serve(&state, ws, remote, name, permit).await;
        // The socket held its connection's place (per address and in all) until now.
        drop(slot);
        drop(token);
    })
}

/// Attaches the browser to its device and forwards until either side ends.
async fn serve(
    state: &Arc<RelayState>,
    mut ws: WebSocket,
    remote: SocketAddr,
    name: String,
    permit: OwnedSemaphorePermit,
) {
    let id = state.links.new_id();
    let (to_browser, mut from_device) = mpsc::channel(BROWSER_QUEUE);
    let shown = crate::logging::client_str(&name).to_string();
    let cap = state.settings.browsers_per_device;
    let link = match state.links.attach(&name, id, remote, to_browser, cap) {
        Ok(link) => link,
        Err(refusal) => {
            let (code, message) = match refusal {
                Attach::Offline => {
                    bump(&state.counters.browsers_offline);
                    let known = state.is_configured(&name);
                    let message = if known {
                        format!(
                            "camera '{shown}' is offline: {}",
                            state.links.offline_reason(&name)
                        )
                    } else {
                        format!("there is no camera '{shown}' on this relay")
                    };
                    (ErrorCode::DeviceOffline, message)
                }
                Attach::Full => {
                    bump(&state.counters.browsers_per_device);
                    REFUSED.hit(|| {
                        format!("refusing {remote} for '{shown}': [limits] browsers_per_device")
                    });
                    (
                        ErrorCode::ViewerLimit,
                        format!("camera '{shown}' has {cap} browsers connected through this relay"),
                    )
                }
                Attach::Busy => {
                    bump(&state.counters.link_queue_drops);
                    (
                        ErrorCode::DialLimit,
                        format!("camera '{shown}' is busy; try again"),
                    )
                }
            };
            let error = Message::Error(ErrorBody::new(code, message));
            let _ = tokio::time::timeout(
                WRITE_STALL,
                ws.send(WsMessage::Text(error.to_json().into())),
            )
            .await;
            close(ws, 1000, "").await;
            return;
        }
    };
    let (code, reason) = loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break (1001, "the relay is stopping"),
            message = from_device.recv() => match message {
                Some(ToBrowser::Text(text)) => {
                    let sent = tokio::time::timeout(
                        WRITE_STALL,
                        ws.send(WsMessage::Text(text.into())),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break (1000, "");
                    }
                }
                Some(ToBrowser::Close) => break (1000, ""),
                // The device's link dropped (or this browser fell behind and was let go).
                None => break (1001, "the camera's link to the relay dropped"),
            },
            next = ws.recv() => match next {
                Some(Ok(WsMessage::Text(text))) => {
                    let frame = Frame::Message { id, text: text.as_str().to_owned() };
                    match state.links.to_device(&name, link, frame) {
                        Ok(()) => {}
                        Err(true) => {
                            bump(&state.counters.link_queue_drops);
                            break (1013, "the camera's link is busy; dial again");
                        }
                        Err(false) => break (1001, "the camera's link to the relay dropped"),
                    }
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    bump(&state.counters.binary_dropped);
                    let error = Message::Error(ErrorBody {
                        code: ErrorCode::BadJson,
                        message: "binary frames are not supported; send JSON text".to_owned(),
                        retry_after_ms: None,
                    });
                    let _ = ws.send(WsMessage::Text(error.to_json().into())).await;
                }
                Some(Ok(WsMessage::Close(_))) | None => break (1000, ""),
                Some(Ok(_)) => {}
                // Over 4 × max_message_bytes, or not UTF-8: tungstenite says which.
                Some(Err(e)) => {
                    log::debug!("relay browser {remote}: {e}");
                    match ReadError::of(e) {
                        Some(error) => {
                            bump(match error {
                                ReadError::TooBig => &state.counters.browser_too_big,
                                ReadError::NotUtf8 => &state.counters.browser_not_utf8,
                            });
                            break error.close();
                        }
                        // The connection is gone: the close frame goes nowhere.
                        None => break (1000, ""),
                    }
                }
            },
        }
    };
    // A relay that stops tells the device nothing per browser: the link's end says it all,
    // and a `close` would read as the browser leaving, which hangs up its call; calls that
    // are up keep their media while the relay is away.
    if !state.shutdown.is_cancelled() {
        state.links.detach(&name, link, id);
    }
    drop(permit);
    close(ws, code, reason).await;
}

/// Closes `ws` with `code` and `reason`, bounded in time.
async fn close(mut ws: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(WRITE_STALL, ws.send(WsMessage::Close(Some(frame)))).await;
}
