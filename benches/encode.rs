//! Encoder cost on the test pattern, side by side with ffmpeg's encoders on the same frames.
//!
//! ```text
//! cargo run --release --example bench_encode -- [--frames N] [--codec h264|av1] [--no-ffmpeg] [--out DIR]
//! ```
//!
//! For 640x480 (1000 kbit/s) and 1280x720 (2500 kbit/s) at 30 fps: renders N test-pattern
//! frames (default 300), encodes them with peercam's H.264 (openh264) and AV1 (rav1e) encoders
//! exactly as the daemon configures them, then — unless `--no-ffmpeg` — writes the same frames
//! as a Y4M file and encodes it with Debian's ffmpeg: libx264 (`-preset ultrafast -tune
//! zerolatency`), librav1e (`-speed 10`, `-tile-columns`/`-threads` like peercam) and
//! libsvtav1 (`-preset 12`), same bitrate and keyframe interval. `--codec` keeps one codec
//! family (for profiling one encoder with `perf record`).
//!
//! Every encoder gets the frames as fast as it takes them (not paced at 30 fps). Reported per
//! frame: wall time and CPU time (user + system of the whole process, so encoder threads
//! count), and the output's bytes. ffmpeg's numbers are the difference between a run of all N
//! frames and a run of the first 30 (`-benchmark`: utime, stime, rtime), which removes process
//! start, encoder setup and the Y4M parsing of those frames. Prints a Markdown table with the
//! ratios peercam ÷ ffmpeg and writes `encoders.json` into `--out` (default target/bench).
//! Also prints the test pattern's drawing time and the Opus encoder's time per 20 ms chunk.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use peercam::capture::test_pattern::TestPattern;
use peercam::capture::test_tone::TestTone;
use peercam::encode::av1::Av1Encoder;
use peercam::encode::h264::H264Encoder;
use peercam::encode::opus::OpusEncoder;
use peercam::encode::{AudioEncoder, VideoEncoder, VideoEncoderSettings};
use peercam::media::{AudioChunk, PixelFormat, RawFrame};

mod common;
use common::process_cpu;

const FPS: u32 = 30;
const KEYFRAME_INTERVAL_S: u32 = 2;
/// Frames in ffmpeg's short run, subtracted from the full run.
const FFMPEG_BASE_FRAMES: usize = 30;

/// One encoder's result on one frame size.
struct Row {
    encoder: String,
    width: u32,
    height: u32,
    kbps: u32,
    frames: usize,
    wall_ms_per_frame: f64,
    cpu_ms_per_frame: f64,
    /// Wall-time percentiles of single `encode()` calls (peercam's encoders only).
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    bytes_per_frame: f64,
}

impl Row {
    fn actual_kbps(&self) -> f64 {
        self.bytes_per_frame * 8.0 * f64::from(FPS) / 1000.0
    }

    fn json(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
        format!(
            "{{\"encoder\":\"{}\",\"width\":{},\"height\":{},\"target_kbps\":{},\"frames\":{},\
             \"wall_ms_per_frame\":{:.3},\"cpu_ms_per_frame\":{:.3},\"p50_ms\":{},\"p95_ms\":{},\
             \"bytes_per_frame\":{:.0},\"actual_kbps\":{:.0}}}",
            self.encoder,
            self.width,
            self.height,
            self.kbps,
            self.frames,
            self.wall_ms_per_frame,
            self.cpu_ms_per_frame,
            opt(self.p50_ms),
            opt(self.p95_ms),
            self.bytes_per_frame,
            self.actual_kbps()
        )
    }
}

fn percentile(sorted_ms: &[f64], q: f64) -> f64 {
    sorted_ms[((sorted_ms.len() - 1) as f64 * q).round() as usize]
}

