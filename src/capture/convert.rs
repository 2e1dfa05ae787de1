//! Colour conversion of camera buffers into tightly packed I420 ([`RawFrame`]'s layout).
//!
//! Every function writes into a caller-owned output of exactly
//! [`RawFrame::i420_len`] bytes, so a capture loop can reuse one buffer per frame. The loops
//! walk rows with `chunks_exact` and contain no per-pixel branches, so LLVM vectorises them
//! (NEON on aarch64; on x86-64 the YUYV, NV12-chroma and MJPEG-chroma loops also get an AVX2
//! build chosen at run time: YUYV 8x and NV12 2x faster than the baseline SSE2 build).
//!
//! No SIMD crate is used. yuvutils-rs 0.8.3 (the newest the registry offers) was measured
//! against these loops: its `yuyv422_to_yuv420` is 10-20 % faster but wrong for us: it
//! point-samples chroma from one row instead of averaging the two (the odd row where its SIMD
//! runs, the even row elsewhere), never writes the last 16 pixels of each row at 640 and 1280
//! wide (stale data from the previous frame), and rejects rows with padding. It has no
//! NV12→I420, no plane copy, and no YCbCr→YCbCr range mapping for MJPEG (only a round trip
//! through RGB, which clips out-of-gamut colours and changes luma). Numbers and details:
//! BENCHMARKS.md, "Capture conversion".
//!
//! Raw formats (YUYV, NV12, YU12) from UVC cameras are BT.601 limited range, like the rest of
//! peercam, and are copied as they are. MJPEG is JFIF full range: its samples are mapped to
//! limited range while they are copied.
//!
//! [`RawFrame`]: crate::media::RawFrame
//! [`RawFrame::i420_len`]: crate::media::RawFrame::i420_len

use std::panic::{self, AssertUnwindSafe};

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::media::RawFrame;

/// Why a camera buffer could not be converted. The capture loop drops such a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The frame size is zero or odd; I420 needs even dimensions.
    #[error("{format} frame {width}x{height}: width and height must be even and non-zero")]
    BadSize {
        /// Source format, e.g. `YUYV`.
        format: &'static str,
        /// Frame width in pixels.
        width: u32,
        /// Frame height in pixels.
        height: u32,
    },
    /// The row stride is shorter than one row of pixels.
    #[error("{format} frame {width}x{height}: stride {stride} bytes is shorter than a row ({row_bytes} bytes)")]
    BadStride {
        /// Source format.
        format: &'static str,
        /// Frame width in pixels.
        width: u32,
        /// Frame height in pixels.
        height: u32,
        /// Stride the caller passed (the driver's `bytesperline`).
        stride: usize,
        /// Bytes one row needs.
        row_bytes: usize,
    },
    /// The camera buffer is shorter than the frame it claims to hold (a truncated frame).
    #[error("{format} frame {width}x{height} (stride {stride}): source has {actual} bytes, expected at least {expected}")]
    SourceTooSmall {
        /// Source format.
        format: &'static str,
        /// Frame width in pixels.
        width: u32,
        /// Frame height in pixels.
        height: u32,
        /// Row stride in bytes.
        stride: usize,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The output buffer is not exactly one I420 frame.
    #[error("{format} to I420 {width}x{height}: output has {actual} bytes, expected {expected}")]
    DestinationSize {
        /// Source format.
        format: &'static str,
        /// Frame width in pixels.
        width: u32,
        /// Frame height in pixels.
        height: u32,
        /// `RawFrame::i420_len(width, height)`.
        expected: usize,
        /// Length of the output slice.
        actual: usize,
    },
    /// The JPEG decoder rejected the frame (truncated or damaged data).
    #[error("corrupt MJPEG frame ({len} bytes): {reason}")]
    CorruptJpeg {
        /// Size of the JPEG data.
        len: usize,
        /// The decoder's message.
        reason: String,
    },
    /// The JPEG's size differs from the size the camera was set to.
    #[error(
        "MJPEG frame is {actual_width}x{actual_height}, the camera was set to {width}x{height}"
    )]
    JpegSizeMismatch {
        /// Configured width.
        width: u32,
        /// Configured height.
        height: u32,
        /// Width in the JPEG header.
        actual_width: u32,
        /// Height in the JPEG header.
        actual_height: u32,
    },
    /// The JPEG is not YCbCr or greyscale (e.g. RGB or CMYK), which no webcam sends.
    #[error("MJPEG frame has colour space {colorspace}; only YCbCr and greyscale are supported")]
    JpegColorSpace {
        /// The JPEG's colour space as the decoder names it.
        colorspace: String,
    },
}

