//! `peercam doctor`: what this board has and what it can sustain, on one screen.
//!
//! ```text
//! facts::gather (devices, files, sockets, rpicam-vid)  ──> Facts
//! checks::judge (pure)                                  ──> PASS/WARN/FAIL lines with fixes
//! bench::run (the real encoders, ≤ 20 s) ─> bench::recommend (pure) ─> table + [video] block
//! Report ──> text (stdout) or one JSON object (--json); exit 0 when no check failed
//! ```
//!
//! The checks: the config loads and validates; which camera and microphone the settings
//! resolve to (for `auto`: the Camera Module through rpicam-vid, else the first V4L2 camera,
//! else the test pattern); the groups and device permissions the systemd service needs
//! (deploy/peercam.service: `DynamicUser`, `SupplementaryGroups=video audio
//! peercam-config`); whether the ports can be bound; the encode benchmark. Only a config
//! that does not load or TLS files that cannot be read fail: without a camera, microphone or
//! free port the daemon still runs (placeholder, test tone, retry).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Settings;
use crate::media::VideoCodec;

pub mod bench;
pub mod checks;
pub mod facts;
pub mod permissions;
#[cfg(test)]
mod tests;

use bench::{Benchmark, Outcome, Recommendation};
use checks::{Check, Status};
use facts::Facts;

/// What `peercam doctor` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// One JSON object instead of text.
    pub json: bool,
    /// The benchmark's time budget; `None` skips it (`--no-bench`).
    pub bench: Option<Duration>,
}

/// Everything the doctor prints.
#[derive(Debug, Clone)]
pub struct Report {
    /// The board's model (`None` off device-tree boards) and CPU cores.
    pub board: (Option<String>, usize),
    /// The checks, in output order (the encode check last, when the benchmark ran).
    pub checks: Vec<Check>,
    /// The benchmark, unless skipped.
    pub bench: Option<Benchmark>,
    /// The recommended `[video]` block, when the benchmark measured H.264.
    pub recommendation: Option<Recommendation>,
}

impl Report {
    /// Judges `facts` and, if it ran, the benchmark.
    pub fn new(facts: &Facts, bench: Option<Benchmark>) -> Report {
        let mut checks = checks::judge(facts);
        let recommendation = bench.as_ref().and_then(bench::recommend);
        if let Some(b) = &bench {
            checks.push(encode_check(&facts.settings(), b, recommendation.as_ref()));
        }
        Report {
            board: (facts.board_model.clone(), facts.cores),
            checks,
            bench,
            recommendation,
        }
    }

    /// No check failed: the daemon would start with this config on this machine.
    pub fn would_run(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// 0 when the daemon would run, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.would_run() {
            0
        } else {
            1
        }
    }

    /// The whole text output.
    pub fn text(&self) -> String {
        let (head, tail) = self.text_parts();
        head + &tail
    }

    /// The text before the encode check (printed before the benchmark runs) and the rest.
    fn text_parts(&self) -> (String, String) {
        let mut head = match &self.board.0 {
            Some(model) => format!("peercam doctor: {model}, {} cores\n", self.board.1),
            None => format!(
                "peercam doctor: {} (no /proc/device-tree/model: not a Raspberry Pi), {} cores\n",
                std::env::consts::ARCH,
                self.board.1
            ),
        };
        let mut tail = String::new();
        for check in &self.checks {
            let out = if check.name == "encode" {
                &mut tail
            } else {
                &mut head
            };
            let _ = writeln!(
                out,
                "{}  {}: {}",
                check.status.label(),
                check.name,
                check.summary
            );
            if let Some(fix) = &check.fix {
                let _ = writeln!(out, "      fix: {fix}");
            }
        }
        match &self.bench {
            Some(b) => {
                let _ = writeln!(
                    tail,
                    "\nEncode benchmark: test pattern, {} threads, {} kbit/s, {:.1} s",
                    b.cores,
                    b.bitrate_kbps,
                    b.elapsed.as_secs_f64()
                );
                tail.push_str(&bench::table(b));
                if let Some(r) = &self.recommendation {
                    let _ = writeln!(tail, "\nRecommended for this board:");
                    tail.push_str(&bench::toml_block(r));
                }
            }
            None => tail.push_str("(encode benchmark skipped: --no-bench)\n"),
        }
        let _ = writeln!(
            tail,
            "\n{}",
            if self.would_run() {
                "The daemon would run with this configuration (exit 0)."
            } else {
                "The daemon would not run: fix the FAIL lines (exit 1)."
            }
        );
        (head, tail)
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "status": c.status.label().to_ascii_lowercase(),
                    "summary": c.summary,
                    "fix": c.fix,
                })
            })
            .collect();
        let benchmark = self.bench.as_ref().map(|b| {
            let rows: Vec<Value> = b.rows.iter().map(row_json).collect();
            json!({
                "threads": b.cores,
                "bitrate_kbps": b.bitrate_kbps,
                "seconds": (b.elapsed.as_secs_f64() * 10.0).round() / 10.0,
                "rows": rows,
            })
        });
        let recommendation = self.recommendation.as_ref().map(|r| {
            json!({
                "width": r.width,
                "height": r.height,
                "fps": r.fps,
                "codecs": r.codecs.iter().map(|c| c.config_name()).collect::<Vec<_>>(),
                "notes": r.notes,
                "toml": bench::toml_block(r),
            })
        });
        json!({
            "board": { "model": self.board.0, "cores": self.board.1 },
            "checks": checks,
            "benchmark": benchmark,
            "recommendation": recommendation,
            "would_run": self.would_run(),
        })
    }
}

