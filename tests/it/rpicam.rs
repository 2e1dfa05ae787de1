//! The Camera Module through rpicam-vid, with the stand-in `rpicam-vid`
//! (tests/standin/rpicam_vid.rs, built as the `rpicam_vid_standin` example) on the daemon's
//! `PATH`: both modes reach a viewer, the child is supervised (exit, stall, failure to
//! start, reload, shutdown), and `auto` picks the Camera Module when rpicam-vid lists one.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::client::{client, dial, h264, metric};
use crate::common::probe::viewer;
use crate::common::{self, connect, send_text, Daemon};
use webrtc::peer_connection::PeerConnection;

/// A directory holding `rpicam-vid` (the stand-in) and the stand-in's run log.
struct Standin {
    dir: tempfile::TempDir,
}

impl Standin {
    fn new() -> Standin {
        let peercam = Path::new(env!("CARGO_BIN_EXE_peercam"));
        let binary = peercam
            .parent()
            .expect("target dir")
            .join("examples/rpicam_vid_standin");
        assert!(
            binary.exists(),
            "{} is missing: build it with `cargo build --example rpicam_vid_standin` \
             (scripts/test.sh builds every target)",
            binary.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(&binary, dir.path().join("rpicam-vid")).expect("symlink");
        Standin { dir }
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("runs.log")
    }

    fn once_path(&self) -> PathBuf {
        self.dir.path().join("once")
    }

    /// The argument lines of every rpicam-vid run so far (`--list-cameras` runs too).
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("start ").map(str::to_owned))
            .collect()
    }

    fn streaming_runs(&self) -> Vec<String> {
        self.runs()
            .into_iter()
            .filter(|r| !r.contains("--list-cameras"))
            .collect()
    }

    /// Starts the daemon with `video` in `[video]` (after the test config's lines), `more`
    /// as further tables, and the stand-in's knobs in `env`.
    fn daemon(&self, video: &str, more: &str, env: &[(&str, &str)]) -> Daemon {
        let config = config(video, more);
        let path = self.path_var();
        let log = self.log_path();
        let log = log.to_str().expect("utf-8 path");
        let mut all: Vec<(&str, &str)> = vec![("PATH", &path), ("RPICAM_STANDIN_LOG", log)];
        all.extend_from_slice(env);
        Daemon::start_with_env(&config, &all)
    }
}

/// The test config ([`common::test_config`]) with the `[video]` keys in `video` replacing
/// its own, and `more` tables added.
fn config(video: &str, more: &str) -> String {
    let mut base = common::test_config("", "");
    for line in video.lines() {
        let key = line.split('=').next().unwrap_or_default().trim();
        // The [video] table's own line for this key, if it has one (it comes first).
        if let Some(start) = base.find(&format!("\n{key} = ")) {
            let end = base[start + 1..]
                .find('\n')
                .map_or(base.len(), |e| start + 1 + e);
            if base[..start].contains("[video]") && !base[..start].contains("[audio]") {
                base.replace_range(start..end, "");
            }
        }
    }
    base.replace("[video]\n", &format!("[video]\n{video}\n"))
        .replace("[audio]", &format!("{more}\n\n[audio]"))
}

/// Every log line that arrived so far (the start's too).
fn log_lines(daemon: &Daemon) -> Vec<String> {
    let mut lines = daemon.startup_log.clone();
    lines.extend(daemon.log.try_iter());
    lines
}

/// The pids of the daemon's children named `rpicam-vid` (the stand-in's comm is its file
/// name, `rpicam_vid_stand`, cut at 15 characters, so the parent is what is matched).
fn children(daemon_pid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(daemon_pid) {
            pids.push(pid);
        }
    }
    pids
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// H.264 mode: the stand-in's Constrained Baseline stream reaches the viewer as it is (the
/// answer announces its profile-level-id, read from its SPS), rpicam-vid gets what the
/// config says, and a SIGTERM stops it with the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_camera_modules_h264_is_passed_through() {
    let standin = Standin::new();
    let mut daemon = standin.daemon(
        "source = \"rpicam\"\nformat = \"h264\"\ncodecs = [\"h264\"]\nbitrate_kbps = 900",
        "[rpicam]\ncamera = 1\nrotation = 180\nhflip = true\nextra_args = [\"--denoise\", \"cdn_off\"]",
        &[],
    );
    // The camera's profile is known once its first access unit went through the hub.
    let line = daemon.wait_for_log("camera H.264 profile-level-id", Duration::from_secs(10));
    assert!(line.contains("42c00d (320x240)"), "{line}");
    let (mut ws, _) = connect(&daemon.ws_url("")).await;
    let (pc, client, mut cands) = client(&[h264()]).await;
    let answer = dial(&mut ws, &pc, &mut cands, Duration::from_secs(15), || {
        client.video_frames.load(Ordering::Relaxed) >= 60
    })
    .await;
    let sdp = answer["sdp"]["sdp"].as_str().expect("answer sdp");
    // 42c00d is Constrained Baseline (constraint_set1) at level 1.3: the answer names it
    // as the offer's form of that profile (42e0) with the camera's level.
    assert!(
        sdp.contains("profile-level-id=42e00d"),
        "the answer names the camera's profile: {sdp}"
    );
    assert!(client.video_frames.load(Ordering::Relaxed) >= 60);
    let profiles = client.sps_profiles.lock().unwrap().clone();
    assert!(
        !profiles.is_empty() && profiles.iter().all(|p| *p == 0x42),
        "{profiles:?}"
    );
    let passed = metric(
        daemon.port,
        "peercam_frames_encoded_total{codec=\"h264-camera\"}",
    )
    .await
    .unwrap_or(0.0);
    assert!(passed >= 30.0, "passed-through frames: {passed}");

    let runs = standin.streaming_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0],
        "--timeout 0 --nopreview --camera 1 --width 320 --height 240 --framerate 30 --codec \
         h264 --inline --intra 30 --profile baseline --bitrate 900kbps --flush --rotation 180 \
         --hflip --denoise cdn_off --output -"
    );
    let log = log_lines(&daemon).join("\n");
    assert!(
        log.contains("keyframe requests cannot reach the Pi's H.264 encoder"),
        "{log}"
    );

    send_text(&mut ws, r#"{"bye": {}}"#).await;
    let _ = pc.close().await;
    let kids = children(daemon.pid());
    assert_eq!(kids.len(), 1, "one rpicam-vid: {kids:?}");
    let (status, took) = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    assert!(
        !alive(kids[0]),
        "rpicam-vid {} outlived the daemon",
        kids[0]
    );
}

