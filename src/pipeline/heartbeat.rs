//! Liveness of the media threads, for the systemd watchdog.
//!
//! Every media thread owns a [`Beat`] and bumps it once per loop turn: the capture thread per
//! frame (real, placeholder while the camera is gone, or a failed read it will retry), the
//! audio thread per 20 ms chunk or retry, each output thread per frame or idle wait (at most
//! 200 ms apart). A thread blocked in a driver call, a deadlock or an endless loop outside
//! those points stops its beat. [`Monitor::check`] names the threads whose beat has not moved
//! for longer than the stall limit; the daemon pings the watchdog only while there are none,
//! so systemd restarts a stuck pipeline instead of a timer keeping it "alive".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One thread's progress counter.
#[derive(Debug, Clone, Default)]
pub struct Beat(Arc<AtomicU64>);

impl Beat {
    /// Records one turn of the thread's loop.
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The beats of all threads of one media pipeline.
#[derive(Debug, Default)]
pub struct Heartbeat {
    beats: Mutex<Vec<(String, Beat)>>,
}

impl Heartbeat {
    /// A new beat for the thread called `name`.
    pub fn register(&self, name: &str) -> Beat {
        let beat = Beat::default();
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_owned(), beat.clone()));
        beat
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, beat)| (name.clone(), beat.count()))
            .collect()
    }
}

/// Watches one [`Heartbeat`]: remembers when each thread last made progress.
#[derive(Debug)]
pub struct Monitor {
    stall_after: Duration,
    /// Per thread: last count seen and when it last changed.
    last: Vec<(String, u64, Instant)>,
}

impl Monitor {
    /// A monitor that calls a thread stalled after `stall_after` without progress.
    pub fn new(stall_after: Duration) -> Monitor {
        Monitor {
            stall_after,
            last: Vec::new(),
        }
    }

    /// The names of the threads that made no progress for longer than the stall limit, as
    /// of `now`. A thread seen for the first time counts as having just made progress.
    pub fn check(&mut self, heartbeat: &Heartbeat, now: Instant) -> Vec<String> {
        let mut stalled = Vec::new();
        let mut next = Vec::new();
        for (name, count) in heartbeat.snapshot() {
            let since = match self.last.iter().find(|(n, _, _)| *n == name) {
                Some((_, last_count, since)) if *last_count == count => *since,
                _ => now,
            };
            if now.saturating_duration_since(since) > self.stall_after {
                stalled.push(name.clone());
            }
            next.push((name, count, since));
        }
        self.last = next;
        stalled
    }

    /// Forgets every thread (the pipeline was replaced).
    pub fn reset(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(2);

    #[test]
    fn a_thread_that_stops_beating_is_named_after_the_limit() {
        let heartbeat = Heartbeat::default();
        let video = heartbeat.register("peercam-video");
        let audio = heartbeat.register("peercam-audio");
        let mut monitor = Monitor::new(LIMIT);
        let t0 = Instant::now();
        assert!(monitor.check(&heartbeat, t0).is_empty());
        // Both beat for a while.
        for s in 1..=3 {
            video.beat();
            audio.beat();
            assert!(monitor
                .check(&heartbeat, t0 + Duration::from_secs(s))
                .is_empty());
        }
        // The video thread hangs at 3 s; audio goes on.
        for s in 4..=5 {
            audio.beat();
            assert!(monitor
                .check(&heartbeat, t0 + Duration::from_secs(s))
                .is_empty());
        }
        audio.beat();
        assert_eq!(
            monitor.check(&heartbeat, t0 + Duration::from_millis(5_100)),
            vec!["peercam-video".to_owned()]
        );
        // It recovers: healthy again at once.
        video.beat();
        audio.beat();
        assert!(monitor
            .check(&heartbeat, t0 + Duration::from_secs(6))
            .is_empty());
    }

    #[test]
    fn checks_without_progress_in_between_do_not_reset_the_clock() {
        let heartbeat = Heartbeat::default();
        let _output = heartbeat.register("peercam-h264");
        let mut monitor = Monitor::new(LIMIT);
        let t0 = Instant::now();
        for ms in (0..=2_000).step_by(250) {
            assert!(monitor
                .check(&heartbeat, t0 + Duration::from_millis(ms))
                .is_empty());
        }
        assert_eq!(
            monitor.check(&heartbeat, t0 + Duration::from_millis(2_250)),
            vec!["peercam-h264".to_owned()]
        );
    }

    #[test]
    fn a_new_pipeline_starts_healthy_after_reset() {
        let old = Heartbeat::default();
        let _stuck = old.register("peercam-video");
        let mut monitor = Monitor::new(LIMIT);
        let t0 = Instant::now();
        monitor.check(&old, t0);
        assert_eq!(monitor.check(&old, t0 + LIMIT * 2).len(), 1);
        monitor.reset();
        let new = Heartbeat::default();
        let _fresh = new.register("peercam-video");
        assert!(monitor.check(&new, t0 + LIMIT * 2).is_empty());
    }
}
