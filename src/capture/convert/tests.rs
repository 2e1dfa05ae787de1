//! Tests for `convert.rs`: hand-built frames with known pixels, and real JPEGs.

use super::*;
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

/// Splits an I420 buffer into (Y, U, V) for assertions.
fn planes(i420: &[u8], w: usize, h: usize) -> (&[u8], &[u8], &[u8]) {
    let (y, c) = i420.split_at(w * h);
    let (u, v) = c.split_at((w / 2) * (h / 2));
    (y, u, v)
}

#[test]
fn yuyv_4x2_known_pixels_average_chroma_of_both_rows() {
    #[rustfmt::skip]
    let src = [
        10, 100, 20, 200, 30, 110, 40, 210,
        50, 102, 60, 203, 70, 111, 80, 212,
    ];
    let mut dst = vec![0u8; RawFrame::i420_len(4, 2)];
    yuyv_to_i420(&src, 8, 4, 2, &mut dst).expect("converts");
    // (100+102)/2 = 101, (110+111)/2 = 110.5 -> 111, (200+203)/2 = 201.5 -> 202, 211.
    assert_eq!(dst, [10, 20, 30, 40, 50, 60, 70, 80, 101, 111, 202, 211]);
}

#[test]
fn yuyv_with_row_padding_skips_the_padding() {
    #[rustfmt::skip]
    let src = [
        10, 100, 20, 200, 30, 110, 40, 210, 0xEE, 0xEE, 0xEE, 0xEE,
        50, 102, 60, 203, 70, 111, 80, 212, // no padding after the last row
    ];
    let mut dst = vec![0u8; RawFrame::i420_len(4, 2)];
    yuyv_to_i420(&src, 12, 4, 2, &mut dst).expect("converts");
    assert_eq!(dst, [10, 20, 30, 40, 50, 60, 70, 80, 101, 111, 202, 211]);
}

/// A YUYV 8x4 frame where every sample is distinct: Y = 2*(row*8+col), U/V from the position.
#[test]
fn yuyv_8x4_matches_per_pixel_reference() {
    let (w, h, stride) = (8usize, 4usize, 20usize);
    let mut src = vec![0xEEu8; stride * h];
    for r in 0..h {
        for pair in 0..w / 2 {
            let o = r * stride + pair * 4;
            src[o] = (2 * (r * w + 2 * pair)) as u8;
            src[o + 1] = (100 + r * 10 + pair) as u8;
            src[o + 2] = (2 * (r * w + 2 * pair + 1)) as u8;
            src[o + 3] = (200 - r * 7 - pair) as u8;
        }
    }
    let mut dst = vec![0u8; RawFrame::i420_len(8, 4)];
    yuyv_to_i420(&src, stride, 8, 4, &mut dst).expect("converts");
    let (y, u, v) = planes(&dst, w, h);
    let expected_y: Vec<u8> = (0..w * h).map(|i| (2 * i) as u8).collect();
    assert_eq!(y, expected_y.as_slice());
    for cr in 0..h / 2 {
        for cc in 0..w / 2 {
            // Rows 2cr and 2cr+1: U = 100 + 10r + cc, so the mean is 100 + 10(2cr) + 5 + cc.
            assert_eq!(
                u[cr * 4 + cc] as usize,
                105 + 20 * cr + cc,
                "U at {cr},{cc}"
            );
            // V = 200 - 7r - cc: mean 200 - 14cr - 3.5 - cc, rounded up.
            assert_eq!(
                v[cr * 4 + cc] as usize,
                197 - 14 * cr - cc,
                "V at {cr},{cc}"
            );
        }
    }
}