/// Checks the frame size and the output length; returns `(width, height)` as `usize`.
fn check_frame(
    format: &'static str,
    width: u32,
    height: u32,
    dst: &[u8],
) -> Result<(usize, usize), ConvertError> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(ConvertError::BadSize {
            format,
            width,
            height,
        });
    }
    let expected = RawFrame::i420_len(width, height);
    if dst.len() != expected {
        return Err(ConvertError::DestinationSize {
            format,
            width,
            height,
            expected,
            actual: dst.len(),
        });
    }
    Ok((width as usize, height as usize))
}

/// Checks that `stride >= row_bytes` and `src` holds `needed` bytes.
fn check_source(
    format: &'static str,
    (width, height): (u32, u32),
    stride: usize,
    row_bytes: usize,
    needed: usize,
    src: &[u8],
) -> Result<(), ConvertError> {
    if stride < row_bytes {
        return Err(ConvertError::BadStride {
            format,
            width,
            height,
            stride,
            row_bytes,
        });
    }
    if src.len() < needed {
        return Err(ConvertError::SourceTooSmall {
            format,
            width,
            height,
            stride,
            expected: needed,
            actual: src.len(),
        });
    }
    Ok(())
}

/// Bytes a plane of `rows` rows of `row_bytes` at `stride` spans (no padding after the last).
fn plane_span(rows: usize, stride: usize, row_bytes: usize) -> usize {
    (rows - 1) * stride + row_bytes
}

/// Splits a tightly packed I420 buffer into its Y, U and V planes.
fn split_i420(dst: &mut [u8], w: usize, h: usize) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let (y, chroma) = dst.split_at_mut(w * h);
    let (u, v) = chroma.split_at_mut((w / 2) * (h / 2));
    (y, u, v)
}

/// Copies `rows` rows of `row_bytes` from a strided plane into a packed one.
fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], row_bytes: usize) {
    for (d, s) in dst.chunks_exact_mut(row_bytes).zip(src.chunks(stride)) {
        d.copy_from_slice(&s[..row_bytes]);
    }
}

/// Rounded average of two samples.
#[inline(always)]
fn avg2(a: u8, b: u8) -> u8 {
    ((u16::from(a) + u16::from(b) + 1) >> 1) as u8
}

/// Converts packed YUYV 4:2:2 (`Y0 U Y1 V` per pixel pair) to I420; each output chroma
/// sample is the rounded average of the two source rows it covers.
///
/// `stride` is the driver's `bytesperline` (at least `2 * width`); `dst` must be exactly
/// [`RawFrame::i420_len`]`(width, height)` bytes.
pub fn yuyv_to_i420(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    const FORMAT: &str = "YUYV";
    let (w, h) = check_frame(FORMAT, width, height, dst)?;
    let row_bytes = 2 * w;
    let needed = plane_span(h, stride, row_bytes);
    check_source(FORMAT, (width, height), stride, row_bytes, needed, src)?;
    let (y_plane, u_plane, v_plane) = split_i420(dst, w, h);
    let row_pairs = src.chunks(2 * stride).take(h / 2);
    let dst_rows = y_plane
        .chunks_exact_mut(2 * w)
        .zip(u_plane.chunks_exact_mut(w / 2))
        .zip(v_plane.chunks_exact_mut(w / 2));
    for (pair, ((y2, u), v)) in row_pairs.zip(dst_rows) {
        let (top, bottom) = (&pair[..row_bytes], &pair[stride..stride + row_bytes]);
        let (y_top, y_bottom) = y2.split_at_mut(w);
        yuyv_row_pair(top, bottom, y_top, y_bottom, u, v);
    }
    Ok(())
}

