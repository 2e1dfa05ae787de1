//! Fault and load tests against the real daemon (test sources at 320x240, 30 fps, loopback
//! only), each bounded to a few tens of seconds: a flood of connections and dials, browsers
//! that vanish mid-ICE, garbage and oversize messages, SIGTERM during dials, and an encoder
//! error. After each, the daemon's file descriptors and tokio tasks (`peercam_open_fds`,
//! `peercam_tasks`) must come back to what they were before: nothing leaks.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::client::{client, h264};
use common::probe::{
    back_to_baseline, frame_rate, offer_message, offer_sdp, rss_kib, serial, steady_resources,
    viewer, RssSampler,
};
use common::{
    closed_within, connect, expect_error, next_json, send_text, test_config, Daemon, Ws,
    MANY_CLIENTS,
};
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use webrtc::peer_connection::PeerConnection;

/// How long fds and tasks get to return to their baseline after a burst ends.
const SETTLE: Duration = Duration::from_secs(15);
/// The frame rate a streaming viewer keeps under load (the source sends 30).
const MIN_FPS: f64 = 25.0;

/// The next JSON text message, or `None` when the socket closes or nothing comes in `wait`.
async fn next_json_within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(WsMessage::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).expect("server sent invalid JSON");
                // Viewer counts come whenever another call starts or ends.
                if value.get("viewers").is_none() {
                    return Some(value);
                }
            }
            Ok(Some(Ok(WsMessage::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                return None
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The `(code, message)` of an error reply; panics on anything else.
fn error_of(reply: &Value) -> (String, String) {
    let err = reply
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {reply}"));
    (
        err["code"].as_str().unwrap_or_default().to_owned(),
        err["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// 200 WebSockets and 32 dials at once while one viewer streams: the viewer keeps ≥ 25 fps,
/// RSS grows by ≤ 50 MB, every refused dial is told why, and afterwards fds and tasks are
/// back where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_connections_and_dials_spares_the_viewer_and_leaks_nothing() {
    let _serial = serial().await;
    const CONNECTIONS: usize = 200;
    const DIALS: usize = 32;
    const PENDING: usize = 4;
    let daemon = Daemon::start(&test_config(
        "",
        &format!(
            "{MANY_CLIENTS}max_viewers = 8\nmax_connections = 300\n\
             max_pending_dials = {PENDING}\ndials_per_minute = 600"
        ),
    ));
    let streaming = viewer(&daemon, 30).await;
    let baseline = steady_resources(daemon.port).await;
    let rss_before = rss_kib(daemon.pid());
    let offer = offer_message(&offer_sdp().await);
    let url = daemon.ws_url("");

    let rss = RssSampler::start(daemon.pid());
    let frames_before = streaming.frames();
    let start = Instant::now();
    let connections = join_all((0..CONNECTIONS).map(|i| {
        let url = url.clone();
        async move {
            let (ws, hello) = connect(&url).await;
            assert_eq!(hello["hello"]["mode"], "viewer", "connection {i}: {hello}");
            ws
        }
    }));
    let dials = join_all((0..DIALS).map(|i| {
        let (url, offer) = (url.clone(), offer.clone());
        async move {
            let (mut ws, _) = connect(&url).await;
            send_text(&mut ws, offer).await;
            let reply = next_json_within(&mut ws, Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("dial {i} got no reply within 10 s"));
            (ws, reply)
        }
    }));
    let (connections, dials) = tokio::join!(connections, dials);
    let flood_took = start.elapsed();
    // Everyone stays connected a little longer: the load lasts at least 3 s.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(flood_took)).await;
    let load_time = start.elapsed();
    let fps = (streaming.frames() - frames_before) as f64 / load_time.as_secs_f64();
    let rss_peak = rss.peak_kib();
    drop(rss);

    let mut answered = 0;
    let mut refused: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, (_, reply)) in dials.iter().enumerate() {
        if reply["sdp"]["type"] == "answer" {
            answered += 1;
            continue;
        }
        let (code, message) = error_of(reply);
        assert!(
            matches!(
                code.as_str(),
                "dial_limit" | "viewer_limit" | "rate_limited"
            ) && !message.is_empty(),
            "dial {i} refused without a limit code and message: {reply}"
        );
        *refused.entry(code).or_default() += 1;
    }
    eprintln!(
        "flood: {CONNECTIONS} connections + {DIALS} dials in {flood_took:?}; {answered} \
         answered, refused {refused:?}; viewer {fps:.1} fps over {load_time:?}; RSS \
         {rss_before} -> peak {rss_peak} KiB (+{} KiB); baseline {baseline}",
        rss_peak.saturating_sub(rss_before)
    );
    assert!(
        (1..=PENDING).contains(&answered),
        "{answered} of {DIALS} dials answered at once with max_pending_dials = {PENDING}"
    );
    assert_eq!(answered + refused.values().sum::<usize>(), DIALS);
    assert!(
        fps >= MIN_FPS,
        "the streaming viewer got {fps:.1} fps during the flood ({load_time:?})"
    );
    let grown_mb = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    assert!(
        grown_mb <= 50.0,
        "RSS grew by {grown_mb:.1} MB during the flood ({rss_before} -> {rss_peak} KiB)"
    );

    // Everyone leaves: half politely, half by dropping the TCP connection.
    let mut sockets: Vec<Ws> = connections;
    sockets.extend(dials.into_iter().map(|(ws, _)| ws));
    let closing = sockets.len();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        if i % 2 == 0 {
            let _ = ws.close(None).await;
        }
    }
    let took = back_to_baseline(
        daemon.port,
        baseline,
        SETTLE,
        &format!("{closing} sockets closed"),
    )
    .await;
    let after = frame_rate(&streaming.client, Duration::from_secs(1)).await;
    eprintln!(
        "flood: back to baseline {baseline} {took:?} after the sockets closed; viewer \
         {after:.1} fps; RSS now {} KiB",
        rss_kib(daemon.pid())
    );
    assert!(after >= MIN_FPS, "viewer at {after:.1} fps after the flood");
    streaming.hang_up().await;
}

/// Browsers that close mid-dial, over and over: right after the offer, after the answer,
/// while ICE checks run, and one whose peer vanishes while its socket stays (closed by
/// `ice_timeout_s`). Every slot comes back, and fds and tasks return to the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_closing_mid_ice_free_their_slots_and_leak_nothing() {
    let _serial = serial().await;
    const ROUNDS: usize = 6;
    let daemon = Daemon::start(&test_config(
        "",
        &format!(
            "{MANY_CLIENTS}max_viewers = 2\nmax_pending_dials = 2\ndials_per_minute = 600\n\
             ice_timeout_s = 5"
        ),
    ));
    // One call first, so one-time setup (encoder start, lazily created state) is not
    // counted as a leak; then the baseline with nobody connected.
    viewer(&daemon, 10).await.hang_up().await;
    let baseline = steady_resources(daemon.port).await;
    let url = daemon.ws_url("");

    // The vanishing peer with a socket that stays open: the daemon gives up after 5 s.
    let (mut lingering, _) = connect(&url).await;
    let (pc, _c, _cands) = client(&[h264()]).await;
    let offer = pc.create_offer(None).await.expect("offer");
    send_text(&mut lingering, offer_message(&offer.sdp)).await;
    let answer = next_json(&mut lingering).await;
    assert_eq!(answer["sdp"]["type"], "answer", "{answer}");
    let _ = pc.close().await;
    let ice_timeout_from = Instant::now();

    // The other slot churns: each dial must find it free again (within 3 s).
    let mut slowest_free = Duration::ZERO;
    for round in 0..ROUNDS {
        for variant in ["after the offer", "after the answer", "during ICE checks"] {
            let what = format!("round {round}, close {variant}");
            let (pc, _c, mut cands) = client(&[h264()]).await;
            let offer = pc.create_offer(None).await.expect("offer");
            pc.set_local_description(offer.clone())
                .await
                .expect("set local");
            let asked = Instant::now();
            let (mut ws, reply) = loop {
                let (mut ws, _) = connect(&url).await;
                send_text(&mut ws, offer_message(&offer.sdp)).await;
                if variant == "after the offer" {
                    break (ws, None);
                }
                let reply = next_json(&mut ws).await;
                let busy = reply["error"]["code"] == "dial_limit"
                    || reply["error"]["code"] == "viewer_limit";
                if !busy {
                    break (ws, Some(reply));
                }
                assert!(
                    asked.elapsed() < Duration::from_secs(3),
                    "{what}: still {reply} 3 s after the previous browser left"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            slowest_free = slowest_free.max(asked.elapsed());
            if let Some(reply) = reply {
                assert_eq!(reply["sdp"]["type"], "answer", "{what}: {reply}");
                if variant == "during ICE checks" {
                    pc.set_remote_description(
                        webrtc::peer_connection::RTCSessionDescription::answer(
                            reply["sdp"]["sdp"].as_str().expect("sdp").to_owned(),
                        )
                        .expect("answer"),
                    )
                    .await
                    .expect("apply answer");
                    // Our first candidate goes out, so the daemon starts its checks.
                    let c = tokio::time::timeout(Duration::from_secs(2), cands.recv())
                        .await
                        .ok()
                        .flatten()
                        .flatten()
                        .unwrap_or_else(|| panic!("{what}: the client gathered no candidate"));
                    send_text(
                        &mut ws,
                        serde_json::json!({"candidate": {
                            "candidate": c.candidate, "sdpMid": c.sdp_mid,
                            "sdpMLineIndex": c.sdp_mline_index
                        }})
                        .to_string(),
                    )
                    .await;
                }
            }
            // The browser goes away: its peer first, then the TCP connection, no bye.
            let _ = pc.close().await;
            drop(ws);
        }
    }

    // Its candidates and bitrate target came first; then the bye.
    let bye = loop {
        let message = next_json_within(&mut lingering, Duration::from_secs(10))
            .await
            .expect("no bye for the dial that never connected");
        if message.get("bye").is_some() {
            break message;
        }
    };
    let waited = ice_timeout_from.elapsed();
    assert_eq!(bye["bye"]["reason"], "ice_timeout", "{bye}");
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "ice_timeout_s = 5, bye after {waited:?}"
    );
    drop(lingering);

    let took = back_to_baseline(
        daemon.port,
        baseline,
        SETTLE,
        &format!("{} abandoned dials", ROUNDS * 3 + 1),
    )
    .await;
    eprintln!(
        "mid-ICE: {} abandoned dials, slot free again within {slowest_free:?}; ice_timeout \
         bye after {waited:?}; back to baseline {baseline} in {took:?}",
        ROUNDS * 3 + 1
    );
    // Both viewer slots are free: two new viewers stream.
    let a = viewer(&daemon, 30).await;
    let b = viewer(&daemon, 30).await;
    a.hang_up().await;
    b.hang_up().await;
}

/// Garbage and oversize messages: each gets its clear error (or, past 4x the limit and for
/// invalid UTF-8, the socket is closed), a burst of them is answered one by one, the
/// streaming viewer does not notice, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversize_messages_get_clear_errors_and_leave_no_trace() {
    let _serial = serial().await;
    const MAX: usize = 65_536;
    const BURST: usize = 1000;
    let daemon = Daemon::start(&test_config(
        "",
        &format!("{MANY_CLIENTS}max_message_bytes = {MAX}\nmax_connections = 16"),
    ));
    let streaming = viewer(&daemon, 30).await;
    let baseline = steady_resources(daemon.port).await;
    let frames_before = streaming.frames();
    let start = Instant::now();
    let url = daemon.ws_url("");
    let (mut ws, _) = connect(&url).await;

    // A binary frame.
    ws.send(WsMessage::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .expect("send binary");
    let (code, message) = error_of(&next_json(&mut ws).await);
    assert!(
        code == "bad_json" && message.contains("binary"),
        "binary frame: {code}: {message}"
    );
    // Not JSON, not an object, too many keys.
    for (text, code_wanted, says) in [
        ("{not json", "bad_json", "line 1 column 2"),
        ("[1, 2, 3]", "bad_json", "an array"),
        ("\"sdp\"", "bad_json", "a string"),
        (r#"{"sdp": {}, "bye": {}}"#, "bad_json", "2 keys"),
        (r#"{"sdp": 7}"#, "bad_message", "sdp"),
    ] {
        let (code, message) = expect_error(&mut ws, text).await;
        assert!(
            code == code_wanted && message.contains(says),
            "{text}: {code}: {message}"
        );
    }
    // Deep nesting, within the size limit: refused by the parser's depth limit, no crash.
    for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
        let depth = (MAX - 20) / (open.len() + close.len());
        let text = format!(
            r#"{{"candidate":{}1{}}}"#,
            open.repeat(depth),
            close.repeat(depth)
        );
        assert!(text.len() <= MAX);
        let (code, message) = expect_error(&mut ws, text).await;
        assert!(
            code == "bad_json" && message.contains("recursion limit"),
            "{depth} levels of {open}: {code}: {message}"
        );
    }
    // Sizes around the limit: exactly MAX is parsed (an unknown type here), MAX + 1 and 4x
    // MAX are "too_large" with the limit named, over 4x closes the socket with 1009.
    let sized = |len: usize| {
        let text = format!(r#"{{"pad":"{}"}}"#, "x".repeat(len - 10));
        assert_eq!(text.len(), len);
        text
    };
    let (code, message) = expect_error(&mut ws, sized(MAX)).await;
    assert_eq!(code, "unknown_type", "{MAX} bytes: {message}");
    for len in [MAX + 1, 4 * MAX] {
        let (code, message) = expect_error(&mut ws, sized(len)).await;
        assert!(
            code == "too_large" && message.contains(&MAX.to_string()),
            "{len} bytes: {code}: {message}"
        );
    }
    // A burst: every message answered, in order.
    for i in 0..BURST {
        ws.feed(WsMessage::Text(format!(r#"{{"dance{i}": {{}}}}"#).into()))
            .await
            .expect("feed");
    }
    ws.flush().await.expect("flush");
    for i in 0..BURST {
        let (code, message) = error_of(&next_json(&mut ws).await);
        assert!(
            code == "unknown_type" && message.contains(&format!("dance{i}")),
            "burst message {i}: {code}: {message}"
        );
    }
    // The socket still works: an offer is still examined.
    let (code, _) = expect_error(&mut ws, r#"{"sdp": {"type": "offer", "sdp": "v=0"}}"#).await;
    assert_eq!(code, "bad_sdp");
    send_text(&mut ws, sized(4 * MAX + 1)).await;
    // (Checked at the end, so that the rest of this test still runs if it fails.)
    let oversize_close = closed_within(&mut ws, Duration::from_secs(5)).await;

    // Invalid UTF-8 in a text frame: a protocol error (RFC 6455: close, 1007).
    let (mut bad, _) = connect(&url).await;
    let payload: &[u8] = b"{\"sdp\": \"\xff\xfe\xfd\"}";
    bad.send(WsMessage::Frame(Frame::message(
        payload.to_vec(),
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .expect("send invalid UTF-8");
    let close = closed_within(&mut bad, Duration::from_secs(5)).await;
    assert!(
        matches!(
            close,
            None | Some(CloseCode::Invalid) | Some(CloseCode::Protocol)
        ),
        "invalid UTF-8 closed with {close:?}"
    );

    // Eight sockets sending garbage in bursts of 100 for 3 s (while the viewer's frame
    // rate is measured): every message answered.
    let spam_until = Instant::now() + Duration::from_secs(3);
    let spammers = join_all((0..8).map(|i| {
        let url = url.clone();
        async move {
            let (mut ws, _) = connect(&url).await;
            let mut sent = 0;
            while Instant::now() < spam_until {
                for _ in 0..100 {
                    ws.feed(WsMessage::Text("}{".into())).await.expect("feed");
                }
                ws.flush().await.expect("flush");
                for n in 0..100 {
                    let (code, _) = error_of(&next_json(&mut ws).await);
                    assert_eq!(code, "bad_json", "spammer {i}, message {}", sent + n);
                }
                sent += 100;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ws, sent)
        }
    }))
    .await;
    let spent = start.elapsed();
    let fps = (streaming.frames() - frames_before) as f64 / spent.as_secs_f64();
    let spam: usize = spammers.iter().map(|(_, sent)| sent).sum();
    drop(spammers);
    drop(bad);
    drop(ws);
    let took = back_to_baseline(daemon.port, baseline, SETTLE, "the garbage sockets closed").await;
    eprintln!(
        "garbage: {BURST} + {spam} garbage messages answered; viewer {fps:.1} fps over \
         {spent:?}; back to baseline {baseline} in {took:?}"
    );
    assert!(
        fps >= MIN_FPS,
        "the streaming viewer got {fps:.1} fps while garbage arrived"
    );
    streaming.hang_up().await;
    assert_eq!(
        oversize_close,
        Some(CloseCode::Size),
        "a message over 4x max_message_bytes must close the socket with 1009 (README)"
    );
}

/// SIGTERM while browsers are mid-dial (answered and checking, or offer just sent): exit 0
/// within two seconds, every socket told and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_dials_exits_zero_promptly() {
    let _serial = serial().await;
    let mut daemon = Daemon::start(&test_config(
        "",
        &format!("{MANY_CLIENTS}max_viewers = 12\nmax_pending_dials = 8\ndials_per_minute = 600"),
    ));
    let url = daemon.ws_url("");
    let streaming = viewer(&daemon, 10).await;
    let offer = offer_message(&offer_sdp().await);
    // Four answered dials whose ICE never completes (no candidates from us), and four whose
    // offers are still on their way when the signal arrives.
    let mut answered = Vec::new();
    for _ in 0..4 {
        let (mut ws, _) = connect(&url).await;
        send_text(&mut ws, offer.clone()).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["sdp"]["type"], "answer", "{reply}");
        answered.push(ws);
    }
    let mut just_sent = Vec::new();
    for _ in 0..4 {
        let (mut ws, _) = connect(&url).await;
        send_text(&mut ws, offer.clone()).await;
        just_sent.push(ws);
    }
    let (status, took) = tokio::task::block_in_place(|| daemon.terminate());
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    // Each socket is closed; those in a call (or dialling) were told why.
    let mut byes = 0;
    for ws in answered.iter_mut().chain(just_sent.iter_mut()) {
        while let Some(message) = next_json_within(ws, Duration::from_secs(2)).await {
            if message.get("bye").is_some() {
                assert_eq!(message["bye"]["reason"], "shutdown", "{message}");
                byes += 1;
            }
        }
    }
    assert!(
        byes >= 4,
        "only {byes} of 8 dialling sockets got a shutdown bye"
    );
    eprintln!("sigterm: exit 0 in {took:?}, {byes} of 8 dials got a shutdown bye");
    drop(streaming);
}

/// A video encoder error (injected in debug builds: `PEERCAM_FAULT`, see
/// src/hub.rs): logged with the output and the reason, the encoder is replaced, and
/// the viewer keeps receiving video, starting again at a keyframe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_error_is_logged_and_the_video_goes_on() {
    let _serial = serial().await;
    // Periodic keyframes a minute apart: a keyframe after the error comes from the recovery.
    // The error hits after 90 encoded frames, 3 s into the call.
    let daemon = Daemon::start_with_env(
        &test_config("keyframe_interval_s = 60", ""),
        &[("PEERCAM_FAULT", "video-encoder-error-at-frame:90")],
    );
    let streaming = viewer(&daemon, 10).await;
    let keyframes_before = streaming
        .client
        .video_keyframe_starts
        .load(Ordering::Relaxed);
    let (failed, recovered) = tokio::task::block_in_place(|| {
        let failed = daemon.wait_for_log("encode failed", Duration::from_secs(10));
        let recovered = daemon.wait_for_log("output: encoding again", Duration::from_secs(5));
        (failed, recovered)
    });
    assert!(
        failed.contains("h264 output")
            && failed.contains("injected fault")
            && failed.contains("frame skipped"),
        "{failed}"
    );
    assert!(recovered.contains("h264 output"), "{recovered}");
    let fps = frame_rate(&streaming.client, Duration::from_secs(2)).await;
    let keyframes = streaming
        .client
        .video_keyframe_starts
        .load(Ordering::Relaxed);
    eprintln!(
        "encoder error: `{failed}`; viewer {fps:.1} fps after it; keyframes \
         {keyframes_before} before, {keyframes} after"
    );
    assert!(
        fps >= MIN_FPS,
        "viewer at {fps:.1} fps after the encoder error"
    );
    assert!(
        keyframes > keyframes_before,
        "no keyframe after the encoder error ({keyframes} keyframes in all)"
    );
    let viewers = common::client::metric(daemon.port, "peercam_viewers").await;
    assert_eq!(viewers, Some(1.0), "the viewer is still in its call");
    streaming.hang_up().await;
}

/// Finding: pings from a client that never reads its pongs grew the daemon's memory without
/// bound (600,000 pings: +96 MB, 28 MB kept after the close). The WebSocket's write buffer is
/// bounded now: the socket is closed, memory stays flat, and a streaming viewer is not
/// disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_client_that_never_reads_is_cut_off() {
    let daemon = Daemon::start(&test_config("", ""));
    let streaming = viewer(&daemon, 10).await;
    let baseline = rss_kib(daemon.pid());
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let start = Instant::now();
    let frames_before = streaming.frames();
    let payload = vec![0x5a_u8; 125];
    let mut sent = 0u64;
    let mut peak = baseline;
    let mut cut_off = false;
    'flood: for _ in 0..300 {
        for _ in 0..1000 {
            if ws
                .feed(WsMessage::Ping(payload.clone().into()))
                .await
                .is_err()
            {
                cut_off = true;
                break 'flood;
            }
            sent += 1;
        }
        let flushed = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            // The daemon stopped reading from a socket it closed, or closed it outright.
            cut_off = true;
            break;
        }
        peak = peak.max(rss_kib(daemon.pid()));
    }
    let spent = start.elapsed();
    peak = peak.max(rss_kib(daemon.pid()));
    let fps = (streaming.frames() - frames_before) as f64 / spent.as_secs_f64();
    drop(ws);
    eprintln!(
        "ping flood: {sent} pings in {spent:?}, cut off: {cut_off}; RSS {baseline} -> peak \
         {peak} KiB; viewer {fps:.1} fps"
    );
    assert!(cut_off, "{sent} pings and the socket is still open");
    assert!(
        peak < baseline + 16 * 1024,
        "RSS grew from {baseline} to {peak} KiB under the ping flood"
    );
    assert!(
        fps >= MIN_FPS,
        "the viewer got {fps:.1} fps during the flood"
    );
    crate::security::legit_viewer_is_unharmed(daemon.port, None).await;
    streaming.hang_up().await;
}
