//! The relay link's framing: what a device (`[relay]`) and `peercam relay` say to each other
//! over the one WebSocket the device opens to the relay.
//!
//! Every frame is one JSON text message with exactly one key naming its type, like the
//! signaling protocol ([`super::protocol`]). The device speaks first:
//!
//! | direction | frame | meaning |
//! |---|---|---|
//! | device → relay | `{"register": {"version": 1, "name": "shop", "token": "…"}}` | the first frame, within 10 s of the upgrade |
//! | relay → device | `{"registered": {"name": "shop"}}` | accepted: browsers may dial `shop` now |
//! | relay → device | `{"refused": {"code": "bad_token", "message": "…"}}` | refused (then the relay closes the link); codes below |
//! | relay → device | `{"open": {"id": 7, "addr": "203.0.113.5:51000"}}` | browser 7 opened its signaling socket; `addr` is its address as the relay saw it |
//! | both ways | `{"message": {"id": 7, "text": "{\"sdp\": …}"}}` | one signaling message of browser 7, as the browser sent it (or for it) |
//! | both ways | `{"close": {"id": 7}}` | browser 7's socket closed (relay → device), or the device ends it (device → relay) |
//!
//! Refusal codes: `bad_token` (no device has this token, or it belongs to another name),
//! `name_taken` (another device with this name is connected; the one connected first keeps
//! it), `bad_register` (the first frame was not a `register`, or its version is not 1).
//! Browser ids are the relay's, unique per link. The link carries WebSocket pings from the
//! device every [`PING_INTERVAL`]; a side that hears nothing for [`LINK_SILENCE`] drops it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The version `register` carries.
pub const VERSION: u32 = 1;
/// How often the device pings the relay.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// A link on which nothing (a frame, a ping, a pong) arrived for this long is dead.
pub const LINK_SILENCE: Duration = Duration::from_secs(25);
/// The device's `register` must arrive this soon after the WebSocket opens, and the relay's
/// answer this soon after `register` was sent.
pub const REGISTER_DEADLINE: Duration = Duration::from_secs(10);
/// Largest link frame either side reads: a browser message is at most 4 × the relay's
/// `max_message_bytes` (1 MiB at most), which JSON escaping can grow up to six times.
pub const MAX_FRAME_BYTES: usize = 26 * 1024 * 1024;

/// One frame of the relay link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Frame {
    /// The device introduces itself.
    Register(Register),
    /// The relay accepted the device.
    Registered {
        /// The name browsers dial.
        name: String,
    },
    /// The relay refused the device.
    Refused(Refusal),
    /// A browser opened its signaling socket.
    Open {
        /// The relay's id of this browser on this link.
        id: u64,
        /// The browser's address as the relay saw it.
        addr: SocketAddr,
    },
    /// One signaling message to or from a browser.
    Message {
        /// The browser.
        id: u64,
        /// The message text, unchanged.
        text: String,
    },
    /// A browser's socket closed, or the device ends it.
    Close {
        /// The browser.
        id: u64,
    },
}

/// The body of `register`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// [`VERSION`].
    pub version: u32,
    /// The device's name (`[relay] name`).
    pub name: String,
    /// Its token (`[relay] token`).
    pub token: String,
}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret.
        f.debug_struct("Register")
            .field("version", &self.version)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The body of `refused`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: RefusalCode,
    /// What to fix, for a person.
    pub message: String,
}

/// Why the relay refused a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// No device has this token, or the token belongs to another name.
    BadToken,
    /// A device with this name is connected already.
    NameTaken,
    /// The first frame was not a `register` of a version the relay speaks.
    BadRegister,
}

impl RefusalCode {
    /// The word in `/metrics` and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::BadToken => "bad_token",
            RefusalCode::NameTaken => "name_taken",
            RefusalCode::BadRegister => "bad_register",
        }
    }
}

impl Frame {
    /// The frame as the text sent on the link.
    pub fn to_json(&self) -> String {
        // A derived Serialize of strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads one frame; the error says what was wrong, for the log.
    pub fn parse(text: &str) -> Result<Frame, String> {
        serde_json::from_str(text).map_err(|e| format!("not a relay link frame: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_documented_shapes() {
        let cases = [
            (
                Frame::Register(Register {
                    version: 1,
                    name: "shop".into(),
                    token: "0123456789abcdef".into(),
                }),
                r#"{"register":{"version":1,"name":"shop","token":"0123456789abcdef"}}"#,
            ),
            (
                Frame::Registered {
                    name: "shop".into(),
                },
                r#"{"registered":{"name":"shop"}}"#,
            ),
            (
                Frame::Refused(Refusal {
                    code: RefusalCode::NameTaken,
                    message: "taken".into(),
                }),
                r#"{"refused":{"code":"name_taken","message":"taken"}}"#,
            ),
            (
                Frame::Open {
                    id: 7,
                    addr: "203.0.113.5:51000".parse().expect("addr"),
                },
                r#"{"open":{"id":7,"addr":"203.0.113.5:51000"}}"#,
            ),
            (
                Frame::Message {
                    id: 7,
                    text: r#"{"bye":{}}"#.into(),
                },
                r#"{"message":{"id":7,"text":"{\"bye\":{}}"}}"#,
            ),
            (Frame::Close { id: 7 }, r#"{"close":{"id":7}}"#),
        ];
        for (frame, json) in cases {
            assert_eq!(frame.to_json(), json);
            assert_eq!(Frame::parse(json), Ok(frame));
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"open":{"id":-1,"addr":"x"}}"#,
            r#"{"close":{"id":1},"open":{"id":2,"addr":"1.2.3.4:5"}}"#,
            r#"{"message":{"id":1}}"#,
            r#"{"close":{"id":1,"extra":2}}"#,
            r#"{"launch":{}}"#,
        ] {
            assert!(Frame::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let register = Register {
            version: 1,
            name: "shop".into(),
            token: "secret-secret-secret".into(),
        };
        assert!(!format!("{register:?}").contains("secret"));
    }
}