/// Raw mode: I420 from rpicam-vid, encoded by peercam. A width that is not a multiple of 64
/// is asked for wider (rows without padding) and cropped: the encoder gets exactly the
/// configured size, or it would refuse every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frames_are_encoded_by_peercam() {
    let standin = Standin::new();
    let daemon = standin.daemon(
        "source = \"rpicam\"\nformat = \"yu12\"\nwidth = 360",
        "",
        &[],
    );
    let v = viewer(&daemon, 60).await;
    let encoded = metric(daemon.port, "peercam_frames_encoded_total{codec=\"h264\"}")
        .await
        .unwrap_or(0.0);
    assert!(encoded >= 30.0, "frames encoded by peercam: {encoded}");
    let runs = standin.streaming_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        runs[0].contains("--width 384 --height 240 --framerate 30 --codec yuv420 --flush"),
        "{runs:?}"
    );
    let log = log_lines(&daemon).join("\n");
    assert!(log.contains("cropped to 360x240"), "{log}");
    assert!(!log.contains("frame skipped"), "{log}");
    v.hang_up().await;
}

/// rpicam-vid exits once: the outage is logged once with its error, viewers get the
/// placeholder without a gap, and the stream comes back from a new rpicam-vid about a
/// second later without anyone dialing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exiting_rpicam_vid_is_restarted_and_the_placeholder_fills_the_gap() {
    let standin = Standin::new();
    let once = standin.once_path();
    let once = once.to_str().expect("utf-8");
    let daemon = standin.daemon(
        "source = \"rpicam\"\nformat = \"h264\"",
        "",
        &[
            ("RPICAM_STANDIN_EXIT_AFTER", "60"),
            ("RPICAM_STANDIN_ONCE", once),
        ],
    );
    let v = viewer(&daemon, 10).await;
    let line = daemon.wait_for_log("rpicam-vid exited", Duration::from_secs(10));
    assert!(
        line.contains("exited with status 1; it said: ERROR: *** simulated camera failure")
            && line.contains("showing \"camera disconnected\""),
        "{line}"
    );
    // Frames keep coming through the outage (placeholder, then the camera again).
    let mut last = v.frames();
    let mut longest_gap = Duration::ZERO;
    let mut since = Instant::now();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = v.frames();
        if now > last {
            longest_gap = longest_gap.max(since.elapsed());
            since = Instant::now();
            last = now;
        }
    }
    assert!(
        longest_gap < Duration::from_millis(700),
        "the viewer saw no frame for {longest_gap:?}"
    );
    daemon.wait_for_log("rpicam-vid is streaming again", Duration::from_secs(5));
    assert_eq!(standin.streaming_runs().len(), 2);
    let more = log_lines(&daemon).join("\n");
    assert!(
        !more.contains("rpicam-vid exited"),
        "one line per outage: {more}"
    );
    let before = v.frames();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(v.frames() >= before + 20, "the camera's stream resumed");
    v.hang_up().await;
}

