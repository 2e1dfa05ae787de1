//! Camera H.264 decoded to I420 (Cisco openh264), for the encoders that need pixels while
//! the camera streams H.264: AV1 viewers, and H.264 viewers whose browser cannot take the
//! camera's profile. Runs only while such a viewer watches.

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

use crate::encode::passthrough::H264Passthrough;
use crate::encode::EncodeError;
use crate::media::{CameraH264, PixelFormat, RawFrame};

const CODEC: &str = "h264 decoder";

/// Decodes camera access units in order. The stream goes through an [`H264Passthrough`]
/// first, which remembers SPS/PPS (cameras send them once, maybe before anyone watched),
/// completes IDRs with them, and skips to the next IDR after a gap in `sequence` (a decoder
/// fed past a lost frame shows corrupted pictures).
pub struct H264Decoder {
    decoder: Decoder,
    stream: H264Passthrough,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// What [`H264Decoder::decode`] produced.
#[derive(Debug)]
pub enum Decoded {
    /// A picture.
    Frame(RawFrame),
    /// Nothing this time (parameter sets only, decoder delay, not wanted).
    Nothing,
    /// Frames were lost: nothing until the next IDR, ask the camera for one.
    NeedKeyframe,
}

impl H264Decoder {
    /// A decoder waiting for the first IDR.
    pub fn new() -> Result<Self, EncodeError> {
        let decoder = Decoder::new().map_err(|e| EncodeError::setup(CODEC, e.to_string()))?;
        Ok(H264Decoder {
            decoder,
            stream: H264Passthrough::new(),
        })
    }

    /// Follows the stream without decoding (nobody needs pictures now): parameter sets are
    /// remembered, and decoding resumes at the next IDR.
    pub fn skip(&mut self, frame: &CameraH264) {
        let _ = self.stream.push(frame);
        self.stream.restart();
    }

    /// Decodes one access unit into a tightly packed I420 frame.
    pub fn decode(&mut self, frame: &CameraH264) -> Result<Decoded, EncodeError> {
        let passed = self.stream.push(frame);
        let Some(unit) = passed.frame else {
            return Ok(if passed.want_keyframe {
                Decoded::NeedKeyframe
            } else {
                Decoded::Nothing
            });
        };
        let picture = match self.decoder.decode(&unit.data) {
            Ok(Some(yuv)) => yuv,
            Ok(None) => return Ok(Decoded::Nothing),
            Err(e) => {
                self.stream.restart();
                return Err(EncodeError::encode(CODEC, e.to_string()));
            }
        };
        let raw = packed_i420(&picture, frame)?;
        Ok(Decoded::Frame(raw))
    }
}

/// Decodes a group of pictures for a snapshot: `parameter_sets` (SPS and PPS, Annex B),
/// then `frames` in order, the first an IDR, none missing. Returns the last picture; only
/// that one is copied out of the decoder. A fresh decoder each time, so snapshots share no
/// state with each other or with the outputs.
pub fn decode_last(parameter_sets: &[u8], frames: &[&CameraH264]) -> Result<RawFrame, EncodeError> {
    let mut decoder = Decoder::new().map_err(|e| EncodeError::setup(CODEC, e.to_string()))?;
    let failed = |e: openh264::Error| EncodeError::encode(CODEC, e.to_string());
    decoder.decode(parameter_sets).map_err(failed)?;
    let Some((last, earlier)) = frames.split_last() else {
        return Err(EncodeError::encode(CODEC, "no access units to decode"));
    };
    for frame in earlier {
        decoder.decode(&frame.data).map_err(failed)?;
    }
    match decoder.decode(&last.data).map_err(failed)? {
        Some(picture) => packed_i420(&picture, last),
        None => Err(EncodeError::encode(
            CODEC,
            format!("access unit {} gave no picture", last.sequence),
        )),
    }
}

/// The decoder's picture of `frame` as a tightly packed I420 frame.
fn packed_i420(picture: &impl YUVSource, frame: &CameraH264) -> Result<RawFrame, EncodeError> {
    let (w, h) = picture.dimensions();
    // I420 needs even sizes: drop an odd last column/row.
    let (w, h) = (w & !1, h & !1);
    let (ys, us, vs) = picture.strides();
    let mut data = Vec::with_capacity(RawFrame::i420_len(w as u32, h as u32));
    for row in picture.y().chunks(ys).take(h) {
        data.extend_from_slice(&row[..w]);
    }
    for row in picture.u().chunks(us).take(h / 2) {
        data.extend_from_slice(&row[..w / 2]);
    }
    for row in picture.v().chunks(vs).take(h / 2) {
        data.extend_from_slice(&row[..w / 2]);
    }
    if data.len() != RawFrame::i420_len(w as u32, h as u32) {
        return Err(EncodeError::encode(
            CODEC,
            format!("decoded picture {w}x{h} has short planes"),
        ));
    }
    Ok(RawFrame {
        width: w as u32,
        height: h as u32,
        format: PixelFormat::I420,
        data: data.into(),
        capture_instant: frame.capture_instant,
        sequence: frame.sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::test_h264::TestH264Camera;
    use crate::capture::VideoSource;
    use crate::media::VideoFrame;

    fn next(camera: &mut TestH264Camera) -> CameraH264 {
        match camera.next_frame().expect("frame") {
            VideoFrame::H264(f) => f,
            VideoFrame::Raw(_) => panic!("raw frame"),
        }
    }

    #[test]
    fn decodes_a_camera_stream_joined_late_and_recovers_after_a_gap() {
        // IDR every second at 30 fps; SPS/PPS only before the first.
        let mut camera = TestH264Camera::new(320, 240, 30, 1).expect("camera");
        let mut decoder = H264Decoder::new().expect("decoder");
        // Nobody watched the first 10 frames (SPS/PPS went by then).
        for _ in 0..10 {
            decoder.skip(&next(&mut camera));
        }
        // Frames 10..29 are P frames: nothing until the IDR at 30.
        for _ in 10..30 {
            assert!(matches!(
                decoder.decode(&next(&mut camera)).expect("ok"),
                Decoded::NeedKeyframe
            ));
        }
        let mut pictures = 0;
        for _ in 30..40 {
            if let Decoded::Frame(f) = decoder.decode(&next(&mut camera)).expect("decodes") {
                assert_eq!((f.width, f.height), (320, 240));
                assert_eq!(f.data.len(), RawFrame::i420_len(320, 240));
                pictures += 1;
            }
        }
        assert!(pictures >= 9, "{pictures} pictures from 10 frames");
        // Frame 40 is lost: 41 must not be decoded; a requested keyframe restarts it.
        let _lost = next(&mut camera);
        assert!(matches!(
            decoder.decode(&next(&mut camera)).expect("ok"),
            Decoded::NeedKeyframe
        ));
        camera.request_keyframe();
        assert!(matches!(
            decoder.decode(&next(&mut camera)).expect("ok"),
            Decoded::Frame(_)
        ));
    }
}
