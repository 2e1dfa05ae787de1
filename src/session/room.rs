//! One browser's conversation in seed mode (`/ws?room=NAME`, two browsers linked as the
//! tutorial's relay did), sans-IO like [`crate::session::machine`]: messages and the time go
//! in; messages to send, messages to relay and the next deadline come out.
//!
//! Every message is validated before it is relayed, so the other browser only ever sees
//! well-formed ones. A browser alone in its room that sends nothing for `idle_timeout_s` is
//! closed with `{"bye": {"reason": "idle"}}`; two browsers in a room may be in a call
//! (peer-to-peer, with nothing left to signal), so they are left alone.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::session::machine::Limit;
use crate::session::protocol::{
    self, Bye, ByeReason, ErrorBody, ErrorCode, Hello, IceServerInfo, Message, PROTOCOL_VERSION,
};

/// Browsers per room, as in the tutorial.
pub const ROOM_CAPACITY: usize = 2;

/// Something that happened to a room member.
#[derive(Debug)]
pub enum RoomInput<'a> {
    /// A text message from this browser.
    Text(&'a str),
    /// A binary message from this browser (the protocol is JSON text).
    Binary,
    /// Any other sign of life (a ping or pong).
    Heard,
    /// The other browser joined the room.
    OtherJoined,
    /// The other browser left the room.
    OtherLeft,
    /// The last [`RoomOutput::Relay`] could not be delivered.
    Undelivered(Undelivered),
    /// The daemon is shutting down.
    Shutdown,
}

/// Why a relayed message did not reach the other browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// The other browser left in the meantime.
    Nobody,
    /// The other browser stopped reading (its outbox is full).
    NotReading,
}

/// What the transport must do, in order.
#[derive(Debug, PartialEq)]
pub enum RoomOutput {
    /// Send this message to this browser.
    Send(Message),
    /// Relay this (validated) text verbatim to the other browser.
    Relay(String),
    /// Close the connection.
    CloseSocket,
    /// A limit was hit: count and log it.
    LimitHit(Limit),
    /// Nothing more to do until this instant or the next input (`None`: the next input).
    Timeout(Option<Instant>),
}

/// One browser in a room.
#[derive(Debug)]
pub struct RoomSession {
    room: String,
    max_message_bytes: usize,
    idle_timeout: Duration,
    /// Since when this browser has been alone in the room; `None` while the other is there.
    alone_since: Option<Instant>,
    last_heard: Instant,
    closed: bool,
    out: VecDeque<RoomOutput>,
}

