//! Reopening what was lost. [`Reconnect`] is the schedule every reconnecting source shares
//! (the camera in [`v4l2`](super::v4l2), the microphone here, the capture loops of
//! [`hub`](crate::hub)): when to try again, and one log line per outage.
//!
//! [`RecoveringAudio`] is an audio source that outlives its device: while the microphone is
//! gone it yields silence at the real-time rate and reopens the device every
//! [`RETRY_INTERVAL`]. Viewers hear silence, not a dead track, and nobody has to dial again.

use std::time::{Duration, Instant};

use log::{info, warn};

use super::{AudioSource, CaptureError};
use crate::media::{AudioChunk, AUDIO_FRAME_MS, AUDIO_FRAME_SAMPLES};

/// How often a lost microphone is looked for.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// When to try a lost device again and when to say so, for every source that reopens what it
/// lost (the camera, the microphone, the hub's capture loops). Sans clock: callers pass `now`.
///
/// One outage (episode) runs from the first failure to the next success. [`failed`] says
/// whether to log it (the first failure of an outage only) and [`succeeded`] whether it just
/// ended; the caller writes its own log lines. An attempt at `now` makes the next one due at
/// `now + interval`; a failure alone moves nothing, so a device lost long after its last
/// attempt is tried again at once.
///
/// [`failed`]: Reconnect::failed
/// [`succeeded`]: Reconnect::succeeded
#[derive(Debug, Clone)]
pub struct Reconnect {
    interval: Duration,
    next_attempt: Instant,
    /// The error that started the current outage.
    outage: Option<String>,
}

impl Reconnect {
    /// A schedule that retries every `interval`, with a first attempt due at `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Reconnect {
            interval,
            next_attempt: now,
            outage: None,
        }
    }

    /// Later attempts come `interval` apart (a backoff); the one already due stays.
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Whether the next attempt is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next_attempt
    }

    /// An attempt is made at `now`: the next one is due one interval later.
    pub fn attempt(&mut self, now: Instant) {
        self.next_attempt = now + self.interval;
    }

    /// How long from `now` until the next attempt is due (zero when it is).
    pub fn wait(&self, now: Instant) -> Duration {
        self.next_attempt.saturating_duration_since(now)
    }

    /// The device failed for `reason`. True the first time in an outage: log it then.
    pub fn failed(&mut self, reason: &str) -> bool {
        if self.outage.is_some() {
            return false;
        }
        self.outage = Some(reason.to_owned());
        true
    }

    /// The device works. True when this ends an outage.
    pub fn succeeded(&mut self) -> bool {
        self.outage.take().is_some()
    }

    /// The error that started the current outage, `None` while the device works.
    pub fn outage(&self) -> Option<&str> {
        self.outage.as_deref()
    }
}

/// Opens the real device; called at start and on every retry.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn AudioSource>, CaptureError> + Send>;

/// Wraps a device source with silence-and-retry on loss.
pub struct RecoveringAudio {
    name: String,
    channels: u8,
    open: Opener,
    current: Option<Box<dyn AudioSource>>,
    reconnect: Reconnect,
    next_silence: Instant,
}

impl RecoveringAudio {
    /// Tries `open` now; if it fails the source starts silent and keeps trying.
    pub fn new(name: String, channels: u8, open: Opener) -> Self {
        let now = Instant::now();
        let mut s = RecoveringAudio {
            name,
            channels,
            open,
            current: None,
            reconnect: Reconnect::new(RETRY_INTERVAL, now),
            next_silence: now,
        };
        s.try_open(now);
        s
    }

    /// Whether the device is delivering now.
    pub fn is_connected(&self) -> bool {
        self.current.is_some()
    }

    fn try_open(&mut self, now: Instant) {
        self.reconnect.attempt(now);
        match (self.open)() {
            Ok(source) => {
                if self.reconnect.succeeded() {
                    info!("microphone {} is back", self.name);
                }
                self.current = Some(source);
            }
            Err(e) => self.lose(e.to_string()),
        }
    }

    fn lose(&mut self, reason: String) {
        self.current = None;
        if self.reconnect.failed(&reason) {
            warn!(
                "{reason}; sending silence and retrying every {} ms",
                RETRY_INTERVAL.as_millis()
            );
        }
    }
}

impl AudioSource for RecoveringAudio {
    fn describe(&self) -> String {
        format!("microphone {}", self.name)
    }

    fn channels(&self) -> u8 {
        self.channels
    }

