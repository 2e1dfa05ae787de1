//! A webrtc-rs client that dials the real daemon over `/ws` as a browser would, counts the
//! RTP it receives and can send RTCP back (the peer itself is client_peer.rs); and a
//! `/metrics` reader.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};

pub use super::client_peer::{
    av1, client, client_on, client_tcp_only, codec, h264, Client, H264_PT,
};
use super::{next_json, send_text, Ws};

/// Dials: sends the offer, applies the answer, trickles candidates both ways until
/// `until` is true or the timeout passes.
pub async fn dial(
    ws: &mut Ws,
    pc: &impl PeerConnection,
    candidates: &mut tokio::sync::mpsc::Receiver<Option<RTCIceCandidateInit>>,
    timeout: Duration,
    until: impl Fn() -> bool,
) -> Value {
    dial_with(ws, pc, candidates, timeout, until, |sdp| sdp).await
}

/// [`dial`], sending the offer as `edit` changes it (the client keeps the real one).
pub async fn dial_with(
    ws: &mut Ws,
    pc: &impl PeerConnection,
    candidates: &mut tokio::sync::mpsc::Receiver<Option<RTCIceCandidateInit>>,
    timeout: Duration,
    until: impl Fn() -> bool,
    edit: impl FnOnce(String) -> String,
) -> Value {
    let offer = pc.create_offer(None).await.expect("offer");
    pc.set_local_description(offer).await.expect("set local");
    let sdp = edit(pc.local_description().await.expect("local desc").sdp);
    send_text(
        ws,
        json!({"sdp": {"type": "offer", "sdp": sdp}}).to_string(),
    )
    .await;
    // A candidate inside the offer that the daemon refuses (a loopback address, to a daemon
    // not serving on loopback) is reported before the answer, and the call goes on.
    let answer = loop {
        let reply = next_json(ws).await;
        if reply["error"]["code"] != "bad_candidate" {
            break reply;
        }
    };
    let Some(answer_sdp) = answer["sdp"]["sdp"].as_str() else {
        return answer; // an error reply
    };
    assert_eq!(answer["sdp"]["type"], "answer");
    pc.set_remote_description(
        RTCSessionDescription::answer(answer_sdp.to_owned()).expect("answer"),
    )
    .await
    .expect("apply answer");
    let deadline = Instant::now() + timeout;
    use futures_util::StreamExt;
    while Instant::now() < deadline && !until() {
        tokio::select! {
            Some(Some(c)) = candidates.recv() => {
                send_text(ws, json!({"candidate": {
                    "candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index
                }}).to_string()).await;
            }
            Some(Ok(msg)) = ws.next() => {
                if let Ok(text) = msg.to_text() {
                    let v: Value = serde_json::from_str(text).expect("json from server");
                    if let Some(c) = v.get("candidate") {
                        if let Some(c) = c.as_object() {
                            let init = RTCIceCandidateInit {
                                candidate: c["candidate"].as_str().unwrap_or_default().to_owned(),
                                sdp_mid: c.get("sdpMid").and_then(|m| m.as_str()).map(str::to_owned),
                                sdp_mline_index: c.get("sdpMLineIndex").and_then(|m| m.as_u64()).map(|m| m as u16),
                                ..Default::default()
                            };
                            pc.add_ice_candidate(init).await.expect("remote candidate");
                        }
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    answer
}

/// GET /metrics over a plain TCP socket and return the value of one line.
pub async fn metric(port: u16, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}
