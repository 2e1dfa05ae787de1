//! Encode once, deliver to many: one producer (an encoder thread) publishes each encoded frame
//! to every subscriber's bounded queue. A subscriber whose queue is full does not slow anyone
//! down: it drops frames until the next keyframe (asking for one), so it never plays a broken
//! reference chain and never builds a backlog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::media::EncodedFrame;
use crate::pipeline::delay::DelayHistogram;
use crate::pipeline::keyframe::KeyframeRequests;

/// Fan-out counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Frames published by the encoder.
    pub published: u64,
    /// Frame deliveries into subscriber queues.
    pub delivered: u64,
    /// Frames dropped for a subscriber (queue full, or waiting for a keyframe).
    pub dropped: u64,
    /// Current subscribers.
    pub subscribers: usize,
}

struct Subscriber {
    tx: mpsc::Sender<EncodedFrame>,
    /// Skip everything up to the next keyframe (new subscriber, or fell behind).
    waiting_for_keyframe: bool,
    dropped: Arc<AtomicU64>,
}

/// One encoder's output, shared by all its viewers.
pub struct Fanout {
    subscribers: Mutex<Vec<Subscriber>>,
    capacity: usize,
    keyframes: Arc<KeyframeRequests>,
    next_id: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    /// Capture → published by the encoder.
    encoded_age: DelayHistogram,
    /// Capture → a viewer's RTP packets written (one observation per viewer and frame).
    sent_age: DelayHistogram,
}

