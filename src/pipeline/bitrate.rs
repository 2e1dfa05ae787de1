//! Adaptive bitrate: the viewers' congestion feedback moves one shared encoder's target.
//!
//! Each viewer has an estimate of what its link carries:
//! - **REMB** (the browser's receiver-side estimate) when the browser sends it; it is taken
//!   as it is and expires [`REMB_LIFETIME`] after the last one;
//! - **loss** from its receiver reports: above [`LOSS_HIGH`] the loss-based estimate drops to
//!   [`LOSS_DECREASE`] times what it was (or times the viewer's current estimate), below
//!   [`LOSS_LOW`] it grows by [`LOSS_INCREASE`] per report. For a viewer that sends REMB, loss
//!   is a brake under the REMB value and is released once it grows back to it. A viewer that
//!   has not sent REMB yet is not pushed up by clean reports for its first [`REMB_GRACE`]
//!   (browsers send their first REMB a few seconds into the call, below the start bitrate).
//!
//! The encoder's target is the lowest viewer estimate, clamped to
//! `[video] min_bitrate_kbps..=max_bitrate_kbps`; while two or more viewers share the encoder
//! it stays at or above `[video] multi_viewer_floor_kbps`. Changes are hysteretic: moves under
//! [`DEADBAND`] are ignored; a decrease happens at once but at most every
//! [`DOWN_INTERVAL`]; an increase at most every [`UP_INTERVAL`] and by at most
//! [`MAX_UP_STEP`] times the current target (fast down, slow up). A viewer that leaves drops
//! out of the minimum; with nobody left the target returns to `[video] bitrate_kbps` at once.
//!
//! [`BitratePolicy`] is the sans-IO decision (time is passed in); [`BitrateController`] shares
//! it between the viewers' RTCP tasks and the encoder thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::info;
use tokio::sync::watch;

/// A REMB value counts this long after it arrived.
pub const REMB_LIFETIME: Duration = Duration::from_secs(5);
/// How long a new viewer's clean receiver reports wait for its first REMB before they raise
/// its estimate.
pub const REMB_GRACE: Duration = Duration::from_secs(10);
/// Loss above this fraction lowers a viewer's estimate.
pub const LOSS_HIGH: f64 = 0.10;
/// Loss below this fraction raises a viewer's loss-based estimate.
pub const LOSS_LOW: f64 = 0.02;
/// Factor applied per receiver report with loss above [`LOSS_HIGH`].
pub const LOSS_DECREASE: f64 = 0.85;
/// Factor applied per receiver report with loss below [`LOSS_LOW`].
pub const LOSS_INCREASE: f64 = 1.05;
/// Target moves smaller than this fraction of the current target are ignored.
pub const DEADBAND: f64 = 0.05;
/// Least time between a change and a following decrease.
pub const DOWN_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between a change and a following increase.
pub const UP_INTERVAL: Duration = Duration::from_secs(2);
/// An increase goes at most to this multiple of the current target.
pub const MAX_UP_STEP: f64 = 1.5;

/// The configured bitrates, in kbit/s (`[video]` keys; validated `min <= start, floor <= max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitrateLimits {
    /// `bitrate_kbps`: the target at start and with no viewers.
    pub start_kbps: u32,
    /// `min_bitrate_kbps`.
    pub min_kbps: u32,
    /// `max_bitrate_kbps`.
    pub max_kbps: u32,
    /// `multi_viewer_floor_kbps`: the lowest target while two or more viewers watch.
    pub floor_kbps: u32,
}

impl BitrateLimits {
    fn clamp(&self, kbps: f64) -> u32 {
        // In range after the clamp, so the cast cannot truncate.
        kbps.clamp(f64::from(self.min_kbps), f64::from(self.max_kbps)) as u32
    }
}

/// Congestion feedback from one viewer about the video stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feedback {
    /// Receiver Estimated Maximum Bitrate, in bit/s.
    Remb {
        /// The browser's estimate.
        bitrate_bps: u64,
    },
    /// A receiver report's fraction lost since the previous report (RTCP: 0..=255 of 256).
    Loss {
        /// Lost fraction, in 1/256.
        fraction_lost: u8,
    },
}

/// A viewer's handle in a [`BitratePolicy`].
pub type ViewerId = u64;

