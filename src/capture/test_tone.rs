//! A synthetic audio source: a 440 Hz beep of 200 ms at the start of every second
//! (-12 dBFS), silence otherwise, in 20 ms chunks paced by the monotonic clock.
//!
//! The beep's phase is derived from the sample index within its second; 440 Hz fits a whole
//! number of cycles (88) into 200 ms, so every beep starts and ends at a zero crossing
//! without clicks.

use std::f64::consts::TAU;
use std::time::{Duration, Instant};

use crate::capture::{AudioSource, CaptureError};
use crate::media::{AudioChunk, AUDIO_FRAME_MS, AUDIO_FRAME_SAMPLES, AUDIO_RATE};

/// Frequency of the beep in Hz.
pub const TONE_HZ: u32 = 440;
/// Length of the beep at the start of every second, in milliseconds.
pub const BEEP_MS: u32 = 200;
/// Peak amplitude of the beep: -12 dBFS (10^(-12/20) = 0.251 of full scale).
pub const BEEP_AMPLITUDE: i16 = 8231;

const CHUNK: Duration = Duration::from_millis(AUDIO_FRAME_MS as u64);

/// The test tone source (see the module docs). Implements [`AudioSource`].
#[derive(Debug)]
pub struct TestTone {
    channels: u8,
    /// Monotonic start of the pacing clock, set when the first chunk is taken.
    start: Option<Instant>,
    /// Index of the next chunk; chunk `n` holds the audio of `start + n*20ms ..+20ms`.
    next_index: u64,
}

impl TestTone {
    /// A test tone with `channels` interleaved channels (the same signal in each). Values
    /// other than 1 and 2 are clamped into that range.
    pub fn new(channels: u8) -> Self {
        TestTone {
            channels: channels.clamp(1, 2),
            start: None,
            next_index: 0,
        }
    }

    /// The interleaved samples of chunk number `index` (chunk 0 starts a beep), without any
    /// pacing. [`AudioSource::next_chunk`] uses it; tests and benchmarks call it directly.
    pub fn render(&self, index: u64) -> Vec<i16> {
        let channels = usize::from(self.channels);
        let first = index * AUDIO_FRAME_SAMPLES as u64;
        let beep_samples = u64::from(AUDIO_RATE * BEEP_MS / 1000);
        let mut samples = Vec::with_capacity(AUDIO_FRAME_SAMPLES * channels);
        for n in first..first + AUDIO_FRAME_SAMPLES as u64 {
            let in_second = n % u64::from(AUDIO_RATE);
            let value = if in_second < beep_samples {
                let phase = TAU * f64::from(TONE_HZ) * in_second as f64 / f64::from(AUDIO_RATE);
                (phase.sin() * f64::from(BEEP_AMPLITUDE)).round() as i16
            } else {
                0
            };
            samples.extend(std::iter::repeat_n(value, channels));
        }
        samples
    }
}

impl AudioSource for TestTone {
    fn describe(&self) -> String {
        format!(
            "test tone {TONE_HZ} Hz ({BEEP_MS} ms each second, {} channel{})",
            self.channels,
            if self.channels == 1 { "" } else { "s" }
        )
    }

    fn channels(&self) -> u8 {
        self.channels
    }

    /// Returns chunk `n` once its last sample is "recorded", at `start + (n+1)*20ms`, like a
    /// microphone would. A consumer more than a chunk late skips to the current chunk.
    fn next_chunk(&mut self) -> Result<AudioChunk, CaptureError> {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let ready = start + chunk_offset(self.next_index + 1);
        if ready > now {
            std::thread::sleep(ready - now);
        } else {
            let current = ((now - start).as_nanos() / CHUNK.as_nanos()) as u64;
            // Chunk `current - 1` is the newest complete one.
            self.next_index = self.next_index.max(current.saturating_sub(1));
        }
        let index = self.next_index;
        self.next_index += 1;
        Ok(AudioChunk {
            samples: self.render(index),
            channels: self.channels,
            capture_instant: start + chunk_offset(index),
        })
    }
}

