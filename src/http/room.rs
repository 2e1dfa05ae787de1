//! Seed mode (`/ws?room=NAME`): links exactly two browsers, as the tutorial's relay did. The
//! registry of open rooms ([`Rooms`]) and the WebSocket adapter of the sans-IO
//! [`RoomSession`]: every valid message from one browser is relayed verbatim to the other;
//! a third gets `room_full`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use log::info;
use tokio::sync::mpsc;

use super::socket::{self, Conversation, Input, Socket, OUTBOX_CAPACITY};
use crate::session::protocol::{ErrorBody, ErrorCode, Message};
use crate::session::room::{RoomInput, RoomOutput, RoomSession, Undelivered, ROOM_CAPACITY};

/// Longest room name accepted.
pub const MAX_ROOM_NAME: usize = 64;

/// What one member tells the other.
#[derive(Debug)]
pub(super) enum RoomEvent {
    /// The other browser joined.
    Joined,
    /// A message from the other browser, already validated.
    Relayed(String),
    /// The other browser left.
    Left,
}

/// One browser in a room: its id and the queue of events for it.
type Member = (u64, mpsc::Sender<RoomEvent>);

/// The open rooms: name -> members.
#[derive(Default)]
pub struct Rooms {
    members: Mutex<HashMap<String, Vec<Member>>>,
    next_id: AtomicU64,
}

/// Why a browser cannot join a room.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    /// The name is empty, too long or has characters other than `A-Z a-z 0-9 - _`.
    BadName,
    /// Two browsers are already in the room.
    Full,
}

impl JoinError {
    /// The error the refused browser gets.
    fn error_body(&self, name: &str) -> ErrorBody {
        match self {
            JoinError::Full => ErrorBody {
                code: ErrorCode::RoomFull,
                message: format!("room full: {name} already links {ROOM_CAPACITY} browsers"),
                retry_after_ms: None,
            },
            JoinError::BadName => ErrorBody {
                code: ErrorCode::Unexpected,
                message: format!(
                    "bad room name: use 1 to {MAX_ROOM_NAME} characters from A-Z a-z 0-9 - _"
                ),
                retry_after_ms: None,
            },
        }
    }
}

