//! The signaling wire format: JSON over WebSocket, one object per message, with exactly one
//! key naming the type. The shapes are the seed tutorial's:
//!
//! ```text
//! {"sdp": {"type": "offer", "sdp": "v=0..."}}
//! {"candidate": {"candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0}}
//! {"candidate": null}                       end of candidates ({"candidate": ""} too)
//! {"hello": {"version": 1, ...}}            server greeting (with the page's ICE servers)
//! {"error": {"code": "bad_json", "message": "..."}}
//! {"bye": {}}                               hang up
//! {"bitrate": {"target_kbps": 850}}         the encoder's adaptive bitrate target (server)
//! {"viewers": {"count": 2, "max": 8}}       viewers in a call now (server, when it changes)
//! ```
//!
//! A refusal the browser may retry by itself (`dial_limit`, `rate_limited`) carries
//! `retry_after_ms` in its error body: `{"error": {"code": "dial_limit", "message": "...",
//! "retry_after_ms": 1000}}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of this protocol, sent in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The message types, in the order they are listed in errors.
pub const MESSAGE_TYPES: &[&str] = &[
    "sdp",
    "candidate",
    "hello",
    "error",
    "bye",
    "bitrate",
    "viewers",
];

/// One signaling message. Serialized externally tagged: `{"<type>": <body>}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Message {
    /// An offer or answer.
    Sdp(SessionDescription),
    /// A trickled ICE candidate; `None` (JSON null) means end of candidates.
    Candidate(Option<IceCandidate>),
    /// The server's greeting.
    Hello(Hello),
    /// Something went wrong; the connection stays open.
    Error(ErrorBody),
    /// Hang up.
    Bye(Bye),
    /// The daemon's video encoder target for this call (adaptive bitrate); sent when the call
    /// connects and whenever the target changes. Not sent for camera H.264 passthrough.
    Bitrate(BitrateTarget),
    /// How many viewers are in a call now (server to page); sent to every viewer's socket
    /// when the number changes (bursts of changes coalesced into one message).
    Viewers(ViewerCount),
}

/// The body of `viewers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerCount {
    /// Viewers in a call now (connecting or connected).
    pub count: usize,
    /// `[limits] max_viewers`.
    pub max: usize,
}

/// The body of `bitrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitrateTarget {
    /// The encoder's target in kbit/s.
    pub target_kbps: u32,
}

/// An SDP offer or answer, as `RTCSessionDescription.toJSON()` produces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// offer, answer, pranswer or rollback.
    #[serde(rename = "type")]
    pub kind: SdpKind,
    /// The SDP text.
    #[serde(default)]
    pub sdp: String,
}

/// The `type` of a session description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpKind {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
    /// A provisional answer.
    Pranswer,
    /// A rollback.
    Rollback,
}

impl fmt::Display for SdpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SdpKind::Offer => "offer",
            SdpKind::Answer => "answer",
            SdpKind::Pranswer => "pranswer",
            SdpKind::Rollback => "rollback",
        })
    }
}

/// An ICE candidate, as `RTCIceCandidate.toJSON()` produces it. Extra fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute; empty means end of candidates.
    pub candidate: String,
    /// The media stream id this candidate belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The m-line index this candidate belongs to.
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE username fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// The server's greeting.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// e.g. `peercam 0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The camera's name (`[server] name`, by default the host name), for the page's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `viewer` (the daemon answers) or `room` (two browsers linked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Viewers in a call now (room mode: browsers in the room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<usize>,
    /// The viewer limit (room mode: 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<usize>,
    /// The video codecs the daemon sends, in preference order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codecs: Option<Vec<String>>,
    /// The STUN and TURN servers the page should use (`[webrtc] ice_servers`, with this
    /// connection's time-limited TURN credentials where the server has a secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServerInfo>,
}

