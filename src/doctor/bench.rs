//! The doctor's encode benchmark: peercam's own H.264 (openh264) and AV1 (rav1e) encoders,
//! built by [`new_encoder`] exactly as the daemon builds them, encode test-pattern frames
//! at a ladder of sizes within a hard time budget (at most [`MAX_BUDGET`]); [`recommend`]
//! turns the rows into a `[video]` block. Measuring ([`run`]) and judging ([`recommend`],
//! [`sustainable_fps`]) are separate so the rule is tested on made-up rows.
//!
//! # The rule
//! An encoder may use at most [`HEADROOM`] (70 %) of a frame interval: capture, pixel
//! conversion, the other codec's encoder and the network need the rest. Two limits, the
//! lower wins ([`sustainable_fps`]):
//! - wall time per frame: one output thread encodes frames one after another, so
//!   `fps ≤ 0.7 × 1000 / wall_ms`;
//! - CPU time per frame over all cores (rav1e encodes tiles on several threads):
//!   `fps ≤ 0.7 × 1000 × cores / cpu_ms`;
//!
//! capped at [`TOP_FPS`] (30). A size is recommended for a codec when it sustains
//! [`GOOD_FPS`] (25); AV1, when no size reaches 25, at [`AV1_USEFUL_FPS`] (15), said so.
//! The `[video]` block takes H.264's largest size (the daemon encodes one size for every
//! codec, and H.264 is the one every browser decodes) and lists `"av1"` only when AV1
//! sustains at least 15 fps at that same size (an AV1 viewer then gets fewer frames when it
//! is below `fps`: its encoder skips to the newest frame).

use std::time::{Duration, Instant};

use crate::capture::test_pattern::TestPattern;
use crate::config::VideoSettings;
use crate::encode::{new_encoder, VideoEncoderSettings};
use crate::media::{PixelFormat, RawFrame, VideoCodec};

/// The longest the benchmark may take, encoder setup included (`--bench-seconds` caps here).
pub const MAX_BUDGET: Duration = Duration::from_secs(20);
/// Sizes tried, smallest first; a codec stops climbing at the first size it cannot sustain.
pub const LADDER: [(u32, u32); 3] = [(640, 480), (1280, 720), (1920, 1080)];
/// The frame rate the benchmark encodes at and the highest it recommends.
pub const TOP_FPS: u32 = 30;
/// A size is recommended when the encoder sustains this many frames per second.
pub const GOOD_FPS: f64 = 25.0;
/// AV1's fallback threshold when no size reaches [`GOOD_FPS`].
pub const AV1_USEFUL_FPS: f64 = 15.0;
/// The share of a frame interval (per core, for CPU time) an encoder may use.
pub const HEADROOM: f64 = 0.7;
/// Frames encoded before timing starts (the first is a keyframe, and buffers warm up).
const WARMUP_FRAMES: usize = 3;
/// Timed frames per size: at least this many, or the row is "not measured".
const MIN_TIMED_FRAMES: usize = 3;
/// Timed frames per size at most.
const MAX_TIMED_FRAMES: usize = 30;
/// Distinct test-pattern frames drawn per size (drawn before timing, then cycled).
const DRAWN_FRAMES: u64 = 4;

/// One codec at one size.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The codec.
    pub codec: VideoCodec,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// What came of it.
    pub outcome: Outcome,
}

/// A row's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Encoded and timed.
    Measured {
        /// Frames timed.
        frames: usize,
        /// Mean wall time of one `encode` call, in milliseconds.
        ms_per_frame: f64,
        /// Mean CPU time (every thread of the process) per frame, in milliseconds.
        cpu_ms_per_frame: f64,
        /// [`sustainable_fps`] of the two.
        fps: f64,
    },
    /// Not tried or not finished, and why (e.g. "time budget").
    NotMeasured(String),
    /// The encoder could not be set up or failed.
    Failed(String),
}

impl Row {
    /// The sustainable frame rate, if measured.
    pub fn fps(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Measured { fps, .. } => Some(fps),
            _ => None,
        }
    }
}