#[derive(Debug, Clone, Copy)]
struct ViewerEstimate {
    /// When the viewer joined.
    joined: Instant,
    /// Latest REMB in kbit/s and when it arrived.
    remb: Option<(u32, Instant)>,
    /// The loss-based estimate in kbit/s; `None` while loss does not limit this viewer.
    loss_kbps: Option<u32>,
}

impl ViewerEstimate {
    fn fresh_remb(&self, now: Instant) -> Option<u32> {
        self.remb
            .filter(|(_, at)| now.saturating_duration_since(*at) < REMB_LIFETIME)
            .map(|(kbps, _)| kbps)
    }

    /// What this viewer's link carries, if it has said anything yet.
    fn estimate(&self, now: Instant) -> Option<u32> {
        match (self.fresh_remb(now), self.loss_kbps) {
            (Some(r), Some(l)) => Some(r.min(l)),
            (r, l) => r.or(l),
        }
    }
}

/// The sans-IO adaptive bitrate decision for one encoder (see the module documentation).
#[derive(Debug)]
pub struct BitratePolicy {
    limits: BitrateLimits,
    viewers: BTreeMap<ViewerId, ViewerEstimate>,
    next_id: ViewerId,
    target_kbps: u32,
    last_change: Option<Instant>,
}

impl BitratePolicy {
    /// A policy at `limits.start_kbps` with no viewers.
    pub fn new(limits: BitrateLimits) -> Self {
        BitratePolicy {
            limits,
            viewers: BTreeMap::new(),
            next_id: 0,
            target_kbps: limits.start_kbps,
            last_change: None,
        }
    }

    /// The current target in kbit/s.
    pub fn target_kbps(&self) -> u32 {
        self.target_kbps
    }

    /// Viewers taking part.
    pub fn viewers(&self) -> usize {
        self.viewers.len()
    }

    /// A new viewer (joining at `now`); it has no say until its first feedback.
    pub fn join(&mut self, now: Instant) -> ViewerId {
        let id = self.next_id;
        self.next_id += 1;
        let viewer = ViewerEstimate {
            joined: now,
            remb: None,
            loss_kbps: None,
        };
        self.viewers.insert(id, viewer);
        id
    }

    /// The viewer leaves the minimum (unknown ids are ignored).
    pub fn leave(&mut self, id: ViewerId) {
        self.viewers.remove(&id);
    }

    /// Takes one viewer's feedback into its estimate (the target moves in [`Self::decide`]).
    pub fn feedback(&mut self, id: ViewerId, feedback: Feedback, now: Instant) {
        let (limits, target) = (self.limits, self.target_kbps);
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        match feedback {
            Feedback::Remb { bitrate_bps } => {
                let kbps = u32::try_from(bitrate_bps / 1000).unwrap_or(u32::MAX);
                viewer.remb = Some((kbps, now));
            }
            Feedback::Loss { fraction_lost } => {
                let loss = f64::from(fraction_lost) / 256.0;
                let remb = viewer.fresh_remb(now);
                let waiting_for_remb = viewer.remb.is_none()
                    && now.saturating_duration_since(viewer.joined) < REMB_GRACE;
                let base = f64::from(
                    viewer
                        .loss_kbps
                        .or_else(|| viewer.estimate(now))
                        .unwrap_or(target),
                );
                viewer.loss_kbps = if loss > LOSS_HIGH {
                    Some(limits.clamp(base * LOSS_DECREASE))
                } else if loss < LOSS_LOW {
                    match (viewer.loss_kbps, remb) {
                        _ if waiting_for_remb => viewer.loss_kbps,
                        // With REMB, loss is only a brake: released once back at the REMB value.
                        (None, Some(_)) => None,
                        (Some(_), Some(r)) if base * LOSS_INCREASE >= f64::from(r) => None,
                        _ => Some(limits.clamp(base * LOSS_INCREASE)),
                    }
                } else if remb.is_some() {
                    viewer.loss_kbps
                } else {
                    Some(limits.clamp(base))
                };
            }
        }
    }

