//! Media types that flow through the pipeline: raw frames and audio from the capture
//! sources, encoded frames from the encoders, and the pool their buffers come from ([`pool`]).

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

pub mod pool;

use pool::FrameBuffer;

/// Audio sample rate used everywhere in peercam (Opus' native rate).
pub const AUDIO_RATE: u32 = 48_000;
/// Audio frame length: 20 ms, Opus' default frame size.
pub const AUDIO_FRAME_MS: u32 = 20;
/// Samples per channel in one [`AudioChunk`] (20 ms at 48 kHz).
pub const AUDIO_FRAME_SAMPLES: usize = (AUDIO_RATE * AUDIO_FRAME_MS / 1000) as usize;

/// Layout of the pixels in a [`RawFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Planar 4:2:0: a full-size Y plane, then quarter-size U and V planes.
    I420,
}

/// One uncompressed video frame, as a capture source produced it.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Pixel layout of `data`.
    pub format: PixelFormat,
    /// Tightly packed planes (no row padding): Y (w*h), U (w/2*h/2), V (w/2*h/2); from a
    /// [`BufferPool`](crate::media::pool::BufferPool) when the source captures steadily.
    pub data: FrameBuffer,
    /// When the frame was captured (monotonic clock).
    pub capture_instant: Instant,
    /// Frame number from the source, starting at 0.
    pub sequence: u64,
}

impl RawFrame {
    /// Bytes needed for an I420 frame of this size.
    pub fn i420_len(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * (w / 2) * (h / 2)
    }

    /// The Y, U and V planes of an I420 frame.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (w, h) = (self.width as usize, self.height as usize);
        let y_len = w * h;
        let c_len = (w / 2) * (h / 2);
        let (y, rest) = self.data.split_at(y_len);
        let (u, v) = rest.split_at(c_len);
        (y, u, &v[..c_len])
    }
}

/// One access unit of a camera's own H.264 stream, as the camera sent it (Annex B, start
/// codes). Cameras often send SPS/PPS only once; [`crate::encode::passthrough`] fixes that.
#[derive(Debug, Clone)]
pub struct CameraH264 {
    /// Width of the camera mode in pixels.
    pub width: u32,
    /// Height of the camera mode in pixels.
    pub height: u32,
    /// The access unit's NAL units with start codes.
    pub data: Bytes,
    /// When the frame was captured (monotonic clock).
    pub capture_instant: Instant,
    /// Frame number from the source; a gap means frames were lost and the decoder state
    /// is broken until the next IDR.
    pub sequence: u64,
}

/// What a video source delivers: pixels, or the camera's H.264 (passed through, or decoded
/// for encoders that need pixels).
#[derive(Debug, Clone)]
pub enum VideoFrame {
    /// Uncompressed I420 (test pattern, converted camera formats, placeholder).
    Raw(RawFrame),
    /// Camera H.264.
    H264(CameraH264),
}

/// 20 ms of interleaved signed 16-bit PCM at 48 kHz.
#[derive(Debug, Clone)]
pub struct AudioChunk {
    /// Interleaved samples, `AUDIO_FRAME_SAMPLES * channels` of them.
    pub samples: Vec<i16>,
    /// 1 (mono) or 2 (stereo).
    pub channels: u8,
    /// When the first sample was captured (monotonic clock).
    pub capture_instant: Instant,
}

/// A video codec peercam can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 Constrained Baseline, packetization-mode 1.
    H264,
    /// AV1 (rav1e).
    Av1,
}

impl VideoCodec {
    /// Lower-case name as used in the config file (`"h264"`, `"av1"`).
    pub fn config_name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::Av1 => "av1",
        }
    }

    /// The RTP/SDP MIME type (`video/H264`, `video/AV1`).
    pub fn mime_type(self) -> &'static str {
        match self {
            VideoCodec::H264 => "video/H264",
            VideoCodec::Av1 => "video/AV1",
        }
    }
}

impl fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.config_name())
    }
}

/// One encoded access unit (a whole video frame or 20 ms of Opus).
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// The bitstream: H.264 Annex B (start codes, SPS/PPS before every IDR),
    /// an AV1 temporal unit (OBUs, low-overhead format), or one Opus packet.
    pub data: Bytes,
    /// True for an IDR / AV1 key frame; a viewer that fell behind restarts here.
    /// Always true for audio.
    pub keyframe: bool,
    /// Capture time of the source frame; RTP timestamps derive from it.
    pub capture_instant: Instant,
}
