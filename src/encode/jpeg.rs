//! I420 pictures to JPEG, optionally scaled down, for `/snapshot.jpg`.
//!
//! peercam's frames are BT.601 limited range (Y 16-235, Cb/Cr 16-240); JFIF is full range,
//! so samples are mapped while they are handed to the encoder (the reverse of what the MJPEG
//! capture does, `capture::convert`). Chroma stays 4:2:0: the encoder is given each chroma
//! sample for both of its columns and takes the top-left of every 2x2 block back
//! (`ChromaSubsamplingMethod::Nearest`, its default), so the planes go through unchanged.
//! Scaling uses `fast_image_resize`'s convolution (a bilinear kernel widened to the scale
//! factor, so a large reduction averages every source pixel) on each plane.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};

use crate::encode::EncodeError;
use crate::media::RawFrame;

const CODEC: &str = "jpeg";

/// JPEG quality (1-100): sharp enough for a still, about 60 KB at 640x480 for the test
/// pattern; below 90 the encoder keeps 4:2:0 chroma.
pub const QUALITY: u8 = 85;

/// Narrowest picture asked for: below this a picture shows nothing useful.
pub const MIN_WIDTH: u32 = 16;

/// The size of `width` x `height` scaled to `to_width` pixels wide, keeping the aspect
/// ratio; the height is rounded to the nearest even number (at least 2).
pub fn scaled_size(width: u32, height: u32, to_width: u32) -> (u32, u32) {
    if to_width == width || width == 0 {
        return (width, height);
    }
    let exact = u64::from(height) * u64::from(to_width);
    // Nearest even: round height/2, then double.
    let half = (exact + u64::from(width)) / (2 * u64::from(width));
    (to_width, (half as u32).max(1) * 2)
}

/// Encodes `frame` (I420) as a baseline JPEG, scaled down to `to_width` pixels wide first
/// when that is narrower (see [`scaled_size`]). `to_width` must be at least [`MIN_WIDTH`]
/// and at most the frame's width; callers check and say so.
pub fn encode(frame: &RawFrame, to_width: u32) -> Result<Vec<u8>, EncodeError> {
    let (y, u, v) = frame.planes();
    let (width, height) = (frame.width, frame.height);
    if to_width == width {
        return encode_planes(&Planes {
            y,
            u,
            v,
            width,
            height,
        });
    }
    if !(MIN_WIDTH..width).contains(&to_width) {
        return Err(EncodeError::encode(
            CODEC,
            format!("cannot scale {width} pixels wide to {to_width}"),
        ));
    }
    let (w, h) = scaled_size(width, height, to_width);
    let (cw, ch) = (w.div_ceil(2), h / 2);
    let mut resizer = Resizer::new();
    let y = scale_plane(&mut resizer, y, (width, height), (w, h))?;
    let u = scale_plane(&mut resizer, u, (width / 2, height / 2), (cw, ch))?;
    let v = scale_plane(&mut resizer, v, (width / 2, height / 2), (cw, ch))?;
    encode_planes(&Planes {
        y: &y,
        u: &u,
        v: &v,
        width: w,
        height: h,
    })
}

/// One plane of `from` (width, height) scaled to `to`.
fn scale_plane(
    resizer: &mut Resizer,
    plane: &[u8],
    from: (u32, u32),
    to: (u32, u32),
) -> Result<Vec<u8>, EncodeError> {
    let failed = |e: &dyn std::fmt::Display| EncodeError::encode(CODEC, format!("scaling: {e}"));
    let source = ImageRef::new(from.0, from.1, plane, PixelType::U8).map_err(|e| failed(&e))?;
    let mut scaled = Image::new(to.0, to.1, PixelType::U8);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer
        .resize(&source, &mut scaled, &options)
        .map_err(|e| failed(&e))?;
    Ok(scaled.into_vec())
}

/// Borrowed I420 planes: `y` is `width` x `height`, `u` and `v` are `ceil(width / 2)` x
/// `height / 2` (height even).
struct Planes<'a> {
    y: &'a [u8],
    u: &'a [u8],
    v: &'a [u8],
    width: u32,
    height: u32,
}

fn encode_planes(planes: &Planes<'_>) -> Result<Vec<u8>, EncodeError> {
    let too_big = |n: u32| {
        u16::try_from(n).map_err(|_| EncodeError::encode(CODEC, format!("{n} pixels is too big")))
    };
    let image = FullRange {
        planes,
        width: too_big(planes.width)?,
        height: too_big(planes.height)?,
    };
    let mut out = Vec::with_capacity(planes.y.len() / 4);
    let mut encoder = Encoder::new(&mut out, QUALITY);
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode_image(image)
        .map_err(|e| EncodeError::encode(CODEC, e.to_string()))?;
    Ok(out)
}

/// The planes as the encoder takes them: full-range YCbCr rows, chroma repeated per column.
struct FullRange<'a> {
    planes: &'a Planes<'a>,
    width: u16,
    height: u16,
}

impl ImageBuffer for FullRange<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, row: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, row) = (usize::from(self.width), usize::from(row));
        let cw = w.div_ceil(2);
        let luma = &self.planes.y[row * w..][..w];
        buffers[0].extend(luma.iter().map(|&s| FULL_LUMA[usize::from(s)]));
        let chroma_row = row / 2 * cw;
        for (plane, buffer) in [(self.planes.u, 1), (self.planes.v, 2)] {
            let samples = &plane[chroma_row..][..cw];
            let out = &mut buffers[buffer];
            for &s in samples {
                let full = FULL_CHROMA[usize::from(s)];
                out.extend_from_slice(&[full, full]);
            }
            out.truncate(out.len() - (2 * cw - w));
        }
    }
}