/// Widths that span whole 16-pixel blocks and a tail, against per-pixel reference formulas.
#[test]
fn wide_rows_match_per_pixel_reference() {
    let (w, h, stride) = (36usize, 6usize, 80usize);
    let sample = |r: usize, i: usize| ((r * 37 + i * 11) % 251) as u8;
    let mut yuyv = vec![0xEEu8; stride * h];
    for r in 0..h {
        for i in 0..2 * w {
            yuyv[r * stride + i] = sample(r, i);
        }
    }
    let mut dst = vec![0u8; RawFrame::i420_len(36, 6)];
    yuyv_to_i420(&yuyv, stride, 36, 6, &mut dst).expect("converts");
    let (y, u, v) = planes(&dst, w, h);
    for r in 0..h {
        for x in 0..w {
            assert_eq!(y[r * w + x], sample(r, 2 * x), "Y at {x},{r}");
        }
    }
    let mean = |a: u8, b: u8| (u32::from(a) + u32::from(b)).div_ceil(2) as u8;
    for cr in 0..h / 2 {
        for cx in 0..w / 2 {
            let (r0, r1) = (2 * cr, 2 * cr + 1);
            let want_u = mean(sample(r0, 4 * cx + 1), sample(r1, 4 * cx + 1));
            let want_v = mean(sample(r0, 4 * cx + 3), sample(r1, 4 * cx + 3));
            assert_eq!(u[cr * w / 2 + cx], want_u, "U at {cx},{cr}");
            assert_eq!(v[cr * w / 2 + cx], want_v, "V at {cx},{cr}");
        }
    }
    let mut nv12 = vec![0xEEu8; stride * h + stride * h / 2];
    for r in 0..h + h / 2 {
        for i in 0..w {
            nv12[r * stride + i] = sample(r, i);
        }
    }
    nv12_to_i420(&nv12, stride, 36, 6, &mut dst).expect("converts");
    let (y, u, v) = planes(&dst, w, h);
    assert!((0..h).all(|r| (0..w).all(|x| y[r * w + x] == sample(r, x))));
    for cr in 0..h / 2 {
        for cx in 0..w / 2 {
            assert_eq!(u[cr * w / 2 + cx], sample(h + cr, 2 * cx), "U at {cx},{cr}");
            assert_eq!(
                v[cr * w / 2 + cx],
                sample(h + cr, 2 * cx + 1),
                "V at {cx},{cr}"
            );
        }
    }
}

/// The plain build (used without AVX2 and on other CPUs) gives the same rows as the dispatch.
#[test]
fn yuyv_plain_and_dispatched_rows_agree() {
    let top: Vec<u8> = (0..200u32).map(|i| (i * 7 % 256) as u8).collect();
    let bottom: Vec<u8> = (0..200u32).map(|i| (i * 13 % 256) as u8).collect();
    let mut a = (vec![0u8; 100], vec![0u8; 100], vec![0u8; 50], vec![0u8; 50]);
    let mut b = a.clone();
    yuyv_row_pair(&top, &bottom, &mut a.0, &mut a.1, &mut a.2, &mut a.3);
    yuyv_row_pair_plain(&top, &bottom, &mut b.0, &mut b.1, &mut b.2, &mut b.3);
    assert_eq!(a, b);
    assert_eq!(
        (a.0[3], a.1[3], a.2[1], a.3[1]),
        (
            top[6],
            bottom[6],
            avg2(top[5], bottom[5]),
            avg2(top[7], bottom[7])
        )
    );
}

/// Same for NV12's chroma split: whole 16-pair blocks and a 3-pair tail.
#[test]
fn nv12_plain_and_dispatched_deinterleave_agree() {
    let uv: Vec<u8> = (0..70u32).map(|i| (i * 29 % 256) as u8).collect();
    let mut a = (vec![0u8; 35], vec![0u8; 35]);
    let mut b = a.clone();
    deinterleave_dispatch(&uv, &mut a.0, &mut a.1);
    deinterleave(&uv, &mut b.0, &mut b.1);
    assert_eq!(a, b);
    assert!((0..35).all(|i| a.0[i] == uv[2 * i] && a.1[i] == uv[2 * i + 1]));
}

#[test]
fn nv12_4x2_known_pixels() {
    #[rustfmt::skip]
    let src = [
        1, 2, 3, 4, 0xEE, 0xEE,
        5, 6, 7, 8, 0xEE, 0xEE,
        100, 200, 110, 210, // UV plane; last row without padding
    ];
    let mut dst = vec![0u8; RawFrame::i420_len(4, 2)];
    nv12_to_i420(&src, 6, 4, 2, &mut dst).expect("converts");
    assert_eq!(dst, [1, 2, 3, 4, 5, 6, 7, 8, 100, 110, 200, 210]);
}

