//! The devices' side of the relay: `/link` (a device registers with its name and token, see
//! [`relay_wire`]) and the registry of connected devices that browsers are attached to.
//!
//! A name belongs to the device that registered it first: a second device presenting the
//! same name (and so the same token) is refused with `name_taken` while the first is
//! connected. The other way round, a misconfigured second device (a cloned SD card) would
//! take the camera's name, and with it every browser's signaling, each time it reconnects.
//! A device that lost its link without closing it (power cut) is dropped by the relay after
//! [`relay_wire::LINK_SILENCE`], so it can register again by then.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use log::{debug, info};
use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::counters::bump;
use super::RelayState;
use crate::http::connections::Connection;
use crate::limits::LimitLog;
use crate::logging::client_str;
use crate::session::relay_wire::{self, Frame, Refusal, RefusalCode, Register};

/// Frames queued for one device's link (all its browsers together); a browser whose
/// message does not fit is closed.
pub const LINK_QUEUE: usize = 256;
/// A frame the device does not take within this ends the link.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// Refused registrations, logged at most every 10 s.
static REFUSED: LimitLog = LimitLog::new("[[relay_server.devices]]");

/// What a browser's task hears from its device.
#[derive(Debug)]
pub enum ToBrowser {
    /// A signaling message for the browser.
    Text(String),
    /// The device ended the browser's socket.
    Close,
}

/// One connected device.
struct Link {
    /// Tells this registration from a later one of the same name.
    id: u64,
    /// The device's address, for the log.
    addr: SocketAddr,
    /// Frames for the device.
    out: mpsc::Sender<Frame>,
    /// Its browsers, by id.
    browsers: HashMap<u64, mpsc::Sender<ToBrowser>>,
    /// Cancelled when a reload removed the device's name: its link ends.
    removed: CancellationToken,
}

/// Why a browser could not be attached to its device.
#[derive(Debug, PartialEq, Eq)]
pub enum Attach {
    /// The device is not connected.
    Offline,
    /// `[limits] browsers_per_device` browsers are attached already.
    Full,
    /// The device's link queue is full.
    Busy,
}

/// The devices connected now, by name.
#[derive(Default)]
pub struct Links {
    inner: Mutex<HashMap<String, Link>>,
    next_id: AtomicU64,
    /// The last refused attempt of each configured device name since it last registered
    /// (bounded by the config's device list), for the pages' offline messages.
    refusals: Mutex<HashMap<String, LastRefusal>>,
}

