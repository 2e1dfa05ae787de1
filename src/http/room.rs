//! Seed mode: `/ws?room=NAME` links exactly two browsers, as the tutorial's relay did.
//! Every valid message from one is forwarded verbatim to the other; a third gets `room_full`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::{SinkExt, StreamExt};
use log::info;
use tokio::sync::mpsc;

use super::viewer::OUTBOX_CAPACITY;
use super::AppState;
use crate::session::protocol::{self, ErrorBody, ErrorCode, Hello, Message, PROTOCOL_VERSION};

/// Browsers per room, as in the tutorial.
pub const ROOM_CAPACITY: usize = 2;
/// Longest room name accepted.
pub const MAX_ROOM_NAME: usize = 64;

/// One browser in a room: its id and the queue of messages to send it.
type Member = (u64, mpsc::Sender<WsMessage>);

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

impl Rooms {
    /// Adds a member; returns its id and how many are in the room now.
    pub fn join(
        &self,
        name: &str,
        outbox: mpsc::Sender<WsMessage>,
    ) -> Result<(u64, usize), JoinError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_ROOM_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(JoinError::BadName);
        }
        let mut rooms = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let members = rooms.entry(name.to_owned()).or_default();
        if members.len() >= ROOM_CAPACITY {
            return Err(JoinError::Full);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        members.push((id, outbox));
        Ok((id, members.len()))
    }

    /// The other member's outbox, if someone else is in the room.
    pub fn other(&self, name: &str, id: u64) -> Option<mpsc::Sender<WsMessage>> {
        let rooms = self.members.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .get(name)?
            .iter()
            .find(|(other, _)| *other != id)
            .map(|(_, tx)| tx.clone())
    }

    /// Removes a member (and the room when empty); returns the remaining member's outbox.
    pub fn leave(&self, name: &str, id: u64) -> Option<mpsc::Sender<WsMessage>> {
        let mut rooms = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let members = rooms.get_mut(name)?;
        members.retain(|(other, _)| *other != id);
        let remaining = members.first().map(|(_, tx)| tx.clone());
        if members.is_empty() {
            rooms.remove(name);
        }
        remaining
    }
}

fn text(message: &Message) -> WsMessage {
    WsMessage::Text(message.to_json().into())
}

fn error(code: ErrorCode, message: String) -> WsMessage {
    text(&Message::Error(ErrorBody { code, message }))
}

/// Relays between this browser and the other one in `name` until either leaves.
pub async fn run(socket: WebSocket, name: String, remote: SocketAddr, state: Arc<AppState>) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<WsMessage>(OUTBOX_CAPACITY);
    let id = match state.rooms.join(&name, out_tx.clone()) {
        Ok((id, count)) => {
            info!("room {name}: {remote} joined ({count} of {ROOM_CAPACITY})");
            let hello = Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                server: Some(format!("peercam {}", env!("CARGO_PKG_VERSION"))),
                mode: Some("room".to_owned()),
                viewers: Some(count),
                max_viewers: Some(ROOM_CAPACITY),
                codecs: None,
            });
            let _ = sink.send(text(&hello)).await;
            id
        }
        Err(e) => {
            let reply = match e {
                JoinError::Full => error(
                    ErrorCode::RoomFull,
                    format!("room full: {name} already links {ROOM_CAPACITY} browsers"),
                ),
                JoinError::BadName => error(
                    ErrorCode::Unexpected,
                    format!(
                        "bad room name: use 1 to {MAX_ROOM_NAME} characters from A-Z a-z 0-9 - _"
                    ),
                ),
            };
            info!("room {name}: refused {remote}: {e:?}");
            let _ = sink.send(reply).await;
            let _ = sink.close().await;
            return;
        }
    };
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let max_bytes = state.settings.limits.max_message_bytes;
    loop {
        let frame = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            frame = stream.next() => frame,
        };
        let raw = match frame {
            Some(Ok(WsMessage::Text(raw))) => raw,
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        // Validate before relaying: the other browser only ever sees well-formed messages.
        if let Err(e) = protocol::parse(raw.as_str(), max_bytes) {
            let body = ErrorBody::from(&e);
            info!("room {name}: {remote}: {}", body.message);
            let _ = out_tx.send(text(&Message::Error(body))).await;
            continue;
        }
        match state.rooms.other(&name, id) {
            Some(other) => {
                // A full outbox means the other browser stopped reading; drop rather than stall.
                if other.try_send(WsMessage::Text(raw)).is_err() {
                    let _ = out_tx
                        .send(error(
                            ErrorCode::Internal,
                            "the other browser is not reading; message dropped".to_owned(),
                        ))
                        .await;
                }
            }
            None => {
                let _ = out_tx
                    .send(error(
                        ErrorCode::Unexpected,
                        format!("nobody else is in room {name} yet; message not delivered"),
                    ))
                    .await;
            }
        }
    }
    if let Some(other) = state.rooms.leave(&name, id) {
        let _ = other.try_send(text(&Message::Bye(Default::default())));
    }
    info!("room {name}: {remote} left");
    drop(out_tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_browser_gets_room_full_and_names_are_checked() {
        let rooms = Rooms::default();
        let (tx, _rx) = mpsc::channel(1);
        let (a, n) = rooms.join("lab", tx.clone()).expect("first");
        assert_eq!(n, 1);
        assert!(rooms.other("lab", a).is_none());
        let (b, n) = rooms.join("lab", tx.clone()).expect("second");
        assert_eq!(n, 2);
        assert!(rooms.other("lab", a).is_some());
        assert_eq!(rooms.join("lab", tx.clone()), Err(JoinError::Full));
        assert!(rooms.join("other", tx.clone()).is_ok());
        assert_eq!(rooms.join("", tx.clone()), Err(JoinError::BadName));
        assert_eq!(rooms.join("a b", tx.clone()), Err(JoinError::BadName));
        assert_eq!(
            rooms.join(&"x".repeat(65), tx.clone()),
            Err(JoinError::BadName)
        );
        assert!(rooms.leave("lab", b).is_some());
        assert!(rooms.join("lab", tx).is_ok(), "a seat is free again");
    }
}
