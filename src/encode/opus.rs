//! Opus encoder (system libopus through audiopus): 48 kHz, 20 ms frames, one packet per
//! [`AudioChunk`].
//!
//! Application: `Audio`, not `LowDelay` or `Voip`. A camera microphone picks up a room, not
//! just a talker, and `Audio` keeps every Opus mode available (SILK/hybrid at low bitrates,
//! CELT at high ones). `LowDelay` would save only ~2.5 ms of encoder lookahead (4 ms instead
//! of 6.5 ms), which is small next to the 20 ms frame and the browser's jitter buffer, and it
//! forbids SILK, which hurts speech at the low bitrates a Pi on Wi-Fi uses.

use bytes::Bytes;

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};

use crate::encode::{AudioEncoder, EncodeError};
use crate::media::{AudioChunk, EncodedFrame, AUDIO_FRAME_SAMPLES};

const CODEC: &str = "opus";
/// Largest packet we let Opus produce (one Ethernet MTU; a 20 ms Opus frame is at most
/// 1275 bytes anyway).
const MAX_PACKET: usize = 1500;

/// Opus encoder for 20 ms chunks. Implements [`AudioEncoder`].
pub struct OpusEncoder {
    encoder: Encoder,
    channels: u8,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// An encoder for `channels` (1 or 2) interleaved channels at 48 kHz, targeting
    /// `bitrate_kbps` (6..=510) with Opus' default VBR.
    pub fn new(channels: u8, bitrate_kbps: u32) -> Result<Self, EncodeError> {
        let opus_channels = match channels {
            1 => Channels::Mono,
            2 => Channels::Stereo,
            other => {
                return Err(EncodeError::setup(
                    CODEC,
                    format!("{other} channels: Opus here takes 1 or 2"),
                ))
            }
        };
        if !(6..=510).contains(&bitrate_kbps) {
            return Err(EncodeError::setup(
                CODEC,
                format!("bitrate {bitrate_kbps} kbit/s is outside Opus' 6..=510 kbit/s"),
            ));
        }
        let mut encoder = Encoder::new(SampleRate::Hz48000, opus_channels, Application::Audio)
            .map_err(|e| EncodeError::setup(CODEC, format!("creating the encoder: {e}")))?;
        // Checked above: at most 510_000, fits an i32.
        let bps = (bitrate_kbps * 1000) as i32;
        encoder
            .set_bitrate(Bitrate::BitsPerSecond(bps))
            .map_err(|e| {
                EncodeError::setup(CODEC, format!("setting bitrate {bitrate_kbps} kbit/s: {e}"))
            })?;
        Ok(OpusEncoder {
            encoder,
            channels,
            buffer: vec![0; MAX_PACKET],
        })
    }
}

impl AudioEncoder for OpusEncoder {
    fn encode(&mut self, chunk: &AudioChunk) -> Result<EncodedFrame, EncodeError> {
        if chunk.channels != self.channels {
            return Err(EncodeError::encode(
                CODEC,
                format!(
                    "chunk has {} channels, the encoder was set up for {}",
                    chunk.channels, self.channels
                ),
            ));
        }
        let expected = AUDIO_FRAME_SAMPLES * usize::from(self.channels);
        if chunk.samples.len() != expected {
            return Err(EncodeError::encode(
                CODEC,
                format!(
                    "chunk holds {} samples, 20 ms of {} channel(s) is {expected}",
                    chunk.samples.len(),
                    self.channels
                ),
            ));
        }
        let len = self
            .encoder
            .encode(&chunk.samples, &mut self.buffer)
            .map_err(|e| EncodeError::encode(CODEC, e.to_string()))?;
        Ok(EncodedFrame {
            data: Bytes::copy_from_slice(&self.buffer[..len]),
            keyframe: true,
            capture_instant: chunk.capture_instant,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use audiopus::coder::Decoder;
    use audiopus::packet::Packet;
    use audiopus::MutSignals;

    use super::*;
    use crate::capture::test_tone::{goertzel, TestTone};

    fn encode_decode(channels: u8) -> (Vec<usize>, Vec<f64>) {
        let tone = TestTone::new(channels);
        let mut enc = OpusEncoder::new(channels, 64).expect("encoder");
        let opus_channels = if channels == 1 {
            Channels::Mono
        } else {
            Channels::Stereo
        };
        let mut dec = Decoder::new(SampleRate::Hz48000, opus_channels).expect("decoder");
        let mut sizes = Vec::new();
        let mut decoded = Vec::new();
        let mut pcm = vec![0i16; AUDIO_FRAME_SAMPLES * usize::from(channels)];
        let now = Instant::now();
        for index in 0..50 {
            let chunk = AudioChunk {
                samples: tone.render(index),
                channels,
                capture_instant: now,
            };
            let packet = enc.encode(&chunk).expect("encode");
            assert!(packet.keyframe);
            assert_eq!(packet.capture_instant, now);
            sizes.push(packet.data.len());
            let input = Packet::try_from(&packet.data[..]).expect("packet");
            let output = MutSignals::try_from(&mut pcm[..]).expect("signals");
            let n = dec.decode(Some(input), output, false).expect("decode");
            assert_eq!(n, AUDIO_FRAME_SAMPLES);
            decoded.extend(
                pcm.iter()
                    .step_by(usize::from(channels))
                    .map(|&s| f64::from(s)),
            );
        }
        (sizes, decoded)
    }

    #[test]
    fn tone_survives_an_encode_decode_round_trip() {
        for channels in [1u8, 2] {
            let (sizes, decoded) = encode_decode(channels);
            assert!(
                sizes.iter().all(|&s| s > 0 && s < 1500),
                "packet sizes {sizes:?}"
            );
            // Skip the codec's start-up delay; look at 40..180 ms (inside the beep).
            let beep = &decoded[2 * AUDIO_FRAME_SAMPLES..9 * AUDIO_FRAME_SAMPLES];
            let at_440 = goertzel(beep, 440.0);
            let at_1000 = goertzel(beep, 1000.0);
            let amplitude = (4.0 * at_440).sqrt();
            assert!(
                amplitude > 6000.0,
                "{channels} ch: 440 Hz amplitude {amplitude}"
            );
            assert!(
                at_440 > 100.0 * at_1000,
                "440 Hz {at_440} vs 1 kHz {at_1000}"
            );
            // 300..1000 ms is silent in the source; only codec noise may remain.
            let quiet = &decoded[15 * AUDIO_FRAME_SAMPLES..];
            let peak = quiet.iter().fold(0.0f64, |m, s| m.max(s.abs()));
            assert!(peak < 200.0, "{channels} ch: silence peaks at {peak}");
        }
    }

    #[test]
    fn bad_settings_and_chunks_are_rejected_with_a_reason() {
        let err = OpusEncoder::new(3, 64).expect_err("3 channels");
        assert!(err.to_string().contains("3 channels"), "{err}");
        let err = OpusEncoder::new(1, 1000).expect_err("bitrate");
        assert!(err.to_string().contains("1000"), "{err}");
        let mut enc = OpusEncoder::new(2, 64).expect("encoder");
        let chunk = AudioChunk {
            samples: vec![0; 960],
            channels: 1,
            capture_instant: Instant::now(),
        };
        assert!(
            enc.encode(&chunk).is_err(),
            "mono chunk into a stereo encoder"
        );
        let chunk = AudioChunk {
            samples: vec![0; 100],
            channels: 2,
            capture_instant: Instant::now(),
        };
        let err = enc.encode(&chunk).expect_err("short chunk");
        assert!(err.to_string().contains("100 samples"), "{err}");
    }
}