    /// The target the viewers' estimates ask for, before hysteresis; `None` when viewers watch
    /// but none has sent feedback yet.
    pub fn wanted_kbps(&self, now: Instant) -> Option<u32> {
        if self.viewers.is_empty() {
            return Some(self.limits.start_kbps);
        }
        let lowest = self
            .viewers
            .values()
            .filter_map(|v| v.estimate(now))
            .min()?;
        let mut wanted = self.limits.clamp(f64::from(lowest));
        if self.viewers.len() >= 2 {
            wanted = wanted.max(self.limits.floor_kbps);
        }
        Some(wanted)
    }

    /// Moves the target toward [`Self::wanted_kbps`] as the hysteresis allows; returns the new
    /// target when it changed.
    pub fn decide(&mut self, now: Instant) -> Option<u32> {
        let wanted = self.wanted_kbps(now)?;
        let current = self.target_kbps;
        if wanted == current {
            return None;
        }
        let since_change = self
            .last_change
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let next = if self.viewers.is_empty() {
            // Nobody watches: back to the configured start at once.
            wanted
        } else {
            let at_bound = wanted == self.limits.min_kbps || wanted == self.limits.max_kbps;
            let small = f64::from(wanted.abs_diff(current)) < f64::from(current) * DEADBAND;
            if small && !at_bound {
                return None;
            }
            if wanted < current {
                if since_change < DOWN_INTERVAL {
                    return None;
                }
                wanted
            } else {
                if since_change < UP_INTERVAL {
                    return None;
                }
                wanted.min(self.limits.clamp(f64::from(current) * MAX_UP_STEP))
            }
        };
        self.target_kbps = next;
        self.last_change = Some(now);
        Some(next)
    }
}

/// A [`BitratePolicy`] shared by one encoder output's viewers and its encoder thread.
#[derive(Debug)]
pub struct BitrateController {
    /// The output's label for the log (`h264`, `av1`).
    label: String,
    policy: Mutex<BitratePolicy>,
    target: watch::Sender<u32>,
    changes: AtomicU64,
}

impl BitrateController {
    /// A controller for the output `label`, starting at `limits.start_kbps`.
    pub fn new(label: &str, limits: BitrateLimits) -> Arc<Self> {
        Arc::new(BitrateController {
            label: label.to_owned(),
            policy: Mutex::new(BitratePolicy::new(limits)),
            target: watch::Sender::new(limits.start_kbps),
            changes: AtomicU64::new(0),
        })
    }

    /// The encoder's target in kbit/s.
    pub fn target_kbps(&self) -> u32 {
        *self.target.borrow()
    }

    /// How often the target changed.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Follows the target (for the viewers' pages).
    pub fn subscribe(&self) -> watch::Receiver<u32> {
        self.target.subscribe()
    }

    /// Adds a viewer; it leaves when the handle is dropped.
    pub fn join(self: &Arc<Self>) -> ViewerBitrate {
        let id = self.lock().join(Instant::now());
        ViewerBitrate {
            controller: self.clone(),
            id,
        }
    }

    /// Lets the policy move the target (the encoder thread calls this every frame, so a
    /// change held back by the hysteresis still happens without new feedback).
    pub fn tick(&self, now: Instant) {
        let mut policy = self.lock();
        self.apply(&mut policy, now);
    }