/// A device's refused attempt to register.
#[derive(Debug, Clone, Copy)]
struct LastRefusal {
    at: std::time::Instant,
    code: RefusalCode,
    from: std::net::IpAddr,
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that a device claiming configured name `name` was refused.
    fn note_refusal(&self, name: &str, code: RefusalCode, from: std::net::IpAddr) {
        let refusal = LastRefusal {
            at: std::time::Instant::now(),
            code,
            from,
        };
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), refusal);
    }

    /// Why device `name` is offline, for a person: that it never connected, or what became
    /// of its last attempt.
    pub fn offline_reason(&self, name: &str) -> String {
        let refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = refusals.get(name) else {
            return "it has not connected to this relay".to_owned();
        };
        let why = match last.code {
            RefusalCode::BadToken => {
                "its token is wrong: the camera's [relay] token must be the token of this name \
                 in the relay's [[relay_server.devices]]"
            }
            RefusalCode::NameTaken => "another device had the name then",
            RefusalCode::BadRegister => "it did not register as the relay expects",
        };
        format!(
            "its last attempt, {} s ago from {}, was refused: {why}",
            last.at.elapsed().as_secs(),
            last.from
        )
    }

    /// A new id for a link or a browser.
    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The names connected now.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Attaches browser `id` at `addr` to device `name` (at most `cap` browsers per device):
    /// the device hears `open`. Returns the link's id.
    pub fn attach(
        &self,
        name: &str,
        id: u64,
        addr: SocketAddr,
        to_browser: mpsc::Sender<ToBrowser>,
        cap: usize,
    ) -> Result<u64, Attach> {
        let mut links = self.lock();
        let link = links.get_mut(name).ok_or(Attach::Offline)?;
        link.browsers.retain(|_, b| !b.is_closed());
        if link.browsers.len() >= cap {
            return Err(Attach::Full);
        }
        link.out
            .try_send(Frame::Open { id, addr })
            .map_err(|_| Attach::Busy)?;
        link.browsers.insert(id, to_browser);
        Ok(link.id)
    }

    /// Sends `frame` from a browser of link `link_id` of `name`. `Err(true)`: the queue is
    /// full; `Err(false)`: the link is gone.
    pub fn to_device(&self, name: &str, link_id: u64, frame: Frame) -> Result<(), bool> {
        let links = self.lock();
        let link = links.get(name).filter(|l| l.id == link_id).ok_or(false)?;
        link.out
            .try_send(frame)
            .map_err(|e| matches!(e, mpsc::error::TrySendError::Full(_)))
    }

    /// Browser `id` left: the device hears `close` (unless the device ended it).
    pub fn detach(&self, name: &str, link_id: u64, id: u64) {
        let mut links = self.lock();
        if let Some(link) = links.get_mut(name).filter(|l| l.id == link_id) {
            if link.browsers.remove(&id).is_some() {
                let _ = link.out.try_send(Frame::Close { id });
            }
        }
    }

    /// A message from the device for browser `id`. A browser whose queue is full is closed
    /// (its sender dropped) and `false` returned.
    fn to_browser(&self, name: &str, link_id: u64, id: u64, message: ToBrowser) -> bool {
        let mut links = self.lock();
        let Some(link) = links.get_mut(name).filter(|l| l.id == link_id) else {
            return true;
        };
        let close = matches!(message, ToBrowser::Close);
        let Some(browser) = link.browsers.get(&id) else {
            return true;
        };
        let delivered = browser.try_send(message).is_ok();
        if close || !delivered {
            link.browsers.remove(&id);
        }
        delivered || close
    }

    /// Registers `name` for the link `id`, unless a device of that name is connected.
    fn register(
        &self,
        name: &str,
        id: u64,
        addr: SocketAddr,
        out: mpsc::Sender<Frame>,
        removed: CancellationToken,
    ) -> Result<(), SocketAddr> {
        let mut links = self.lock();
        if let Some(other) = links.get(name) {
            return Err(other.addr);
        }
        links.insert(
            name.to_owned(),
            Link {
                id,
                addr,
                out,
                browsers: HashMap::new(),
                removed,
            },
        );
        Ok(())
    }

    /// Closes the links of `names` (a reload removed them from the config) and forgets their
    /// refused attempts. Returns how many links were connected.
    pub fn close(&self, names: &[String]) -> usize {
        let links = self.lock();
        let mut closed = 0;
        for name in names {
            if let Some(link) = links.get(name) {
                link.removed.cancel();
                closed += 1;
            }
        }
        drop(links);
        let mut refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        refusals.retain(|name, _| !names.contains(name));
        closed
    }

    /// The link `id` of `name` ended: its browsers' channels close with it.
    fn unregister(&self, name: &str, id: u64) {
        let mut links = self.lock();
        if links.get(name).is_some_and(|l| l.id == id) {
            links.remove(name);
        }
    }
}

/// `/link`: a device's WebSocket.
pub async fn link(
    slot: Option<axum::Extension<Arc<Connection>>>,
    State(state): State<Arc<RelayState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    bump(&state.counters.link_attempts);
    let token = state.tasks.token();
    upgrade
        .max_message_size(relay_wire::MAX_FRAME_BYTES)
        .max_frame_size(relay_wire::MAX_FRAME_BYTES)
        .on_upgrade(move |ws| async move {
            serve(&state, ws, remote).await;
            // The link held its connection's place until now.
            drop(slot);
            drop(token);
        })
}