/// One STUN or TURN server for the page, in the shape of the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerInfo {
    /// `stun:`, `turn:` and `turns:` URLs.
    pub urls: Vec<String>,
    /// The TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// An error report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong and what to do, for a person.
    pub message: String,
    /// For a refusal that passes by itself (`dial_limit`, `rate_limited`): how long to wait
    /// before dialling again, in milliseconds. The page retries by itself after it (with
    /// jitter); absent for errors that waiting does not cure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    /// An error that waiting does not cure (no `retry_after_ms`).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not valid JSON, or not a JSON object.
    BadJson,
    /// An object whose key is not a message type.
    UnknownType,
    /// Over `limits.max_message_bytes`.
    TooLarge,
    /// A message of a known type with a wrong shape.
    BadMessage,
    /// An SDP that does not parse or cannot be applied.
    BadSdp,
    /// An ICE candidate the peer rejected.
    BadCandidate,
    /// A valid message at the wrong time (a candidate before the offer, an answer).
    Unexpected,
    /// The offer has no video codec peercam is configured to send.
    NoCodec,
    /// `limits.max_viewers` viewers are already in a call.
    ViewerLimit,
    /// `limits.max_pending_dials` dials are connecting already.
    DialLimit,
    /// This address dialled more than `limits.dials_per_minute` times in a minute.
    RateLimited,
    /// Seed mode: two browsers are already in the room.
    RoomFull,
    /// Relay mode (`peercam relay`): the camera dialled is not connected to the relay.
    DeviceOffline,
    /// Something failed inside peercam.
    Internal,
}

/// The body of `bye`. Browsers send `{"bye": {}}` (`{"bye": null}` is accepted too); the
/// daemon adds a `reason` when it ends the call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Bye {
    /// Why the daemon ended the call; absent when it answers the browser's own bye.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ByeReason>,
}

impl Bye {
    /// A bye that says why the daemon ends the call.
    pub fn because(reason: ByeReason) -> Bye {
        Bye {
            reason: Some(reason),
        }
    }
}

impl<'de> Deserialize<'de> for Bye {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Any body (object, null) is accepted: there is nothing in a browser's bye we need.
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Bye::default())
    }
}

/// Why the daemon ended a call (`{"bye": {"reason": "..."}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    /// The daemon is stopping.
    Shutdown,
    /// The configuration was reloaded with new video or audio settings: dial again (the page
    /// does so by itself).
    Reload,
    /// The call did not connect within `limits.ice_timeout_s` (ICE or DTLS never finished).
    IceTimeout,
    /// The socket had no call and sent nothing for `limits.idle_timeout_s`.
    Idle,
}

/// Why a text message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Over the size limit.
    #[error("message of {size} bytes exceeds limit of {limit} bytes (limits.max_message_bytes)")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not valid JSON.
    #[error("not valid JSON at line {line} column {column}: {reason}")]
    BadJson {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
        /// What the JSON parser expected.
        reason: String,
    },
    /// Valid JSON, but not an object with one key.
    #[error("expected a JSON object with one key ({types}), got {got}", types = MESSAGE_TYPES.join(", "))]
    NotAnObject {
        /// What was received instead, e.g. `an array`.
        got: String,
    },
    /// An object whose key is not a message type.
    #[error("unknown message type `{0}`; expected one of {types}", types = MESSAGE_TYPES.join(", "))]
    UnknownType(String),
    /// A known type with a body of the wrong shape.
    #[error("bad `{kind}` message: {reason}")]
    BadMessage {
        /// The message type.
        kind: String,
        /// What serde said.
        reason: String,
    },
}

impl From<&ProtocolError> for ErrorBody {
    fn from(e: &ProtocolError) -> Self {
        let code = match e {
            ProtocolError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtocolError::BadJson { .. } | ProtocolError::NotAnObject { .. } => ErrorCode::BadJson,
            ProtocolError::UnknownType(_) => ErrorCode::UnknownType,
            ProtocolError::BadMessage { .. } => ErrorCode::BadMessage,
        };
        ErrorBody::new(code, e.to_string())
    }
}

impl From<ProtocolError> for ErrorBody {
    fn from(e: ProtocolError) -> Self {
        ErrorBody::from(&e)
    }
}

