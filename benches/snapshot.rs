//! `/snapshot.jpg`'s cost: what the capture thread spends per frame keeping the newest
//! picture (paid whether or not anyone asks), and what one snapshot costs to render.
//!
//! `cargo run --release --example bench_snapshot [runs]` (default 20 renders per case).
//! Records 150 access units per size from the simulated H.264 camera (the test pattern as
//! Main profile, an IDR every 10 s so one group holds them all; paced, so recording takes
//! 5 s per size) at 640x480 and 1280x720, then times:
//! - `LatestPicture::record` per frame, raw (test pattern) and camera H.264;
//! - `snapshot::render` of a raw frame, full size and `?width=320`;
//! - `snapshot::render` of camera H.264 whose newest picture is 1, 30, 60 or 150 access
//!   units after the keyframe (a fresh decoder each time, as the endpoint does).
//!
//! Prints a Markdown table of ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peercam::capture::test_h264::TestH264Camera;
use peercam::capture::test_pattern::TestPattern;
use peercam::capture::VideoSource;
use peercam::media::VideoFrame;
use peercam::pipeline::latest::{GopLimits, LatestPicture};
use peercam::snapshot;

/// (p50, p95) in ms.
fn stats(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
}

fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    let samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    stats(&samples)
}

fn row(what: &str, size: &str, (p50, p95): (f64, f64), jpeg_bytes: usize) {
    println!("| {what} | {size} | {p50:.4} | {p95:.4} | {jpeg_bytes} |");
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    println!("| stage | size | p50 ms | p95 ms | JPEG bytes |");
    println!("|---|---|---|---|---|");
    for (w, h) in [(640u32, 480u32), (1280, 720)] {
        let size = format!("{w}x{h}");
        // Raw frames: what the test pattern, converted camera formats and rpicam's YUV give.
        let mut pattern = TestPattern::new(w, h, 1000);
        let frames: Vec<Arc<VideoFrame>> = (0..runs.max(100))
            .map(|_| Arc::new(pattern.next_frame().expect("frame")))
            .collect();
        let latest = LatestPicture::new(GopLimits::default());
        let mut samples = Vec::new();
        for frame in &frames {
            let t = Instant::now();
            latest.record(frame, Instant::now());
            samples.push(t.elapsed());
        }
        row("record, raw frame", &size, stats(&samples), 0);
        let picture = latest.picture(Instant::now()).expect("a picture");
        for width in [None, Some(320)] {
            let mut bytes = 0;
            let times = time(runs, || {
                bytes = snapshot::render(&picture, width)
                    .expect("render")
                    .jpeg
                    .len();
            });
            let what = match width {
                None => "render raw, full size".to_owned(),
                Some(n) => format!("render raw, width={n}"),
            };
            row(&what, &size, times, bytes);
        }

        // Camera H.264, one group of pictures.
        let mut camera = TestH264Camera::new(w, h, 30, 10).expect("simulated camera");
        let stream: Vec<Arc<VideoFrame>> = (0..150)
            .map(|_| Arc::new(camera.next_frame().expect("frame")))
            .collect();
        let mut samples = Vec::new();
        let mut pictures = Vec::new();
        let latest = LatestPicture::new(GopLimits::default());
        for (n, frame) in stream.iter().enumerate() {
            let t = Instant::now();
            latest.record(frame, Instant::now());
            samples.push(t.elapsed());
            if [1, 30, 60, 150].contains(&(n + 1)) {
                pictures.push((n + 1, latest.picture(Instant::now()).expect("picture")));
            }
        }
        row("record, camera H.264", &size, stats(&samples), 0);
        for (frames, picture) in &pictures {
            let mut bytes = 0;
            let times = time(runs.min(10), || {
                bytes = snapshot::render(picture, None).expect("render").jpeg.len();
            });
            row(
                &format!("render H.264, {frames} AUs from the keyframe"),
                &size,
                times,
                bytes,
            );
        }
    }
}
