//! Capture sources. A video source yields [`RawFrame`]s, an audio source [`AudioChunk`]s.
//! Both are blocking and run on their own thread; V4L2 and ALSA implement the same traits.

use crate::media::{AudioChunk, VideoFrame};

pub mod alsa;
pub mod classify;
pub mod convert;
pub mod formats;
pub mod placeholder;
pub mod recover;
pub mod rpicam;
pub mod rpicam_source;
pub mod test_h264;
pub mod test_pattern;
pub mod test_tone;
pub mod v4l2;

/// Why a capture source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The source stopped for good (device gone, stream ended).
    #[error("capture source {source_name} stopped: {reason}")]
    Stopped {
        /// Which source, e.g. `/dev/video0` or `test pattern`.
        source_name: String,
        /// What happened.
        reason: String,
    },
}

/// A video capture source. `next_frame` blocks until the next frame is due and returns it.
pub trait VideoSource: Send {
    /// Human-readable description for the log, e.g. `test pattern 640x480@30`.
    fn describe(&self) -> String;
    /// Blocks until the next frame is ready (paced by the source) and returns it: I420
    /// pixels, or camera H.264 when the source passes the camera's stream through.
    fn next_frame(&mut self) -> Result<VideoFrame, CaptureError>;
    /// Asks the camera for an H.264 keyframe soon (a viewer joined or lost packets). Only
    /// meaningful while the source delivers [`VideoFrame::H264`]; the default does nothing.
    fn request_keyframe(&mut self) {}
}

/// An audio capture source. `next_chunk` blocks until 20 ms of audio is ready.
pub trait AudioSource: Send {
    /// Human-readable description for the log, e.g. `test tone 440 Hz`.
    fn describe(&self) -> String;
    /// Number of interleaved channels in each chunk (1 or 2).
    fn channels(&self) -> u8;
    /// Blocks until the next 20 ms chunk is ready and returns it.
    fn next_chunk(&mut self) -> Result<AudioChunk, CaptureError>;
}
