//! Encoder throughput on the test pattern and test tone.
//!
//! `cargo run --release --example bench_encode [h264_frames] [av1_frames]`
//! (defaults 120 and 60). Prints a Markdown table: time per `encode()` call (p50, p95, mean)
//! and bytes per output frame, for H.264 and AV1 at 640x480 and 1280x720, the test pattern's
//! drawing time, and the Opus encoder's time per 20 ms chunk.

use std::time::{Duration, Instant};

use peercam::capture::test_pattern::TestPattern;
use peercam::capture::test_tone::TestTone;
use peercam::encode::av1::Av1Encoder;
use peercam::encode::h264::H264Encoder;
use peercam::encode::opus::OpusEncoder;
use peercam::encode::{AudioEncoder, VideoEncoder, VideoEncoderSettings};
use peercam::media::{AudioChunk, PixelFormat, RawFrame};

const FPS: u32 = 30;

struct Stats {
    p50: f64,
    p95: f64,
    mean: f64,
}

/// Percentiles and mean of `samples`, in milliseconds.
fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats {
        p50: at(0.5),
        p95: at(0.95),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

/// `count` test-pattern frames with capture instants 1/FPS apart; also returns the drawing
/// time of each frame.
fn frames(width: u32, height: u32, count: u64) -> (Vec<RawFrame>, Vec<Duration>) {
    let pattern = TestPattern::new(width, height, FPS);
    let base = Instant::now();
    let mut draw_times = Vec::new();
    let frames = (0..count)
        .map(|n| {
            let t = Instant::now();
            let data = pattern.render(n, n as u32);
            draw_times.push(t.elapsed());
            RawFrame {
                width,
                height,
                format: PixelFormat::I420,
                data: data.into(),
                capture_instant: base + Duration::from_millis(n * 1000 / u64::from(FPS)),
                sequence: n,
            }
        })
        .collect();
    (frames, draw_times)
}

/// Encodes every frame; prints one table row. Returns the number of frames sent before the
/// first output came out.
fn bench_video(name: &str, encoder: &mut dyn VideoEncoder, input: &[RawFrame], kbps: u32) -> usize {
    let mut times = Vec::with_capacity(input.len());
    let (mut bytes, mut outputs, mut first_out) = (0usize, 0usize, None);
    for (n, frame) in input.iter().enumerate() {
        let t = Instant::now();
        let out = match encoder.encode(frame, false) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("{name}: {e}");
                return 0;
            }
        };
        times.push(t.elapsed());
        if !out.is_empty() && first_out.is_none() {
            first_out = Some(n + 1);
        }
        outputs += out.len();
        bytes += out.iter().map(|f| f.data.len()).sum::<usize>();
    }
    let s = stats(&times);
    let per_frame = bytes.checked_div(outputs).unwrap_or(0);
    let actual_kbps = per_frame as f64 * 8.0 * f64::from(FPS) / 1000.0;
    println!(
        "| {name} | {} x{} | {:.2} | {:.2} | {:.2} | {per_frame} | {kbps} / {actual_kbps:.0} |",
        input.len(),
        outputs,
        s.p50,
        s.p95,
        s.mean,
    );
    first_out.unwrap_or(0)
}

fn settings(width: u32, height: u32, bitrate_kbps: u32, threads: usize) -> VideoEncoderSettings {
    VideoEncoderSettings {
        width,
        height,
        fps: FPS,
        bitrate_kbps,
        keyframe_interval_s: 2,
        threads,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let h264_frames: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(120);
    let av1_frames: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);

    println!("| encoder | frames in x out | p50 ms | p95 ms | mean ms | bytes/frame | kbit/s target / actual |");
    println!("|---|---|---|---|---|---|---|");
    let mut lags = Vec::new();
    let mut draws = Vec::new();
    for (width, height, kbps) in [(640u32, 480u32, 1000u32), (1280, 720, 2500)] {
        let (input, draw_times) = frames(width, height, h264_frames.max(av1_frames));
        draws.push((width, height, stats(&draw_times)));
        let name = format!("H.264 {width}x{height} (1 thread)");
        match H264Encoder::new(&settings(width, height, kbps, 1)) {
            Ok(mut enc) => {
                bench_video(&name, &mut enc, &input[..h264_frames as usize], kbps);
            }
            Err(e) => eprintln!("{name}: {e}"),
        }
        let name = format!("AV1 {width}x{height} (speed 10, 2 threads/tiles)");
        match Av1Encoder::new(&settings(width, height, kbps, 2)) {
            Ok(mut enc) => {
                let lag = bench_video(&name, &mut enc, &input[..av1_frames as usize], kbps);
                lags.push((width, height, lag));
            }
            Err(e) => eprintln!("{name}: {e}"),
        }
    }

    println!();
    for (width, height, s) in draws {
        println!(
            "test pattern draw {width}x{height}: p50 {:.3} ms, p95 {:.3} ms, mean {:.3} ms",
            s.p50, s.p95, s.mean
        );
    }
    for (width, height, lag) in lags {
        println!("AV1 {width}x{height}: first packet after {lag} frames in");
    }

    let tone = TestTone::new(2);
    let mut opus = match OpusEncoder::new(2, 64) {
        Ok(enc) => enc,
        Err(e) => {
            eprintln!("opus: {e}");
            return;
        }
    };
    let mut times = Vec::new();
    let mut bytes = 0usize;
    let chunks = 500u64;
    for index in 0..chunks {
        let chunk = AudioChunk {
            samples: tone.render(index),
            channels: 2,
            capture_instant: Instant::now(),
        };
        let t = Instant::now();
        match opus.encode(&chunk) {
            Ok(packet) => bytes += packet.data.len(),
            Err(e) => {
                eprintln!("opus: {e}");
                return;
            }
        }
        times.push(t.elapsed());
    }
    let s = stats(&times);
    println!(
        "Opus stereo 64 kbit/s, {chunks} x 20 ms: p50 {:.0} us, p95 {:.0} us, mean {:.0} us per chunk, {} bytes/packet",
        s.p50 * 1000.0,
        s.p95 * 1000.0,
        s.mean * 1000.0,
        bytes / chunks as usize
    );
}