/// What [`run`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Benchmark {
    /// CPU cores (the encoders' threads).
    pub cores: usize,
    /// Target bitrate every encoder was given, kbit/s.
    pub bitrate_kbps: u32,
    /// How long it took.
    pub elapsed: Duration,
    /// Every codec at every ladder size, H.264 first.
    pub rows: Vec<Row>,
}

/// The frame rate an encoder sustains with headroom (see the module documentation):
/// `min(30, 0.7 × 1000 / wall_ms, 0.7 × 1000 × cores / cpu_ms)`.
pub fn sustainable_fps(ms_per_frame: f64, cpu_ms_per_frame: f64, cores: usize) -> f64 {
    let budget_ms = HEADROOM * 1000.0;
    let by_wall = budget_ms / ms_per_frame.max(0.001);
    let by_cpu = budget_ms * cores.max(1) as f64 / cpu_ms_per_frame.max(0.001);
    by_wall.min(by_cpu).min(f64::from(TOP_FPS))
}

/// Runs the benchmark for at most `budget` (capped at [`MAX_BUDGET`]): H.264 then AV1, each
/// up [`LADDER`], with the daemon's encoder settings (`[video]` keyframe interval,
/// `max_bitrate_kbps`, the highest bitrate adaptive bitrate sets, and one thread per core).
/// Each size gets an equal share of what is left; the deadline is checked between frames.
pub fn run(budget: Duration, video: &VideoSettings, cores: usize) -> Benchmark {
    let start = Instant::now();
    let deadline = start + budget.min(MAX_BUDGET);
    let codecs = [VideoCodec::H264, VideoCodec::Av1];
    let mut rows = Vec::new();
    let mut steps_left = codecs.len() * LADDER.len();
    for codec in codecs {
        let threshold = if codec == VideoCodec::Av1 {
            AV1_USEFUL_FPS
        } else {
            GOOD_FPS
        };
        let mut stop: Option<String> = None;
        for (width, height) in LADDER {
            let outcome = match &stop {
                Some(why) => Outcome::NotMeasured(why.clone()),
                None => {
                    let now = Instant::now();
                    let share = deadline.saturating_duration_since(now) / steps_left as u32;
                    let settings = VideoEncoderSettings {
                        width,
                        height,
                        fps: TOP_FPS,
                        bitrate_kbps: video.max_bitrate_kbps,
                        keyframe_interval_s: video.keyframe_interval_s,
                        threads: cores,
                    };
                    measure(codec, &settings, (now + share).min(deadline), deadline)
                }
            };
            steps_left -= 1;
            match &outcome {
                Outcome::Measured { fps, .. } if *fps < threshold => {
                    stop = Some("a smaller size is already too slow".to_owned());
                }
                Outcome::Measured { .. } => {}
                Outcome::NotMeasured(_) if Instant::now() >= deadline => {
                    stop = Some("time budget".to_owned());
                }
                Outcome::NotMeasured(_) => {}
                Outcome::Failed(_) => stop = Some("the encoder failed".to_owned()),
            }
            rows.push(Row {
                codec,
                width,
                height,
                outcome,
            });
        }
    }
    Benchmark {
        cores,
        bitrate_kbps: video.max_bitrate_kbps,
        elapsed: start.elapsed(),
        rows,
    }
}