fn row_json(r: &bench::Row) -> Value {
    let mut v = json!({
        "codec": r.codec.config_name(),
        "width": r.width,
        "height": r.height,
    });
    let extra = match &r.outcome {
        Outcome::Measured {
            frames,
            ms_per_frame,
            cpu_ms_per_frame,
            fps,
        } => json!({
            "measured": true,
            "frames": frames,
            "ms_per_frame": round2(*ms_per_frame),
            "cpu_ms_per_frame": round2(*cpu_ms_per_frame),
            "fps": fps.floor(),
        }),
        Outcome::NotMeasured(why) => json!({ "measured": false, "note": why }),
        Outcome::Failed(why) => json!({ "measured": false, "error": why }),
    };
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What one codec sustains at `width`x`height`, bounded from the measured rows: a larger
/// size that keeps up is a lower bound, a smaller one that does not an upper bound.
/// `None` when nothing measured says.
fn sustains_at(b: &Benchmark, codec: VideoCodec, width: u32, height: u32) -> Option<f64> {
    let area = width * height;
    let measured = || {
        b.rows
            .iter()
            .filter(move |r| r.codec == codec)
            .filter_map(|r| Some((r.width * r.height, r.fps()?)))
    };
    if let Some((_, fps)) = measured().find(|(a, _)| *a == area) {
        return Some(fps);
    }
    // The smallest larger size: this size does at least as well.
    let lower = measured()
        .filter(|(a, _)| *a > area)
        .min_by_key(|(a, _)| *a)
        .map(|m| m.1);
    // The largest smaller size: this size does at most as well.
    let upper = measured()
        .filter(|(a, _)| *a < area)
        .max_by_key(|(a, _)| *a)
        .map(|m| m.1);
    lower.or(upper)
}

/// The encode line: what the encoders sustain, and whether the configured `[video]` size and
/// rate fit. A warning when they do not (the daemon still runs, dropping frames).
pub fn encode_check(
    settings: &Settings,
    b: &Benchmark,
    recommendation: Option<&Recommendation>,
) -> Check {
    let v = &settings.video;
    let picks: Vec<String> = [VideoCodec::H264, VideoCodec::Av1]
        .into_iter()
        .map(|codec| match bench::pick(b, codec) {
            Some(p) => format!(
                "{} sustains {}x{} at {:.0} fps",
                bench::codec_label(codec),
                p.width,
                p.height,
                p.fps.floor()
            ),
            None => format!("{} sustains no measured size", bench::codec_label(codec)),
        })
        .collect();
    let mut slow: Vec<String> = Vec::new();
    for codec in &v.codecs {
        if let Some(fps) = sustains_at(b, *codec, v.width, v.height) {
            if fps < f64::from(v.fps) {
                slow.push(format!(
                    "{} about {:.0}",
                    bench::codec_label(*codec),
                    fps.floor()
                ));
            }
        }
    }
    let configured = format!("[video] {}x{} at {} fps", v.width, v.height, v.fps);
    if slow.is_empty() {
        Check::pass("encode", format!("{}; {configured} fits", picks.join(", ")))
    } else {
        let fix = match recommendation {
            Some(_) => "use the recommended [video] block below",
            None => "lower [video] width, height or fps",
        };
        Check::warn(
            "encode",
            format!(
                "{}; {configured} is more than this board sustains ({} fps)",
                picks.join(", "),
                slow.join(", ")
            ),
            fix,
        )
    }
}

/// Runs the doctor: gathers, benchmarks (unless skipped), prints, and returns the exit code.
pub fn run(config: Option<&Path>, options: &Options) -> ExitCode {
    let facts = facts::gather(config);
    let mut stdout = std::io::stdout();
    let bench = options.bench.map(|budget| {
        if !options.json {
            // The checks first: the benchmark takes a while.
            let (head, _) = Report::new(&facts, None).text_parts();
            let _ = stdout.write_all(head.as_bytes());
            let _ = stdout.flush();
            eprintln!(
                "running the encode benchmark (at most {} s; --no-bench skips it)...",
                budget.as_secs()
            );
        }
        bench::run(budget, &facts.settings().video, facts.cores)
    });
    let streamed = bench.is_some() && !options.json;
    let report = Report::new(&facts, bench);
    let out = if options.json {
        format!("{:#}\n", report.json())
    } else if streamed {
        report.text_parts().1
    } else {
        report.text()
    };
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(report.exit_code())
}
