//! `peercam doctor` on this machine, run as a user would: the checks without the benchmark,
//! a broken config, and once the real encode benchmark with `--json`.

use std::path::{Path, PathBuf};

use crate::common::cli::{peercam, repo_file, text};
use std::time::{Duration, Instant};

/// A config with the machine's own sources (`auto`) and a port that is always free.
fn auto_config(dir: &Path) -> PathBuf {
    let path = dir.join("doctor.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n").expect("write config");
    path
}

#[test]
fn doctor_without_the_benchmark_checks_this_machine_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = auto_config(dir.path());
    let config = config.to_str().expect("utf-8 path");
    let started = Instant::now();
    let out = peercam(&["--config", config, "doctor", "--no-bench"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    // rpicam-vid is not waited on for long when it is not installed.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(stdout.starts_with("peercam doctor: "), "{stdout}");
    assert!(
        stdout.contains(&format!("PASS  config: {config}\n")),
        "{stdout}"
    );
    for name in ["camera", "microphone", "permissions", "ports"] {
        assert!(
            ["PASS", "WARN"]
                .iter()
                .any(|s| stdout.contains(&format!("{s}  {name}: "))),
            "no {name} line:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("PASS  ports: TCP 127.0.0.1:0 is free"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(encode benchmark skipped: --no-bench)"),
        "{stdout}"
    );
    assert!(stdout.ends_with("The daemon would run with this configuration (exit 0).\n"));
    // The build machine has no camera and no rpicam-vid: the test pattern, with its fix.
    let no_video_nodes = std::fs::read_dir("/dev")
        .map(|d| {
            !d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("video"))
        })
        .unwrap_or(true);
    if no_video_nodes {
        assert!(
            stdout.contains(
                "WARN  camera: no camera found: video.source = \"auto\" streams the test \
                 pattern\n      fix: plug in a camera; `peercam --list-devices` lists what is \
                 there\n"
            ),
            "{stdout}"
        );
    }
}

#[test]
fn doctor_with_a_broken_config_fails_naming_the_key_and_exits_1() {
    let bad = repo_file("tests/fixtures/config/bad-width.toml");
    let out = peercam(&[
        "--config",
        bad.to_str().expect("utf-8 path"),
        "doctor",
        "--no-bench",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  config: "), "{stdout}");
    assert!(stdout.contains("[video] width"), "{stdout}");
    assert!(stdout.contains("      fix: "), "{stdout}");
    assert!(stdout.contains("The daemon would not run"), "{stdout}");

    let out = peercam(&[
        "--config",
        bad.to_str().expect("utf-8 path"),
        "doctor",
        "--no-bench",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["would_run"], false);
    assert_eq!(v["checks"][0]["name"], "config");
    assert_eq!(v["checks"][0]["status"], "fail");
}

#[test]
fn doctor_json_runs_the_real_benchmark_within_its_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = auto_config(dir.path());
    let started = Instant::now();
    let out = peercam(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "doctor",
        "--json",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(elapsed < Duration::from_secs(25), "took {elapsed:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["would_run"], true);
    let rows = v["benchmark"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 6, "{v:#}");
    assert_eq!(rows[0]["codec"], "h264");
    assert_eq!(rows[0]["measured"], true, "{v:#}");
    assert!(rows[0]["ms_per_frame"].as_f64().is_some_and(|ms| ms > 0.0));
    let r = &v["recommendation"];
    assert!(r["width"].as_u64().is_some_and(|w| w >= 640), "{v:#}");
    assert!(r["toml"]
        .as_str()
        .is_some_and(|t| t.starts_with("[video]\n")));
    let names: Vec<&str> = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "config",
            "camera",
            "microphone",
            "permissions",
            "ports",
            "encode"
        ]
    );
}