/// `count` test-pattern frames with capture instants 1/FPS apart, and each frame's drawing time.
fn frames(width: u32, height: u32, count: usize) -> (Vec<RawFrame>, Vec<Duration>) {
    let pattern = TestPattern::new(width, height, FPS);
    let base = Instant::now();
    let mut draw_times = Vec::with_capacity(count);
    let frames = (0..count as u64)
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

/// Encodes every frame in a tight loop; `None` if the encoder fails.
fn bench_peercam(
    name: &str,
    encoder: &mut dyn VideoEncoder,
    input: &[RawFrame],
    kbps: u32,
) -> Option<Row> {
    let mut times = Vec::with_capacity(input.len());
    let (mut bytes, mut outputs) = (0usize, 0usize);
    let cpu0 = process_cpu();
    let wall0 = Instant::now();
    for frame in input {
        let t = Instant::now();
        let out = match encoder.encode(frame, false) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("{name}: {e}");
                return None;
            }
        };
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        outputs += out.len();
        bytes += out.iter().map(|f| f.data.len()).sum::<usize>();
    }
    let wall = wall0.elapsed().as_secs_f64() * 1000.0;
    let cpu = (process_cpu() - cpu0).as_secs_f64() * 1000.0;
    times.sort_by(f64::total_cmp);
    let n = input.len() as f64;
    Some(Row {
        encoder: name.to_string(),
        width: input[0].width,
        height: input[0].height,
        kbps,
        frames: input.len(),
        wall_ms_per_frame: wall / n,
        cpu_ms_per_frame: cpu / n,
        p50_ms: Some(percentile(&times, 0.5)),
        p95_ms: Some(percentile(&times, 0.95)),
        bytes_per_frame: bytes as f64 / outputs.max(1) as f64,
    })
}

/// Writes `input` as a Y4M file (4:2:0, progressive, square pixels).
fn write_y4m(path: &Path, input: &[RawFrame]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(
        out,
        "YUV4MPEG2 W{} H{} F{FPS}:1 Ip A1:1 C420jpeg",
        input[0].width, input[0].height
    )?;
    for frame in input {
        out.write_all(b"FRAME\n")?;
        out.write_all(&frame.data)?;
    }
    out.flush()
}

/// `bench: utime=1.234s stime=0.010s rtime=1.100s` from ffmpeg's stderr, in milliseconds.
fn ffmpeg_times(stderr: &str) -> Option<(f64, f64)> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("bench: utime="))?;
    let value = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split('s').next()?.parse::<f64>().ok()
    };
    let cpu = value("utime=")? + value("stime=")?;
    Some((value("rtime=")? * 1000.0, cpu * 1000.0))
}

/// Runs ffmpeg on the first `frames` frames of `y4m`; returns (wall ms, CPU ms, output bytes).
fn run_ffmpeg(
    y4m: &Path,
    frames: usize,
    codec_args: &[String],
    output: &Path,
) -> Result<(f64, f64, u64), String> {
    let result = Command::new("ffmpeg")
        // -benchmark prints its `bench:` line at the info log level.
        .args([
            "-hide_banner",
            "-nostdin",
            "-y",
            "-benchmark",
            "-nostats",
            "-loglevel",
            "info",
        ])
        .args(["-f", "yuv4mpegpipe", "-i"])
        .arg(y4m)
        .args(["-frames:v", &frames.to_string()])
        .args(codec_args)
        .arg(output)
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e} (apt-get install ffmpeg)"))?;
    let stderr = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() {
        return Err(format!(
            "ffmpeg {}: {}",
            codec_args.join(" "),
            stderr.trim()
        ));
    }
    let (wall, cpu) = ffmpeg_times(&stderr).ok_or_else(|| format!("no bench: line in {stderr}"))?;
    let bytes = fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    Ok((wall, cpu, bytes))
}

/// One ffmpeg encoder, measured as (all frames) − (first FFMPEG_BASE_FRAMES frames).
/// The Y4M file every ffmpeg encoder reads, and what it holds.
struct Clip<'a> {
    y4m: &'a Path,
    frames: usize,
    width: u32,
    height: u32,
    /// Target bitrate for every encoder.
    kbps: u32,
}