impl RoomSession {
    /// A browser that joined `room` at `now` as member number `members` (1: alone); its
    /// `hello` gives it `ice_servers`.
    pub fn new(
        room: &str,
        members: usize,
        max_message_bytes: usize,
        idle_timeout: Duration,
        ice_servers: Vec<IceServerInfo>,
        now: Instant,
    ) -> RoomSession {
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            server: Some(format!("peercam {}", env!("CARGO_PKG_VERSION"))),
            name: None,
            mode: Some("room".to_owned()),
            viewers: Some(members),
            max_viewers: Some(ROOM_CAPACITY),
            codecs: None,
            ice_servers,
        });
        RoomSession {
            room: room.to_owned(),
            max_message_bytes,
            idle_timeout,
            alone_since: (members < 2).then_some(now),
            last_heard: now,
            closed: false,
            out: VecDeque::from([RoomOutput::Send(hello)]),
        }
    }

    /// Whether the conversation is over.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next thing to do; [`RoomOutput::Timeout`] when there is nothing until a deadline.
    pub fn poll_output(&mut self) -> RoomOutput {
        self.out
            .pop_front()
            .unwrap_or_else(|| RoomOutput::Timeout(self.deadline()))
    }

    fn deadline(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let since = self.alone_since?.max(self.last_heard);
        Some(since + self.idle_timeout)
    }

    /// Time passed: closes a browser that has been alone and silent for `idle_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline().is_some_and(|at| now >= at) {
            self.out.push_back(RoomOutput::LimitHit(Limit::IdleTimeout {
                seconds: self.idle_timeout.as_secs(),
            }));
            self.out
                .push_back(RoomOutput::Send(Message::Bye(Bye::because(
                    ByeReason::Idle,
                ))));
            self.close();
        }
    }

    /// Handles one input that arrived at `now`.
    pub fn handle_input(&mut self, input: RoomInput<'_>, now: Instant) {
        if self.closed {
            return;
        }
        match input {
            RoomInput::Text(text) => {
                self.last_heard = now;
                // Validate before relaying: the other browser only sees well-formed messages.
                if let Err(e) = protocol::parse(text, self.max_message_bytes) {
                    return self.send(Message::Error(ErrorBody::from(&e)));
                }
                if self.alone_since.is_some() {
                    self.undelivered(Undelivered::Nobody);
                } else {
                    self.out.push_back(RoomOutput::Relay(text.to_owned()));
                }
            }
            RoomInput::Binary => {
                self.last_heard = now;
                self.send(Message::Error(ErrorBody {
                    code: ErrorCode::BadJson,
                    message: "binary frames are not supported; send JSON text".to_owned(),
                    retry_after_ms: None,
                }));
            }
            RoomInput::Heard => self.last_heard = now,
            RoomInput::OtherJoined => self.alone_since = None,
            RoomInput::OtherLeft => {
                self.alone_since = Some(now);
                self.send(Message::Bye(Bye::default()));
            }
            RoomInput::Undelivered(why) => self.undelivered(why),
            // The two browsers' call does not depend on the relay: no bye, just close.
            RoomInput::Shutdown => self.close(),
        }
    }

    fn undelivered(&mut self, why: Undelivered) {
        let (code, message) = match why {
            Undelivered::Nobody => (
                ErrorCode::Unexpected,
                format!(
                    "nobody else is in room {} yet; message not delivered",
                    self.room
                ),
            ),
            Undelivered::NotReading => (
                ErrorCode::Internal,
                "the other browser is not reading; message dropped".to_owned(),
            ),
        };
        self.send(Message::Error(ErrorBody::new(code, message)));
    }

    fn send(&mut self, message: Message) {
        self.out.push_back(RoomOutput::Send(message));
    }

    fn close(&mut self) {
        self.out.push_back(RoomOutput::CloseSocket);
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);

    fn drain(s: &mut RoomSession) -> (Vec<RoomOutput>, Option<Instant>) {
        let mut outputs = Vec::new();
        loop {
            match s.poll_output() {
                RoomOutput::Timeout(at) => return (outputs, at),
                o => outputs.push(o),
            }
        }
    }

    fn joined(members: usize, t0: Instant) -> RoomSession {
        let mut s = RoomSession::new("lab", members, 65_536, IDLE, Vec::new(), t0);
        let (outputs, _) = drain(&mut s);
        assert!(
            matches!(&outputs[..], [RoomOutput::Send(Message::Hello(h))] if h.viewers == Some(members) && h.mode.as_deref() == Some("room")),
            "{outputs:?}"
        );
        s
    }

    fn error_code(outputs: &[RoomOutput]) -> Option<ErrorCode> {
        outputs.iter().find_map(|o| match o {
            RoomOutput::Send(Message::Error(e)) => Some(e.code),
            _ => None,
        })
    }

    #[test]
    fn valid_messages_are_relayed_verbatim_and_garbage_is_answered() {
        let t0 = Instant::now();
        let mut s = joined(2, t0);
        let text = r#"{"candidate":null}"#;
        s.handle_input(RoomInput::Text(text), t0);
        assert_eq!(drain(&mut s).0, vec![RoomOutput::Relay(text.to_owned())]);
        s.handle_input(RoomInput::Text("]["), t0);
        assert_eq!(error_code(&drain(&mut s).0), Some(ErrorCode::BadJson));
        s.handle_input(RoomInput::Binary, t0);
        assert_eq!(error_code(&drain(&mut s).0), Some(ErrorCode::BadJson));
        s.handle_input(RoomInput::Undelivered(Undelivered::NotReading), t0);
        assert_eq!(error_code(&drain(&mut s).0), Some(ErrorCode::Internal));
    }

    #[test]
    fn alone_nothing_is_relayed_and_a_leaver_sends_bye() {
        let t0 = Instant::now();
        let mut s = joined(1, t0);
        s.handle_input(RoomInput::Text(r#"{"bye":{}}"#), t0);
        let (outputs, _) = drain(&mut s);
        assert_eq!(error_code(&outputs), Some(ErrorCode::Unexpected));
        assert!(
            matches!(&outputs[0], RoomOutput::Send(Message::Error(e)) if e.message.contains("nobody else is in room lab"))
        );
        s.handle_input(RoomInput::OtherJoined, t0);
        s.handle_input(RoomInput::OtherLeft, t0);
        assert_eq!(
            drain(&mut s).0,
            vec![RoomOutput::Send(Message::Bye(Bye::default()))]
        );
    }

    #[test]
    fn alone_and_silent_for_the_idle_timeout_closes() {
        let t0 = Instant::now();
        let mut s = joined(1, t0);
        assert_eq!(drain(&mut s).1, Some(t0 + IDLE));
        let t1 = t0 + Duration::from_secs(20);
        s.handle_input(RoomInput::Heard, t1);
        assert_eq!(drain(&mut s).1, Some(t1 + IDLE));
        s.handle_timeout(t0 + IDLE);
        assert_eq!(drain(&mut s).0, vec![], "an old deadline does nothing");
        s.handle_timeout(t1 + IDLE);
        assert_eq!(
            drain(&mut s),
            (
                vec![
                    RoomOutput::LimitHit(Limit::IdleTimeout { seconds: 30 }),
                    RoomOutput::Send(Message::Bye(Bye::because(ByeReason::Idle))),
                    RoomOutput::CloseSocket
                ],
                None
            )
        );
        assert!(s.is_closed());
    }

    #[test]
    fn two_in_a_room_have_no_idle_deadline_until_one_leaves() {
        let t0 = Instant::now();
        let mut s = joined(2, t0);
        assert_eq!(drain(&mut s).1, None);
        s.handle_timeout(t0 + IDLE * 100);
        assert!(!s.is_closed());
        let left = t0 + IDLE * 100;
        s.handle_input(RoomInput::OtherLeft, left);
        assert_eq!(drain(&mut s).1, Some(left + IDLE));
    }

    #[test]
    fn shutdown_closes_without_a_bye() {
        let t0 = Instant::now();
        let mut s = joined(2, t0);
        s.handle_input(RoomInput::Shutdown, t0);
        assert_eq!(drain(&mut s).0, vec![RoomOutput::CloseSocket]);
        s.handle_input(RoomInput::Text(r#"{"bye":{}}"#), t0);
        assert_eq!(drain(&mut s), (vec![], None));
    }
}
