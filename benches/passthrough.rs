//! Camera H.264 cost: what peercam spends per frame when the camera streams H.264.
//!
//! `cargo run --release --example bench_passthrough [frames]` (default 300). Records
//! `frames` access units from the simulated H.264 camera (the test pattern encoded as Main
//! profile at 1.5 Mbit/s, SPS/PPS once, an IDR every 2 s; paced, so recording takes
//! frames/30 s per size) at 640x480 and 1280x720, then times on the
//! recorded stream: `H264Passthrough::push` (what a passthrough viewer costs: NAL scan,
//! SPS/PPS before IDRs, one copy) and `H264Decoder::decode` (what AV1 or Baseline-only
//! viewers cost on top of their encoder). Prints a Markdown table of ms/frame.

use std::time::{Duration, Instant};

use peercam::capture::test_h264::TestH264Camera;
use peercam::capture::VideoSource;
use peercam::encode::h264_decode::{Decoded, H264Decoder};
use peercam::encode::passthrough::H264Passthrough;
use peercam::media::{CameraH264, VideoFrame};

fn stats(samples: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95), ms.iter().sum::<f64>() / ms.len() as f64)
}

fn record(width: u32, height: u32, frames: usize) -> Vec<CameraH264> {
    // 30 fps (recording takes frames/30 s: the pattern is paced) so the access units have
    // the sizes a 1.5 Mbit/s camera stream has.
    let mut camera = TestH264Camera::new(width, height, 30, 2).expect("simulated camera");
    (0..frames)
        .map(|_| match camera.next_frame().expect("frame") {
            VideoFrame::H264(f) => f,
            VideoFrame::Raw(_) => unreachable!("the simulated camera sends H.264"),
        })
        .collect()
}

fn main() {
    let frames: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    println!("| stage | size | mean AU bytes | p50 ms | p95 ms | mean ms |");
    println!("|---|---|---|---|---|---|");
    for (w, h) in [(640, 480), (1280, 720)] {
        let stream = record(w, h, frames);
        let bytes = stream.iter().map(|f| f.data.len()).sum::<usize>() / stream.len();
        let mut pass = H264Passthrough::new();
        let mut times = Vec::with_capacity(stream.len());
        for f in &stream {
            let t = Instant::now();
            let out = pass.push(f);
            times.push(t.elapsed());
            std::hint::black_box(out);
        }
        let (p50, p95, mean) = stats(&times);
        println!("| passthrough (push) | {w}x{h} | {bytes} | {p50:.4} | {p95:.4} | {mean:.4} |");
        let mut decoder = H264Decoder::new().expect("decoder");
        let mut times = Vec::with_capacity(stream.len());
        let mut pictures = 0;
        for f in &stream {
            let t = Instant::now();
            let out = decoder.decode(f).expect("decode");
            times.push(t.elapsed());
            if matches!(out, Decoded::Frame(_)) {
                pictures += 1;
            }
        }
        assert!(
            pictures + 1 >= stream.len(),
            "decoded {pictures} of {}",
            stream.len()
        );
        let (p50, p95, mean) = stats(&times);
        println!(
            "| decode to I420 (openh264) | {w}x{h} | {bytes} | {p50:.3} | {p95:.3} | {mean:.3} |"
        );
    }
}