    fn next_chunk(&mut self) -> Result<AudioChunk, CaptureError> {
        if let Some(source) = self.current.as_mut() {
            match source.next_chunk() {
                Ok(chunk) => return Ok(chunk),
                Err(e) => {
                    self.lose(e.to_string());
                    self.next_silence = Instant::now();
                }
            }
        }
        let now = Instant::now();
        if self.reconnect.is_due(now) {
            self.try_open(now);
            if let Some(source) = self.current.as_mut() {
                if let Ok(chunk) = source.next_chunk() {
                    return Ok(chunk);
                }
            }
        }
        let due = self.next_silence;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let now = Instant::now();
        self.next_silence = (due + Duration::from_millis(AUDIO_FRAME_MS.into())).max(now);
        Ok(AudioChunk {
            samples: vec![0; AUDIO_FRAME_SAMPLES * usize::from(self.channels)],
            channels: self.channels,
            capture_instant: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A device that delivers `n` chunks of ones, then fails like an unplugged microphone.
    struct Flaky {
        left: u32,
    }

    impl AudioSource for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn channels(&self) -> u8 {
            1
        }
        fn next_chunk(&mut self) -> Result<AudioChunk, CaptureError> {
            if self.left == 0 {
                return Err(CaptureError::Stopped {
                    source_name: "hw:9".into(),
                    reason: "No such device".into(),
                });
            }
            self.left -= 1;
            Ok(AudioChunk {
                samples: vec![1; AUDIO_FRAME_SAMPLES],
                channels: 1,
                capture_instant: Instant::now(),
            })
        }
    }

    #[test]
    fn silence_while_gone_then_the_device_again() {
        let opens = Arc::new(AtomicU32::new(0));
        let o = opens.clone();
        // Open #1 works (2 chunks), open #2 fails, open #3 works again.
        let open: Opener = Box::new(move || match o.fetch_add(1, Ordering::SeqCst) {
            1 => Err(CaptureError::Stopped {
                source_name: "hw:9".into(),
                reason: "No such device".into(),
            }),
            _ => Ok(Box::new(Flaky { left: 2 }) as Box<dyn AudioSource>),
        });
        let mut s = RecoveringAudio::new("hw:9".into(), 1, open);
        assert!(s.is_connected());
        let start = Instant::now();
        let mut kinds = Vec::new();
        while start.elapsed() < Duration::from_millis(1500) && kinds.len() < 80 {
            let c = s.next_chunk().expect("never fails");
            assert_eq!(c.samples.len(), AUDIO_FRAME_SAMPLES);
            kinds.push(c.samples[0]);
        }
        assert_eq!(&kinds[..2], &[1, 1], "device audio first");
        assert_eq!(kinds[2], 0, "silence once the device is gone");
        let back = kinds.iter().skip(2).position(|&k| k == 1);
        assert!(back.is_some(), "the device came back: {kinds:?}");
        assert!(opens.load(Ordering::SeqCst) >= 3);
    }

    #[test]
    fn silence_is_paced_in_real_time() {
        let open: Opener = Box::new(|| {
            Err(CaptureError::Stopped {
                source_name: "none".into(),
                reason: "absent".into(),
            })
        });
        let mut s = RecoveringAudio::new("none".into(), 2, open);
        let start = Instant::now();
        for _ in 0..10 {
            let c = s.next_chunk().expect("silence");
            assert_eq!(c.samples.len(), 2 * AUDIO_FRAME_SAMPLES);
            assert!(c.samples.iter().all(|&x| x == 0));
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(170), "{took:?}");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn reconnect_retries_one_interval_after_the_last_attempt() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(ms(500), t0);
        assert!(r.is_due(t0), "the first attempt is due at once");
        r.attempt(t0);
        assert!(!r.is_due(t0 + ms(499)));
        assert_eq!(r.wait(t0 + ms(200)), ms(300));
        assert!(r.is_due(t0 + ms(500)));
        assert_eq!(r.wait(t0 + ms(700)), Duration::ZERO);
        // A device lost long after the last attempt is tried again at once.
        let later = t0 + Duration::from_secs(10);
        assert!(r.failed("gone"));
        assert!(r.is_due(later));
        r.attempt(later);
        assert!(!r.is_due(later + ms(499)));
    }

    #[test]
    fn reconnect_logs_once_per_outage() {
        let mut r = Reconnect::new(ms(500), Instant::now());
        assert!(!r.succeeded(), "no outage to end");
        assert_eq!(r.outage(), None);
        assert!(r.failed("camera lost"), "the first failure is logged");
        assert!(
            !r.failed("still gone"),
            "later ones in the same outage are not"
        );
        assert_eq!(r.outage(), Some("camera lost"));
        assert!(r.succeeded(), "the outage ends");
        assert_eq!(r.outage(), None);
        assert!(!r.succeeded());
        assert!(r.failed("lost again"), "a new outage is logged again");
    }

    #[test]
    fn reconnect_on_a_fake_clock() {
        // A device that is gone for the first 1.2 s, polled every 100 ms of fake time.
        let t0 = Instant::now();
        let mut r = Reconnect::new(ms(500), t0);
        let (mut attempts, mut warnings, mut backs) = (Vec::new(), 0, 0);
        for step in 0..=20 {
            let now = t0 + ms(step * 100);
            if !r.is_due(now) {
                continue;
            }
            r.attempt(now);
            attempts.push(step * 100);
            if now < t0 + ms(1200) {
                warnings += u32::from(r.failed("absent"));
            } else {
                backs += u32::from(r.succeeded());
            }
        }
        assert_eq!(attempts, [0, 500, 1000, 1500, 2000]);
        assert_eq!((warnings, backs), (1, 1));
    }
}
