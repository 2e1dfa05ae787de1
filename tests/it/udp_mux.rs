//! `[webrtc] udp_port`: every call on one UDP port (ICE UDP mux).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::client::{client, dial, h264};
use crate::common::http::http;
use crate::common::{self, connect, send_text, Daemon};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

/// A UDP port free on 127.0.0.1 now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// POSTs `pc`'s offer to the daemon's /whep (no trickle) and returns the 201 reply.
async fn whep_post(port: u16, pc: &impl PeerConnection) -> crate::common::http::Reply {
    let offer = pc.create_offer(None).await.expect("offer");
    pc.set_local_description(offer).await.expect("local");
    let offer_sdp = pc.local_description().await.expect("offer").sdp;
    let reply = http(
        port,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp")],
        &offer_sdp,
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply
}

/// Waits until the daemon's `/metrics` line `name` reaches `at_least`; panics after `within`.
async fn wait_for_metric(port: u16, name: &str, at_least: f64, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let value = crate::common::client::metric(port, name).await;
        if value.unwrap_or(0.0) >= at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: {value:?}, not {at_least} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ports of the host candidates in `sdp`.
fn host_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" typ host"))
        .filter_map(|l| l.split(' ').nth(5)?.parse().ok())
        .collect()
}

/// Two page viewers and a WHEP viewer at once: the WHEP answer's candidates (the only ones
/// not trickled) name the one port, and every viewer gets video through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_uses_the_one_udp_port() {
    let port = free_udp_port();
    let config = common::test_config("", "").replace("udp_port = 0", &format!("udp_port = {port}"));
    let daemon = Daemon::start(&config);
    let mut calls = Vec::new();
    for _ in 0..2 {
        let (mut ws, _) = connect(&daemon.ws_url("")).await;
        let (pc, client, mut cands) = client(&[h264()]).await;
        dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
            client.video_frames.load(Ordering::Relaxed) >= 30
        })
        .await;
        assert!(client.video_frames.load(Ordering::Relaxed) >= 30);
        calls.push((client, ws, pc));
    }
    // WHEP, without trickle: the client reaches the daemon only at the answer's candidates.
    let (pc, watcher, _candidates) = client(&[h264()]).await;
    let reply = whep_post(daemon.port, &pc).await;
    let ports = host_ports(&reply.body);
    assert!(
        !ports.is_empty() && ports.iter().all(|p| *p == port),
        "host candidates on {ports:?}, not only {port}: {}",
        reply.body
    );
    pc.set_remote_description(RTCSessionDescription::answer(reply.body).expect("answer"))
        .await
        .expect("apply the answer");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while watcher.video_frames.load(Ordering::Relaxed) < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "the WHEP viewer got no video"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // All three stream at once.
    let all: Vec<&std::sync::Arc<crate::common::client::Client>> =
        calls.iter().map(|c| &c.0).chain([&watcher]).collect();
    let before: Vec<u64> = all
        .iter()
        .map(|c| c.video_frames.load(Ordering::Relaxed))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (c, b) in all.iter().zip(before) {
        let now = c.video_frames.load(Ordering::Relaxed);
        assert!(now >= b + 20, "a viewer stalled: {b} -> {now}");
    }
    // A stranger's datagrams to the port reach no call; they are counted.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..5 {
        stranger
            .send_to(&[0x80; 100], ("127.0.0.1", port))
            .expect("send");
    }
    let metric = format!("peercam_udp_mux_dropped_total{{port=\"{port}\",reason=\"unroutable\"}}");
    wait_for_metric(daemon.port, &metric, 5.0, Duration::from_secs(5)).await;
    for (_, mut ws, pc) in calls {
        send_text(&mut ws, r#"{"bye": {}}"#).await;
        let _ = pc.close().await;
    }
    let _ = pc.close().await;
}

/// The port held by another program: the call fails with an error that names the key, the
/// daemon goes on, and the next call works once the port is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_port_in_use_fails_the_call_clearly_and_recovers() {
    let blocker = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = blocker.local_addr().expect("addr").port();
    let config = common::test_config("", "").replace("udp_port = 0", &format!("udp_port = {port}"));
    let daemon = Daemon::start(&config);
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (pc, client, mut cands) = client(&[h264()]).await;
    let reply = dial(&mut ws, &pc, &mut cands, Duration::from_secs(5), || false).await;
    assert!(reply.get("sdp").is_none(), "no answer: {reply}");
    let text = reply.to_string();
    assert!(text.contains("error"), "{text}");
    let line = daemon.wait_for_log("([webrtc] udp_port)", Duration::from_secs(5));
    assert!(
        line.contains(&format!("cannot use UDP port {port}")),
        "{line}"
    );
    assert_eq!(client.video_frames.load(Ordering::Relaxed), 0);
    let _ = pc.close().await;
    drop(ws);
    drop(blocker);
    let v = crate::common::probe::viewer(&daemon, 30).await;
    v.hang_up().await;
}

/// A viewer whose network blocks UDP: ICE over TCP to the one TCP port. The WHEP answer names
/// the shared TCP port (passive); the TCP-only client streams through it, and a connection
/// that sends nothing is closed after its deadline without holding anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_udp_streams_over_ice_tcp_on_the_one_tcp_port() {
    let udp = free_udp_port();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port");
    let config = common::test_config("", "")
        .replace("udp_port = 0", &format!("udp_port = {udp}"))
        .replace("tcp_port = 0", &format!("tcp_port = {tcp}"));
    let daemon = Daemon::start(&config);
    let (pc, watcher, _candidates) = crate::common::client::client_tcp_only(&[h264()]).await;
    let reply = whep_post(daemon.port, &pc).await;
    let passive: Vec<&str> = reply
        .body
        .lines()
        .filter(|l| l.contains(" tcp ") && l.contains("tcptype passive"))
        .collect();
    assert!(
        !passive.is_empty()
            && passive
                .iter()
                .all(|l| l.contains(&format!(" {tcp} typ host"))),
        "passive TCP candidates on {tcp}: {}",
        reply.body
    );
    let passive: Vec<String> = passive
        .iter()
        .map(|l| l.trim().trim_start_matches("a=").to_owned())
        .collect();
    pc.set_remote_description(RTCSessionDescription::answer(reply.body).expect("answer"))
        .await
        .expect("apply the answer");
    // webrtc-rs dials passive TCP candidates only when they are added one by one (browsers
    // take them from the SDP too).
    for candidate in passive {
        pc.add_ice_candidate(webrtc::peer_connection::RTCIceCandidateInit {
            candidate,
            sdp_mid: Some("0".to_owned()),
            sdp_mline_index: Some(0),
            ..Default::default()
        })
        .await
        .expect("add the daemon's TCP candidate");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while watcher.video_frames.load(Ordering::Relaxed) < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} frames over ICE-TCP within 15 s",
            watcher.video_frames.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Silent connections to the TCP port are refused after their deadline (counted).
    let silent: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", tcp)).expect("connect"))
        .collect();
    let metric = format!("peercam_udp_mux_dropped_total{{port=\"{udp}\",reason=\"tcp_refused\"}}");
    wait_for_metric(daemon.port, &metric, 3.0, Duration::from_secs(10)).await;
    drop(silent);
    let before = watcher.video_frames.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        watcher.video_frames.load(Ordering::Relaxed) >= before + 20,
        "still streaming"
    );
    let _ = pc.close().await;
}