/// rpicam-vid stops writing but keeps running: after 2 s it is killed and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_rpicam_vid_is_killed_and_restarted() {
    let standin = Standin::new();
    let once = standin.once_path();
    let once = once.to_str().expect("utf-8");
    let daemon = standin.daemon(
        "source = \"rpicam\"\nformat = \"yu12\"",
        "",
        &[
            ("RPICAM_STANDIN_STALL_AFTER", "20"),
            ("RPICAM_STANDIN_ONCE", once),
        ],
    );
    wait_until("a first rpicam-vid", Duration::from_secs(5), || {
        children(daemon.pid()).len() == 1
    })
    .await;
    let stalled = children(daemon.pid())[0];
    let line = daemon.wait_for_log("stalled", Duration::from_secs(10));
    assert!(line.contains("sent no frame for 2 s (stalled)"), "{line}");
    daemon.wait_for_log("rpicam-vid is streaming again", Duration::from_secs(5));
    assert!(
        !alive(stalled),
        "the stalled rpicam-vid {stalled} was not stopped"
    );
    assert_eq!(children(daemon.pid()).len(), 1);
    let v = viewer(&daemon, 30).await;
    v.hang_up().await;
}

/// rpicam-vid that cannot start (no camera connected, say): one warning with its error,
/// starts spaced out by a growing backoff, and the daemon serves the placeholder meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_cannot_start_backs_off_and_the_daemon_keeps_serving() {
    let standin = Standin::new();
    let daemon = standin.daemon(
        "source = \"rpicam\"\nformat = \"h264\"",
        "",
        &[("RPICAM_STANDIN_FAIL", "no cameras available")],
    );
    let line = daemon.wait_for_log("rpicam: rpicam-vid exited", Duration::from_secs(5));
    assert!(
        line.contains("exited with status 1; it said: ERROR: *** no cameras available ***"),
        "{line}"
    );
    let v = viewer(&daemon, 30).await;
    // Starts at about 0, 1, 3, 7 s: four in 5 s at most, not one per frame.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let starts = standin.streaming_runs().len();
    assert!((2..=4).contains(&starts), "{starts} starts in about 5 s");
    let log = log_lines(&daemon).join("\n");
    assert!(
        !log.contains("rpicam: rpicam-vid exited"),
        "one warning: {log}"
    );
    v.hang_up().await;
}

/// A reload that changes `[rpicam]` stops the old rpicam-vid and starts one with the new
/// arguments (the camera can be opened by one process at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_rpicam_vid_with_the_new_settings() {
    let standin = Standin::new();
    let daemon = standin.daemon(
        "source = \"rpicam\"\nformat = \"yu12\"",
        "[rpicam]\nrotation = 0",
        &[],
    );
    wait_until("a first rpicam-vid", Duration::from_secs(5), || {
        children(daemon.pid()).len() == 1
    })
    .await;
    let first = children(daemon.pid())[0];
    let config = std::fs::read_to_string(&daemon.config_path).expect("config");
    std::fs::write(
        &daemon.config_path,
        config.replace("rotation = 0", "rotation = 180"),
    )
    .expect("rewrite config");
    daemon.signal("HUP");
    wait_until("the reloaded rpicam-vid", Duration::from_secs(10), || {
        standin.streaming_runs().len() == 2
    })
    .await;
    assert!(!alive(first), "the old rpicam-vid {first} still runs");
    let runs = standin.streaming_runs();
    assert!(
        runs[1].contains("--flush --rotation 180 --output -"),
        "{runs:?}"
    );
    daemon.wait_for_log("([rpicam] changed;", Duration::from_secs(5));
    let v = viewer(&daemon, 30).await;
    v.hang_up().await;
}

/// `auto` takes the Camera Module when rpicam-vid lists one, and looks elsewhere when it
/// lists none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_the_camera_module_when_rpicam_vid_lists_one() {
    let standin = Standin::new();
    let daemon = standin.daemon("source = \"auto\"", "", &[]);
    let line = log_lines(&daemon)
        .into_iter()
        .find(|l| l.contains("video.source = \"auto\""))
        .expect("a line on what auto found");
    assert!(
        line.contains("using the Camera Module 0 (imx219) through rpicam-vid"),
        "{line}"
    );
    // Not a Pi: no hardware encoder, so raw frames.
    assert!(line.contains("raw frames encoded by peercam"), "{line}");
    let v = viewer(&daemon, 30).await;
    v.hang_up().await;
    drop(daemon);

    let none = Standin::new();
    let daemon = none.daemon(
        "source = \"auto\"",
        "",
        &[("RPICAM_STANDIN_CAMERAS", "none")],
    );
    let log = log_lines(&daemon).join("\n");
    assert!(
        log.contains("video.source = \"auto\": rpicam-vid lists no Camera Module"),
        "{log}"
    );
    assert!(none.streaming_runs().is_empty());
    assert_eq!(none.runs().len(), 1, "one --list-cameras run");
}

/// `--list-devices` shows the Camera Module rpicam-vid lists, and that `auto` takes it.
#[test]
fn list_devices_shows_the_camera_module() {
    let standin = Standin::new();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_peercam"))
        .arg("--list-devices")
        .env("PATH", standin.path_var())
        .output()
        .expect("run peercam --list-devices");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Camera Modules (rpicam-vid)\n  0  imx219  3280x2464"),
        "{text}"
    );
    assert!(
        text.contains("video.source = \"auto\" uses camera 0 (imx219) through rpicam-vid"),
        "{text}"
    );
}