/// Parses one text message, checking its size first, then JSON, then shape.
///
/// An ICE candidate with an empty `candidate` string (how some browser versions say "end of
/// candidates") comes back as `Message::Candidate(None)`, like `{"candidate": null}`.
pub fn parse(text: &str, max_bytes: usize) -> Result<Message, ProtocolError> {
    if text.len() > max_bytes {
        return Err(ProtocolError::TooLarge {
            size: text.len(),
            limit: max_bytes,
        });
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // serde_json appends " at line L column C"; the message puts the place first.
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        ProtocolError::BadJson {
            line: e.line(),
            column: e.column(),
            reason: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
        }
    })?;
    let object = match &value {
        serde_json::Value::Object(o) => o,
        other => {
            return Err(ProtocolError::NotAnObject {
                got: describe(other).to_owned(),
            })
        }
    };
    let mut keys = object.keys();
    let (Some(kind), None) = (keys.next(), keys.next()) else {
        return Err(ProtocolError::NotAnObject {
            got: format!("an object with {} keys", object.len()),
        });
    };
    if !MESSAGE_TYPES.contains(&kind.as_str()) {
        // Keep the echoed name short: it came from outside.
        let shown: String = kind.chars().take(40).collect();
        return Err(ProtocolError::UnknownType(shown));
    }
    let kind = kind.clone();
    let message = serde_json::from_value(value).map_err(|e| ProtocolError::BadMessage {
        kind,
        reason: e.to_string(),
    })?;
    Ok(match message {
        Message::Candidate(Some(c)) if c.candidate.trim().is_empty() => Message::Candidate(None),
        other => other,
    })
}

