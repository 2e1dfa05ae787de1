//! The daemon's log against a hostile client: strings a client sends (a room name, an
//! unknown message type, the browser's error message, an Origin header) are escaped and cut
//! in the log, so they can neither forge a log line nor make one huge; and a dial that never
//! completes ICE does not flood the log with webrtc-rs's "pingAllCandidates" warnings.

use crate::common;

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use common::probe::{offer_message, offer_sdp};
use common::{connect, next_json, send_text, Daemon};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A line in the daemon's own format, as a client would like to slip it into the log.
const FORGED: &str = "1999-01-01T00:00:00.000Z INFO  peercam::daemon: FORGED";

/// Longest log line the test accepts: client strings are cut to well under this.
const MAX_LINE: usize = 512;

/// Every log line until one contains `needle` (included); panics after `timeout`.
fn lines_until(daemon: &Daemon, needle: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match daemon.log.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(needle);
                lines.push(line);
                if done {
                    return lines;
                }
            }
            Err(_) => panic!("peercam did not log `{needle}` within {timeout:?}; got {lines:#?}"),
        }
    }
}

/// Every log line for `window`.
fn lines_for(daemon: &Daemon, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match daemon.log.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Timeout) => return lines,
            Err(RecvTimeoutError::Disconnected) => panic!("peercam exited; got {lines:#?}"),
        }
    }
}

/// Whether `line` starts as the daemon's lines do (`2026-…T…`), and not as the forged one.
fn is_daemon_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 11
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && !line.starts_with("1999-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_strings_can_neither_forge_nor_flood_log_lines() {
    let daemon = Daemon::start(&common::test_config("", ""));

    // Room names: a newline and a forged line, then 8,000 characters. Both are refused
    // (bad name) and the refusal is logged with the name.
    let forged_room = format!("x%0D%0A{}", FORGED.replace(' ', "%20"));
    for name in [forged_room, "a".repeat(8000)] {
        let (_ws, refusal) = connect(&daemon.ws_url(&format!("?room={name}"))).await;
        assert_eq!(refusal["error"]["code"], "unexpected", "{refusal}");
    }

    // An Origin header of another site, 8,000 characters long: refused and logged.
    let mut request = daemon.ws_url("").into_client_request().expect("request");
    let origin = format!("http://{}.example", "e".repeat(8000));
    request
        .headers_mut()
        .insert("origin", origin.parse().expect("header value"));
    assert!(tokio_tungstenite::connect_async(request).await.is_err());

    // A viewer socket: a message type with a forged line (echoed in the error reply, which
    // is logged), and the browser's own error messages, forged and long.
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let unknown = json!({ format!("x\n{FORGED}"): 1 }).to_string();
    send_text(&mut ws, unknown).await;
    assert_eq!(next_json(&mut ws).await["error"]["code"], "unknown_type");
    for message in [format!("oops\n{FORGED}"), "b".repeat(8000)] {
        let report = json!({"error": {"code": "internal", "message": message}});
        send_text(&mut ws, report.to_string()).await;
    }
    send_text(&mut ws, r#"{"bye": {}}"#).await;
    assert!(next_json(&mut ws).await.get("bye").is_some());
    drop(ws);

    let lines = lines_until(&daemon, " left", Duration::from_secs(10));
    for line in &lines {
        assert!(is_daemon_line(line), "a forged log line: {line:?}");
        assert!(
            line.chars().count() <= MAX_LINE,
            "a log line of {} characters: {:.200}…",
            line.chars().count(),
            line
        );
    }
    // Each string did reach the log, escaped and cut.
    let escaped = lines
        .iter()
        .filter(|l| l.contains("\\n1999-01-01T00:00:00.000Z INFO"))
        .count();
    assert!(
        escaped >= 3,
        "room, message type, browser error: {lines:#?}"
    );
    for what in ["room aaaa", "eeee", "bbbb"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(what) && l.contains(" more)")),
            "{what}… is logged, cut: {lines:#?}"
        );
    }
    crate::security::legit_viewer_is_unharmed(daemon.port, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_never_completes_ice_does_not_flood_the_log() {
    let daemon = Daemon::start(&common::test_config("", ""));
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    // A real offer whose client is closed at once: no candidate ever arrives, so the
    // daemon's ICE agent has no candidate pairs until the ICE deadline.
    send_text(&mut ws, offer_message(&offer_sdp().await)).await;
    loop {
        let reply = next_json(&mut ws).await;
        if reply.get("sdp").is_some() {
            assert_eq!(reply["sdp"]["type"], "answer", "{reply}");
            break;
        }
        assert!(reply.get("error").is_none(), "{reply}");
    }
    let lines = lines_for(&daemon, Duration::from_secs(3));
    let noise: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("pingAllCandidates"))
        .collect();
    assert!(
        noise.is_empty(),
        "{} pingAllCandidates lines in 3 s: {:?}",
        noise.len(),
        noise.first()
    );
    assert!(
        lines.len() < 20,
        "{} log lines in 3 s for one pending dial: {lines:#?}",
        lines.len()
    );
    crate::security::legit_viewer_is_unharmed(daemon.port, None).await;
}
