//! How old frames are at a point of the pipeline, as a Prometheus histogram: the daemon's share
//! of the glass-to-glass latency. [`Fanout`](crate::pipeline::fanout::Fanout) keeps two, one
//! observed when the encoder publishes a frame (capture → encoded) and one when a viewer's RTP
//! packets for it have been handed to the network (capture → sent).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the buckets, in milliseconds (a last `+Inf` bucket is implied).
pub const BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 20, 35, 50, 100, 200, 500, 1000];

/// A lock-free histogram of durations.
#[derive(Debug, Default)]
pub struct DelayHistogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS_MS.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl DelayHistogram {
    /// Records the time since `since` (zero if `since` is in the future).
    pub fn observe_since(&self, since: Instant) {
        self.observe(Instant::now().saturating_duration_since(since));
    }

    /// Records one duration.
    pub fn observe(&self, delay: Duration) {
        let ms = delay.as_secs_f64() * 1000.0;
        let slot = BUCKETS_MS
            .iter()
            .position(|&bound| ms <= bound as f64)
            .unwrap_or(BUCKETS_MS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Mean of the observations so far, if any.
    pub fn mean(&self) -> Option<Duration> {
        let count = self.count();
        (count > 0).then(|| Duration::from_micros(self.sum_us.load(Ordering::Relaxed) / count))
    }

    /// The histogram in the Prometheus text format: `NAME_bucket{LABELS,le="…"}` (cumulative,
    /// in seconds), `NAME_sum` and `NAME_count`. `labels` is `key="value",…` or empty.
    pub fn prometheus(&self, name: &str, labels: &str) -> String {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut out = String::new();
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = BUCKETS_MS
                .get(i)
                .map_or("+Inf".to_string(), |ms| format!("{}", *ms as f64 / 1000.0));
            out.push_str(&format!(
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}\n"
            ));
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        out.push_str(&format!("{name}_sum{braces} {sum}\n"));
        out.push_str(&format!("{name}_count{braces} {}\n", self.count()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = DelayHistogram::default();
        h.observe(Duration::from_micros(500)); // <= 1 ms
        h.observe(Duration::from_millis(1)); // <= 1 ms (bounds are inclusive)
        h.observe(Duration::from_millis(3)); // <= 5 ms
        h.observe(Duration::from_millis(40)); // <= 50 ms
        h.observe(Duration::from_secs(3)); // +Inf
        let text = h.prometheus("age_seconds", "codec=\"h264\"");
        assert!(
            text.contains("age_seconds_bucket{codec=\"h264\",le=\"0.001\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("age_seconds_bucket{codec=\"h264\",le=\"0.002\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("age_seconds_bucket{codec=\"h264\",le=\"0.005\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("age_seconds_bucket{codec=\"h264\",le=\"0.035\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("age_seconds_bucket{codec=\"h264\",le=\"0.05\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("age_seconds_bucket{codec=\"h264\",le=\"1\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("age_seconds_bucket{codec=\"h264\",le=\"+Inf\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("age_seconds_count{codec=\"h264\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("age_seconds_sum{codec=\"h264\"} 3.0445\n"),
            "{text}"
        );
        assert_eq!(h.count(), 5);
        assert_eq!(h.mean(), Some(Duration::from_micros(608_900)));
    }

    #[test]
    fn an_empty_histogram_has_zero_counts_and_no_mean() {
        let h = DelayHistogram::default();
        let text = h.prometheus("x", "");
        assert!(text.contains("x_bucket{le=\"+Inf\"} 0\n"), "{text}");
        assert!(text.contains("x_sum 0\n"), "{text}");
        assert!(text.contains("x_count 0\n"), "{text}");
        assert_eq!(h.mean(), None);
    }

    #[test]
    fn a_future_instant_counts_as_no_delay() {
        let h = DelayHistogram::default();
        h.observe_since(Instant::now() + Duration::from_secs(5));
        assert!(h.prometheus("x", "").contains("x_bucket{le=\"0.001\"} 1\n"));
    }
}