fn describe(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Message {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail; fall back to a valid error message.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"error":{{"code":"internal","message":"cannot serialize: {e}"}}}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65_536;

    fn round_trip(m: &Message) {
        assert_eq!(parse(&m.to_json(), MAX).as_ref(), Ok(m), "{}", m.to_json());
    }

    #[test]
    fn seed_shapes_round_trip() {
        let offer = parse(r#"{"sdp":{"type":"offer","sdp":"v=0\r\n"}}"#, MAX).expect("offer");
        assert_eq!(
            offer,
            Message::Sdp(SessionDescription {
                kind: SdpKind::Offer,
                sdp: "v=0\r\n".into()
            })
        );
        round_trip(&offer);
        for kind in [SdpKind::Answer, SdpKind::Pranswer, SdpKind::Rollback] {
            round_trip(&Message::Sdp(SessionDescription {
                kind,
                sdp: String::new(),
            }));
        }
        assert_eq!(
            Message::Sdp(SessionDescription {
                kind: SdpKind::Answer,
                sdp: "v=0".into()
            })
            .to_json(),
            r#"{"sdp":{"type":"answer","sdp":"v=0"}}"#
        );
        assert_eq!(
            parse(r#"{"candidate":null}"#, MAX).expect("end"),
            Message::Candidate(None)
        );
        assert_eq!(Message::Candidate(None).to_json(), r#"{"candidate":null}"#);
        round_trip(&Message::Candidate(Some(IceCandidate {
            candidate: "candidate:1 1 udp 2113937151 127.0.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("abcd".into()),
        })));
        assert_eq!(
            parse(r#"{"bye":{}}"#, MAX).expect("bye"),
            Message::Bye(Bye::default())
        );
        assert_eq!(
            parse(r#"{"bye":null}"#, MAX).expect("bye"),
            Message::Bye(Bye::default())
        );
        assert_eq!(Message::Bye(Bye::default()).to_json(), r#"{"bye":{}}"#);
        let bitrate = Message::Bitrate(BitrateTarget { target_kbps: 850 });
        assert_eq!(bitrate.to_json(), r#"{"bitrate":{"target_kbps":850}}"#);
        assert_eq!(parse(&bitrate.to_json(), 1000), Ok(bitrate));
        let viewers = Message::Viewers(ViewerCount { count: 2, max: 8 });
        assert_eq!(viewers.to_json(), r#"{"viewers":{"count":2,"max":8}}"#);
        assert_eq!(parse(&viewers.to_json(), 1000), Ok(viewers));
    }

    #[test]
    fn hello_and_error_have_the_documented_json() {
        let err = Message::Error(ErrorBody::new(
            ErrorCode::ViewerLimit,
            "viewer limit 8 reached",
        ));
        assert_eq!(
            err.to_json(),
            r#"{"error":{"code":"viewer_limit","message":"viewer limit 8 reached"}}"#
        );
        round_trip(&err);
        let retry = Message::Error(ErrorBody {
            code: ErrorCode::DialLimit,
            message: "busy".into(),
            retry_after_ms: Some(1000),
        });
        assert_eq!(
            retry.to_json(),
            r#"{"error":{"code":"dial_limit","message":"busy","retry_after_ms":1000}}"#
        );
        round_trip(&retry);
        let short = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            mode: Some("viewer".into()),
            ..Default::default()
        });
        assert_eq!(
            short.to_json(),
            r#"{"hello":{"version":1,"mode":"viewer"}}"#
        );
        let full = Message::Hello(Hello {
            version: 1,
            server: Some("peercam 0.1.0".into()),
            name: Some("Front <door>".into()),
            mode: Some("viewer".into()),
            viewers: Some(2),
            max_viewers: Some(8),
            codecs: Some(vec!["h264".into(), "av1".into()]),
            ice_servers: vec![IceServerInfo {
                urls: vec!["turn:turn.example.org:3478".into()],
                username: Some("1700000000:peercam".into()),
                credential: Some("c2VjcmV0".into()),
            }],
        });
        assert!(
            full.to_json().contains(r#""max_viewers":8"#),
            "{}",
            full.to_json()
        );
        // The shape of the browser's RTCIceServer, to pass to RTCPeerConnection as it is.
        assert!(
            full.to_json().contains(
                r#""ice_servers":[{"urls":["turn:turn.example.org:3478"],"username":"1700000000:peercam","credential":"c2VjcmV0"}]"#
            ),
            "{}",
            full.to_json()
        );
        round_trip(&full);
        let codes = [
            (ErrorCode::BadJson, "bad_json"),
            (ErrorCode::UnknownType, "unknown_type"),
            (ErrorCode::TooLarge, "too_large"),
            (ErrorCode::BadSdp, "bad_sdp"),
            (ErrorCode::Unexpected, "unexpected"),
            (ErrorCode::NoCodec, "no_codec"),
            (ErrorCode::DialLimit, "dial_limit"),
            (ErrorCode::RateLimited, "rate_limited"),
            (ErrorCode::RoomFull, "room_full"),
            (ErrorCode::DeviceOffline, "device_offline"),
            (ErrorCode::Internal, "internal"),
        ];
        for (code, name) in codes {
            assert_eq!(serde_json::to_value(code).ok(), Some(name.into()));
        }
    }

    #[test]
    fn browser_candidate_json_is_accepted() {
        // Chromium's RTCIceCandidate.toJSON().
        let text = r#"{"candidate":{"candidate":"candidate:3 1 udp 2113937151 1b1c5b0e-4b1f-4a55-9a3e-0d0f2d2b6c1e.local 53719 typ host generation 0 ufrag Qx5c network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Qx5c"}}"#;
        let Ok(Message::Candidate(Some(c))) = parse(text, MAX) else {
            panic!("not a candidate: {:?}", parse(text, MAX));
        };
        assert!(c.candidate.starts_with("candidate:3 1 udp"));
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_m_line_index, Some(0));
        assert_eq!(c.username_fragment.as_deref(), Some("Qx5c"));
        // Firefox's toJSON() without a username fragment, with fields browsers may add.
        let text = r#"{"candidate":{"candidate":"candidate:0 1 UDP 2122187007 10.0.0.2 39043 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null,"foundation":"0","address":"10.0.0.2"}}"#;
        assert!(
            matches!(parse(text, MAX), Ok(Message::Candidate(Some(c))) if c.username_fragment.is_none())
        );
        // An extra field inside sdp is tolerated too.
        let text = r#"{"sdp":{"type":"offer","sdp":"v=0","extra":true}}"#;
        assert!(matches!(parse(text, MAX), Ok(Message::Sdp(_))));
        // End of candidates as an empty candidate string.
        let text = r#"{"candidate":{"candidate":"","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"ab"}}"#;
        assert_eq!(parse(text, MAX), Ok(Message::Candidate(None)));
    }

    #[test]
    fn malformed_json_names_the_place() {
        let e = parse(r#"{"sdp" 5}"#, MAX).expect_err("bad json");
        assert_eq!(ErrorBody::from(&e).code, ErrorCode::BadJson);
        assert_eq!(
            e.to_string(),
            "not valid JSON at line 1 column 8: expected `:`"
        );
        let e = parse("{\"sdp\":\n", MAX).expect_err("truncated");
        assert!(
            e.to_string()
                .starts_with("not valid JSON at line 2 column 0: EOF"),
            "{e}"
        );
    }

    #[test]
    fn wrong_shapes_get_named_errors() {
        for (text, got) in [
            ("[1,2]", "an array"),
            (r#""hi""#, "a string"),
            ("null", "null"),
            ("{}", "an object with 0 keys"),
            (
                r#"{"sdp":{"type":"offer","sdp":""},"bye":{}}"#,
                "an object with 2 keys",
            ),
        ] {
            let e = parse(text, MAX).expect_err(text);
            assert_eq!(ErrorBody::from(&e).code, ErrorCode::BadJson, "{text}");
            assert!(e.to_string().ends_with(&format!("got {got}")), "{e}");
            assert!(
                e.to_string()
                    .contains("sdp, candidate, hello, error, bye, bitrate, viewers"),
                "{e}"
            );
        }

        let e = parse(r#"{"dance":{}}"#, MAX).expect_err("unknown");
        assert_eq!(ErrorBody::from(&e).code, ErrorCode::UnknownType);
        assert_eq!(
            e.to_string(),
            "unknown message type `dance`; expected one of sdp, candidate, hello, error, bye, bitrate, viewers"
        );
    }

    #[test]
    fn wrong_field_types_name_the_message_type() {
        for (text, kind, detail) in [
            (
                r#"{"sdp":{"type":"wat","sdp":""}}"#,
                "sdp",
                "unknown variant `wat`",
            ),
            (
                r#"{"sdp":{"type":"offer","sdp":5}}"#,
                "sdp",
                "invalid type: integer `5`",
            ),
            (r#"{"sdp":"v=0"}"#, "sdp", "invalid type: string"),
            (
                r#"{"candidate":{"sdpMid":"0"}}"#,
                "candidate",
                "missing field `candidate`",
            ),
            (
                r#"{"candidate":{"candidate":"c","sdpMLineIndex":"0"}}"#,
                "candidate",
                "invalid type: string \"0\"",
            ),
            (
                r#"{"hello":{"version":"1"}}"#,
                "hello",
                "invalid type: string",
            ),
            (
                r#"{"error":{"code":"nope","message":""}}"#,
                "error",
                "unknown variant `nope`",
            ),
        ] {
            let e = parse(text, MAX).expect_err(text);
            assert_eq!(ErrorBody::from(&e).code, ErrorCode::BadMessage, "{text}");
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("bad `{kind}` message: ")), "{msg}");
            assert!(msg.contains(detail), "{text}: {msg}");
        }
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        let text = format!(
            r#"{{"sdp":{{"type":"offer","sdp":"{}"}}}}"#,
            "a".repeat(69_970)
        );
        let e = parse(&text, MAX).expect_err("too large");
        assert_eq!(ErrorBody::from(&e).code, ErrorCode::TooLarge);
        assert_eq!(
            e.to_string(),
            format!(
                "message of {} bytes exceeds limit of 65536 bytes (limits.max_message_bytes)",
                text.len()
            )
        );
        // Even garbage over the limit is reported as too large, not as bad JSON.
        let e = parse(&"x".repeat(MAX + 1), MAX).expect_err("too large");
        assert!(matches!(
            e,
            ProtocolError::TooLarge {
                size: 65_537,
                limit: MAX
            }
        ));
        // Exactly at the limit is fine.
        let at_limit = format!(r#"{{"bye":{{}}}}{}"#, " ".repeat(MAX - 10));
        assert_eq!(at_limit.len(), MAX);
        assert_eq!(parse(&at_limit, MAX), Ok(Message::Bye(Bye::default())));
    }

    #[test]
    fn long_unknown_type_names_are_truncated() {
        let text = format!(r#"{{"{}":1}}"#, "k".repeat(500));
        let e = parse(&text, MAX).expect_err("unknown");
        assert!(e.to_string().len() < 200);
    }
}