    fn apply(&self, policy: &mut BitratePolicy, now: Instant) {
        let before = policy.target_kbps();
        if let Some(kbps) = policy.decide(now) {
            self.changes.fetch_add(1, Ordering::Relaxed);
            self.target.send_replace(kbps);
            info!(
                "{} target bitrate {before} -> {kbps} kbit/s ({} viewer(s))",
                self.label,
                policy.viewers()
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BitratePolicy> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One viewer's place in a [`BitrateController`]; dropping it removes the viewer.
#[derive(Debug)]
pub struct ViewerBitrate {
    controller: Arc<BitrateController>,
    id: ViewerId,
}

impl ViewerBitrate {
    /// Takes this viewer's feedback and lets the target move.
    pub fn feedback(&self, feedback: Feedback, now: Instant) {
        let mut policy = self.controller.lock();
        policy.feedback(self.id, feedback, now);
        self.controller.apply(&mut policy, now);
    }
}

impl Drop for ViewerBitrate {
    fn drop(&mut self) {
        let mut policy = self.controller.lock();
        policy.leave(self.id);
        self.controller.apply(&mut policy, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BitrateLimits = BitrateLimits {
        start_kbps: 1000,
        min_kbps: 150,
        max_kbps: 2500,
        floor_kbps: 400,
    };

    fn remb(kbps: u64) -> Feedback {
        Feedback::Remb {
            bitrate_bps: kbps * 1000,
        }
    }

    fn loss(percent: u32) -> Feedback {
        Feedback::Loss {
            fraction_lost: u8::try_from(percent * 256 / 100).expect("fraction"),
        }
    }

    /// Feeds `feedback` every second for `seconds` and returns the target after each second.
    fn run(
        policy: &mut BitratePolicy,
        id: ViewerId,
        feedback: Feedback,
        start: Instant,
        seconds: u64,
    ) -> Vec<u32> {
        (1..=seconds)
            .map(|s| {
                let now = start + Duration::from_secs(s);
                policy.feedback(id, feedback, now);
                policy.decide(now);
                policy.target_kbps()
            })
            .collect()
    }

    #[test]
    fn starts_at_the_configured_bitrate_and_waits_for_feedback() {
        let mut p = BitratePolicy::new(LIMITS);
        let t0 = Instant::now();
        assert_eq!(p.target_kbps(), 1000);
        let _viewer = p.join(t0);
        assert_eq!(p.wanted_kbps(t0), None, "no feedback yet: no opinion");
        assert_eq!(p.decide(t0), None);
        assert_eq!(p.target_kbps(), 1000);
    }

    #[test]
    fn remb_moves_the_target_down_at_once_and_up_slowly_within_limits() {
        let mut p = BitratePolicy::new(LIMITS);
        let t0 = Instant::now();
        let v = p.join(t0);
        p.feedback(v, remb(300), t0);
        assert_eq!(p.decide(t0), Some(300), "fast down");
        // Below min_bitrate_kbps: clamped; the next decrease waits a second.
        p.feedback(v, remb(50), t0 + Duration::from_millis(500));
        assert_eq!(p.decide(t0 + Duration::from_millis(500)), None);
        assert_eq!(p.decide(t0 + Duration::from_secs(1)), Some(150));
        // A high REMB: +50 % at most every two seconds, up to max_bitrate_kbps.
        let up = run(&mut p, v, remb(10_000), t0 + Duration::from_secs(1), 14);
        assert_eq!(
            up,
            vec![150, 225, 225, 337, 337, 505, 505, 757, 757, 1135, 1135, 1702, 1702, 2500]
        );
    }

    #[test]
    fn small_moves_are_ignored_but_the_bounds_are_reached() {
        let mut p = BitratePolicy::new(LIMITS);
        let t0 = Instant::now();
        let v = p.join(t0);
        p.feedback(v, remb(970), t0);
        assert_eq!(p.decide(t0), None, "3 % below: deadband");
        p.feedback(v, remb(2400), t0 + Duration::from_secs(3));
        assert_eq!(p.decide(t0 + Duration::from_secs(3)), Some(1500));
        p.feedback(v, remb(2400), t0 + Duration::from_secs(6));
        assert_eq!(p.decide(t0 + Duration::from_secs(6)), Some(2250));
        p.feedback(v, remb(2400), t0 + Duration::from_secs(9));
        assert_eq!(p.decide(t0 + Duration::from_secs(9)), Some(2400));
        p.feedback(v, remb(2600), t0 + Duration::from_secs(12));
        assert_eq!(
            p.decide(t0 + Duration::from_secs(12)),
            Some(2500),
            "4 % but the maximum"
        );
    }

    #[test]
    fn a_new_viewers_clean_reports_wait_for_its_first_remb_but_loss_counts_at_once() {
        let mut p = BitratePolicy::new(LIMITS);
        let t0 = Instant::now();
        let v = p.join(t0);
        let clean = run(&mut p, v, loss(0), t0, 9);
        assert!(clean.iter().all(|t| *t == 1000), "{clean:?}");
        let lossy = run(&mut p, v, loss(20), t0 + Duration::from_secs(9), 1);
        assert_eq!(lossy, vec![850]);
    }

    #[test]
    fn loss_alone_steers_a_viewer_without_remb() {
        let mut p = BitratePolicy::new(LIMITS);
        let joined = Instant::now();
        let v = p.join(joined);
        // After the grace period: this viewer does not send REMB.
        let t0 = joined + REMB_GRACE;
        // 20 % loss: x0.85 per report from the current target.
        let down = run(&mut p, v, loss(20), t0, 3);
        assert_eq!(down, vec![850, 722, 613]);
        // 5 % loss: hold.
        let hold = run(&mut p, v, loss(5), t0 + Duration::from_secs(3), 3);
        assert_eq!(hold, vec![613, 613, 613]);
        // No loss: x1.05 per report; the target follows once the move is 5 % and two seconds
        // have passed since the last change.
        let up = run(&mut p, v, loss(0), t0 + Duration::from_secs(6), 6);
        assert_eq!(up, vec![613, 675, 675, 743, 743, 819]);
    }

    #[test]
    fn loss_brakes_remb_and_the_brake_is_released() {
        let mut p = BitratePolicy::new(LIMITS);
        let t0 = Instant::now();
        let v = p.join(t0);
        p.feedback(v, remb(2000), t0);
        p.feedback(v, loss(30), t0);
        assert_eq!(p.wanted_kbps(t0), Some(1700), "0.85 x the REMB value");
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_secs(1);
            p.feedback(v, remb(2000), now);
            p.feedback(v, loss(0), now);
        }
        assert_eq!(
            p.wanted_kbps(now),
            Some(2000),
            "brake released at the REMB value"
        );
    }

    #[test]
    fn a_stale_remb_no_longer_counts() {
        let mut p = BitratePolicy::new(LIMITS);
        let t0 = Instant::now();
        let v = p.join(t0);
        p.feedback(v, remb(500), t0);
        assert_eq!(p.wanted_kbps(t0 + Duration::from_secs(4)), Some(500));
        assert_eq!(p.wanted_kbps(t0 + REMB_LIFETIME), None);
    }

    #[test]
    fn several_viewers_follow_the_weakest_down_to_the_floor() {
        let mut p = BitratePolicy::new(LIMITS);
        let t0 = Instant::now();
        let strong = p.join(t0);
        let weak = p.join(t0);
        p.feedback(strong, remb(2000), t0);
        p.feedback(weak, remb(700), t0);
        assert_eq!(p.decide(t0), Some(700), "the weaker viewer");
        let t1 = t0 + Duration::from_secs(1);
        p.feedback(weak, remb(100), t1);
        assert_eq!(p.decide(t1), Some(400), "not below multi_viewer_floor_kbps");
        // The weak viewer leaves: the strong one alone steers (slowly up).
        p.leave(weak);
        let t3 = t0 + Duration::from_secs(3);
        p.feedback(strong, remb(2000), t3);
        assert_eq!(p.decide(t3), Some(600));
        // Alone, the weak link could take it below the floor, to min_bitrate_kbps.
        let mut alone = BitratePolicy::new(LIMITS);
        let only = alone.join(t0);
        alone.feedback(only, remb(100), t0);
        assert_eq!(alone.decide(t0), Some(150));
    }

    #[test]
    fn without_viewers_the_target_returns_to_the_start_at_once() {
        let mut p = BitratePolicy::new(LIMITS);
        let t0 = Instant::now();
        let v = p.join(t0);
        p.feedback(v, remb(200), t0);
        assert_eq!(p.decide(t0), Some(200));
        p.leave(v);
        assert_eq!(
            p.decide(t0 + Duration::from_millis(10)),
            Some(1000),
            "no rate limit"
        );
        // Feedback for a viewer that left is ignored.
        p.feedback(v, remb(100), t0 + Duration::from_secs(5));
        assert_eq!(p.decide(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn the_controller_counts_changes_and_a_dropped_viewer_leaves() {
        let controller = BitrateController::new("h264", LIMITS);
        let mut target = controller.subscribe();
        let viewer = controller.join();
        viewer.feedback(remb(300), Instant::now());
        assert_eq!(controller.target_kbps(), 300);
        assert!(target.has_changed().expect("sender alive"));
        assert_eq!(*target.borrow_and_update(), 300);
        drop(viewer);
        assert_eq!(controller.target_kbps(), 1000);
        assert_eq!(controller.changes(), 2);
    }
}