#[test]
fn nv12_8x4_deinterleaves_every_chroma_row() {
    let (w, h) = (8usize, 4usize);
    let mut src: Vec<u8> = (0..w * h).map(|i| i as u8).collect();
    for i in 0..w / 2 * h / 2 {
        src.push(100 + i as u8); // U
        src.push(200 + i as u8); // V
    }
    let mut dst = vec![0u8; RawFrame::i420_len(8, 4)];
    nv12_to_i420(&src, w, 8, 4, &mut dst).expect("converts");
    let (y, u, v) = planes(&dst, w, h);
    assert_eq!(y, &src[..w * h]);
    assert_eq!(u, [100, 101, 102, 103, 104, 105, 106, 107]);
    assert_eq!(v, [200, 201, 202, 203, 204, 205, 206, 207]);
}

#[test]
fn yu12_4x2_with_padding_copies_rows() {
    #[rustfmt::skip]
    let src = [
        1, 2, 3, 4, 0xEE, 0xEE,
        5, 6, 7, 8, 0xEE, 0xEE,
        100, 110, 0xEE, // U, chroma stride 3
        200, 210,       // V
    ];
    let mut dst = vec![0u8; RawFrame::i420_len(4, 2)];
    yu12_to_i420(&src, 6, 4, 2, &mut dst).expect("converts");
    assert_eq!(dst, [1, 2, 3, 4, 5, 6, 7, 8, 100, 110, 200, 210]);
}

#[test]
fn yu12_tight_is_an_identity_copy() {
    let src: Vec<u8> = (0..RawFrame::i420_len(8, 4)).map(|i| i as u8).collect();
    let mut dst = vec![0u8; src.len()];
    yu12_to_i420(&src, 8, 8, 4, &mut dst).expect("converts");
    assert_eq!(dst, src);
}

#[test]
fn short_source_names_format_and_sizes() {
    let mut dst = vec![0u8; RawFrame::i420_len(4, 2)];
    let e = yuyv_to_i420(&[0u8; 15], 8, 4, 2, &mut dst).expect_err("one byte short");
    assert_eq!(
        e,
        ConvertError::SourceTooSmall {
            format: "YUYV",
            width: 4,
            height: 2,
            stride: 8,
            expected: 16,
            actual: 15
        }
    );
    let text = e.to_string();
    assert!(
        text.contains("YUYV") && text.contains("15") && text.contains("16"),
        "{text}"
    );
    let e = nv12_to_i420(&[0u8; 11], 4, 4, 2, &mut dst).expect_err("short");
    assert!(e.to_string().contains("NV12"), "{e}");
    let e = yu12_to_i420(&[0u8; 11], 4, 4, 2, &mut dst).expect_err("short");
    assert!(e.to_string().contains("YU12"), "{e}");
}

#[test]
fn bad_output_size_stride_and_odd_frames_are_errors() {
    let src = [0u8; 64];
    let mut small = vec![0u8; 11];
    let e = yuyv_to_i420(&src, 8, 4, 2, &mut small).expect_err("output too small");
    assert!(matches!(
        e,
        ConvertError::DestinationSize {
            expected: 12,
            actual: 11,
            ..
        }
    ));
    let mut dst = vec![0u8; 12];
    let e = yuyv_to_i420(&src, 6, 4, 2, &mut dst).expect_err("stride shorter than a row");
    assert!(e.to_string().contains("stride 6"), "{e}");
    let e = nv12_to_i420(&src, 4, 3, 2, &mut dst).expect_err("odd width");
    assert!(matches!(e, ConvertError::BadSize { width: 3, .. }), "{e}");
    let e = yu12_to_i420(&src, 4, 0, 0, &mut []).expect_err("empty frame");
    assert!(matches!(e, ConvertError::BadSize { .. }), "{e}");
}

/// `offset + (i - mid) * scale / 255` for every byte `i`, rounded half away from zero: the
/// reference for the fixed-point range mapping.
fn range_table(mid: i32, offset: i32, scale: i32) -> [u8; 256] {
    std::array::from_fn(|i| {
        let scaled = (i as i32 - mid) * scale;
        let q = if scaled >= 0 {
            (scaled + 127) / 255
        } else {
            (scaled - 127) / 255
        };
        (offset + q) as u8
    })
}

static LUMA_TO_LIMITED: std::sync::LazyLock<[u8; 256]> =
    std::sync::LazyLock::new(|| range_table(0, 16, 219));