/// Limited-range luma (16-235) to full range (0-255), rounded, clamped.
const FULL_LUMA: [u8; 256] = range_table(16, 0, 255, 219);
/// Limited-range chroma (16-240 around 128) to full range, rounded, clamped.
const FULL_CHROMA: [u8; 256] = range_table(128, 128, 255, 224);

/// `out + (i - mid) * num / den` for every byte `i`, rounded half away from zero, clamped to
/// 0-255.
const fn range_table(mid: i32, out: i32, num: i32, den: i32) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let scaled = (i as i32 - mid) * num;
        let q = if scaled >= 0 {
            (scaled + den / 2) / den
        } else {
            (scaled - den / 2) / den
        };
        let v = out + q;
        table[i] = if v < 0 {
            0
        } else if v > 255 {
            255
        } else {
            v as u8
        };
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    use zune_jpeg::JpegDecoder;

    use super::*;
    use crate::media::PixelFormat;

    /// (width, height, YCbCr samples interleaved) of a JPEG.
    fn decode(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
        let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
        let pixels = decoder.decode().expect("a valid JPEG");
        let info = decoder.info().expect("header");
        (usize::from(info.width), usize::from(info.height), pixels)
    }

    /// An I420 frame of `width` x `height`: left half black, right half white, chroma
    /// neutral but for a blue (high Cb) bottom half.
    fn halves(width: u32, height: u32) -> RawFrame {
        let (w, h) = (width as usize, height as usize);
        let mut data = vec![128u8; RawFrame::i420_len(width, height)];
        for row in data[..w * h].chunks_exact_mut(w) {
            row[..w / 2].fill(16);
            row[w / 2..].fill(235);
        }
        let (cw, ch) = (w / 2, h / 2);
        data[w * h + cw * ch / 2..w * h + cw * ch].fill(240);
        RawFrame {
            width,
            height,
            format: PixelFormat::I420,
            data: data.into(),
            capture_instant: Instant::now(),
            sequence: 0,
        }
    }

    #[test]
    fn the_range_tables_map_limited_to_full_range() {
        assert_eq!((FULL_LUMA[16], FULL_LUMA[235]), (0, 255));
        assert_eq!((FULL_LUMA[0], FULL_LUMA[255]), (0, 255), "clamped");
        assert_eq!(FULL_LUMA[126], 128); // (126 - 16) * 255 / 219 = 128.08
        assert_eq!(
            (FULL_CHROMA[16], FULL_CHROMA[128], FULL_CHROMA[240]),
            (0, 128, 255)
        );
    }

    #[test]
    fn scaled_sizes_keep_the_aspect_ratio_with_an_even_height() {
        assert_eq!(scaled_size(640, 480, 640), (640, 480));
        assert_eq!(scaled_size(640, 480, 320), (320, 240));
        assert_eq!(scaled_size(1280, 720, 320), (320, 180));
        assert_eq!(scaled_size(1280, 720, 100), (100, 56)); // 56.25
        assert_eq!(scaled_size(1280, 720, 90), (90, 50)); // 50.6: 25.3 halves
        assert_eq!(scaled_size(1920, 1080, 16), (16, 10)); // 9: rounded up to even
        assert_eq!(scaled_size(640, 2, 16), (16, 2), "at least 2");
    }

    #[test]
    fn a_frame_keeps_its_size_and_colours() {
        let (w, h, pixels) = decode(&encode(&halves(64, 48), 64).expect("encodes"));
        assert_eq!((w, h), (64, 48));
        let at = |x: usize, y: usize| &pixels[(y * w + x) * 3..][..3];
        // Full range after the mapping, within JPEG's error.
        let near = |got: u8, want: u8| got.abs_diff(want) <= 6;
        let black = at(8, 8);
        assert!(near(black[0], 0) && near(black[1], 128), "{black:?}");
        let white = at(56, 8);
        assert!(near(white[0], 255) && near(white[2], 128), "{white:?}");
        let blue = at(8, 40);
        assert!(near(blue[1], 255), "Cb of the bottom half: {blue:?}");
    }

    #[test]
    fn a_frame_is_scaled_down_to_the_width_asked_for() {
        for (to, want) in [(32, (32, 24)), (17, (17, 12)), (16, (16, 12))] {
            let (w, h, pixels) = decode(&encode(&halves(64, 48), to).expect("encodes"));
            assert_eq!((w as u32, h as u32), want, "to {to}");
            let luma = |x: usize, y: usize| pixels[(y * w + x) * 3];
            assert!(luma(1, 1) < 20, "left stays black: {}", luma(1, 1));
            assert!(
                luma(w - 2, 1) > 235,
                "right stays white: {}",
                luma(w - 2, 1)
            );
            assert!(pixels[((h - 2) * w + 1) * 3 + 1] > 235, "bottom stays blue");
        }
    }

    #[test]
    fn widths_outside_the_frame_are_refused() {
        let frame = halves(64, 48);
        assert!(encode(&frame, 65).is_err());
        assert!(encode(&frame, MIN_WIDTH - 1).is_err());
    }
}