fn bench_ffmpeg(
    name: &str,
    clip: &Clip,
    codec_args: &[String],
    extension: &str,
    dir: &Path,
) -> Option<Row> {
    let Clip {
        y4m,
        frames,
        width,
        height,
        kbps,
    } = *clip;
    let output = dir.join(format!("ffmpeg-{width}x{height}.{extension}"));
    let short = run_ffmpeg(y4m, FFMPEG_BASE_FRAMES, codec_args, &output);
    let full = run_ffmpeg(y4m, frames, codec_args, &output);
    let _ = fs::remove_file(&output);
    let ((wall_s, cpu_s, _), (wall_f, cpu_f, bytes)) = match (short, full) {
        (Ok(s), Ok(f)) => (s, f),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{name}: {e}");
            return None;
        }
    };
    let extra = (frames - FFMPEG_BASE_FRAMES) as f64;
    Some(Row {
        encoder: name.to_string(),
        width,
        height,
        kbps,
        frames,
        wall_ms_per_frame: (wall_f - wall_s).max(0.0) / extra,
        cpu_ms_per_frame: (cpu_f - cpu_s).max(0.0) / extra,
        p50_ms: None,
        p95_ms: None,
        bytes_per_frame: bytes as f64 / frames as f64,
    })
}

fn settings(width: u32, height: u32, bitrate_kbps: u32, threads: usize) -> VideoEncoderSettings {
    VideoEncoderSettings {
        width,
        height,
        fps: FPS,
        bitrate_kbps,
        keyframe_interval_s: KEYFRAME_INTERVAL_S,
        threads,
    }
}

struct Options {
    frames: usize,
    ffmpeg: bool,
    out: PathBuf,
    /// `Some("h264")` or `Some("av1")`: only that codec family.
    codec: Option<String>,
}

