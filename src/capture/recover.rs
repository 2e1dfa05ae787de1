//! An audio source that outlives its device: while the microphone is gone it yields silence at
//! the real-time rate and reopens the device every [`RETRY_INTERVAL`]. Viewers hear silence,
//! not a dead track, and nobody has to dial again.

use std::time::{Duration, Instant};

use log::{info, warn};

use super::{AudioSource, CaptureError};
use crate::media::{AudioChunk, AUDIO_FRAME_MS, AUDIO_FRAME_SAMPLES};

/// How often a lost microphone is looked for.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Opens the real device; called at start and on every retry.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn AudioSource>, CaptureError> + Send>;

/// Wraps a device source with silence-and-retry on loss.
pub struct RecoveringAudio {
    name: String,
    channels: u8,
    open: Opener,
    current: Option<Box<dyn AudioSource>>,
    next_retry: Instant,
    next_silence: Instant,
    /// The error of the current outage, logged once.
    outage: Option<String>,
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
            next_retry: now,
            next_silence: now,
            outage: None,
        };
        s.try_open(now);
        s
    }

    /// Whether the device is delivering now.
    pub fn is_connected(&self) -> bool {
        self.current.is_some()
    }

    fn try_open(&mut self, now: Instant) {
        self.next_retry = now + RETRY_INTERVAL;
        match (self.open)() {
            Ok(source) => {
                if self.outage.take().is_some() {
                    info!("microphone {} is back", self.name);
                }
                self.current = Some(source);
            }
            Err(e) => self.lose(e.to_string()),
        }
    }

    fn lose(&mut self, reason: String) {
        self.current = None;
        if self.outage.is_none() {
            warn!(
                "{reason}; sending silence and retrying every {} ms",
                RETRY_INTERVAL.as_millis()
            );
            self.outage = Some(reason);
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
        if now >= self.next_retry {
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
}
