//! Soak: webrtc-rs viewers join and leave the real daemon every few seconds (1 to 4 at a
//! time, each staying 2 to 6 s) for `PEERCAM_SOAK_SECONDS` (45 by default, for CI; the
//! figures in BENCHMARKS.md are from a 600 s run:
//! `PEERCAM_SOAK_SECONDS=600 cargo test --test it soak:: -- --nocapture`).
//!
//! Memory is compared at equal load, which is what makes a 1 MB bound honest: RSS moves by
//! megabytes with the number of viewers in a call at the moment it is read, so after the
//! warm-up (a quarter of the run, at least 15 s) and again at the end everyone hangs up and
//! the daemon is measured with nobody connected (the median of several readings). Between
//! the two, RSS may grow by at most 1 MB in a run of 5 minutes or more (4 MB in a shorter
//! one: see [`SETTLED_RUN`]), and file descriptors and tokio tasks must be exactly the same.
//! RSS is also sampled every 3 s during the run and reported.

use crate::common;

use std::time::{Duration, Instant};

use common::probe::{
    back_to_baseline, median, resources, rss_kib, steady_resources, viewer, Resources,
};
use common::{test_config, Daemon};

/// Allowed RSS growth between the idle checkpoints after the warm-up and at the end, for a
/// run of at least [`SETTLED_RUN`].
const MAX_GROWTH_KIB: u64 = 1024;
/// The allocator's heap takes a few minutes of churn to reach its steady size. Measured
/// (BENCHMARKS.md, "Soak"): in the 600 s run, RSS rose from 21.3 MB at 15 s to about 24 MB
/// by 170 s and stayed there (idle checkpoints at 150, 300, 450 and 600 s: 23.0, 24.2, 23.3,
/// 23.3 MB); in a 45 s run the idle daemon still went from 21.5 MB at 17 s to 23.2 MB at
/// the end. So a run shorter than [`SETTLED_RUN`] (CI) allows [`SHORT_RUN_GROWTH_KIB`],
/// which still catches a leak of a peer connection per viewer; fds and tasks, the exact leak
/// detectors, must match in every run.
const SETTLED_RUN: Duration = Duration::from_secs(300);
/// Allowed RSS growth in a run shorter than [`SETTLED_RUN`].
const SHORT_RUN_GROWTH_KIB: u64 = 4096;