impl Options {
    fn wants(&self, codec: &str) -> bool {
        self.codec.as_deref().is_none_or(|c| c == codec)
    }
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        frames: 300,
        ffmpeg: true,
        out: PathBuf::from("target/bench"),
        codec: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--frames" => {
                let value = args.next().ok_or("--frames needs a number")?;
                options.frames = value
                    .parse()
                    .map_err(|_| format!("--frames {value}: not a number"))?;
                if options.frames <= FFMPEG_BASE_FRAMES {
                    return Err(format!("--frames must be more than {FFMPEG_BASE_FRAMES}"));
                }
            }
            "--no-ffmpeg" => options.ffmpeg = false,
            "--codec" => match args.next().as_deref() {
                Some(c @ ("h264" | "av1")) => options.codec = Some(c.to_string()),
                _ => return Err("--codec needs h264 or av1".into()),
            },
            "--out" => options.out = args.next().ok_or("--out needs a directory")?.into(),
            "-h" | "--help" => {
                println!("bench_encode [--frames N] [--codec h264|av1] [--no-ffmpeg] [--out DIR]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

fn print_table(rows: &[Row]) {
    println!(
        "| encoder | size | frames | wall ms/frame | CPU ms/frame | p50 / p95 ms | kbit/s target / actual | CPU vs peercam |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        // The peercam encoder of the same codec family and size, for the ratio column.
        let family = if row.encoder.contains("H.264") || row.encoder.contains("x264") {
            "peercam H.264"
        } else {
            "peercam AV1"
        };
        let reference = rows
            .iter()
            .find(|r| r.encoder.starts_with(family) && r.width == row.width);
        let ratio = match reference {
            Some(r) if !row.encoder.starts_with("peercam") && row.cpu_ms_per_frame > 0.0 => {
                format!(
                    "peercam ÷ this = {:.2}",
                    r.cpu_ms_per_frame / row.cpu_ms_per_frame
                )
            }
            _ => String::new(),
        };
        let percentiles = match (row.p50_ms, row.p95_ms) {
            (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
            _ => "–".to_string(),
        };
        println!(
            "| {} | {}x{} | {} | {:.2} | {:.2} | {} | {} / {:.0} | {} |",
            row.encoder,
            row.width,
            row.height,
            row.frames,
            row.wall_ms_per_frame,
            row.cpu_ms_per_frame,
            percentiles,
            row.kbps,
            row.actual_kbps(),
            ratio
        );
    }
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("bench_encode: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = fs::create_dir_all(&options.out) {
        eprintln!("bench_encode: cannot create {}: {e}", options.out.display());
        std::process::exit(1);
    }
    // The daemon gives every encoder as many threads as the machine has cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let keyint = (FPS * KEYFRAME_INTERVAL_S).to_string();
    let mut rows = Vec::new();
    let mut draws = Vec::new();
    for (width, height, kbps) in [(640u32, 480u32, 1000u32), (1280, 720, 2500)] {
        let (input, draw_times) = frames(width, height, options.frames);
        draws.push((width, height, draw_times));
        match H264Encoder::new(&settings(width, height, kbps, threads)) {
            Ok(_) if !options.wants("h264") => {}
            Ok(mut enc) => rows.extend(bench_peercam(
                "peercam H.264 (openh264)",
                &mut enc,
                &input,
                kbps,
            )),
            Err(e) => eprintln!("peercam H.264: {e}"),
        }
        match Av1Encoder::new(&settings(width, height, kbps, threads)) {
            Ok(_) if !options.wants("av1") => {}
            Ok(mut enc) => rows.extend(bench_peercam(
                &format!("peercam AV1 (rav1e speed 10, {threads} threads)"),
                &mut enc,
                &input,
                kbps,
            )),
            Err(e) => eprintln!("peercam AV1: {e}"),
        }
        if !options.ffmpeg {
            continue;
        }
        let y4m = options.out.join(format!("pattern-{width}x{height}.y4m"));
        if let Err(e) = write_y4m(&y4m, &input) {
            eprintln!("bench_encode: cannot write {}: {e}", y4m.display());
            std::process::exit(1);
        }
        let bitrate = format!("{kbps}k");
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let encoders = [
            (
                "h264",
                "ffmpeg libx264 ultrafast zerolatency",
                args(&[
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-tune",
                    "zerolatency",
                    "-b:v",
                    &bitrate,
                    "-maxrate",
                    &bitrate,
                    "-bufsize",
                    &bitrate,
                    "-g",
                    &keyint,
                    "-f",
                    "h264",
                ]),
                "h264",
            ),
            (
                "av1",
                "ffmpeg librav1e speed 10",
                args(&[
                    "-c:v",
                    "librav1e",
                    "-speed",
                    "10",
                    "-b:v",
                    &bitrate,
                    "-g",
                    &keyint,
                    "-tile-columns",
                    "1",
                    "-threads",
                    &threads.to_string(),
                    "-rav1e-params",
                    "low_latency=true",
                    "-f",
                    "ivf",
                ]),
                "ivf",
            ),
            (
                "av1",
                "ffmpeg libsvtav1 preset 12",
                args(&[
                    "-c:v",
                    "libsvtav1",
                    "-preset",
                    "12",
                    "-b:v",
                    &bitrate,
                    "-g",
                    &keyint,
                    "-f",
                    "ivf",
                ]),
                "ivf",
            ),
        ];
        for (codec, name, codec_args, extension) in encoders {
            if !options.wants(codec) {
                continue;
            }
            let clip = Clip {
                y4m: &y4m,
                frames: options.frames,
                width,
                height,
                kbps,
            };
            rows.extend(bench_ffmpeg(
                name,
                &clip,
                &codec_args,
                extension,
                &options.out,
            ));
        }
        let _ = fs::remove_file(&y4m);
    }

    println!(
        "{} test-pattern frames per size, {threads} cores, encoded as fast as possible:\n",
        options.frames
    );
    print_table(&rows);
    println!();
    for (width, height, mut times) in draws {
        times.sort();
        let ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        println!(
            "test pattern draw {width}x{height}: p50 {:.3} ms, p95 {:.3} ms",
            percentile(&ms, 0.5),
            percentile(&ms, 0.95)
        );
    }
    println!("{}", opus_line());

    let json = format!(
        "{{\"frames\":{},\"threads\":{threads},\"rows\":[{}]}}\n",
        options.frames,
        rows.iter().map(Row::json).collect::<Vec<_>>().join(",")
    );
    let path = options.out.join("encoders.json");
    match fs::write(&path, json) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("bench_encode: cannot write {}: {e}", path.display()),
    }
}

/// The Opus encoder's time per 20 ms stereo chunk of the test tone.
fn opus_line() -> String {
    let tone = TestTone::new(2);
    let mut opus = match OpusEncoder::new(2, 64) {
        Ok(enc) => enc,
        Err(e) => return format!("opus: {e}"),
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
            Err(e) => return format!("opus: {e}"),
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    format!(
        "Opus stereo 64 kbit/s, {chunks} x 20 ms: p50 {:.0} us, p95 {:.0} us per chunk, {} bytes/packet",
        percentile(&times, 0.5) * 1000.0,
        percentile(&times, 0.95) * 1000.0,
        bytes / chunks as usize
    )
}
