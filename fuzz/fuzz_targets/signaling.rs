//! The signaling message parser (`peercam::session::protocol::parse`): every WebSocket text
//! message a browser sends goes through it.
//!
//! Input: the message text (bytes that are not UTF-8 are replaced, as a WebSocket text frame
//! is UTF-8 by the time it reaches the parser). Properties:
//! - `parse` never panics, with the daemon's default limit and with one byte too few;
//! - an error renders (Display) and its `{"error": ...}` reply round-trips;
//! - a parsed message re-serialised with `to_json` parses back equal, and serialising that
//!   again gives the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peercam::session::protocol::{parse, ErrorBody, Message, ProtocolError};

/// `limits.max_message_bytes`' default.
const MAX: usize = 65_536;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(&text, MAX) {
        Ok(message) => {
            let json = message.to_json();
            // What the daemon sends may be longer than what it accepts: no limit here.
            let back = parse(&json, usize::MAX)
                .unwrap_or_else(|e| panic!("{json} does not parse back: {e}"));
            assert_eq!(back, message, "{json}");
            assert_eq!(back.to_json(), json);
        }
        Err(e) => {
            let reply = Message::Error(ErrorBody::from(&e));
            assert!(!e.to_string().is_empty());
            let json = reply.to_json();
            assert_eq!(parse(&json, usize::MAX).as_ref(), Ok(&reply), "{json}");
        }
    }
    // The size check comes first: one byte over the limit is always TooLarge.
    if let Some(limit) = text.len().checked_sub(1) {
        assert!(
            matches!(parse(&text, limit), Err(ProtocolError::TooLarge { size, .. }) if size == text.len()),
        );
    }
});