/// Registers the device on `ws`, then forwards frames until the link ends.
async fn serve(state: &Arc<RelayState>, mut ws: WebSocket, remote: SocketAddr) {
    let register =
        match tokio::time::timeout(relay_wire::REGISTER_DEADLINE, first_text(&mut ws)).await {
            Ok(Some(text)) => Frame::parse(&text).ok(),
            Ok(None) => return,
            Err(_) => None,
        };
    let register = match register {
        Some(Frame::Register(r)) if r.version == relay_wire::VERSION => r,
        _ => {
            let message = format!(
                "expected {{\"register\": {{\"version\": {}, \"name\", \"token\"}}}} as the first \
                 frame within {} s",
                relay_wire::VERSION,
                relay_wire::REGISTER_DEADLINE.as_secs()
            );
            return refuse(state, ws, remote, "?", RefusalCode::BadRegister, message).await;
        }
    };
    let name = register.name.clone();
    if let Err(message) = check_token(state, &register) {
        return refuse(state, ws, remote, &name, RefusalCode::BadToken, message).await;
    }
    let id = state.links.new_id();
    let (out, mut outbox) = mpsc::channel::<Frame>(LINK_QUEUE);
    let removed = CancellationToken::new();
    if let Err(other) = state
        .links
        .register(&name, id, remote, out, removed.clone())
    {
        let message = format!(
            "a device named '{name}' is connected already (from {}); the device connected \
             first keeps the name until its link ends",
            other.ip()
        );
        return refuse(state, ws, remote, &name, RefusalCode::NameTaken, message).await;
    }
    // A reload may have removed the name after its token was checked.
    if !state.is_configured(&name) {
        state.links.unregister(&name, id);
        let message = format!(
            "the name '{name}' was removed from the relay's [[relay_server.devices]] just now"
        );
        return refuse(state, ws, remote, &name, RefusalCode::BadToken, message).await;
    }
    let registered = Frame::Registered { name: name.clone() };
    if ws
        .send(WsMessage::Text(registered.to_json().into()))
        .await
        .is_err()
    {
        state.links.unregister(&name, id);
        return;
    }
    bump(&state.counters.registered);
    state
        .links
        .refusals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&name);
    info!("device '{name}' registered from {remote}");
    let (mut sink, mut stream) = ws.split();
    let mut heard = tokio::time::Instant::now();
    let why = loop {
        let silence = heard + relay_wire::LINK_SILENCE;
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_millis(200), sink.close()).await;
                break "the relay is stopping".to_owned();
            }
            _ = removed.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_millis(200), sink.close()).await;
                break "a reload removed it from [[relay_server.devices]]".to_owned();
            }
            _ = tokio::time::sleep_until(silence) => {
                bump(&state.counters.links_silent);
                break format!("silent for {} s", relay_wire::LINK_SILENCE.as_secs());
            }
            Some(frame) = outbox.recv() => {
                let text = WsMessage::Text(frame.to_json().into());
                match tokio::time::timeout(WRITE_STALL, sink.send(text)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break format!("the link broke: {e}"),
                    Err(_) => break format!("the device took nothing for {} s", WRITE_STALL.as_secs()),
                }
            }
            next = stream.next() => {
                heard = tokio::time::Instant::now();
                match next {
                    Some(Ok(WsMessage::Text(text))) => on_frame(state, &name, id, text.as_str()),
                    Some(Ok(WsMessage::Close(_))) | None => break "the device closed it".to_owned(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("the link broke: {e}"),
                }
            }
        }
    };
    state.links.unregister(&name, id);
    info!("device '{name}' ({remote}) disconnected: {why}");
}

/// The first text frame, or `None` when the socket closes first.
async fn first_text(ws: &mut WebSocket) -> Option<String> {
    loop {
        match ws.recv().await? {
            Ok(WsMessage::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Whether the token is the one configured for the name. Every device's token is compared,
/// in constant time (SHA-256 of both sides, compared with `subtle`), so the time taken says
/// nothing about which token came close.
fn check_token(state: &RelayState, register: &Register) -> Result<(), String> {
    let given = digest(&SHA256, register.token.as_bytes());
    let mut owner = None;
    let devices = state.devices();
    for device in devices.iter() {
        let known = digest(&SHA256, device.token.as_bytes());
        if bool::from(known.as_ref().ct_eq(given.as_ref())) {
            owner = Some(&device.name);
        }
    }
    match owner {
        Some(name) if *name == register.name => Ok(()),
        Some(_) => Err(format!(
            "this token is not the one of the name '{}' (a token belongs to one name; \
             check [relay] name)",
            client_str(&register.name)
        )),
        None => Err(
            "wrong token: it is not in the relay's [[relay_server.devices]]; copy the token \
             listed there for this device into [relay] token"
                .to_owned(),
        ),
    }
}

/// Refuses the device with `code` and closes the link.
async fn refuse(
    state: &RelayState,
    mut ws: WebSocket,
    remote: SocketAddr,
    name: &str,
    code: RefusalCode,
    message: String,
) {
    bump(state.counters.refused(code));
    if state.is_configured(name) {
        state.links.note_refusal(name, code, remote.ip());
    }
    REFUSED.hit(|| {
        format!(
            "refusing device '{}' from {remote} ({}): {message}",
            client_str(name),
            code.as_str()
        )
    });
    let refused = Frame::Refused(Refusal { code, message });
    let _ = tokio::time::timeout(
        WRITE_STALL,
        ws.send(WsMessage::Text(refused.to_json().into())),
    )
    .await;
    let _ = tokio::time::timeout(WRITE_STALL, ws.close()).await;
}

/// One frame from device `name` (link `id`).
fn on_frame(state: &RelayState, name: &str, id: u64, text: &str) {
    match Frame::parse(text) {
        Ok(Frame::Message { id: browser, text }) => {
            if !state
                .links
                .to_browser(name, id, browser, ToBrowser::Text(text))
            {
                bump(&state.counters.browser_queue_drops);
                debug!("device '{name}': browser {browser} does not read; closed it");
            }
        }
        Ok(Frame::Close { id: browser }) => {
            state.links.to_browser(name, id, browser, ToBrowser::Close);
        }
        Ok(other) => debug!("device '{name}': ignoring {other:?}"),
        Err(e) => debug!("device '{name}': {}", client_str(&e)),
    }
}
