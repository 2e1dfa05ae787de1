//! Capture conversion throughput: camera formats to I420.
//!
//! `cargo run --release --example bench_convert [iterations]` (default 300). Builds YUYV, NV12,
//! YU12 and MJPEG (4:2:2, quality 85, as UVC webcams send) frames from one test-pattern frame,
//! then times `convert::*_to_i420` into a reused output buffer, as the V4L2 capture loop does.
//! Prints a Markdown table of ms/frame (p50, p95, mean), plus the JPEG decode alone.

use std::time::{Duration, Instant};

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use peercam::capture::convert::{self, ConvertError, MjpegDecoder};
use peercam::capture::test_pattern::TestPattern;
use peercam::media::RawFrame;

/// Percentiles and mean of `samples`, in milliseconds.
fn stats(samples: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95), ms.iter().sum::<f64>() / ms.len() as f64)
}

/// The source frames in each camera format, from one I420 frame.
struct Sources {
    yuyv: Vec<u8>,
    nv12: Vec<u8>,
    yu12: Vec<u8>,
    mjpeg: Vec<u8>,
}

fn sources(i420: &[u8], w: usize, h: usize) -> Sources {
    let (y, chroma) = i420.split_at(w * h);
    let (u, v) = chroma.split_at(w / 2 * h / 2);
    let mut yuyv = Vec::with_capacity(w * h * 2);
    let mut ycbcr = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for x in 0..w {
            let c = (row / 2) * (w / 2) + x / 2;
            let sample = if x % 2 == 0 { u[c] } else { v[c] };
            yuyv.extend_from_slice(&[y[row * w + x], sample]);
            ycbcr.extend_from_slice(&[y[row * w + x], u[c], v[c]]);
        }
    }
    let mut nv12 = y.to_vec();
    for (a, b) in u.iter().zip(v) {
        nv12.extend_from_slice(&[*a, *b]);
    }
    let mut mjpeg = Vec::new();
    let mut encoder = Encoder::new(&mut mjpeg, 85);
    encoder.set_sampling_factor(SamplingFactor::R_4_2_2);
    encoder
        .encode(&ycbcr, w as u16, h as u16, ColorType::Ycbcr)
        .expect("encode the test frame as JPEG");
    Sources {
        yuyv,
        nv12,
        yu12: i420.to_vec(),
        mjpeg,
    }
}

/// The JPEG decode alone, to show how much of the MJPEG time is the decoder.
fn decode_only(jpeg: &[u8], out: &mut [u8]) {
    use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace};
    let options = zune_jpeg::zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::YCbCr);
    zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(jpeg), options)
        .decode_into(out)
        .expect("decode the test JPEG");
}

/// Times `iterations` calls of `f` after 10 warm-up calls.
fn time(iterations: usize, mut f: impl FnMut() -> Result<(), ConvertError>) -> Vec<Duration> {
    for _ in 0..10 {
        f().expect("convert");
    }
    (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f().expect("convert");
            start.elapsed()
        })
        .collect()
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    println!("| input | size | source bytes | p50 ms | p95 ms | mean ms |");
    println!("|---|---|---|---|---|---|");
    for (width, height) in [(640u32, 480u32), (1280, 720)] {
        let (w, h) = (width as usize, height as usize);
        let frame = TestPattern::new(width, height, 30).render(42, 0x5A5A_5A5A);
        let src = sources(&frame, w, h);
        let mut out = vec![0u8; RawFrame::i420_len(width, height)];
        let mut decoder = MjpegDecoder::default();
        let mut ycbcr = vec![0u8; w * h * 3];
        let rows: [(&str, usize, Vec<Duration>); 5] = [
            (
                "YUYV",
                src.yuyv.len(),
                time(iterations, || {
                    convert::yuyv_to_i420(&src.yuyv, 2 * w, width, height, &mut out)
                }),
            ),
            (
                "NV12",
                src.nv12.len(),
                time(iterations, || {
                    convert::nv12_to_i420(&src.nv12, w, width, height, &mut out)
                }),
            ),
            (
                "YU12",
                src.yu12.len(),
                time(iterations, || {
                    convert::yu12_to_i420(&src.yu12, w, width, height, &mut out)
                }),
            ),
            (
                "MJPEG 4:2:2 q85 (decode + convert)",
                src.mjpeg.len(),
                time(iterations, || {
                    convert::mjpeg_to_i420(&src.mjpeg, width, height, &mut out, &mut decoder)
                }),
            ),
            (
                "MJPEG decode only (zune-jpeg to YCbCr 4:4:4)",
                src.mjpeg.len(),
                time(iterations, || {
                    decode_only(&src.mjpeg, &mut ycbcr);
                    Ok(())
                }),
            ),
        ];
        for (name, bytes, samples) in rows {
            let (p50, p95, mean) = stats(&samples);
            println!("| {name} | {width}x{height} | {bytes} | {p50:.3} | {p95:.3} | {mean:.3} |");
        }
    }
}
