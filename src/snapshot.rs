//! A still JPEG of the newest picture ([`pipeline::latest`](crate::pipeline::latest)), made
//! on request: camera H.264 is decoded from its latest keyframe, then the picture is scaled
//! and encoded ([`encode::jpeg`](crate::encode::jpeg)). CPU-bound: callers run [`render`] on
//! a blocking thread.

use std::time::Instant;

use crate::encode::h264_decode;
use crate::encode::jpeg;
use crate::encode::EncodeError;
use crate::media::{CameraH264, RawFrame, VideoFrame};
use crate::pipeline::latest::Picture;

/// A JPEG made from the newest picture.
#[derive(Debug, Clone)]
pub struct Still {
    /// The JPEG file.
    pub jpeg: Vec<u8>,
    /// Its size in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
    /// When the picture was captured.
    pub captured: Instant,
}

/// Why no JPEG could be made.
#[derive(Debug, thiserror::Error)]
pub enum StillError {
    /// `?width=` is outside what this picture allows.
    #[error("width={asked} is not allowed: the picture is {width}x{height}, so width must be from {min} to {width}")]
    Width {
        /// The width asked for.
        asked: u32,
        /// The narrowest allowed.
        min: u32,
        /// The picture's width (the widest allowed).
        width: u32,
        /// The picture's height.
        height: u32,
    },
    /// Decoding or encoding failed.
    #[error(transparent)]
    Codec(#[from] EncodeError),
}

/// The size of `picture` before scaling.
pub fn picture_size(picture: &Picture) -> (u32, u32) {
    match picture {
        Picture::Raw(frame) => frame_size(frame),
        Picture::H264 { frames, .. } => frames.last().map_or((0, 0), |f| frame_size(f)),
    }
}

/// `width` if `picture` can be shown that wide: from [`jpeg::MIN_WIDTH`] to its own width
/// (`None`, as captured, always).
pub fn checked_width(picture: &Picture, width: Option<u32>) -> Result<Option<u32>, StillError> {
    let (full_width, full_height) = picture_size(picture);
    match width {
        Some(asked) if !(jpeg::MIN_WIDTH..=full_width).contains(&asked) => Err(StillError::Width {
            asked,
            min: jpeg::MIN_WIDTH,
            width: full_width,
            height: full_height,
        }),
        _ => Ok(width),
    }
}

/// Makes the JPEG of `picture`, `width` pixels wide (`None`: as captured; see
/// [`checked_width`]).
pub fn render(picture: &Picture, width: Option<u32>) -> Result<Still, StillError> {
    let width = checked_width(picture, width)?;
    let decoded;
    let raw: &RawFrame = match picture {
        Picture::Raw(frame) => match frame.as_ref() {
            VideoFrame::Raw(raw) => raw,
            VideoFrame::H264(_) => return Err(not_raw()),
        },
        Picture::H264 {
            parameter_sets,
            frames,
            ..
        } => {
            let units: Vec<&CameraH264> = frames
                .iter()
                .filter_map(|f| match f.as_ref() {
                    VideoFrame::H264(h264) => Some(h264),
                    VideoFrame::Raw(_) => None,
                })
                .collect();
            decoded = h264_decode::decode_last(parameter_sets, &units)?;
            &decoded
        }
    };
    // A camera's decoded size may differ from its announced mode by an odd row or column.
    let width = width.unwrap_or(raw.width).min(raw.width);
    let jpeg = jpeg::encode(raw, width)?;
    let (width, height) = jpeg::scaled_size(raw.width, raw.height, width);
    Ok(Still {
        jpeg,
        width,
        height,
        captured: raw.capture_instant,
    })
}

fn frame_size(frame: &VideoFrame) -> (u32, u32) {
    match frame {
        VideoFrame::Raw(raw) => (raw.width, raw.height),
        VideoFrame::H264(h264) => (h264.width, h264.height),
    }
}

fn not_raw() -> StillError {
    StillError::Codec(EncodeError::encode("jpeg", "a raw picture holds H.264"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    use zune_jpeg::JpegDecoder;

    use super::*;
    use crate::capture::test_h264::TestH264Camera;
    use crate::capture::test_pattern::{decode_barcode, unix_millis_low32, TestPattern};
    use crate::capture::VideoSource;
    use crate::media::PixelFormat;
    use crate::pipeline::latest::{GopLimits, LatestPicture};

    /// The barcode of a JPEG still, and its size.
    fn barcode(still: &Still) -> (Option<u32>, (u32, u32)) {
        let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(&still.jpeg), options);
        let luma = decoder.decode().expect("a valid JPEG");
        let info = decoder.info().expect("header");
        let (w, h) = (u32::from(info.width), u32::from(info.height));
        assert_eq!((w, h), (still.width, still.height), "the size it says");
        (decode_barcode(&luma, w, h), (w, h))
    }

    #[test]
    fn a_raw_picture_shows_its_barcode_at_full_size_and_scaled() {
        let pattern = TestPattern::new(640, 480, 30);
        let value = 0x1234_5678;
        let frame = VideoFrame::Raw(RawFrame {
            width: 640,
            height: 480,
            format: PixelFormat::I420,
            data: pattern.render(7, value).into(),
            capture_instant: Instant::now(),
            sequence: 7,
        });
        let picture = Picture::Raw(Arc::new(frame));
        let full = render(&picture, None).expect("renders");
        assert_eq!(barcode(&full), (Some(value), (640, 480)));
        let half = render(&picture, Some(320)).expect("renders");
        assert_eq!(barcode(&half), (Some(value), (320, 240)));
        for refused in [Some(641), Some(15), Some(0)] {
            let e = render(&picture, refused).expect_err("refused");
            assert!(
                e.to_string().contains("width must be from 16 to 640"),
                "{e}"
            );
        }
    }

    #[test]
    fn camera_h264_shows_its_newest_picture_not_its_keyframe() {
        // 100 fps so that the test is quick; an IDR every second (100 frames).
        let mut camera = TestH264Camera::new(320, 240, 100, 1).expect("camera");
        let latest = LatestPicture::new(GopLimits::default());
        let mut keyframe_only = None;
        for n in 0..30 {
            let frame = Arc::new(camera.next_frame().expect("frame"));
            latest.record(&frame, Instant::now());
            if n == 0 {
                keyframe_only = Some(latest.picture(Instant::now()).expect("the IDR"));
            }
        }
        let now = unix_millis_low32(SystemTime::now());
        let picture = latest.picture(Instant::now()).expect("a picture");
        let Picture::H264 { frames, stale, .. } = &picture else {
            panic!("camera H.264 is kept as H.264: {picture:?}");
        };
        assert_eq!((frames.len(), *stale), (30, false));
        let (newest, size) = barcode(&render(&picture, None).expect("decodes"));
        assert_eq!(size, (320, 240));
        let newest = newest.expect("the barcode reads");
        assert!(
            now.wrapping_sub(newest) < 1000,
            "captured {} ms before now",
            now.wrapping_sub(newest)
        );
        let keyframe = render(&keyframe_only.expect("kept"), None).expect("decodes");
        let first = barcode(&keyframe).0.expect("the barcode reads");
        // 29 frames at 100 fps after the IDR.
        assert!(
            newest.wrapping_sub(first) >= 200,
            "the newest picture ({newest}) is later than the keyframe ({first})"
        );
        let scaled = render(&picture, Some(160)).expect("decodes and scales");
        assert_eq!((scaled.width, scaled.height), (160, 120));
    }
}