/// One pair of YUYV rows: both rows' luma, and chroma averaged over the two rows. On x86-64
/// this runs the AVX2 build when the CPU has it (baseline SSE2 has no byte shuffle, so the
/// plain build stays scalar; AVX2 is ~7x faster). aarch64 always has NEON.
fn yuyv_row_pair(
    top: &[u8],
    bottom: &[u8],
    y_top: &mut [u8],
    y_bottom: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of
        // `yuyv_row_pair_avx2`.
        unsafe { yuyv_row_pair_avx2(top, bottom, y_top, y_bottom, u, v) };
        return;
    }
    yuyv_row_pair_plain(top, bottom, y_top, y_bottom, u, v);
}

/// [`yuyv_row_pair_plain`] compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn yuyv_row_pair_avx2(
    top: &[u8],
    bottom: &[u8],
    y_top: &mut [u8],
    y_bottom: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
) {
    yuyv_row_pair_plain(top, bottom, y_top, y_bottom, u, v);
}

#[inline(always)]
fn yuyv_row_pair_plain(
    top: &[u8],
    bottom: &[u8],
    y_top: &mut [u8],
    y_bottom: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
) {
    for (y, s) in y_top.iter_mut().zip(top.chunks_exact(2)) {
        *y = s[0];
    }
    for (y, s) in y_bottom.iter_mut().zip(bottom.chunks_exact(2)) {
        *y = s[0];
    }
    let chroma = top.chunks_exact(4).zip(bottom.chunks_exact(4));
    for ((u, v), (t, b)) in u.iter_mut().zip(v.iter_mut()).zip(chroma) {
        *u = avg2(t[1], b[1]);
        *v = avg2(t[3], b[3]);
    }
}

/// Pairs per block in [`deinterleave`].
const BLOCK: usize = 16;

/// Splits one interleaved `U V` row into its U and V halves. Reading each pair as a `u16`
/// and splitting it with a mask and a shift vectorises even on baseline x86-64 (SSE2), where
/// the byte-indexing form stays scalar (20x slower there); the AVX2 build
/// ([`deinterleave_dispatch`]) is another 2x faster.
#[inline(always)]
fn deinterleave(uv: &[u8], u: &mut [u8], v: &mut [u8]) {
    let (s_blocks, s_tail) = uv.as_chunks::<{ 2 * BLOCK }>();
    let (u_blocks, u_tail) = u.as_chunks_mut::<BLOCK>();
    let (v_blocks, v_tail) = v.as_chunks_mut::<BLOCK>();
    for ((s, u), v) in s_blocks.iter().zip(u_blocks).zip(v_blocks) {
        let mut pairs = [0u16; BLOCK];
        for (p, s) in pairs.iter_mut().zip(s.chunks_exact(2)) {
            *p = u16::from_le_bytes([s[0], s[1]]);
        }
        for ((u, v), p) in u.iter_mut().zip(v.iter_mut()).zip(pairs) {
            *u = (p & 0xFF) as u8;
            *v = (p >> 8) as u8;
        }
    }
    for ((u, v), s) in u_tail.iter_mut().zip(v_tail).zip(s_tail.chunks_exact(2)) {
        *u = s[0];
        *v = s[1];
    }
}

/// [`deinterleave`], with the AVX2 build on x86-64 CPUs that have it.
fn deinterleave_dispatch(uv: &[u8], u: &mut [u8], v: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement.
        unsafe { deinterleave_avx2(uv, u, v) };
        return;
    }
    deinterleave(uv, u, v);
}

/// [`deinterleave`] compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn deinterleave_avx2(uv: &[u8], u: &mut [u8], v: &mut [u8]) {
    deinterleave(uv, u, v);
}