/// Time from the pacing start to the first sample of chunk `index`.
fn chunk_offset(index: u64) -> Duration {
    Duration::from_millis(index.saturating_mul(u64::from(AUDIO_FRAME_MS)))
}

/// Power of `samples` (mono, 48 kHz) at `freq` Hz, by the Goertzel algorithm, normalised by
/// length so a sine of amplitude A gives A²/4: the tests of the tone and of the Opus round
/// trip read the beep's frequency with it.
#[cfg(test)]
pub(crate) fn goertzel(samples: &[f64], freq: f64) -> f64 {
    let coeff = 2.0 * (TAU * freq / f64::from(AUDIO_RATE)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.len() as f64).powi(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left_channel(chunks: &[Vec<i16>], channels: usize) -> Vec<f64> {
        chunks
            .iter()
            .flat_map(|c| c.iter().step_by(channels).map(|&s| f64::from(s)))
            .collect()
    }

    #[test]
    fn chunks_hold_20_ms_per_channel() {
        for channels in [1u8, 2] {
            let tone = TestTone::new(channels);
            assert_eq!(tone.channels(), channels);
            assert_eq!(
                tone.render(0).len(),
                AUDIO_FRAME_SAMPLES * usize::from(channels)
            );
        }
        let mut tone = TestTone::new(2);
        let chunk = tone.next_chunk().expect("chunk");
        assert_eq!(chunk.samples.len(), 960 * 2);
        assert_eq!(chunk.channels, 2);
        // Stereo carries the same signal in both channels.
        assert!(chunk.samples.chunks_exact(2).all(|p| p[0] == p[1]));
    }

    #[test]
    fn beep_is_440_hz_for_200_ms_then_silence() {
        let tone = TestTone::new(1);
        let chunks: Vec<Vec<i16>> = (0..50).map(|i| tone.render(i)).collect();
        let beep = left_channel(&chunks[..10], 1);
        let at_440 = goertzel(&beep, 440.0);
        let at_1000 = goertzel(&beep, 1000.0);
        assert!(
            at_440 > 1000.0 * at_1000,
            "440 Hz {at_440} vs 1 kHz {at_1000}"
        );
        // A sine of amplitude A has Goertzel power A^2/4 with this normalisation.
        let amplitude = (4.0 * at_440).sqrt();
        assert!(
            (amplitude - f64::from(BEEP_AMPLITUDE)).abs() < 100.0,
            "amplitude {amplitude}"
        );
        let peak = beep.iter().fold(0.0f64, |m, s| m.max(s.abs()));
        assert!(
            peak <= f64::from(BEEP_AMPLITUDE) && peak > 8000.0,
            "peak {peak}"
        );
        assert!(
            chunks[10..].iter().all(|c| c.iter().all(|&s| s == 0)),
            "silence after 200 ms"
        );
        // The next second starts with the beep again.
        assert!(tone.render(50).iter().any(|&s| s != 0));
    }

    #[test]
    fn chunks_are_paced_by_the_monotonic_clock() {
        let mut tone = TestTone::new(1);
        let begin = Instant::now();
        let chunks: Vec<AudioChunk> = (0..10).map(|_| tone.next_chunk().expect("chunk")).collect();
        let elapsed = begin.elapsed();
        // Chunk n is ready at (n + 1) * 20 ms: the tenth at 200 ms.
        assert!(
            elapsed >= Duration::from_millis(199) && elapsed <= Duration::from_millis(260),
            "10 chunks took {elapsed:?}"
        );
        for pair in chunks.windows(2) {
            assert_eq!(pair[1].capture_instant - pair[0].capture_instant, CHUNK);
        }
    }

    #[test]
    fn a_late_consumer_skips_ahead() {
        let mut tone = TestTone::new(1);
        let first = tone.next_chunk().expect("chunk");
        std::thread::sleep(Duration::from_millis(100));
        let late = tone.next_chunk().expect("chunk");
        let skipped = (late.capture_instant - first.capture_instant).as_millis();
        assert!(
            skipped >= 80,
            "expected a skip to the newest chunk, got +{skipped} ms"
        );
    }
}