static CHROMA_TO_LIMITED: std::sync::LazyLock<[u8; 256]> =
    std::sync::LazyLock::new(|| range_table(128, 128, 224));

#[test]
fn fixed_point_range_mapping_equals_the_formula_for_every_byte() {
    for i in 0..=255u8 {
        assert_eq!(
            luma_to_limited(u32::from(i)),
            LUMA_TO_LIMITED[usize::from(i)],
            "Y {i}"
        );
        assert_eq!(
            chroma_to_limited(u32::from(i)),
            CHROMA_TO_LIMITED[usize::from(i)],
            "C {i}"
        );
    }
}

#[test]
fn range_tables_map_full_to_limited_range() {
    assert_eq!(LUMA_TO_LIMITED[0], 16);
    assert_eq!(LUMA_TO_LIMITED[255], 235);
    assert_eq!(LUMA_TO_LIMITED[128], 126);
    assert_eq!(CHROMA_TO_LIMITED[0], 16);
    assert_eq!(CHROMA_TO_LIMITED[128], 128);
    assert_eq!(CHROMA_TO_LIMITED[255], 240);
    assert!(LUMA_TO_LIMITED.windows(2).all(|p| p[0] <= p[1]));
}

/// Four flat 16x16 quadrants (full-range Y, Cb, Cr) in a 32x32 image.
const QUADRANTS: [[u8; 3]; 4] = [
    [200, 80, 160],
    [60, 170, 100],
    [128, 128, 128],
    [30, 40, 220],
];

fn quadrant_of(x: usize, y: usize) -> usize {
    (y / 16) * 2 + x / 16
}

/// Interleaved full-range YCbCr of the quadrant image.
fn quadrant_image() -> Vec<u8> {
    let mut img = Vec::with_capacity(32 * 32 * 3);
    for y in 0..32 {
        for x in 0..32 {
            img.extend_from_slice(&QUADRANTS[quadrant_of(x, y)]);
        }
    }
    img
}

fn encode(img: &[u8], w: u16, h: u16, color: ColorType, sampling: SamplingFactor) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, 95);
    encoder.set_sampling_factor(sampling);
    encoder.encode(img, w, h, color).expect("encode test JPEG");
    out
}

/// Checks the decoded quadrants, away from the edges where chroma upsampling blends colours.
fn assert_quadrants(i420: &[u8]) {
    let (y, u, v) = planes(i420, 32, 32);
    let near = |got: u8, want: u8, what: &str, x: usize, yy: usize| {
        assert!(
            (i32::from(got) - i32::from(want)).abs() <= 3,
            "{what} at {x},{yy}: got {got}, want {want}±3"
        );
    };
    for py in (0..32).filter(|p| (p % 16) >= 4 && (p % 16) < 12) {
        for px in (0..32).filter(|p| (p % 16) >= 4 && (p % 16) < 12) {
            let [qy, qu, qv] = QUADRANTS[quadrant_of(px, py)];
            near(y[py * 32 + px], LUMA_TO_LIMITED[qy as usize], "Y", px, py);
            let c = (py / 2) * 16 + px / 2;
            near(u[c], CHROMA_TO_LIMITED[qu as usize], "U", px, py);
            near(v[c], CHROMA_TO_LIMITED[qv as usize], "V", px, py);
        }
    }
}

#[test]
fn mjpeg_422_and_420_decode_to_limited_range_i420() {
    for sampling in [
        SamplingFactor::R_4_2_2,
        SamplingFactor::R_4_2_0,
        SamplingFactor::R_4_4_4,
    ] {
        let jpeg = encode(&quadrant_image(), 32, 32, ColorType::Ycbcr, sampling);
        let mut dst = vec![0u8; RawFrame::i420_len(32, 32)];
        let mut scratch = MjpegDecoder::default();
        mjpeg_to_i420(&jpeg, 32, 32, &mut dst, &mut scratch).expect("decodes");
        assert_quadrants(&dst);
    }
}