/// Converts NV12 (a Y plane, then one plane of interleaved `U V` pairs at half height) to
/// I420. Both planes use `stride`; the UV plane starts at `stride * height`, as in V4L2's
/// single-planar NV12.
pub fn nv12_to_i420(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    const FORMAT: &str = "NV12";
    let (w, h) = check_frame(FORMAT, width, height, dst)?;
    let uv_offset = stride * h;
    let needed = uv_offset + plane_span(h / 2, stride, w);
    check_source(FORMAT, (width, height), stride, w, needed, src)?;
    let (y_plane, u_plane, v_plane) = split_i420(dst, w, h);
    copy_plane(&src[..uv_offset], stride, y_plane, w);
    let uv_rows = src[uv_offset..].chunks(stride).take(h / 2);
    let dst_rows = u_plane
        .chunks_exact_mut(w / 2)
        .zip(v_plane.chunks_exact_mut(w / 2));
    for (uv, (u, v)) in uv_rows.zip(dst_rows) {
        deinterleave_dispatch(&uv[..w], u, v);
    }
    Ok(())
}

/// Converts YU12 (planar I420 with row padding: Y at `stride`, then U and V at `stride / 2`,
/// as V4L2 lays it out) to tightly packed I420 by copying rows.
pub fn yu12_to_i420(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    const FORMAT: &str = "YU12";
    let (w, h) = check_frame(FORMAT, width, height, dst)?;
    let c_stride = stride / 2;
    let u_offset = stride * h;
    let v_offset = u_offset + c_stride * (h / 2);
    let needed = v_offset + plane_span(h / 2, c_stride, w / 2);
    check_source(FORMAT, (width, height), stride, w, needed, src)?;
    let (y_plane, u_plane, v_plane) = split_i420(dst, w, h);
    copy_plane(&src[..u_offset], stride, y_plane, w);
    copy_plane(&src[u_offset..v_offset], c_stride, u_plane, w / 2);
    copy_plane(&src[v_offset..], c_stride, v_plane, w / 2);
    Ok(())
}

/// Full-range (JFIF) luma to BT.601 limited range, `16 + y * 219 / 255` rounded, in
/// fixed point (exact for all 256 inputs; the tests check it against the formula).
#[inline(always)]
fn luma_to_limited(y: u32) -> u8 {
    ((y * 56_280 + 1_081_792) >> 16) as u8
}

/// Full-range chroma to limited range, `128 + (c - 128) * 224 / 255` rounded half away from
/// zero, in fixed point (exact for all 256 inputs).
#[inline(always)]
fn chroma_to_limited(c: u32) -> u8 {
    ((c * 57_566 + 1_052_928) >> 16) as u8
}

/// Reusable state for [`mjpeg_to_i420`]: the decoded full-size YCbCr image, kept between
/// frames so a steady stream does not reallocate it. (The JPEG decoder itself still makes its
/// own per-frame working allocations.)
#[derive(Debug, Default)]
pub struct MjpegDecoder {
    /// Interleaved Y Cb Cr (3 bytes per pixel), or Y only for a greyscale JPEG.
    decoded: Vec<u8>,
}