/// A viewer's end of a [`Fanout`]: its bounded queue of frames.
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<EncodedFrame>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// The next frame; `None` once the fan-out is gone.
    pub async fn recv(&mut self) -> Option<EncodedFrame> {
        self.rx.recv().await
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<EncodedFrame> {
        self.rx.try_recv().ok()
    }

    /// This subscriber's id (unique within its fan-out).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Frames dropped for this subscriber.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Fanout {
    /// A fan-out with per-subscriber queues of `capacity` frames; keyframe requests from
    /// new or lagging subscribers go to `keyframes`.
    pub fn new(capacity: usize, keyframes: Arc<KeyframeRequests>) -> Self {
        Fanout {
            subscribers: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            keyframes,
            next_id: AtomicU64::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            encoded_age: DelayHistogram::default(),
            sent_age: DelayHistogram::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a subscriber. Its first frame will be a keyframe (one is requested now).
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(self.capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        self.lock().push(Subscriber {
            tx,
            waiting_for_keyframe: true,
            dropped: dropped.clone(),
        });
        self.keyframes.request();
        Subscription { id, rx, dropped }
    }

    /// Subscribers now (closed ones are removed on the next publish).
    pub fn subscriber_count(&self) -> usize {
        self.lock().iter().filter(|s| !s.tx.is_closed()).count()
    }

    /// Delivers `frame` to every subscriber that can take it. Never blocks.
    pub fn publish(&self, frame: EncodedFrame) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.encoded_age.observe_since(frame.capture_instant);
        let mut want_keyframe = false;
        let mut subscribers = self.lock();
        subscribers.retain(|s| !s.tx.is_closed());
        for s in subscribers.iter_mut() {
            if s.waiting_for_keyframe {
                if !frame.keyframe {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                s.waiting_for_keyframe = false;
            }
            match s.tx.try_send(frame.clone()) {
                Ok(()) => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    // Full (or just closed): skip to the next keyframe rather than queue more.
                    s.waiting_for_keyframe = true;
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    want_keyframe = true;
                }
            }
        }
        drop(subscribers);
        if want_keyframe {
            self.keyframes.request();
        }
    }

    /// A subscriber has handed the packets of a frame captured at `capture_instant` to the
    /// network.
    pub fn observe_sent(&self, capture_instant: Instant) {
        self.sent_age.observe_since(capture_instant);
    }

    /// Frame ages as Prometheus histograms `peercam_frame_age_seconds{LABELS,stage="encoded"}`
    /// (capture → published) and `stage="sent"` (capture → RTP written, per viewer).
    pub fn age_metrics(&self, labels: &str) -> String {
        let name = "peercam_frame_age_seconds";
        let mut out = self
            .encoded_age
            .prometheus(name, &format!("{labels},stage=\"encoded\""));
        out.push_str(
            &self
                .sent_age
                .prometheus(name, &format!("{labels},stage=\"sent\"")),
        );
        out
    }

    /// Counters so far.
    pub fn stats(&self) -> FanoutStats {
        FanoutStats {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            subscribers: self.subscriber_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn frame(n: u8, keyframe: bool) -> EncodedFrame {
        EncodedFrame {
            data: Bytes::from(vec![n]),
            keyframe,
            capture_instant: Instant::now(),
        }
    }

    fn fanout(capacity: usize) -> (Fanout, Arc<KeyframeRequests>) {
        let k = Arc::new(KeyframeRequests::new());
        (Fanout::new(capacity, k.clone()), k)
    }

    #[test]
    fn new_subscriber_starts_at_a_keyframe_and_asks_for_one() {
        let (f, k) = fanout(8);
        let mut s = f.subscribe();
        assert!(k.take(Instant::now()), "subscribing requests a keyframe");
        f.publish(frame(1, false));
        f.publish(frame(2, true));
        f.publish(frame(3, false));
        assert_eq!(s.try_recv().map(|f| f.data[0]), Some(2));
        assert_eq!(s.try_recv().map(|f| f.data[0]), Some(3));
        assert_eq!(s.dropped(), 1);
    }

    #[tokio::test]
    async fn slow_subscriber_skips_to_next_keyframe_while_fast_one_gets_everything() {
        let (f, k) = fanout(2);
        let mut slow = f.subscribe();
        let mut fast = f.subscribe();
        assert!(k.take(Instant::now()), "subscribing asked for a keyframe");
        let mut fast_got = Vec::new();
        // Keyframe, 5 deltas, a delta, a keyframe, a delta; `fast` reads each frame as it
        // comes, `slow` reads nothing until frame 5 is out.
        for n in 0..9u8 {
            f.publish(frame(n, n == 0 || n == 7));
            let fr = fast.recv().await.expect("fast gets every frame");
            fast_got.push(fr.data[0]);
            if n == 2 {
                assert!(k.is_pending(), "overflow asked for a keyframe at once");
            }
            if n == 5 {
                // slow holds 0 and 1; 2 overflowed; 3..5 were skipped waiting for a keyframe.
                assert_eq!(slow.recv().await.map(|f| f.data[0]), Some(0));
                assert_eq!(slow.recv().await.map(|f| f.data[0]), Some(1));
                assert!(slow.try_recv().is_none());
                assert_eq!(slow.dropped(), 4);
            }
        }
        assert_eq!(fast_got, (0..9).collect::<Vec<u8>>());
        assert_eq!(fast.dropped(), 0);
        // Frame 6 (a delta) is skipped too; slow resumes at keyframe 7.
        let resumed: Vec<(u8, bool)> = std::iter::from_fn(|| slow.try_recv())
            .map(|f| (f.data[0], f.keyframe))
            .collect();
        assert_eq!(
            resumed,
            vec![(7, true), (8, false)],
            "resumes at a keyframe"
        );
        assert_eq!(slow.dropped(), 5, "frames 2,3,4,5,6 dropped");
        let stats = f.stats();
        assert_eq!(
            (stats.published, stats.dropped, stats.subscribers),
            (9, 5, 2)
        );
        assert_eq!(stats.delivered, 9 + 4, "fast: 0..8; slow: 0, 1, 7, 8");
        assert_eq!(k.stats().requested, 3, "two subscriptions and one overflow");
    }

    #[test]
    fn audio_overflow_drops_only_the_frames_that_do_not_fit() {
        // Audio: every frame is a keyframe, so a full queue costs exactly the frames that do
        // not fit, never more.
        let (f, _) = fanout(2);
        let mut s = f.subscribe();
        for n in 0..4u8 {
            f.publish(frame(n, true));
        }
        assert_eq!(s.try_recv().map(|f| f.data[0]), Some(0));
        f.publish(frame(4, true));
        let got: Vec<u8> = std::iter::from_fn(|| s.try_recv())
            .map(|f| f.data[0])
            .collect();
        assert_eq!(got, vec![1, 4]);
        assert_eq!(s.dropped(), 2, "frames 2 and 3");
    }

    #[test]
    fn closed_subscribers_are_removed() {
        let (f, _) = fanout(2);
        let a = f.subscribe();
        let _b = f.subscribe();
        assert_eq!(f.subscriber_count(), 2);
        drop(a);
        f.publish(frame(0, true));
        assert_eq!(f.subscriber_count(), 1);
        assert_eq!(f.stats().delivered, 1);
    }

    #[tokio::test]
    async fn async_receiver_gets_frames_from_a_producer_thread() {
        let (f, _) = fanout(8);
        let f = Arc::new(f);
        let mut s = f.subscribe();
        let f2 = f.clone();
        std::thread::spawn(move || {
            for n in 0..3 {
                f2.publish(frame(n, n == 0));
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(s.recv().await.map(|f| f.data[0]));
        }
        assert_eq!(got, vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn frame_ages_are_measured_at_publish_and_at_send() {
        let (f, _) = fanout(8);
        let _s = f.subscribe();
        let captured = Instant::now() - Duration::from_millis(30);
        f.publish(EncodedFrame {
            data: Bytes::from_static(&[1]),
            keyframe: true,
            capture_instant: captured,
        });
        f.observe_sent(captured);
        f.observe_sent(captured);
        let text = f.age_metrics("codec=\"h264\"");
        // 30 ms old: not in the 20 ms bucket, in the 35 ms one.
        let line = |stage: &str, le: &str| {
            format!(
                "peercam_frame_age_seconds_bucket{{codec=\"h264\",stage=\"{stage}\",le=\"{le}\"}}"
            )
        };
        assert!(
            text.contains(&format!("{} 0\n", line("encoded", "0.02"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1\n", line("encoded", "0.035"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 2\n", line("sent", "0.035"))),
            "{text}"
        );
        assert!(
            text.contains("peercam_frame_age_seconds_count{codec=\"h264\",stage=\"sent\"} 2\n"),
            "{text}"
        );
    }
}