#[test]
fn mjpeg_reuses_its_buffers_between_frames() {
    let jpeg = encode(
        &quadrant_image(),
        32,
        32,
        ColorType::Ycbcr,
        SamplingFactor::R_4_2_2,
    );
    let mut dst = vec![0u8; RawFrame::i420_len(32, 32)];
    let mut scratch = MjpegDecoder::default();
    mjpeg_to_i420(&jpeg, 32, 32, &mut dst, &mut scratch).expect("first frame");
    let (ptr, cap) = (scratch.decoded.as_ptr(), scratch.decoded.capacity());
    dst.fill(0);
    mjpeg_to_i420(&jpeg, 32, 32, &mut dst, &mut scratch).expect("second frame");
    assert_eq!(
        (scratch.decoded.as_ptr(), scratch.decoded.capacity()),
        (ptr, cap)
    );
    assert_quadrants(&dst);
}

#[test]
fn mjpeg_greyscale_gets_neutral_chroma() {
    let luma: Vec<u8> = (0..32 * 32)
        .map(|i| if i % 32 < 16 { 40 } else { 220 })
        .collect();
    let jpeg = encode(&luma, 32, 32, ColorType::Luma, SamplingFactor::R_4_4_4);
    let mut dst = vec![0u8; RawFrame::i420_len(32, 32)];
    mjpeg_to_i420(&jpeg, 32, 32, &mut dst, &mut MjpegDecoder::default()).expect("decodes");
    let (y, u, v) = planes(&dst, 32, 32);
    let lo = i32::from(LUMA_TO_LIMITED[40]);
    assert!(
        (i32::from(y[32 * 8 + 4]) - lo).abs() <= 3,
        "{}",
        y[32 * 8 + 4]
    );
    assert!(u.iter().chain(v).all(|&c| c == 128));
}

#[test]
fn corrupt_or_mismatched_mjpeg_is_an_error() {
    let jpeg = encode(
        &quadrant_image(),
        32,
        32,
        ColorType::Ycbcr,
        SamplingFactor::R_4_2_2,
    );
    let mut dst = vec![0u8; RawFrame::i420_len(32, 32)];
    let mut scratch = MjpegDecoder::default();
    let truncated = &jpeg[..jpeg.len() / 2];
    let e = mjpeg_to_i420(truncated, 32, 32, &mut dst, &mut scratch).expect_err("truncated");
    assert!(matches!(e, ConvertError::CorruptJpeg { .. }), "{e}");
    assert!(e.to_string().contains("corrupt MJPEG"), "{e}");
    for junk in [
        &[][..],
        &[0u8; 100][..],
        b"\xFF\xD8\xFF\xD9",
        b"not a jpeg at all",
    ] {
        let e = mjpeg_to_i420(junk, 32, 32, &mut dst, &mut scratch).expect_err("junk");
        assert!(matches!(e, ConvertError::CorruptJpeg { .. }), "{e}");
    }
    let mut padded = jpeg.clone();
    padded.extend_from_slice(&[0u8; 64]);
    mjpeg_to_i420(&padded, 32, 32, &mut dst, &mut scratch).expect("zero padding after EOI");
    assert_quadrants(&dst);
    let mut big = vec![0u8; RawFrame::i420_len(64, 32)];
    let e = mjpeg_to_i420(&jpeg, 64, 32, &mut big, &mut scratch).expect_err("wrong size");
    assert!(
        e.to_string().contains("32x32") && e.to_string().contains("64x32"),
        "{e}"
    );
}

/// Every truncation and many single-byte flips: errors or (for harmless flips) frames, never
/// a panic. A truncated frame is never accepted.
#[test]
fn damaged_mjpeg_never_panics() {
    let jpeg = encode(
        &quadrant_image(),
        32,
        32,
        ColorType::Ycbcr,
        SamplingFactor::R_4_2_2,
    );
    let mut dst = vec![0u8; RawFrame::i420_len(32, 32)];
    let mut scratch = MjpegDecoder::default();
    for len in 0..jpeg.len() {
        let r = mjpeg_to_i420(&jpeg[..len], 32, 32, &mut dst, &mut scratch);
        assert!(r.is_err(), "truncated at {len} of {} accepted", jpeg.len());
    }
    let mut damaged = jpeg.clone();
    for i in 0..jpeg.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            damaged[i] = jpeg[i] ^ flip;
            let _ = mjpeg_to_i420(&damaged, 32, 32, &mut dst, &mut scratch);
        }
        damaged[i] = jpeg[i];
    }
}
