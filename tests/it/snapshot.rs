//! `/snapshot.jpg` against the real daemon: a JPEG of the configured size (or `?width=`)
//! whose barcode is the capture time, within a second of the request, from the test pattern
//! (raw frames) and from the simulated H.264 camera (passthrough: decoded from the latest
//! keyframe on request); the password; bad queries.

use crate::common;

use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use common::http::{http, Reply};
use common::probe::value;
use common::Daemon;
use peercam::capture::test_pattern::{decode_barcode, unix_millis_low32};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

const PASSWORD: &str = "snapshot secret";

/// The test config at `width` x `height`, with `video_extra` in `[video]` and a password.
fn config(width: u32, height: u32, video_extra: &str) -> String {
    common::test_config(video_extra, "")
        .replace(
            "width = 320\nheight = 240",
            &format!("width = {width}\nheight = {height}"),
        )
        .replace(
            "[server]\n",
            &format!("[server]\npassword = \"{PASSWORD}\"\n"),
        )
}

/// `Authorization: Basic` as Home Assistant's generic camera sends it.
fn basic() -> String {
    let pair = format!("homeassistant:{PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

async fn snapshot(port: u16, query: &str) -> Reply {
    http(
        port,
        "GET",
        &format!("/snapshot.jpg{query}"),
        &[("Authorization", &basic())],
        "",
    )
    .await
}

/// Waits (at most 10 s) until the daemon has a picture: 503 until the first frame.
async fn first_snapshot(port: u16) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = snapshot(port, "").await;
        if reply.status != 503 {
            return reply;
        }
        assert!(
            reply.header("retry-after").is_some(),
            "503 without Retry-After"
        );
        assert!(
            Instant::now() < deadline,
            "no picture in 10 s: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A snapshot taken now: its size, and how long before the request its picture was captured
/// (negative: during the request) in ms.
async fn timed_snapshot(port: u16, query: &str) -> ((u32, u32), i64) {
    let asked = unix_millis_low32(SystemTime::now());
    let reply = snapshot(port, query).await;
    assert_eq!(reply.status, 200, "{query}: {}", reply.body);
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let (size, captured) = barcode(&reply.body_bytes);
    let captured = captured.unwrap_or_else(|| panic!("{query}: the barcode does not read"));
    (size, i64::from(asked.wrapping_sub(captured) as i32))
}

/// The size of a JPEG and the time in its barcode.
fn barcode(jpeg: &[u8]) -> ((u32, u32), Option<u32>) {
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    let luma = decoder.decode().expect("a valid JPEG");
    let info = decoder.info().expect("a JPEG header");
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    ((w, h), decode_barcode(&luma, w, h))
}

/// A picture within a second of the request (it was captured before the reply, so never
/// after the request by more than the request took).
fn assert_current(age_ms: i64, what: &str) {
    assert!(
        (-1000..=1000).contains(&age_ms),
        "{what}: captured {age_ms} ms before the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_pattern_as_a_jpeg_of_the_configured_size_showing_the_time_of_the_request() {
    let daemon = Daemon::start(&config(640, 480, ""));
    let port = daemon.port;

    // The password: 401 with a Basic challenge without it, a wrong one is refused too.
    let refused = http(port, "GET", "/snapshot.jpg", &[], "").await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.headers.iter().any(|h| h
            .eq_ignore_ascii_case("www-authenticate: basic realm=\"peercam\", charset=\"utf-8\"")),
        "{:?}",
        refused.headers
    );
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("homeassistant:guess")
    );
    let refused = http(
        port,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &wrong)],
        "",
    )
    .await;
    assert_eq!(refused.status, 401);
    let bearer = format!("Bearer {PASSWORD}");
    let with_bearer = http(
        port,
        "GET",
        "/snapshot.jpg",
        &[("Authorization", &bearer)],
        "",
    )
    .await;
    assert!(
        [200, 503].contains(&with_bearer.status),
        "Bearer works too: {}",
        with_bearer.status
    );

    assert_eq!(first_snapshot(port).await.status, 200);
    let (size, age) = timed_snapshot(port, "").await;
    assert_eq!(size, (640, 480));
    assert_current(age, "640x480");
    let (size, age) = timed_snapshot(port, "?width=320").await;
    assert_eq!(size, (320, 240));
    assert_current(age, "?width=320");
    // A second later the picture is a second newer: nothing is cached for long.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, age) = timed_snapshot(port, "").await;
    assert_current(age, "a second later");

    // HEAD answers like GET, without the picture.
    let head = http(
        port,
        "HEAD",
        "/snapshot.jpg",
        &[("Authorization", &basic())],
        "",
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("image/jpeg"));
    assert!(head.body_bytes.is_empty());

    // Bad queries name the problem.
    for (query, says) in [
        ("?width=641", "width must be from 16 to 640"),
        ("?width=8", "width must be from 16 to 640"),
        ("?width=half", "width=half is not a whole number"),
        ("?size=10", "unknown field `size`"),
    ] {
        let reply = snapshot(port, query).await;
        assert_eq!(reply.status, 400, "{query}");
        assert!(reply.body.contains(says), "{query}: {}", reply.body);
    }

    let metrics = http(port, "GET", "/metrics", &[("Authorization", &basic())], "")
        .await
        .body;
    let rendered = value(&metrics, "peercam_snapshots_total{result=\"rendered\"}");
    let reused = value(&metrics, "peercam_snapshots_total{result=\"reused\"}");
    // The first, three timed ones and HEAD, each rendered or (within 100 ms) reused.
    assert!(
        rendered.unwrap_or(0.0) + reused.unwrap_or(0.0) >= 5.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_h264_is_decoded_on_request_up_to_the_newest_picture() {
    // Keyframes 4 s apart: a snapshot of the keyframe alone would be seconds old.
    let daemon = Daemon::start(&config(
        1280,
        720,
        "format = \"h264\"\ncodecs = [\"h264\"]\nkeyframe_interval_s = 4",
    ));
    let port = daemon.port;
    assert_eq!(first_snapshot(port).await.status, 200);
    let started = Instant::now();
    let mut ages = Vec::new();
    // Over more than a keyframe interval, so some requests land late in a GOP.
    while started.elapsed() < Duration::from_secs(5) {
        let (size, age) = timed_snapshot(port, "").await;
        assert_eq!(size, (1280, 720));
        assert_current(age, "1280x720 passthrough");
        ages.push(age);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let (size, age) = timed_snapshot(port, "?width=640").await;
    assert_eq!(size, (640, 360));
    assert_current(age, "?width=640 passthrough");
    eprintln!("passthrough snapshot ages (ms): {ages:?}");
    assert!(ages.len() >= 5, "{ages:?}");
}
