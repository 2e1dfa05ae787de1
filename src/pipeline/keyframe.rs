//! Keyframe requests from many viewers, coalesced into at most one keyframe per
//! [`MIN_INTERVAL`]. Viewers call [`KeyframeRequests::request`] (PLI, FIR, a new viewer, a
//! viewer that fell behind); the encoder calls [`KeyframeRequests::take`] once per frame.
//! Time is passed in, so the policy is tested without a clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one requested keyframe per this interval: keyframes are 5-10x the size of other
/// frames, and a burst of PLIs from several viewers must not turn into a burst of keyframes.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyframeStats {
    /// Calls to `request`.
    pub requested: u64,
    /// Requests folded into a keyframe that was already pending (they got no keyframe of
    /// their own): `requested == granted + coalesced (+ 1 while one is pending)`.
    pub coalesced: u64,
    /// Keyframes granted to the encoder.
    pub granted: u64,
}

/// Thread-safe, coalescing keyframe request flag.
#[derive(Debug, Default)]
pub struct KeyframeRequests {
    state: Mutex<State>,
    requested: AtomicU64,
    coalesced: AtomicU64,
    granted: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    pending: bool,
    last_granted: Option<Instant>,
}

impl KeyframeRequests {
    /// No request pending.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a keyframe soon. Cheap; call it from any thread or task.
    pub fn request(&self) {
        self.requested.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if state.pending {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        state.pending = true;
    }

    /// Called by the encoder before each frame: true if this frame should be a keyframe.
    /// A pending request is granted only when the last grant is at least [`MIN_INTERVAL`] old;
    /// otherwise it stays pending until then.
    pub fn take(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if !state.pending {
            return false;
        }
        let due = state
            .last_granted
            .is_none_or(|last| now.saturating_duration_since(last) >= MIN_INTERVAL);
        if due {
            state.pending = false;
            state.last_granted = Some(now);
            self.granted.fetch_add(1, Ordering::Relaxed);
        }
        due
    }

    /// Whether a request is waiting.
    pub fn is_pending(&self) -> bool {
        self.lock().pending
    }

    /// Counters so far.
    pub fn stats(&self) -> KeyframeStats {
        KeyframeStats {
            requested: self.requested.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            granted: self.granted.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_request_no_keyframe() {
        let k = KeyframeRequests::new();
        assert!(!k.take(Instant::now()));
    }

    #[test]
    fn ten_requests_in_100ms_give_one_keyframe() {
        let k = KeyframeRequests::new();
        let t0 = Instant::now();
        let mut granted = 0;
        for i in 0..10u64 {
            let now = t0 + Duration::from_millis(i * 10);
            k.request();
            if k.take(now) {
                granted += 1;
            }
        }
        // The first request is granted at once; the other nine are coalesced into one more
        // keyframe that is held back until the interval has passed.
        assert_eq!(granted, 1);
        assert!(k.is_pending());
        assert!(!k.take(t0 + Duration::from_millis(499)));
        assert!(k.take(t0 + Duration::from_millis(500)));
        assert!(
            !k.take(t0 + Duration::from_millis(2000)),
            "nothing pending any more"
        );
        let s = k.stats();
        // Request 2 became the second keyframe; requests 3..10 were folded into it.
        assert_eq!((s.requested, s.granted, s.coalesced), (10, 2, 8));
    }

    #[test]
    fn requests_before_a_grant_do_not_cause_a_second_keyframe() {
        let k = KeyframeRequests::new();
        let t0 = Instant::now();
        for _ in 0..10 {
            k.request();
        }
        assert!(k.take(t0));
        for ms in [100, 499, 500, 501, 5000] {
            assert!(!k.take(t0 + Duration::from_millis(ms)), "{ms} ms");
        }
        assert_eq!(k.stats().granted, 1);
        assert!(!k.is_pending());
    }

    #[test]
    fn a_clock_going_backwards_does_not_grant_early() {
        let k = KeyframeRequests::new();
        let t0 = Instant::now() + Duration::from_secs(10);
        k.request();
        assert!(k.take(t0));
        k.request();
        assert!(!k.take(t0 - Duration::from_secs(1)));
        assert!(k.take(t0 + MIN_INTERVAL));
    }

    #[test]
    fn a_request_after_the_interval_is_granted_immediately() {
        let k = KeyframeRequests::new();
        let t0 = Instant::now();
        k.request();
        assert!(k.take(t0));
        k.request();
        assert!(k.take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn requests_while_pending_are_counted_as_coalesced() {
        let k = KeyframeRequests::new();
        k.request();
        k.request();
        k.request();
        assert_eq!(k.stats().coalesced, 2);
        assert!(k.take(Instant::now()));
    }
}
