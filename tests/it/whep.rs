//! WHEP against the real daemon with a webrtc-rs client: SDP over HTTP, trickle by PATCH,
//! DELETE; and the same encoder serving a WHEP viewer and a page viewer at once.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::client::{client, h264};
use common::http::{connect_between, exchange, http};
use common::probe::{metrics_text, offer_sdp, value};
use common::Daemon;
use peercam::session::sdpfrag;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

/// A webrtc-rs WHEP client: POSTs its offer, applies the answer (which must carry the
/// daemon's candidates), then trickles its own by PATCH and watches. A page viewer at the
/// same time: both are fed by the one H.264 encoder. An ICE restart by PATCH keeps the
/// video going. DELETE ends it. (The password, CORS
/// and bad requests: `http::tests` in-process, and the aiortc test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_rs_client_watches_over_whep_beside_a_page_viewer() {
    let daemon = Daemon::start(&common::test_config("", ""));
    let port = daemon.port;
    let (pc, watcher, mut candidates) = client(&[h264()]).await;
    let offer = pc.create_offer(None).await.expect("offer");
    pc.set_local_description(offer).await.expect("local");
    let offer_sdp = pc.local_description().await.expect("offer").sdp;
    let sdp = [("Content-Type", "application/sdp")];
    let started = Instant::now();
    let reply = http(port, "POST", "/whep", &sdp, &offer_sdp).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/sdp"));
    let location = reply.header("location").expect("Location").to_owned();
    let etag = reply.header("etag").expect("ETag").to_owned();
    assert!(
        reply.body.contains("a=candidate:") && reply.body.contains("a=end-of-candidates"),
        "the answer carries the daemon's candidates: {}",
        reply.body
    );
    let answer_sdp = reply.body;
    pc.set_remote_description(RTCSessionDescription::answer(answer_sdp.clone()).expect("answer"))
        .await
        .expect("apply the answer");

    // Trickle the client's candidates as they come.
    let (ufrag, _) = ice_credentials(&offer_sdp);
    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let mut trickled = 0;
    while watcher.video_frames.load(Ordering::Relaxed) < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{} frames within 15 s",
            watcher.video_frames.load(Ordering::Relaxed)
        );
        let Ok(Some(Some(c))) =
            tokio::time::timeout(Duration::from_millis(100), candidates.recv()).await
        else {
            continue;
        };
        let body = format!(
            "a=ice-ufrag:{ufrag}\r\nm=audio 9 RTP/AVP 0\r\na=mid:{}\r\na={}\r\n",
            c.sdp_mid.unwrap_or_else(|| "0".to_owned()),
            c.candidate.trim_start_matches("a=")
        );
        let patched = http(port, "PATCH", &location, &frag, &body).await;
        assert_eq!(patched.status, 204, "{}", patched.body);
        trickled += 1;
    }
    eprintln!(
        "WHEP: 30 frames {} ms after the POST; {trickled} candidates trickled",
        started.elapsed().as_millis()
    );
    assert!(
        watcher.audio_packets.load(Ordering::Relaxed) > 0,
        "Opus too"
    );

    // A page viewer beside it: one encoder, two subscribers.
    let page = common::probe::viewer(&daemon, 10).await;
    let metrics = metrics_text(port).await;
    assert_eq!(
        value(&metrics, "peercam_whep_sessions"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(value(&metrics, "peercam_viewers"), Some(2.0), "{metrics}");
    assert_eq!(
        value(&metrics, "peercam_fanout_subscribers{codec=\"h264\"}"),
        Some(2.0),
        "{metrics}"
    );
    let encoded = |m: &str| value(m, "peercam_frames_encoded_total{codec=\"h264\"}").unwrap_or(0.0);
    let before = encoded(&metrics);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate = (encoded(&metrics_text(port).await) - before) / 2.0;
    assert!(
        (20.0..=36.0).contains(&rate),
        "two viewers, one encoder at the camera's 30 fps: {rate:.1} frames/s"
    );
    page.hang_up().await;

    // An ICE restart by PATCH: the client's new credentials, the daemon's back; the video
    // goes on over the same DTLS session.
    pc.restart_ice().await.expect("restart");
    let offer = pc.create_offer(None).await.expect("restart offer");
    pc.set_local_description(offer).await.expect("local");
    let (ufrag, pwd) = ice_credentials(&pc.local_description().await.expect("offer").sdp);
    let restart = [
        ("Content-Type", "application/trickle-ice-sdpfrag"),
        ("If-Match", etag.as_str()),
    ];
    let body = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let patched = Instant::now();
    let reply = http(port, "PATCH", &location, &restart, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eprintln!(
        "WHEP: the restart's PATCH took {} ms",
        patched.elapsed().as_millis()
    );
    assert_ne!(
        reply.header("etag"),
        Some(etag.as_str()),
        "a new ICE session"
    );
    let frag = sdpfrag::parse(&reply.body).expect("an sdpfrag");
    let (Some(new_ufrag), Some(new_pwd)) = (frag.ice_ufrag, frag.ice_pwd) else {
        panic!("no credentials in {}", reply.body);
    };
    let candidates: Vec<String> = frag.candidates.into_iter().map(|c| c.candidate).collect();
    assert!(!candidates.is_empty(), "{}", reply.body);
    let answer = sdpfrag::with_candidates(
        &sdpfrag::with_ice_credentials(&answer_sdp, &new_ufrag, &new_pwd),
        &candidates,
        true,
    );
    pc.set_remote_description(RTCSessionDescription::answer(answer).expect("answer"))
        .await
        .expect("apply the restart's answer");
    let frames = watcher.video_frames.load(Ordering::Relaxed);
    daemon.wait_for_log("ICE restarted", Duration::from_secs(10));
    let restarted = Instant::now();
    while watcher.video_frames.load(Ordering::Relaxed) < frames + 30 {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "the video goes on after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // DELETE ends it; the resource is gone after.
    let deleted = http(port, "DELETE", &location, &[], "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(http(port, "DELETE", &location, &[], "").await.status, 404);
    let _ = pc.close().await;
    daemon.wait_for_log("WHEP viewer 127.0.0.1", Duration::from_secs(1));
    let metrics = metrics_text(port).await;
    assert_eq!(
        value(&metrics, "peercam_whep_sessions"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(value(&metrics, "peercam_whep_sessions_total"), Some(1.0));
}

/// Bad input and a flood on WHEP from one address (non-SDP bodies, wrong content types,
/// oversize bodies, PATCH and DELETE on made-up resources, and real offers that never
/// connect, as fast as it can for 5 s): each request gets its clear status, the offers are
/// held to `pending_dials_per_address` and `dials_per_minute`, and a viewer on another
/// address loads the page and streams at 25 fps meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_flood_from_one_address_costs_other_viewers_nothing() {
    let daemon = Daemon::start(&common::test_config("", ""));
    let port = daemon.port;
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let attacker = IpAddr::from([127, 0, 0, 3]);
    let offer = offer_sdp().await;
    let big = format!("v=0\r\n{}", "a=x\r\n".repeat(20_000));
    let sdp = ("Content-Type", "application/sdp");
    let frag = ("Content-Type", "application/trickle-ice-sdpfrag");
    // (method, path, headers, body, the statuses it may get)
    type Bad<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a str,
        &'a [u16],
    );
    let requests: Vec<Bad> = vec![
        ("POST", "/whep", vec![sdp], offer.as_str(), &[201, 429, 503]),
        ("POST", "/whep", vec![sdp], "{\"sdp\": 1}", &[400]),
        (
            "POST",
            "/whep",
            vec![("Content-Type", "text/plain")],
            offer.as_str(),
            &[415],
        ),
        ("POST", "/whep", vec![sdp], big.as_str(), &[413]),
        (
            "PATCH",
            "/whep/00000000000000000000000000000000",
            vec![frag],
            "a=end-of-candidates\r\n",
            &[404],
        ),
        ("DELETE", "/whep/0123", vec![], "", &[404]),
    ];
    let flood = async {
        let mut counts = std::collections::BTreeMap::new();
        let until = Instant::now() + Duration::from_secs(5);
        let mut sent = 0;
        while Instant::now() < until {
            let (method, path, headers, body, expected) = &requests[sent % requests.len()];
            let stream = connect_between(attacker, server).await;
            let reply = exchange(stream, method, path, headers, body).await;
            assert!(
                expected.contains(&reply.status),
                "{method} {path}: {} {}",
                reply.status,
                reply.body
            );
            assert!(!reply.body.trim().is_empty(), "every refusal says why");
            *counts.entry(reply.status).or_insert(0) += 1;
            sent += 1;
        }
        counts
    };
    let viewer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        crate::security::legit_viewer_is_unharmed(port, None).await;
    };
    let (counts, ()) = tokio::join!(flood, viewer);
    eprintln!("WHEP flood from one address, 5 s: {counts:?}");
    let created = counts.get(&201).copied().unwrap_or(0);
    assert!(
        (1..=4).contains(&created),
        "offers from one address held to its pending dials: {counts:?}"
    );
    let metrics = metrics_text(port).await;
    assert!(
        value(&metrics, "peercam_whep_sessions").unwrap_or(99.0) <= 2.0,
        "{metrics}"
    );
}

/// An SDP's ice-ufrag and ice-pwd.
fn ice_credentials(sdp: &str) -> (String, String) {
    let find = |name: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(name))
            .expect("credentials in the offer")
            .to_owned()
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}