impl Rooms {
    /// Adds a member (telling the one already there); returns its id and how many are in
    /// the room now.
    pub(super) fn join(
        &self,
        name: &str,
        events: mpsc::Sender<RoomEvent>,
    ) -> Result<(u64, usize), JoinError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_ROOM_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(JoinError::BadName);
        }
        let mut rooms = self.lock();
        let members = rooms.entry(name.to_owned()).or_default();
        if members.len() >= ROOM_CAPACITY {
            return Err(JoinError::Full);
        }
        for (_, other) in members.iter() {
            let _ = other.try_send(RoomEvent::Joined);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        members.push((id, events));
        Ok((id, members.len()))
    }

    /// The other member's queue, if someone else is in the room.
    fn other(&self, name: &str, id: u64) -> Option<mpsc::Sender<RoomEvent>> {
        let rooms = self.lock();
        rooms
            .get(name)?
            .iter()
            .find(|(other, _)| *other != id)
            .map(|(_, tx)| tx.clone())
    }

    /// Removes a member (and the room when empty), telling the one who stays.
    fn leave(&self, name: &str, id: u64) {
        let mut rooms = self.lock();
        let Some(members) = rooms.get_mut(name) else {
            return;
        };
        members.retain(|(other, _)| *other != id);
        for (_, other) in members.iter() {
            let _ = other.try_send(RoomEvent::Left);
        }
        if members.is_empty() {
            rooms.remove(name);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Member>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One browser's conversation in a room.
pub(super) struct RoomMember {
    session: RoomSession,
    state: Arc<super::AppState>,
    name: String,
    id: u64,
    events: mpsc::Receiver<RoomEvent>,
    deadline: Option<Instant>,
}

/// Joins room `name`, or says why not.
pub(super) fn join(
    state: &Arc<super::AppState>,
    name: &str,
    label: &str,
) -> Result<RoomMember, ErrorBody> {
    let (tx, events) = mpsc::channel(OUTBOX_CAPACITY);
    let limits = &state.limits;
    match state.rooms.join(name, tx) {
        Ok((id, count)) => {
            info!("{label} joined ({count} of {ROOM_CAPACITY})");
            Ok(RoomMember {
                session: RoomSession::new(
                    name,
                    count,
                    limits.max_message_bytes,
                    std::time::Duration::from_secs(u64::from(limits.idle_timeout_s)),
                    state.page_ice_servers(),
                    socket::now(),
                ),
                state: state.clone(),
                name: name.to_owned(),
                id,
                events,
                deadline: None,
            })
        }
        Err(e) => {
            info!("{label}: refused: {e:?}");
            Err(e.error_body(name))
        }
    }
}

impl RoomMember {
    async fn perform(&mut self, socket: &mut Socket) {
        loop {
            match self.session.poll_output() {
                RoomOutput::Timeout(at) => {
                    self.deadline = at;
                    return;
                }
                RoomOutput::Send(message) => socket.send(&message).await,
                RoomOutput::Relay(text) => {
                    let undelivered = match self.state.rooms.other(&self.name, self.id) {
                        // A full queue means the other browser stopped reading; drop rather
                        // than stall.
                        Some(other) => other
                            .try_send(RoomEvent::Relayed(text))
                            .err()
                            .map(|_| Undelivered::NotReading),
                        None => Some(Undelivered::Nobody),
                    };
                    if let Some(why) = undelivered {
                        self.session
                            .handle_input(RoomInput::Undelivered(why), socket::now());
                    }
                }
                RoomOutput::CloseSocket => {}
                RoomOutput::LimitHit(limit) => socket::limit_hit(socket.label(), &limit),
            }
        }
    }
}

impl Conversation for RoomMember {
    type Event = RoomEvent;

    async fn next_event(&mut self) -> RoomEvent {
        match self.events.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    async fn handle(&mut self, input: Input<'_, RoomEvent>, now: Instant, socket: &mut Socket) {
        let input = match input {
            Input::Opened => None,
            Input::Text(text) => Some(RoomInput::Text(text)),
            Input::Binary => Some(RoomInput::Binary),
            Input::Heard => Some(RoomInput::Heard),
            Input::Event(RoomEvent::Joined) => Some(RoomInput::OtherJoined),
            Input::Event(RoomEvent::Left) => Some(RoomInput::OtherLeft),
            Input::Event(RoomEvent::Relayed(text)) => {
                socket.send_text(text.into()).await;
                None
            }
            // Room sockets are never relayed; a lost transport ends the conversation.
            Input::Shutdown | Input::Reload | Input::SignalingLost => Some(RoomInput::Shutdown),
            Input::Timeout => {
                self.session.handle_timeout(now);
                None
            }
        };
        if let Some(input) = input {
            self.session.handle_input(input, now);
        }
        self.perform(socket).await;
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    async fn finish(self) {
        self.state.rooms.leave(&self.name, self.id);
    }
}

/// Sends the refusal and closes (a browser that could not join).
pub(super) async fn refuse(ws: axum::extract::ws::WebSocket, body: ErrorBody) {
    use futures_util::SinkExt;
    let mut ws = ws;
    let _ = ws
        .send(axum::extract::ws::Message::Text(
            Message::Error(body).to_json().into(),
        ))
        .await;
    let _ = ws.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_browser_gets_room_full_and_names_are_checked() {
        let rooms = Rooms::default();
        let (tx, mut rx) = mpsc::channel(4);
        let (a, n) = rooms.join("lab", tx.clone()).expect("first");
        assert_eq!(n, 1);
        assert!(rooms.other("lab", a).is_none());
        let (b, n) = rooms.join("lab", tx.clone()).expect("second");
        assert_eq!(n, 2);
        assert!(
            matches!(rx.try_recv(), Ok(RoomEvent::Joined)),
            "the first hears of the second"
        );
        assert!(rooms.other("lab", a).is_some());
        assert_eq!(rooms.join("lab", tx.clone()), Err(JoinError::Full));
        assert!(rooms.join("other", tx.clone()).is_ok());
        assert_eq!(rooms.join("", tx.clone()), Err(JoinError::BadName));
        assert_eq!(rooms.join("a b", tx.clone()), Err(JoinError::BadName));
        assert_eq!(
            rooms.join(&"x".repeat(65), tx.clone()),
            Err(JoinError::BadName)
        );
        rooms.leave("lab", b);
        assert!(
            matches!(rx.try_recv(), Ok(RoomEvent::Left)),
            "the one who stays hears"
        );
        assert!(rooms.join("lab", tx).is_ok(), "a seat is free again");
        assert_eq!(JoinError::Full.error_body("lab").code, ErrorCode::RoomFull);
    }
}
