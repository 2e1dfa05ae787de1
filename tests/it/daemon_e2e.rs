//! End to end: the real daemon on a loopback port with the test sources; a webrtc-rs client
//! dials over `/ws` exactly as a browser would and counts the RTP it receives.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::client::{av1, client, codec, dial, h264, metric, H264_PT};
use common::{connect, expect_error, next_json, send_text, Daemon};
use futures_util::StreamExt;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters;
use serde_json::json;
use webrtc::peer_connection::PeerConnection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_client_receives_h264_video_and_opus_audio() {
    let daemon = Daemon::start(&common::test_config("", ""));
    let (mut ws, hello) = connect(&daemon.ws_url("")).await;
    assert_eq!(hello["hello"]["version"], 1);
    assert_eq!(hello["hello"]["mode"], "viewer");
    let (pc, client, mut cands) = client(&[h264()]).await;
    let answer = dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
        client.video_packets.load(Ordering::Relaxed) >= 60
            && client.audio_packets.load(Ordering::Relaxed) >= 25
    })
    .await;
    let answer_sdp = answer["sdp"]["sdp"].as_str().expect("answer sdp");
    assert!(
        answer_sdp.contains(&format!("a=rtpmap:{H264_PT} H264/90000")),
        "{answer_sdp}"
    );
    assert!(answer_sdp.contains("opus/48000"), "{answer_sdp}");
    assert!(answer_sdp.contains("a=sendonly"), "{answer_sdp}");
    let video = client.video_packets.load(Ordering::Relaxed);
    let audio = client.audio_packets.load(Ordering::Relaxed);
    assert!(video >= 60, "only {video} video RTP packets");
    assert!(audio >= 25, "only {audio} audio RTP packets");
    assert_eq!(*client.video_pt.lock().unwrap(), Some(H264_PT));
    assert!(
        client.video_keyframe_starts.load(Ordering::Relaxed) >= 1,
        "no keyframe with SPS/PPS arrived"
    );
    send_text(&mut ws, r#"{"bye": {}}"#).await;
    let _ = pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_client_receives_av1_when_only_av1_is_offered() {
    let daemon = Daemon::start(&common::test_config("codecs = [\"h264\", \"av1\"]", ""));
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (pc, client, mut cands) = client(&[av1()]).await;
    let answer = dial(&mut ws, &pc, &mut cands, Duration::from_secs(20), || {
        client.video_packets.load(Ordering::Relaxed) >= 20
    })
    .await;
    let answer_sdp = answer["sdp"]["sdp"].as_str().expect("answer sdp");
    assert!(answer_sdp.contains("AV1/90000"), "{answer_sdp}");
    assert!(client.video_packets.load(Ordering::Relaxed) >= 20);
    let _ = pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_clear_errors_and_the_socket_stays_usable() {
    let daemon = Daemon::start(&common::test_config("", "max_message_bytes = 2048"));
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (code, msg) = expect_error(&mut ws, "{not json").await;
    assert_eq!(code, "bad_json", "{msg}");
    let (code, msg) = expect_error(&mut ws, r#"{"dance": {}}"#).await;
    assert_eq!(code, "unknown_type");
    assert!(msg.contains("dance"), "{msg}");
    let (code, msg) = expect_error(
        &mut ws,
        r#"{"candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}}"#,
    )
    .await;
    assert_eq!(code, "unexpected");
    assert!(msg.contains("before an offer"), "{msg}");
    let big = format!(
        r#"{{"sdp": {{"type": "offer", "sdp": "{}"}}}}"#,
        "x".repeat(3000)
    );
    let (code, msg) = expect_error(&mut ws, big).await;
    assert_eq!(code, "too_large");
    assert!(msg.contains("2048"), "{msg}");
    let (code, msg) =
        expect_error(&mut ws, r#"{"sdp": {"type": "offer", "sdp": "garbage"}}"#).await;
    assert!(code == "bad_sdp", "{code}: {msg}");
    // An offer without any acceptable video codec names what was offered and configured.
    let (pc, _client, _c) = client(&[codec("video/VP8", 90_000, 0, "", 96)]).await;
    let offer = pc.create_offer(None).await.expect("offer");
    let (code, msg) = expect_error(
        &mut ws,
        json!({"sdp": {"type": "offer", "sdp": offer.sdp}}).to_string(),
    )
    .await;
    assert_eq!(code, "no_codec");
    assert!(msg.contains("VP8") && msg.contains("h264"), "{msg}");
    // The same socket still dials fine afterwards.
    let (pc, client, mut cands) = client(&[h264()]).await;
    dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
        client.video_packets.load(Ordering::Relaxed) >= 10
    })
    .await;
    assert!(client.video_packets.load(Ordering::Relaxed) >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_limit_is_enforced_with_a_clear_error() {
    let daemon = Daemon::start(&common::test_config("", "max_viewers = 1"));
    let (mut ws1, _) = connect(&daemon.ws_url("")).await;
    let (pc1, c1, mut cands1) = client(&[h264()]).await;
    dial(&mut ws1, &pc1, &mut cands1, Duration::from_secs(15), || {
        c1.video_packets.load(Ordering::Relaxed) >= 5
    })
    .await;
    let (mut ws2, _) = connect(&daemon.ws_url("")).await;
    let (pc2, _c2, mut cands2) = client(&[h264()]).await;
    let reply = dial(&mut ws2, &pc2, &mut cands2, Duration::from_secs(1), || {
        false
    })
    .await;
    assert_eq!(reply["error"]["code"], "viewer_limit", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("viewer limit 1 reached"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_mode_links_exactly_two_browsers() {
    let daemon = Daemon::start(&common::test_config("", ""));
    let (mut a, hello) = connect(&daemon.ws_url("?room=lab")).await;
    assert_eq!(hello["hello"]["mode"], "room");
    let (mut b, _) = connect(&daemon.ws_url("?room=lab")).await;
    let offer = r#"{"sdp":{"type":"offer","sdp":"v=0\r\n"}}"#;
    send_text(&mut a, offer).await;
    let relayed = next_json(&mut b).await;
    assert_eq!(relayed["sdp"]["type"], "offer");
    send_text(&mut b, r#"{"candidate":null}"#).await;
    assert_eq!(next_json(&mut a).await, json!({"candidate": null}));
    let (mut c, reply) = connect(&daemon.ws_url("?room=lab")).await;
    assert_eq!(reply["error"]["code"], "room_full", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("room full"));
    // Garbage is answered, not relayed.
    let (code, _) = expect_error(&mut a, "][").await;
    assert_eq!(code, "bad_json");
    drop(c.close(None).await);
}

/// Room sockets run the same loop as viewer sockets: a browser alone in its room that stays
/// silent is closed after `idle_timeout_s` (a pair, maybe in a call, is left alone), and a
/// message over 4x `max_message_bytes` closes the socket with 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_sockets_close_when_idle_and_over_the_size_limit() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let daemon = Daemon::start(&common::test_config(
        "",
        "idle_timeout_s = 10\nmax_message_bytes = 4096",
    ));
    let started = Instant::now();
    let (mut alone, hello) = connect(&daemon.ws_url("?room=quiet")).await;
    assert_eq!(hello["hello"]["viewers"], 1, "{hello}");
    let (mut a, _) = connect(&daemon.ws_url("?room=pair")).await;
    let (mut b, _) = connect(&daemon.ws_url("?room=pair")).await;

    // Over the size limit: 1009, and the other browser in the room is told bye.
    let (mut big, _) = connect(&daemon.ws_url("?room=big")).await;
    let (mut partner, _) = connect(&daemon.ws_url("?room=big")).await;
    send_text(
        &mut big,
        format!(r#"{{"pad":"{}"}}"#, "x".repeat(4 * 4096 + 1)),
    )
    .await;
    assert_eq!(
        common::closed_within(&mut big, Duration::from_secs(5)).await,
        Some(CloseCode::Size)
    );
    assert_eq!(next_json(&mut partner).await, json!({"bye": {}}));

    // (Not next_json: its own 10 s limit would race the 10 s deadline.)
    let bye = match tokio::time::timeout(Duration::from_secs(15), alone.next()).await {
        Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
            serde_json::from_str::<serde_json::Value>(&text).expect("JSON")
        }
        other => panic!("the lone room socket got no bye within 15 s: {other:?}"),
    };
    assert_eq!(bye["bye"]["reason"], "idle", "{bye}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed after {:?}",
        started.elapsed()
    );
    common::closed_within(&mut alone, Duration::from_secs(5)).await;
    daemon.wait_for_log("[limits] idle_timeout_s", Duration::from_secs(5));

    // The pair was silent just as long, and still relays.
    send_text(&mut a, r#"{"candidate":null}"#).await;
    assert_eq!(next_json(&mut b).await, json!({"candidate": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_call_exits_zero_within_a_second() {
    let mut daemon = Daemon::start(&common::test_config("", ""));
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (pc, client, mut cands) = client(&[h264()]).await;
    dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
        client.video_packets.load(Ordering::Relaxed) >= 10
    })
    .await;
    assert!(client.video_packets.load(Ordering::Relaxed) >= 10);
    let (status, took) = daemon.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    // Every connection task finished (none abandoned) before the media stopped.
    let mut log = Vec::new();
    while let Ok(line) = daemon.log.recv_timeout(Duration::from_secs(2)) {
        log.push(line);
    }
    assert!(
        log.iter().any(|l| l.contains("call ended")) && log.iter().any(|l| l.contains("stopped")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("still running after")),
        "{log:#?}"
    );
    // The viewer was told goodbye.
    let mut saw_bye = false;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(
        Duration::from_secs(1),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    {
        if msg.to_text().is_ok_and(|t| t.contains("bye")) {
            saw_bye = true;
        }
    }
    assert!(saw_bye, "no bye before close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_disconnect_mid_ice_frees_the_slot_and_others_keep_streaming() {
    let daemon = Daemon::start(&common::test_config("", "max_viewers = 2"));
    // A steady viewer.
    let (mut ws1, _) = connect(&daemon.ws_url("")).await;
    let (pc1, c1, mut cands1) = client(&[h264()]).await;
    dial(&mut ws1, &pc1, &mut cands1, Duration::from_secs(15), || {
        c1.video_packets.load(Ordering::Relaxed) >= 10
    })
    .await;
    // A second browser offers, gets its answer, then vanishes before ICE completes.
    let (mut ws2, _) = connect(&daemon.ws_url("")).await;
    let (pc2, _c2, _) = client(&[h264()]).await;
    let offer = pc2.create_offer(None).await.expect("offer");
    send_text(
        &mut ws2,
        json!({"sdp": {"type": "offer", "sdp": offer.sdp}}).to_string(),
    )
    .await;
    let answer = next_json(&mut ws2).await;
    assert_eq!(answer["sdp"]["type"], "answer", "{answer}");
    drop(ws2);
    let _ = pc2.close().await;
    // Its viewer slot comes back, and the first viewer keeps receiving.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(daemon.port, "peercam_viewers").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "slot of the vanished viewer not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = c1.video_packets.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        c1.video_packets.load(Ordering::Relaxed) > before + 10,
        "first viewer stalled"
    );
    let _ = pc1.close().await;
}

fn h264_main() -> RTCRtpCodecParameters {
    codec(
        "video/H264",
        90_000,
        0,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
        H264_PT,
    )
}

/// The simulated H.264 camera (Main profile 4d4c28, SPS/PPS only once): a client offering
/// Main gets the camera's stream untouched with the camera's level in the answer; a
/// Baseline-only client gets it decoded and re-encoded as Constrained Baseline; an AV1
/// client gets it decoded and encoded with rav1e. All at once, from one capture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_h264_is_passed_through_or_decoded_per_viewer() {
    let daemon = Daemon::start(&common::test_config(
        "format = \"h264\"\ncodecs = [\"h264\", \"av1\"]",
        "",
    ));
    // The camera's profile is known once its first access unit went through the hub.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(daemon.port, "peercam_frames_captured_total")
        .await
        .unwrap_or(0.0)
        < 3.0
    {
        assert!(Instant::now() < deadline, "no frames captured");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut results = Vec::new();
    for offer in [h264_main(), h264(), av1()] {
        let (mut ws, _) = connect(&daemon.ws_url("")).await;
        let (pc, client, mut cands) = client(&[offer]).await;
        let answer = dial(&mut ws, &pc, &mut cands, Duration::from_secs(20), || {
            client.video_packets.load(Ordering::Relaxed) >= 60
                && (client.video_keyframe_starts.load(Ordering::Relaxed) >= 1
                    || *client.video_pt.lock().unwrap() == Some(45))
        })
        .await;
        let sdp = answer["sdp"]["sdp"]
            .as_str()
            .expect("answer sdp")
            .to_owned();
        results.push((sdp, client, ws, pc));
    }
    let [main, baseline, av1]: [_; 3] = results.try_into().ok().expect("three viewers");

    assert!(main.0.contains("profile-level-id=4d0028"), "{}", main.0);
    assert!(main.1.video_packets.load(Ordering::Relaxed) >= 60);
    let profiles = main.1.sps_profiles.lock().unwrap().clone();
    assert!(
        !profiles.is_empty() && profiles.iter().all(|p| *p == 0x4d),
        "{profiles:?}"
    );

    assert!(
        baseline.0.contains("profile-level-id=42e01f"),
        "{}",
        baseline.0
    );
    assert!(baseline.1.video_packets.load(Ordering::Relaxed) >= 60);
    let profiles = baseline.1.sps_profiles.lock().unwrap().clone();
    assert!(
        !profiles.is_empty() && profiles.iter().all(|p| *p == 0x42),
        "{profiles:?}"
    );

    assert!(av1.0.contains("AV1/90000"), "{}", av1.0);
    assert!(av1.1.video_packets.load(Ordering::Relaxed) >= 60);

    let passed = metric(
        daemon.port,
        "peercam_frames_encoded_total{codec=\"h264-camera\"}",
    )
    .await;
    assert!(
        passed.unwrap_or(0.0) >= 30.0,
        "passthrough frames: {passed:?}"
    );
    for (_, _, mut ws, pc) in [main, baseline, av1] {
        send_text(&mut ws, r#"{"bye": {}}"#).await;
        let _ = pc.close().await;
    }
}

/// Frames captured per second, measured over `window` from /metrics.
async fn capture_rate(port: u16, window: Duration) -> f64 {
    let before = metric(port, "peercam_frames_captured_total")
        .await
        .expect("frames metric");
    tokio::time::sleep(window).await;
    let after = metric(port, "peercam_frames_captured_total")
        .await
        .expect("frames metric");
    (after - before) / window.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_media_settings_and_keeps_running_on_a_broken_file() {
    let daemon = Daemon::start(&common::test_config("", ""));
    let rate = capture_rate(daemon.port, Duration::from_secs(2)).await;
    assert!(rate > 15.0, "30 fps configured, captured {rate:.1}/s");

    // A viewer in a call on the running pipeline.
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (pc, first, mut cands) = client(&[h264()]).await;
    dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
        first.video_packets.load(Ordering::Relaxed) >= 10
    })
    .await;
    assert!(first.video_packets.load(Ordering::Relaxed) >= 10);

    // 1. A new fps: the pipeline is replaced, the viewer is asked to dial again.
    let config = std::fs::read_to_string(&daemon.config_path).expect("read config");
    std::fs::write(&daemon.config_path, config.replace("fps = 30", "fps = 10")).expect("write");
    daemon.signal("HUP");
    let applied = daemon.wait_for_log("reload:", Duration::from_secs(10));
    assert!(
        applied.contains("applied") && applied.contains("[video] changed"),
        "{applied}"
    );
    let bye = loop {
        let message = next_json(&mut ws).await;
        if message.get("bye").is_some() {
            break message;
        }
    };
    assert_eq!(bye["bye"]["reason"], "reload", "{bye}");
    let _ = pc.close().await;
    let rate = capture_rate(daemon.port, Duration::from_secs(2)).await;
    assert!(
        (4.0..=13.0).contains(&rate),
        "10 fps after the reload, captured {rate:.1}/s"
    );
    // A new call works on the new pipeline.
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (pc, second, mut cands) = client(&[h264()]).await;
    dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
        second.video_packets.load(Ordering::Relaxed) >= 5
    })
    .await;
    assert!(second.video_packets.load(Ordering::Relaxed) >= 5);
    send_text(&mut ws, r#"{"bye": {}}"#).await;
    let _ = pc.close().await;

    // 2. A broken file: logged with line, column and key; the running config stays.
    std::fs::write(&daemon.config_path, "[video]\nfps = 0\n").expect("write");
    daemon.signal("HUP");
    let refused = daemon.wait_for_log("reload:", Duration::from_secs(10));
    assert!(
        refused.contains("peercam.toml:2:7")
            && refused.contains("[video] fps")
            && refused.contains("keeping the running configuration"),
        "{refused}"
    );
    let rate = capture_rate(daemon.port, Duration::from_secs(2)).await;
    assert!(
        (4.0..=13.0).contains(&rate),
        "still 10 fps after a refused reload, captured {rate:.1}/s"
    );

    // 3. Keys that need a restart are named, the rest applies.
    let restart_only = common::test_config("", "max_viewers = 3").replace("fps = 30", "fps = 10");
    std::fs::write(&daemon.config_path, restart_only).expect("write");
    daemon.signal("HUP");
    let warned = daemon.wait_for_log("reload:", Duration::from_secs(10));
    assert!(
        warned.contains("[limits]") && warned.contains("after a restart"),
        "{warned}"
    );
}