/// Encodes test-pattern frames with `codec` until `share_end` (at least
/// [`MIN_TIMED_FRAMES`] when `deadline` allows, at most [`MAX_TIMED_FRAMES`]).
fn measure(
    codec: VideoCodec,
    settings: &VideoEncoderSettings,
    share_end: Instant,
    deadline: Instant,
) -> Outcome {
    if Instant::now() >= deadline {
        return Outcome::NotMeasured("time budget".to_owned());
    }
    let mut encoder = match new_encoder(codec, settings) {
        Ok(encoder) => encoder,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let (width, height) = (settings.width, settings.height);
    let pattern = TestPattern::new(width, height, settings.fps);
    let base = Instant::now();
    let mut drawn = Vec::new();
    for n in 0..DRAWN_FRAMES {
        if Instant::now() >= deadline {
            return Outcome::NotMeasured("time budget".to_owned());
        }
        drawn.push(pattern.render(n, n as u32));
    }
    let interval_ms = 1000 / u64::from(settings.fps.max(1));
    let frame = |n: usize| RawFrame {
        width,
        height,
        format: PixelFormat::I420,
        data: drawn[n % drawn.len()].clone().into(),
        capture_instant: base + Duration::from_millis(n as u64 * interval_ms),
        sequence: n as u64,
    };
    let mut n = 0;
    while n < WARMUP_FRAMES {
        if Instant::now() >= deadline {
            return Outcome::NotMeasured("time budget".to_owned());
        }
        if let Err(e) = encoder.encode(&frame(n), false) {
            return Outcome::Failed(e.to_string());
        }
        n += 1;
    }
    let mut timed = 0;
    let mut wall = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    while timed < MAX_TIMED_FRAMES {
        let now = Instant::now();
        let end = if timed < MIN_TIMED_FRAMES {
            deadline
        } else {
            share_end
        };
        if now >= end {
            break;
        }
        let input = frame(n);
        let (wall0, cpu0) = (Instant::now(), process_cpu());
        if let Err(e) = encoder.encode(&input, false) {
            return Outcome::Failed(e.to_string());
        }
        wall += wall0.elapsed();
        cpu += process_cpu().saturating_sub(cpu0);
        timed += 1;
        n += 1;
    }
    if timed < MIN_TIMED_FRAMES {
        return Outcome::NotMeasured("time budget".to_owned());
    }
    let ms_per_frame = wall.as_secs_f64() * 1000.0 / timed as f64;
    let cpu_ms_per_frame = cpu.as_secs_f64() * 1000.0 / timed as f64;
    let cores = settings.threads;
    Outcome::Measured {
        frames: timed,
        ms_per_frame,
        cpu_ms_per_frame,
        fps: sustainable_fps(ms_per_frame, cpu_ms_per_frame, cores),
    }
}

/// CPU time of the whole process (every thread: rav1e's tile threads count).
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The largest size one codec sustains, and at what rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Sustainable frames per second there.
    pub fps: f64,
    /// It reaches only [`AV1_USEFUL_FPS`], not [`GOOD_FPS`].
    pub reduced: bool,
}

/// The `[video]` block the doctor recommends.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// `[video] fps`.
    pub fps: u32,
    /// `[video] codecs`.
    pub codecs: Vec<VideoCodec>,
    /// H.264's largest sustained size.
    pub h264: Option<Pick>,
    /// AV1's largest sustained size.
    pub av1: Option<Pick>,
    /// Why the block is what it is (one line each), e.g. why AV1 is left out.
    pub notes: Vec<String>,
}

/// The largest measured size of `codec` that sustains [`GOOD_FPS`] (AV1: else
/// [`AV1_USEFUL_FPS`]).
pub fn pick(bench: &Benchmark, codec: VideoCodec) -> Option<Pick> {
    let best = |threshold: f64| {
        bench
            .rows
            .iter()
            .filter(|r| r.codec == codec)
            .filter_map(|r| Some((r, r.fps()?)))
            .filter(|(_, fps)| *fps >= threshold)
            .max_by_key(|(r, _)| r.width * r.height)
            .map(|(r, fps)| Pick {
                width: r.width,
                height: r.height,
                fps,
                reduced: threshold < GOOD_FPS,
            })
    };
    best(GOOD_FPS).or_else(|| (codec == VideoCodec::Av1).then(|| best(AV1_USEFUL_FPS))?)
}

