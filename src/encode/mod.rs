//! Encoders. Each runs on a dedicated thread (they are CPU-bound), never on a tokio worker.
//! [`new_encoder`] builds the video encoder of a codec.

use crate::media::{AudioChunk, EncodedFrame, RawFrame, VideoCodec};

pub mod av1;
pub mod h264;
pub mod h264_decode;
pub mod jpeg;
pub mod opus;
pub mod passthrough;

/// An encoder failure; the message names the encoder and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoder could not be created with these settings.
    #[error("{codec} encoder setup failed: {reason}")]
    Setup {
        /// `h264`, `av1` or `opus`.
        codec: &'static str,
        /// What the library said.
        reason: String,
    },
    /// Encoding one frame failed.
    #[error("{codec} encode failed: {reason}")]
    Encode {
        /// `h264`, `av1` or `opus`.
        codec: &'static str,
        /// What the library said.
        reason: String,
    },
}

impl EncodeError {
    /// [`EncodeError::Setup`] of `codec`.
    pub fn setup(codec: &'static str, reason: impl Into<String>) -> EncodeError {
        EncodeError::Setup {
            codec,
            reason: reason.into(),
        }
    }

    /// [`EncodeError::Encode`] of `codec`.
    pub fn encode(codec: &'static str, reason: impl Into<String>) -> EncodeError {
        EncodeError::Encode {
            codec,
            reason: reason.into(),
        }
    }
}

/// Settings every video encoder takes.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoEncoderSettings {
    /// Frame width in pixels (even).
    pub width: u32,
    /// Frame height in pixels (even).
    pub height: u32,
    /// Nominal frame rate.
    pub fps: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// A keyframe at least this often (seconds).
    pub keyframe_interval_s: u32,
    /// Encoder threads to use (rav1e tiles/threads; openh264 ignores values > 1 on small frames).
    pub threads: usize,
}

/// A video encoder: I420 frames in, encoded frames out.
pub trait VideoEncoder: Send {
    /// Which codec this encoder produces.
    fn codec(&self) -> VideoCodec;
    /// Encodes one frame. With `force_keyframe` the output for this frame is a keyframe.
    /// May return nothing (encoder lag) or, rarely, more than one frame.
    fn encode(
        &mut self,
        frame: &RawFrame,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, EncodeError>;
    /// Aims at `kbps` kbit/s from now on (adaptive bitrate). openh264 changes its rate
    /// control in place; rav1e cannot, and rebuilds its context (a keyframe) only for a large
    /// enough change and not more often than every few seconds, so it may apply the value
    /// later or not at all. Fails for a value the encoder cannot take (0, or too large).
    fn set_bitrate_kbps(&mut self, kbps: u32) -> Result<(), EncodeError>;
}

/// An audio encoder: 20 ms chunks in, one packet out.
pub trait AudioEncoder: Send {
    /// Encodes 20 ms of audio into one packet.
    fn encode(&mut self, chunk: &AudioChunk) -> Result<EncodedFrame, EncodeError>;
}

/// A video encoder of `codec` for `settings`.
pub fn new_encoder(
    codec: VideoCodec,
    settings: &VideoEncoderSettings,
) -> Result<Box<dyn VideoEncoder>, EncodeError> {
    Ok(match codec {
        VideoCodec::H264 => Box::new(h264::H264Encoder::new(settings)?),
        VideoCodec::Av1 => Box::new(av1::Av1Encoder::new(settings)?),
    })
}