/// A small deterministic generator (xorshift64*), so every run follows the same schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// The daemon idle (nobody connected): resources once steady, and the median of seven RSS
/// readings 200 ms apart.
async fn idle_checkpoint(daemon: &Daemon) -> (Resources, u64) {
    let resources = steady_resources(daemon.port).await;
    let mut rss = Vec::new();
    for _ in 0..7 {
        rss.push(rss_kib(daemon.pid()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (resources, median(&rss))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_joining_and_leaving_leak_nothing() {
    let seconds: u64 = std::env::var("PEERCAM_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let run = Duration::from_secs(seconds);
    let warm_up = (run / 4).max(Duration::from_secs(15));
    assert!(
        run > warm_up,
        "PEERCAM_SOAK_SECONDS = {seconds} is shorter than the warm-up"
    );
    let daemon = Daemon::start(&test_config(
        "",
        &format!(
            "{}max_viewers = 8\nmax_pending_dials = 4\ndials_per_minute = 600",
            common::MANY_CLIENTS
        ),
    ));
    let start_rss = rss_kib(daemon.pid());
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut active = Vec::new();
    let mut target = 1;
    let mut next_target = Instant::now();
    let (mut joined, mut left, mut frames) = (0u64, 0u64, 0u64);
    // (seconds since start, viewers in a call, RSS KiB, fds)
    let mut samples: Vec<(u64, usize, u64, u64)> = Vec::new();
    let mut next_sample = Instant::now();
    let mut warm: Option<(Resources, u64, usize)> = None;
    // Idle checkpoints: after the warm-up, then at a third and two thirds of the rest (for
    // the trend in the log), and at the end.
    let mut checkpoints: Vec<(u64, u64)> = Vec::new();
    let third = (run - warm_up) / 3;
    let mut next_checkpoint = warm_up;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while start.elapsed() < run {
        tick.tick().await;
        let now = Instant::now();
        if start.elapsed() >= next_checkpoint && start.elapsed() + third / 2 < run {
            // Everyone hangs up, and the idle daemon is measured.
            for (v, _, at_join, joined_at) in active.drain(..) {
                frames += leave(v, at_join, joined_at).await;
                left += 1;
            }
            let (res, rss) = idle_checkpoint(&daemon).await;
            eprintln!(
                "soak: idle checkpoint at {:?} ({joined} viewers so far): {res}, RSS {rss} KiB",
                start.elapsed()
            );
            checkpoints.push((start.elapsed().as_secs(), rss));
            if let Some((warm_res, ..)) = warm {
                assert_eq!(res, warm_res, "idle fds/tasks changed since the warm-up");
            } else {
                warm = Some((res, rss, samples.len()));
            }
            next_checkpoint += third;
            next_target = Instant::now();
            continue;
        }
        // Viewers whose time is up hang up.
        let mut i = 0;
        while i < active.len() {
            if active[i].1 <= now {
                let (v, _, at_join, joined_at) = active.swap_remove(i);
                frames += leave(v, at_join, joined_at).await;
                left += 1;
            } else {
                i += 1;
            }
        }
        if now >= next_target {
            target = rng.range(1, 4) as usize;
            next_target = now + Duration::from_secs(rng.range(3, 8));
        }
        if active.len() < target {
            let v = viewer(&daemon, 10).await;
            let stay = Duration::from_millis(rng.range(2000, 6000));
            let at_join = v.frames();
            active.push((v, Instant::now() + stay, at_join, Instant::now()));
            joined += 1;
        }
        if now >= next_sample {
            let res = resources(daemon.port).await;
            samples.push((
                start.elapsed().as_secs(),
                active.len(),
                rss_kib(daemon.pid()),
                res.fds,
            ));
            next_sample = now + Duration::from_secs(3);
        }
    }
    for (v, _, at_join, joined_at) in active.drain(..) {
        frames += leave(v, at_join, joined_at).await;
        left += 1;
    }
    let (warm_res, warm_rss, warm_index) = warm.expect("warm-up checkpoint");
    let settled = back_to_baseline(
        daemon.port,
        warm_res,
        Duration::from_secs(15),
        &format!("{left} viewers left"),
    )
    .await;
    let (end_res, end_rss) = idle_checkpoint(&daemon).await;
    checkpoints.push((start.elapsed().as_secs(), end_rss));
    let growth = end_rss as i64 - warm_rss as i64;
    let allowed = if run >= SETTLED_RUN {
        MAX_GROWTH_KIB
    } else {
        SHORT_RUN_GROWTH_KIB
    };

    // The running samples, for the record: medians of the first and last quarter after the
    // warm-up (they mix viewer counts, so they are reported, not asserted).
    let after: Vec<_> = samples[warm_index..].iter().map(|s| s.2).collect();
    let quarter = (after.len() / 4).max(1);
    let early = median(&after[..quarter.min(after.len())]);
    let late = median(&after[after.len().saturating_sub(quarter)..]);
    let fds: Vec<_> = samples.iter().map(|s| s.3).collect();
    eprintln!("soak samples (s, viewers, RSS KiB, fds): {samples:?}");
    eprintln!(
        "soak summary: {seconds} s, warm-up {warm_up:?}; viewers joined {joined}, left {left}; \
         {frames} video frames received; RSS at start {start_rss} KiB, idle after warm-up \
         {warm_rss} KiB, idle at end {end_rss} KiB, growth {growth} KiB; running median \
         {early} -> {late} KiB, peak {} KiB; fds idle {} -> {}, during the run {}..{}; tasks \
         idle {} -> {}; settled in {settled:?}; growth allowed {allowed} KiB; idle RSS checkpoints (s, KiB) {checkpoints:?}",
        samples.iter().map(|s| s.2).max().unwrap_or(0),
        warm_res.fds,
        end_res.fds,
        fds.iter().min().unwrap_or(&0),
        fds.iter().max().unwrap_or(&0),
        warm_res.tasks,
        end_res.tasks,
    );
    assert_eq!(joined, left);
    assert!(
        joined >= seconds / 4,
        "only {joined} viewers joined in {seconds} s"
    );
    assert_eq!(
        end_res, warm_res,
        "idle fds/tasks after the warm-up {warm_res}, at the end {end_res}"
    );
    assert!(
        growth <= allowed as i64,
        "idle RSS grew by {growth} KiB after the warm-up ({warm_rss} -> {end_rss} KiB; \
         allowed {allowed} KiB in a {seconds} s run)"
    );
}

/// Hangs up `v` and returns the video frames it received in its call; each viewer must
/// have received video for all of its stay (20 fps, less a third of a second for the last
/// frames in flight).
async fn leave<P: webrtc::peer_connection::PeerConnection>(
    v: common::probe::Viewer<P>,
    at_join: u64,
    joined_at: Instant,
) -> u64 {
    let frames = v.frames();
    let stayed = joined_at.elapsed().as_secs_f64();
    let got = frames - at_join;
    v.hang_up().await;
    assert!(
        got as f64 >= 20.0 * stayed - 10.0,
        "a viewer got {got} video frames in its {stayed:.1} s in the call"
    );
    frames
}
