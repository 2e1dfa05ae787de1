//! The frame viewers see while the camera is gone: dark grey with "CAMERA DISCONNECTED" in
//! large letters, drawn straight into I420. It goes through the same encoder as camera frames,
//! so nobody has to dial again when the camera returns.

use std::sync::Arc;
use std::time::Instant;

use crate::media::pool::BufferPool;
use crate::media::{PixelFormat, RawFrame};

/// 5x7 bitmaps (one byte per row, low 5 bits, MSB = leftmost) of the letters we need.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'D' => [0x1e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1e],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        _ => [0; 7],
    }
}

const BACKGROUND_Y: u8 = 40;
const TEXT_Y: u8 = 235;
const NEUTRAL: u8 = 128;

/// Draws placeholder frames of one size; the picture is rendered once and copied per frame.
pub struct Placeholder {
    width: u32,
    height: u32,
    picture: Vec<u8>,
}

impl Placeholder {
    /// A placeholder of `width` x `height` (even) saying "CAMERA DISCONNECTED".
    pub fn new(width: u32, height: u32) -> Self {
        let (w, h) = (width as usize, height as usize);
        let mut picture = vec![NEUTRAL; RawFrame::i420_len(width, height)];
        picture[..w * h].fill(BACKGROUND_Y);
        draw_lines(&mut picture[..w * h], w, h, &["CAMERA", "DISCONNECTED"]);
        Placeholder {
            width,
            height,
            picture,
        }
    }

    /// A frame captured "now", numbered `sequence`, in a buffer from `pool`.
    pub fn frame(
        &self,
        pool: &Arc<BufferPool>,
        sequence: u64,
        capture_instant: Instant,
    ) -> RawFrame {
        let mut data = pool.take(self.picture.len());
        data.copy_from_slice(&self.picture);
        RawFrame {
            width: self.width,
            height: self.height,
            format: PixelFormat::I420,
            data,
            capture_instant,
            sequence,
        }
    }

    /// Frame size in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

/// Centres `lines` of text in the luma plane, as large as fits.
fn draw_lines(y_plane: &mut [u8], w: usize, h: usize, lines: &[&str]) {
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(1);
    // Each character is 6 cells wide (5 + gap), each line 9 cells tall (7 + gap).
    let scale = (w * 8 / 10 / (longest * 6))
        .min(h / 2 / (lines.len() * 9))
        .max(1);
    let block_h = lines.len() * 9 * scale;
    let top = h.saturating_sub(block_h) / 2;
    for (row, line) in lines.iter().enumerate() {
        let line_w = line.len() * 6 * scale;
        let left = w.saturating_sub(line_w) / 2;
        let y0 = top + row * 9 * scale;
        for (i, c) in line.chars().enumerate() {
            let x0 = left + i * 6 * scale;
            for (gy, bits) in glyph(c).iter().enumerate() {
                for gx in 0..5 {
                    if bits & (0x10 >> gx) == 0 {
                        continue;
                    }
                    for y in y0 + gy * scale..(y0 + (gy + 1) * scale).min(h) {
                        let start = y * w + (x0 + gx * scale).min(w);
                        let end = y * w + (x0 + (gx + 1) * scale).min(w);
                        y_plane[start..end].fill(TEXT_Y);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_has_text_on_a_dark_background() {
        for (w, h) in [(320, 240), (640, 480), (1280, 720)] {
            let p = Placeholder::new(w, h);
            let f = p.frame(&BufferPool::new(1), 7, Instant::now());
            assert_eq!(f.data.len(), RawFrame::i420_len(w, h));
            assert_eq!((f.width, f.height, f.sequence), (w, h, 7));
            let (y, u, v) = f.planes();
            let bright = y.iter().filter(|&&p| p == TEXT_Y).count();
            let share = bright as f64 / y.len() as f64;
            assert!((0.01..0.3).contains(&share), "{w}x{h}: {share}");
            assert_eq!(y[0], BACKGROUND_Y, "corners are background");
            assert!(u.iter().chain(v).all(|&c| c == NEUTRAL), "grey, no colour");
        }
    }
}