/// The `[video]` block (see the module documentation for the rule); `None` when H.264 was
/// not measured at any size.
pub fn recommend(bench: &Benchmark) -> Option<Recommendation> {
    let h264 = pick(bench, VideoCodec::H264);
    let av1 = pick(bench, VideoCodec::Av1);
    let mut notes = Vec::new();
    let (width, height, fps) = match h264 {
        Some(p) => (p.width, p.height, p.fps),
        None => {
            // Nothing reaches 25 fps: the smallest size, at the rate it sustains.
            let row = bench
                .rows
                .iter()
                .find(|r| r.codec == VideoCodec::H264 && r.fps().is_some())?;
            let fps = row.fps().unwrap_or(1.0);
            notes.push(format!(
                "H.264 sustains no size at {GOOD_FPS:.0} fps here; {}x{} at {:.0} fps is the \
                 best it does",
                row.width,
                row.height,
                fps.floor().max(1.0)
            ));
            (row.width, row.height, fps)
        }
    };
    let fps = (fps.floor() as u32).clamp(1, TOP_FPS);
    let av1_here = bench
        .rows
        .iter()
        .find(|r| r.codec == VideoCodec::Av1 && (r.width, r.height) == (width, height))
        .and_then(Row::fps);
    let mut codecs = vec![VideoCodec::H264];
    match (av1_here, av1) {
        (Some(f), _) if f >= AV1_USEFUL_FPS => {
            codecs.push(VideoCodec::Av1);
            if f < f64::from(fps) {
                notes.push(format!(
                    "AV1 sustains {:.0} fps at {width}x{height}: AV1 viewers get fewer frames",
                    f.floor()
                ));
            }
        }
        (_, Some(p)) => notes.push(format!(
            "AV1 left out: it does not sustain {AV1_USEFUL_FPS:.0} fps at {width}x{height} \
             (it does {}x{} at {:.0} fps)",
            p.width,
            p.height,
            p.fps.floor()
        )),
        (_, None) => notes.push(format!(
            "AV1 left out: it sustains no measured size at {AV1_USEFUL_FPS:.0} fps"
        )),
    }
    Some(Recommendation {
        width,
        height,
        fps,
        codecs,
        h264,
        av1,
        notes,
    })
}