/// Decodes one MJPEG frame (a baseline JPEG; UVC cameras send 4:2:2 or 4:2:0, sometimes
/// without Huffman tables, which the decoder fills in) into I420, mapping JFIF full range to
/// limited range. A truncated or damaged JPEG returns [`ConvertError::CorruptJpeg`] (the
/// frame must end with an end-of-image marker, zero padding after it allowed, and the decoder
/// runs in strict mode, so damage is reported, not papered over); this never panics.
pub fn mjpeg_to_i420(
    jpeg: &[u8],
    width: u32,
    height: u32,
    dst: &mut [u8],
    scratch: &mut MjpegDecoder,
) -> Result<(), ConvertError> {
    let (w, h) = check_frame("MJPEG", width, height, dst)?;
    let corrupt = |reason: String| ConvertError::CorruptJpeg {
        len: jpeg.len(),
        reason,
    };
    // The decoder can finish a frame cut short near its end by padding the bit stream; a
    // missing end-of-image marker is how such a frame is caught. Some cameras pad the buffer
    // with zeros after the marker.
    let end = jpeg.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if !jpeg[..end].ends_with(&[0xFF, 0xD9]) {
        return Err(corrupt("no end-of-image marker (truncated frame)".into()));
    }
    // Limit the size the decoder accepts to the configured size: a damaged header cannot make
    // it allocate for a huge image.
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(w)
        .set_max_height(h);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    guarded(|| decoder.decode_headers())
        .and_then(|r| r.map_err(|e| format!("{e:?}")))
        .map_err(corrupt)?;
    let info = decoder
        .info()
        .ok_or_else(|| corrupt("no frame header".into()))?;
    if (u32::from(info.width), u32::from(info.height)) != (width, height) {
        return Err(ConvertError::JpegSizeMismatch {
            width,
            height,
            actual_width: u32::from(info.width),
            actual_height: u32::from(info.height),
        });
    }
    let grey = match decoder.input_colorspace() {
        Some(ColorSpace::YCbCr) => false,
        Some(ColorSpace::Luma) => true,
        other => {
            return Err(ConvertError::JpegColorSpace {
                colorspace: format!("{other:?}"),
            })
        }
    };
    let out_colorspace = if grey {
        ColorSpace::Luma
    } else {
        ColorSpace::YCbCr
    };
    decoder.set_options(options.jpeg_set_out_colorspace(out_colorspace));
    let bytes = w * h * out_colorspace.num_components();
    scratch.decoded.resize(bytes, 0);
    let decoded = &mut scratch.decoded[..bytes];
    guarded(|| decoder.decode_into(decoded))
        .and_then(|r| r.map_err(|e| format!("{e:?}")))
        .map_err(corrupt)?;
    let (y_plane, u_plane, v_plane) = split_i420(dst, w, h);
    if grey {
        for (d, s) in y_plane.iter_mut().zip(decoded.iter()) {
            *d = luma_to_limited(u32::from(*s));
        }
        u_plane.fill(128);
        v_plane.fill(128);
    } else {
        ycbcr444_to_i420_limited(decoded, w, y_plane, u_plane, v_plane);
    }
    Ok(())
}

/// Runs the decoder, turning a panic inside it (a decoder bug on hostile input) into an error
/// so one bad camera frame cannot take the capture thread down.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| "the JPEG decoder panicked".to_owned())
}

/// Interleaved full-range YCbCr 4:4:4 to limited-range I420; chroma is the rounded mean of
/// each 2x2 block. Uses the AVX2 build on x86-64 CPUs that have it (see [`yuyv_row_pair`]).
fn ycbcr444_to_i420_limited(
    src: &[u8],
    w: usize,
    y_plane: &mut [u8],
    u_plane: &mut [u8],
    v_plane: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement.
        unsafe { ycbcr444_to_i420_limited_avx2(src, w, y_plane, u_plane, v_plane) };
        return;
    }
    ycbcr444_to_i420_limited_plain(src, w, y_plane, u_plane, v_plane);
}

/// [`ycbcr444_to_i420_limited_plain`] compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn ycbcr444_to_i420_limited_avx2(
    src: &[u8],
    w: usize,
    y_plane: &mut [u8],
    u_plane: &mut [u8],
    v_plane: &mut [u8],
) {
    ycbcr444_to_i420_limited_plain(src, w, y_plane, u_plane, v_plane);
}

#[inline(always)]
fn ycbcr444_to_i420_limited_plain(
    src: &[u8],
    w: usize,
    y_plane: &mut [u8],
    u_plane: &mut [u8],
    v_plane: &mut [u8],
) {
    for (d, s) in y_plane.iter_mut().zip(src.chunks_exact(3)) {
        *d = luma_to_limited(u32::from(s[0]));
    }
    let rows = src
        .chunks_exact(6 * w)
        .zip(u_plane.chunks_exact_mut(w / 2))
        .zip(v_plane.chunks_exact_mut(w / 2));
    for ((pair, u), v) in rows {
        let (top, bottom) = pair.split_at(3 * w);
        let blocks = top.chunks_exact(6).zip(bottom.chunks_exact(6));
        for ((u, v), (t, b)) in u.iter_mut().zip(v.iter_mut()).zip(blocks) {
            let sum = |i: usize| {
                u32::from(t[i]) + u32::from(t[i + 3]) + u32::from(b[i]) + u32::from(b[i + 3])
            };
            *u = chroma_to_limited((sum(1) + 2) >> 2);
            *v = chroma_to_limited((sum(2) + 2) >> 2);
        }
    }
}

#[cfg(test)]
mod tests;
