//! rav1e parameter sweep for real-time AV1: speed preset × tiles × threads, at 320x240 and
//! 640x480, on the test pattern. Chooses peercam's AV1 settings (src/encode/av1.rs).
//!
//! ```text
//! cargo run --release --example bench_av1_sweep -- [--frames N] [--out DIR]
//! ```
//!
//! Every configuration comes from `peercam::encode::av1::rav1e_config`, the one the encoder
//! uses (low_latency, one frame of RDO lookahead, bitrate rate control, keyframe every 2 s,
//! 8-bit 4:2:0), with only the speed preset, tiles and threads changed. Each encodes the same
//! N test-pattern frames (default 150) as fast as it can. Reported: wall and CPU (user +
//! system) milliseconds per frame, the frame rate that wall time allows, the lag (frames in
//! before the first packet out) and the bitrate reached. Prints a Markdown table and writes av1-sweep.json into `--out` (default
//! target/bench).

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use peercam::capture::test_pattern::TestPattern;
use peercam::encode::av1::rav1e_config;
use peercam::encode::VideoEncoderSettings;
use rav1e::prelude::EncoderStatus;

mod common;
use common::process_cpu;

const FPS: u64 = 30;

struct Result {
    width: u32,
    height: u32,
    speed: u8,
    tiles: usize,
    threads: usize,
    wall_ms: f64,
    cpu_ms: f64,
    lag: usize,
    kbps: f64,
}

/// I420 planes of `count` test-pattern frames.
fn frames(width: u32, height: u32, count: usize) -> Vec<Vec<u8>> {
    let pattern = TestPattern::new(width, height, FPS as u32);
    (0..count as u64)
        .map(|n| pattern.render(n, n as u32))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run(
    width: u32,
    height: u32,
    kbps: u32,
    speed: u8,
    tiles: usize,
    threads: usize,
    input: &[Vec<u8>],
) -> std::result::Result<Result, String> {
    let settings = VideoEncoderSettings {
        width,
        height,
        fps: FPS as u32,
        bitrate_kbps: kbps,
        keyframe_interval_s: 2,
        threads,
    };
    let mut context = rav1e_config(&settings, speed, tiles, threads)
        .map_err(|e| e.to_string())?
        .new_context::<u8>()
        .map_err(|e| format!("config: {e}"))?;

    let (y_len, c_len) = ((width * height) as usize, (width * height / 4) as usize);
    let mut packets = Vec::new();
    let mut lag = None;
    let cpu0 = process_cpu();
    let wall0 = Instant::now();
    for (n, data) in input.iter().enumerate() {
        let mut frame = context.new_frame();
        let strides = [width as usize, width as usize / 2, width as usize / 2];
        let planes = [
            &data[..y_len],
            &data[y_len..y_len + c_len],
            &data[y_len + c_len..],
        ];
        for ((plane, src), stride) in frame.planes.iter_mut().zip(planes).zip(strides) {
            plane.copy_from_raw_u8(src, stride, 1);
        }
        context
            .send_frame(frame)
            .map_err(|e| format!("send_frame: {e}"))?;
        loop {
            match context.receive_packet() {
                Ok(packet) => {
                    lag.get_or_insert(n + 1);
                    packets.push(packet.data);
                }
                Err(EncoderStatus::Encoded) => {}
                Err(EncoderStatus::NeedMoreData) => break,
                Err(e) => return Err(format!("receive_packet: {e}")),
            }
        }
    }
    let wall = wall0.elapsed().as_secs_f64() * 1000.0;
    let cpu = (process_cpu() - cpu0).as_secs_f64() * 1000.0;
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let n = input.len() as f64;
    Ok(Result {
        width,
        height,
        speed,
        tiles,
        threads,
        wall_ms: wall / n,
        cpu_ms: cpu / n,
        lag: lag.unwrap_or(0),
        kbps: bytes as f64 * 8.0 * FPS as f64 / packets.len().max(1) as f64 / 1000.0,
    })
}

fn main() {
    let mut frames_n = 150usize;
    let mut out = PathBuf::from("target/bench");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--frames" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n >= 30 => frames_n = n,
                _ => {
                    eprintln!("bench_av1_sweep: --frames needs a number >= 30");
                    std::process::exit(2);
                }
            },
            "--out" => match args.next() {
                Some(dir) => out = dir.into(),
                None => {
                    eprintln!("bench_av1_sweep: --out needs a directory");
                    std::process::exit(2);
                }
            },
            other => {
                eprintln!("bench_av1_sweep: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = fs::create_dir_all(&out) {
        eprintln!("bench_av1_sweep: cannot create {}: {e}", out.display());
        std::process::exit(1);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results = Vec::new();
    for (width, height, kbps) in [(320u32, 240u32, 400u32), (640, 480, 1000)] {
        let input = frames(width, height, frames_n);
        for speed in [6u8, 8, 9, 10] {
            for (tiles, threads) in [(1usize, 1usize), (2, 2), (4, 2), (4, 4)] {
                if threads > cores * 2 {
                    continue;
                }
                match run(width, height, kbps, speed, tiles, threads, &input) {
                    Ok(r) => {
                        eprintln!(
                            "{width}x{height} speed {speed} tiles {tiles} threads {threads}: {:.1} ms/frame",
                            r.wall_ms
                        );
                        results.push(r);
                    }
                    Err(e) => eprintln!(
                        "{width}x{height} speed {speed} tiles {tiles} threads {threads}: {e}"
                    ),
                }
            }
        }
    }
    println!("{frames_n} test-pattern frames per configuration, {cores} cores, encoded as fast as possible:\n");
    println!("| size | speed | tiles | threads | wall ms/frame | max fps | CPU ms/frame | lag (frames) | kbit/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {}x{} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {} | {:.0} |",
            r.width,
            r.height,
            r.speed,
            r.tiles,
            r.threads,
            r.wall_ms,
            1000.0 / r.wall_ms,
            r.cpu_ms,
            r.lag,
            r.kbps,
        );
    }
    let json: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{{\"width\":{},\"height\":{},\"speed\":{},\"tiles\":{},\"threads\":{},\"wall_ms\":{:.2},\"cpu_ms\":{:.2},\"lag\":{},\"kbps\":{:.0}}}",
                r.width, r.height, r.speed, r.tiles, r.threads, r.wall_ms, r.cpu_ms, r.lag, r.kbps
            )
        })
        .collect();
    let path = out.join("av1-sweep.json");
    match fs::write(&path, format!("[{}]\n", json.join(","))) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("bench_av1_sweep: cannot write {}: {e}", path.display()),
    }
}
