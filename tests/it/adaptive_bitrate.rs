//! Adaptive bitrate end to end: the real daemon, webrtc-rs clients that dial it over `/ws` and
//! send REMB as a browser would; the encoder target is read from `/metrics` and from the
//! `{"bitrate": …}` signaling messages.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{client, dial, h264, metric, Client};
use common::{connect, send_text, Daemon, Ws};
use futures_util::StreamExt;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use serde_json::Value;
use webrtc::peer_connection::PeerConnection;

const TARGET: &str = "peercam_video_target_bitrate_kbps{codec=\"h264\"}";
const CHANGES: &str = "peercam_video_bitrate_changes_total{codec=\"h264\"}";

/// start 800, range 200..=1200, floor 500 with several viewers.
fn config() -> String {
    common::test_config(
        "codecs = [\"h264\"]\nbitrate_kbps = 800\nmin_bitrate_kbps = 200\n\
         max_bitrate_kbps = 1200\nmulti_viewer_floor_kbps = 500",
        "max_viewers = 4",
    )
}

/// Sends a REMB of `kbps` (changeable while it runs) every 250 ms, as Chromium does about
/// once a second, until aborted.
fn send_remb(client: &Arc<Client>, kbps: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let (track, ssrc) = client
        .video_track
        .lock()
        .unwrap()
        .clone()
        .expect("video RTP arrived before REMB is sent");
    tokio::spawn(async move {
        loop {
            let remb = ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate: (kbps.load(Ordering::Relaxed) * 1000) as f32,
                ssrcs: vec![ssrc],
            };
            if track.write_rtcp(vec![Box::new(remb)]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// Waits until the target metric satisfies `ok`; returns it and how long it took.
async fn wait_for_target(
    port: u16,
    timeout: Duration,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> (f64, Duration) {
    let start = Instant::now();
    loop {
        let target = metric(port, TARGET).await.expect("target metric");
        if ok(target) {
            return (target, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "target {target} kbit/s: not {what} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `target_kbps` of every `{"bitrate": …}` message waiting on `ws`.
async fn bitrate_messages(ws: &mut Ws) -> Vec<u64> {
    let mut targets = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or_default()) {
            if let Some(t) = v["bitrate"]["target_kbps"].as_u64() {
                targets.push(t);
            }
        }
    }
    targets
}

/// Dials one h264 viewer and waits for its video.
async fn viewer(daemon: &Daemon) -> (Ws, impl PeerConnection, Arc<Client>) {
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (pc, c, mut cands) = client(&[h264()]).await;
    let answer = dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
        c.video_packets.load(Ordering::Relaxed) >= 10
    })
    .await;
    let sdp = answer["sdp"]["sdp"].as_str().expect("answer sdp");
    assert!(
        sdp.contains("goog-remb"),
        "the answer negotiates REMB: {sdp}"
    );
    assert!(c.video_packets.load(Ordering::Relaxed) >= 10, "no video");
    (ws, pc, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remb_moves_the_encoder_target_within_min_and_max() {
    let daemon = Daemon::start(&config());
    assert_eq!(metric(daemon.port, TARGET).await, Some(800.0), "start");
    let (mut ws, pc, c) = viewer(&daemon).await;

    let kbps = Arc::new(AtomicU64::new(300));
    let remb = send_remb(&c, kbps.clone());
    let (target, took) =
        wait_for_target(daemon.port, Duration::from_secs(5), "300", |t| t == 300.0).await;
    eprintln!("REMB 300: target {target} after {took:?}");
    // Below min_bitrate_kbps: clamped.
    kbps.store(50, Ordering::Relaxed);
    let (target, took) = wait_for_target(daemon.port, Duration::from_secs(5), "the minimum", |t| {
        t == 200.0
    })
    .await;
    eprintln!("REMB 50: target {target} after {took:?}");
    // A good link again: up step by step (+50 % at most every 2 s) to max_bitrate_kbps.
    kbps.store(10_000, Ordering::Relaxed);
    let (target, took) =
        wait_for_target(daemon.port, Duration::from_secs(20), "the maximum", |t| {
            t == 1200.0
        })
        .await;
    eprintln!("REMB 10000: target {target} after {took:?}");
    assert!(
        took >= Duration::from_secs(6),
        "slow up: 200 -> 1200 takes at least 4 steps 2 s apart, took {took:?}"
    );
    // Video keeps flowing at the new rate.
    let before = c.video_packets.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        c.video_packets.load(Ordering::Relaxed) > before + 10,
        "video stalled"
    );

    let changes = metric(daemon.port, CHANGES).await.expect("changes metric");
    assert!(
        changes >= 6.0,
        "800, 300, 200, then at least 4 steps up: {changes}"
    );
    // The page was told every target, ending with the current one.
    let told = bitrate_messages(&mut ws).await;
    assert!(
        told.first() == Some(&800) || told.first() == Some(&300),
        "first bitrate message: {told:?}"
    );
    assert!(told.contains(&200), "{told:?}");
    assert_eq!(told.last(), Some(&1200), "{told:?}");

    remb.abort();
    send_text(&mut ws, r#"{"bye": {}}"#).await;
    let _ = pc.close().await;
    // Nobody watches: back to the configured start.
    wait_for_target(daemon.port, Duration::from_secs(5), "the start", |t| {
        t == 800.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_viewers_the_target_follows_the_weaker_down_to_the_floor() {
    let daemon = Daemon::start(&config());
    let (_ws1, pc1, c1) = viewer(&daemon).await;
    let (mut ws2, pc2, c2) = viewer(&daemon).await;
    let strong = send_remb(&c1, Arc::new(AtomicU64::new(10_000)));
    let weak_kbps = Arc::new(AtomicU64::new(700));
    let weak = send_remb(&c2, weak_kbps.clone());

    let (target, took) = wait_for_target(
        daemon.port,
        Duration::from_secs(6),
        "the weaker viewer's",
        |t| t == 700.0,
    )
    .await;
    eprintln!("REMB 10000 + 700: target {target} after {took:?}");
    // The weak viewer's link collapses: the shared encoder stops at the floor (500), not at
    // min_bitrate_kbps (200).
    weak_kbps.store(100, Ordering::Relaxed);
    wait_for_target(daemon.port, Duration::from_secs(5), "the floor", |t| {
        t == 500.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(daemon.port, TARGET).await,
        Some(500.0),
        "stays at the floor"
    );

    // The weak viewer leaves: the strong one alone takes the target back up.
    weak.abort();
    send_text(&mut ws2, r#"{"bye": {}}"#).await;
    let _ = pc2.close().await;
    let (target, took) = wait_for_target(
        daemon.port,
        Duration::from_secs(8),
        "above the floor",
        |t| t > 500.0,
    )
    .await;
    eprintln!("weak viewer gone: target {target} after {took:?}");
    let before = c1.video_packets.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        c1.video_packets.load(Ordering::Relaxed) > before + 10,
        "strong viewer stalled"
    );
    strong.abort();
    let _ = pc1.close().await;
}