/// The table, one line per row.
pub fn table(bench: &Benchmark) -> String {
    let mut out = format!(
        "{:<6} {:>9}  {:>8}  {:>12}  {}\n",
        "codec", "size", "ms/frame", "CPU ms/frame", "sustains"
    );
    for row in &bench.rows {
        let size = format!("{}x{}", row.width, row.height);
        let codec = codec_label(row.codec);
        let line = match &row.outcome {
            Outcome::Measured {
                ms_per_frame,
                cpu_ms_per_frame,
                fps,
                ..
            } => format!(
                "{codec:<6} {size:>9}  {ms_per_frame:>8.1}  {cpu_ms_per_frame:>12.1}  {:.0} fps",
                fps.floor()
            ),
            Outcome::NotMeasured(why) => format!("{codec:<6} {size:>9}  not measured ({why})"),
            Outcome::Failed(why) => format!("{codec:<6} {size:>9}  failed: {why}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `H.264`, `AV1`.
pub fn codec_label(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::H264 => "H.264",
        VideoCodec::Av1 => "AV1",
    }
}

/// The recommended block as TOML, notes as comments.
pub fn toml_block(r: &Recommendation) -> String {
    let codecs: Vec<String> = r
        .codecs
        .iter()
        .map(|c| format!("\"{}\"", c.config_name()))
        .collect();
    let mut out = format!(
        "[video]\nwidth = {}\nheight = {}\nfps = {}\ncodecs = [{}]\n",
        r.width,
        r.height,
        r.fps,
        codecs.join(", ")
    );
    for note in &r.notes {
        out.push_str(&format!("# {note}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(codec: VideoCodec, (width, height): (u32, u32), ms: f64, cores: usize) -> Row {
        Row {
            codec,
            width,
            height,
            outcome: Outcome::Measured {
                frames: 10,
                ms_per_frame: ms,
                cpu_ms_per_frame: ms * 1.5,
                fps: sustainable_fps(ms, ms * 1.5, cores),
            },
        }
    }

    fn bench(rows: Vec<Row>) -> Benchmark {
        Benchmark {
            cores: 2,
            bitrate_kbps: 2500,
            elapsed: Duration::from_secs(10),
            rows,
        }
    }

    #[test]
    fn sustainable_fps_leaves_headroom_and_counts_every_core() {
        // 20 ms of a 33 ms interval is 60 %: fine at 30 fps.
        assert_eq!(sustainable_fps(20.0, 20.0, 1), 30.0);
        // 28 ms wall: 0.7 * 1000 / 28 = 25 fps.
        assert!((sustainable_fps(28.0, 28.0, 4) - 25.0).abs() < 1e-9);
        // Fast in wall time but heavy on CPU across 2 cores: 0.7 * 2000 / 100 = 14.
        assert!((sustainable_fps(10.0, 100.0, 2) - 14.0).abs() < 1e-9);
        assert_eq!(sustainable_fps(0.0, 0.0, 0), 30.0);
    }

    #[test]
    fn recommends_the_largest_h264_size_and_av1_only_where_it_keeps_up() {
        let b = bench(vec![
            measured(VideoCodec::H264, LADDER[0], 4.0, 2),
            measured(VideoCodec::H264, LADDER[1], 12.0, 2),
            measured(VideoCodec::H264, LADDER[2], 26.0, 2),
            measured(VideoCodec::Av1, LADDER[0], 15.0, 2),
            measured(VideoCodec::Av1, LADDER[1], 60.0, 2),
            Row {
                codec: VideoCodec::Av1,
                width: 1920,
                height: 1080,
                outcome: Outcome::NotMeasured("a smaller size is already too slow".into()),
            },
        ]);
        let r = recommend(&b).expect("a recommendation");
        assert_eq!((r.width, r.height, r.fps), (1920, 1080, 26));
        assert_eq!(r.codecs, [VideoCodec::H264]);
        assert_eq!(
            r.av1,
            Some(Pick {
                width: 640,
                height: 480,
                fps: 30.0,
                reduced: false
            })
        );
        let block = toml_block(&r);
        assert!(
            block.starts_with(
                "[video]\nwidth = 1920\nheight = 1080\nfps = 26\ncodecs = [\"h264\"]\n"
            ),
            "{block}"
        );
        assert!(
            block.contains("# AV1 left out: it does not sustain 15 fps at 1920x1080 (it does 640x480 at 30 fps)"),
            "{block}"
        );
        let text = table(&b);
        assert!(
            text.contains("H.264  1920x1080      26.0          39.0  26 fps"),
            "{text}"
        );
        assert!(
            text.contains("AV1    1920x1080  not measured (a smaller size is already too slow)"),
            "{text}"
        );
    }

    #[test]
    fn av1_at_15_fps_is_kept_with_a_note_and_a_slow_board_gets_its_best() {
        let b = bench(vec![
            measured(VideoCodec::H264, LADDER[0], 8.0, 2),
            measured(VideoCodec::H264, LADDER[1], 40.0, 2),
            measured(VideoCodec::Av1, LADDER[0], 40.0, 2),
        ]);
        let r = recommend(&b).expect("a recommendation");
        assert_eq!((r.width, r.height, r.fps), (640, 480, 30));
        assert_eq!(r.codecs, [VideoCodec::H264, VideoCodec::Av1]);
        assert!(r.av1.expect("av1").reduced);
        assert_eq!(
            r.notes,
            ["AV1 sustains 17 fps at 640x480: AV1 viewers get fewer frames"]
        );

        let slow = bench(vec![measured(VideoCodec::H264, LADDER[0], 70.0, 2)]);
        let r = recommend(&slow).expect("a recommendation");
        assert_eq!((r.width, r.height, r.fps), (640, 480, 10));
        assert_eq!(r.codecs, [VideoCodec::H264]);
        assert!(
            r.notes[0].starts_with("H.264 sustains no size at 25 fps"),
            "{:?}",
            r.notes
        );
        assert_eq!(recommend(&bench(Vec::new())), None);
    }

    #[test]
    fn a_short_budget_is_kept_and_says_what_it_skipped() {
        let started = Instant::now();
        let b = run(
            Duration::from_millis(300),
            &VideoSettings::default(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(b.rows.len(), 2 * LADDER.len());
        assert!(
            b.rows
                .iter()
                .any(|r| r.outcome == Outcome::NotMeasured("time budget".into())),
            "{b:?}"
        );
    }
}
