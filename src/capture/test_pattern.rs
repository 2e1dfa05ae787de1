//! A synthetic video source: scrolling colour bars, a bouncing box, a frame counter and a
//! barcode carrying the wall-clock capture time, drawn straight into I420.
//!
//! The barcode lets a browser page measure glass-to-glass latency: it reads the strip back
//! from the decoded video and compares it with its own clock on the same machine. The exact
//! layout is in docs/barcode.md and in [`decode_barcode`], which is its reference decoder.
//!
//! Pacing uses the monotonic clock: frame `n` is due at `start + n / fps`. A late source
//! skips ahead to the current slot instead of bursting to catch up.
//!
//! Frames are drawn into buffers from a [`BufferPool`], as the V4L2 capture's are: drawing
//! allocates nothing once the pool holds as many buffers as are in flight.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::capture::{CaptureError, VideoSource};
use crate::media::pool::BufferPool;
use crate::media::{PixelFormat, RawFrame, VideoFrame};

/// Number of cells in the barcode strip (see [`decode_barcode`]).
pub const BARCODE_CELLS: u32 = 40;
/// First data cell: cells 0..=2 are the start marker (white, black, white).
const DATA_FIRST_CELL: u32 = 3;
/// Cell holding the even-parity bit of the 32 data bits.
const PARITY_CELL: u32 = 35;
/// Cells 36..=39 are the stop marker (black, white, black, white).
const STOP_FIRST_CELL: u32 = 36;
/// Expected colour (true = white) of the marker cells, by cell index.
const START_MARKER: [bool; 3] = [true, false, true];
const STOP_MARKER: [bool; 4] = [false, true, false, true];

/// Luma of a white barcode cell / the counter digits (limited range peak white).
const LUMA_WHITE: u8 = 235;
/// Luma of a black barcode cell (limited range black).
const LUMA_BLACK: u8 = 16;
/// Luma threshold separating black from white cells.
pub const BARCODE_THRESHOLD: u8 = 128;
/// Neutral chroma.
const CHROMA_NEUTRAL: u8 = 128;

/// 75% colour bars in BT.601 limited range, as (Y, U, V): white, yellow, cyan, green,
/// magenta, red, blue, black.
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
];

/// The bouncing box's colour (a saturated orange), as (Y, U, V).
const BOX_COLOUR: (u8, u8, u8) = (151, 44, 201);

/// 5x7 bitmap font for the digits 0-9: seven rows per glyph, the five low bits of each row,
/// most significant bit = leftmost pixel.
const DIGITS_5X7: [[u8; 7]; 10] = [
    [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E], // 0
    [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E], // 1
    [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F], // 2
    [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E], // 3
    [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02], // 4
    [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E], // 5
    [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E], // 6
    [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08], // 7
    [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E], // 8
    [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C], // 9
];
/// The counter always shows at least this many digits (zero padded).
const COUNTER_MIN_DIGITS: usize = 6;
/// Spare frame buffers kept, as the V4L2 capture keeps: a frame is held by at most every
/// output queue and the encoders.
const POOL_SPARE: usize = 8;

/// Barcode cell size in pixels for a frame `width` pixels wide: `floor(width / 40)` rounded
/// down to an even number (so cells align with the 2x2 chroma blocks). 8 px at 320 wide,
/// 16 at 640, 32 at 1280, 48 at 1920. Zero when the frame is narrower than 80 px (no barcode).
pub fn barcode_cell_size(width: u32) -> u32 {
    (width / BARCODE_CELLS) & !1
}

/// Left edge of the barcode: the strip of 40 cells is centred, rounded down to even.
fn barcode_left(width: u32, cell: u32) -> u32 {
    ((width - BARCODE_CELLS * cell) / 2) & !1
}

/// The colour (true = white) of every barcode cell for a 32-bit value.
fn barcode_cells(value: u32) -> [bool; BARCODE_CELLS as usize] {
    let mut cells = [false; BARCODE_CELLS as usize];
    cells[..3].copy_from_slice(&START_MARKER);
    for bit in 0..32 {
        // Most significant bit first.
        cells[(DATA_FIRST_CELL + bit) as usize] = (value >> (31 - bit)) & 1 == 1;
    }
    cells[PARITY_CELL as usize] = value.count_ones() % 2 == 1;
    cells[STOP_FIRST_CELL as usize..].copy_from_slice(&STOP_MARKER);
    cells
}

/// Reads the capture-time barcode from the top of a luma plane (tightly packed,
/// `width * height` bytes). Returns the 32-bit value (the low 32 bits of the capture time in
/// milliseconds since the UNIX epoch), or `None` if the strip is absent or damaged.
///
/// Layout (also in docs/barcode.md): cell size
/// `c = barcode_cell_size(width)`; the strip covers rows `0..c`; 40 square cells start at
/// `x0 = ((width - 40c) / 2) & !1`.
/// Cell `i` covers columns `x0 + i*c .. x0 + (i+1)*c`. Cells 0-2 are the start marker
/// (white, black, white), cells 3-34 the 32 data bits most significant first (white = 1),
/// cell 35 the parity bit (white when the number of 1 data bits is odd, so data + parity
/// has an even number of ones), cells 36-39 the stop marker (black, white, black, white).
/// Each cell is read as the mean luma of its central `c/2 x c/2` square, white when the
/// mean is at least 128.
pub fn decode_barcode(y_plane: &[u8], width: u32, height: u32) -> Option<u32> {
    let cell = barcode_cell_size(width);
    let (w, h) = (width as usize, height as usize);
    if cell < 2 || h < cell as usize || y_plane.len() < w * h {
        return None;
    }
    let x0 = barcode_left(width, cell) as usize;
    let c = cell as usize;
    let (inner_from, inner_to) = (c / 4, c / 4 + c / 2);
    let mut bits = [false; BARCODE_CELLS as usize];
    for (i, bit) in bits.iter_mut().enumerate() {
        let left = x0 + i * c;
        let mut sum = 0u64;
        for row in inner_from..inner_to {
            let start = row * w + left;
            sum += y_plane[start + inner_from..start + inner_to]
                .iter()
                .map(|&v| u64::from(v))
                .sum::<u64>();
        }
        let count = ((inner_to - inner_from) * (inner_to - inner_from)) as u64;
        *bit = sum >= u64::from(BARCODE_THRESHOLD) * count;
    }
    if bits[..3] != START_MARKER || bits[STOP_FIRST_CELL as usize..] != STOP_MARKER {
        return None;
    }
    let value = (0..32).fold(0u32, |acc, bit| {
        (acc << 1) | u32::from(bits[(DATA_FIRST_CELL + bit) as usize])
    });
    let parity = bits[PARITY_CELL as usize];
    (parity == (value.count_ones() % 2 == 1)).then_some(value)
}

/// Low 32 bits of the wall-clock time in milliseconds since the UNIX epoch, the value the
/// barcode carries. A browser on the same machine compares it with
/// `Date.now() % 2**32` (or `performance.timeOrigin + performance.now()`).
pub fn unix_millis_low32(time: SystemTime) -> u32 {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    (millis & 0xFFFF_FFFF) as u32
}

/// A synthetic video source (see the module docs). Implements [`VideoSource`].
#[derive(Debug)]
pub struct TestPattern {
    width: u32,
    height: u32,
    fps: u32,
    /// Monotonic start of the pacing clock, set when the first frame is taken.
    start: Option<Instant>,
    /// Pacing slot of the next frame (frame due at `start + slot / fps`).
    next_slot: u64,
    /// Frames delivered so far (the counter drawn into the picture).
    sequence: u64,
    /// Where frame buffers come from and go back to.
    pool: Arc<BufferPool>,
}

impl TestPattern {
    /// A test pattern of `width` x `height` pixels at `fps` frames per second.
    ///
    /// Width and height must be even (I420); odd values are rounded down, and `fps` 0 is
    /// treated as 1. The configuration validator is expected to reject such values first.
    /// The barcode needs a width of at least 80 px (8 px cells need 320 px).
    pub fn new(width: u32, height: u32, fps: u32) -> Self {
        TestPattern {
            width: (width & !1).max(2),
            height: (height & !1).max(2),
            fps: fps.max(1),
            start: None,
            next_slot: 0,
            sequence: 0,
            pool: BufferPool::new(POOL_SPARE),
        }
    }

    /// Draws frame number `sequence` with `barcode_value` in the barcode strip and returns the
    /// tightly packed I420 bytes in a new vector. Pure drawing, no pacing: benchmarks and tests
    /// call it directly; [`VideoSource::next_frame`] uses [`TestPattern::render_into`].
    pub fn render(&self, sequence: u64, barcode_value: u32) -> Vec<u8> {
        let mut data = vec![0u8; RawFrame::i420_len(self.width, self.height)];
        self.render_into(&mut data, sequence, barcode_value);
        data
    }

    /// Draws like [`TestPattern::render`] into `data` (exactly
    /// `RawFrame::i420_len(width, height)` bytes; every byte is overwritten), allocating
    /// nothing. [`VideoSource::next_frame`] calls it with the frame counter and
    /// [`unix_millis_low32`] of the capture time.
    pub fn render_into(&self, data: &mut [u8], sequence: u64, barcode_value: u32) {
        debug_assert_eq!(data.len(), RawFrame::i420_len(self.width, self.height));
        let mut canvas = Canvas::new(data, self.width as usize, self.height as usize);
        self.draw_background(&mut canvas, sequence);
        self.draw_box(&mut canvas, sequence);
        self.draw_counter(&mut canvas, sequence);
        Self::draw_barcode(&mut canvas, barcode_value);
    }

    /// The pool frames are drawn into (its allocation counter shows reuse).
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Colour bars scrolling left: the first row of each plane is computed, then copied to
    /// every other row.
    fn draw_background(&self, canvas: &mut Canvas<'_>, sequence: u64) {
        let (w, cw) = (canvas.width, canvas.width / 2);
        // Scroll by an even number of pixels per frame so luma and chroma stay in step;
        // one full cycle of the bars takes about 4 seconds at 30 fps.
        let step = ((w / 60).max(1) * 2) as u64;
        let offset = ((sequence * step) % w as u64) as usize;
        let bar_of = |x: usize| ((x + offset) % w) * BARS.len() / w;
        fill_rows(canvas.y, w, |x| BARS[bar_of(x)].0);
        fill_rows(canvas.u, cw, |x| BARS[bar_of(2 * x)].1);
        fill_rows(canvas.v, cw, |x| BARS[bar_of(2 * x)].2);
    }

    /// A box bouncing between the frame edges (below the barcode strip).
    fn draw_box(&self, canvas: &mut Canvas<'_>, sequence: u64) {
        let (w, h) = (canvas.width, canvas.height);
        let size = (h / 5) & !1;
        let top_limit = barcode_cell_size(self.width) as usize * 2;
        if size < 2 || w <= size || h <= size + top_limit {
            return;
        }
        let x = triangle(sequence * (w / 90).max(1) as u64, w - size) & !1;
        let y =
            top_limit + (triangle(sequence * (h / 70).max(1) as u64, h - size - top_limit) & !1);
        canvas.fill_rect(x, y, size, size, BOX_COLOUR);
    }

    /// The frame counter in white digits on a black plate, below the barcode strip.
    fn draw_counter(&self, canvas: &mut Canvas<'_>, sequence: u64) {
        let cell = barcode_cell_size(self.width) as usize;
        let scale = counter_scale(canvas.height);
        let mut digits = [0u8; 20];
        let text = decimal_digits(sequence, &mut digits);
        let advance = 6 * scale;
        let (x0, y0) = (cell.max(2), cell * 2 + 2);
        let plate_w = text.len() * advance + scale;
        let plate_h = 9 * scale;
        if x0 + plate_w > canvas.width || y0 + plate_h > canvas.height {
            return;
        }
        let black = (LUMA_BLACK, CHROMA_NEUTRAL, CHROMA_NEUTRAL);
        let white = (LUMA_WHITE, CHROMA_NEUTRAL, CHROMA_NEUTRAL);
        canvas.fill_rect(x0, y0, plate_w, plate_h, black);
        for (i, &digit) in text.iter().enumerate() {
            let glyph = &DIGITS_5X7[usize::from(digit - b'0')];
            let gx = x0 + scale + i * advance;
            let gy = y0 + scale;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (gx + col * scale, gy + row * scale);
                        canvas.fill_rect(px, py, scale, scale, white);
                    }
                }
            }
        }
    }

    /// The capture-time barcode across the top `cell` rows (see [`decode_barcode`]).
    fn draw_barcode(canvas: &mut Canvas<'_>, value: u32) {
        let cell = barcode_cell_size(canvas.width as u32) as usize;
        if cell < 2 || canvas.height < cell {
            return;
        }
        let black = (LUMA_BLACK, CHROMA_NEUTRAL, CHROMA_NEUTRAL);
        let white = (LUMA_WHITE, CHROMA_NEUTRAL, CHROMA_NEUTRAL);
        // A black band across the whole width, then the white cells on it.
        canvas.fill_rect(0, 0, canvas.width, cell, black);
        let x0 = barcode_left(canvas.width as u32, cell as u32) as usize;
        for (i, &is_white) in barcode_cells(value).iter().enumerate() {
            if is_white {
                canvas.fill_rect(x0 + i * cell, 0, cell, cell, white);
            }
        }
    }

    /// Sleeps until the next frame slot is due; returns the slot's capture instant.
    fn wait_for_slot(&mut self) -> Instant {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let due = start + slot_offset(self.next_slot, self.fps);
        let captured = if due > now {
            std::thread::sleep(due - now);
            Instant::now()
        } else {
            // Late: if a whole frame period or more has passed since the due time, skip to
            // the slot we are in now rather than delivering a burst of stale frames.
            let behind_slots = (now - start).as_nanos() * u128::from(self.fps) / 1_000_000_000;
            self.next_slot = self.next_slot.max(behind_slots as u64);
            now
        };
        self.next_slot += 1;
        captured
    }
}

impl VideoSource for TestPattern {
    fn describe(&self) -> String {
        format!("test pattern {}x{}@{}", self.width, self.height, self.fps)
    }

    fn next_frame(&mut self) -> Result<VideoFrame, CaptureError> {
        self.next_raw().map(VideoFrame::Raw)
    }
}

impl TestPattern {
    /// Waits for the next frame slot and draws the frame (what `next_frame` delivers).
    pub fn next_raw(&mut self) -> Result<RawFrame, CaptureError> {
        let capture_instant = self.wait_for_slot();
        let wall = unix_millis_low32(SystemTime::now());
        let sequence = self.sequence;
        self.sequence += 1;
        let mut data = self.pool.take(RawFrame::i420_len(self.width, self.height));
        self.render_into(&mut data, sequence, wall);
        Ok(RawFrame {
            width: self.width,
            height: self.height,
            format: PixelFormat::I420,
            data,
            capture_instant,
            sequence,
        })
    }
}

/// Time from the pacing start to slot `slot` at `fps`, computed from the slot number so
/// rounding never accumulates.
fn slot_offset(slot: u64, fps: u32) -> Duration {
    let nanos = u128::from(slot) * 1_000_000_000 / u128::from(fps);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Fills the first row (`width` samples) of `plane` with `sample(x)` and copies it to every
/// other row.
fn fill_rows(plane: &mut [u8], width: usize, sample: impl Fn(usize) -> u8) {
    if width == 0 || plane.len() < width {
        return;
    }
    for (x, s) in plane[..width].iter_mut().enumerate() {
        *s = sample(x);
    }
    for row in 1..plane.len() / width {
        plane.copy_within(0..width, row * width);
    }
}

/// `value` in decimal, zero padded to [`COUNTER_MIN_DIGITS`], written into `buf` (a u64 has
/// at most 20 digits); returns the digits (ASCII).
fn decimal_digits(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    while value > 0 || buf.len() - start < COUNTER_MIN_DIGITS {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    &buf[start..]
}

/// Size in pixels of one font pixel of the counter: about 1/80 of the frame height, even
/// (so the digits align with the chroma blocks), at least 2.
fn counter_scale(height: usize) -> usize {
    ((height / 80) & !1).max(2)
}

/// A triangle wave over `0..=range`: goes up for `range` steps, then down.
fn triangle(t: u64, range: usize) -> usize {
    if range == 0 {
        return 0;
    }
    let period = 2 * range as u64;
    let p = (t % period) as usize;
    if p <= range {
        p
    } else {
        2 * range - p
    }
}

/// Mutable views of the three I420 planes with rectangle filling.
struct Canvas<'a> {
    y: &'a mut [u8],
    u: &'a mut [u8],
    v: &'a mut [u8],
    width: usize,
    height: usize,
}

impl<'a> Canvas<'a> {
    fn new(data: &'a mut [u8], width: usize, height: usize) -> Self {
        let (y, chroma) = data.split_at_mut(width * height);
        let (u, v) = chroma.split_at_mut((width / 2) * (height / 2));
        Canvas {
            y,
            u,
            v,
            width,
            height,
        }
    }

    /// Fills a rectangle (clipped to the frame). Odd edges are handled by the chroma planes
    /// covering every 2x2 block the rectangle touches.
    fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, colour: (u8, u8, u8)) {
        let x_end = (x + w).min(self.width);
        let y_end = (y + h).min(self.height);
        if x >= x_end || y >= y_end {
            return;
        }
        for row in self.y[y * self.width..y_end * self.width].chunks_exact_mut(self.width) {
            row[x..x_end].fill(colour.0);
        }
        let cw = self.width / 2;
        let (cx, cx_end) = (x / 2, x_end.div_ceil(2).min(cw));
        let (cy, cy_end) = (y / 2, y_end.div_ceil(2).min(self.height / 2));
        for (plane, value) in [(&mut *self.u, colour.1), (&mut *self.v, colour.2)] {
            for row in plane[cy * cw..cy_end * cw].chunks_exact_mut(cw) {
                row[cx..cx_end].fill(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luma(frame: &RawFrame) -> &[u8] {
        frame.planes().0
    }

    #[test]
    fn frames_have_the_requested_size_and_format() {
        let mut pattern = TestPattern::new(320, 240, 200);
        let frame = pattern.next_raw().expect("frame");
        assert_eq!((frame.width, frame.height), (320, 240));
        assert_eq!(frame.format, PixelFormat::I420);
        assert_eq!(frame.data.len(), 320 * 240 * 3 / 2);
        assert_eq!(frame.sequence, 0);
        assert!(pattern.describe().contains("320x240@200"));
    }

    #[test]
    fn frames_are_paced_by_the_monotonic_clock() {
        let mut pattern = TestPattern::new(320, 240, 100);
        let begin = Instant::now();
        let frames: Vec<RawFrame> = (0..10)
            .map(|_| pattern.next_raw().expect("frame"))
            .collect();
        let elapsed = begin.elapsed();
        // Frame 0 is due at once, frame 9 at 90 ms.
        assert!(
            elapsed >= Duration::from_millis(89) && elapsed <= Duration::from_millis(130),
            "10 frames at 100 fps took {elapsed:?}"
        );
        let span = frames[9].capture_instant - frames[0].capture_instant;
        assert!(
            span >= Duration::from_millis(89),
            "capture instants span {span:?}"
        );
    }

    #[test]
    fn a_late_consumer_skips_slots_instead_of_bursting() {
        let mut pattern = TestPattern::new(320, 240, 100);
        pattern.next_raw().expect("frame");
        // Miss five slots (10 ms each).
        std::thread::sleep(Duration::from_millis(55));
        let late = pattern.next_raw().expect("late frame");
        let begin = Instant::now();
        let next: Vec<RawFrame> = (0..4).map(|_| pattern.next_raw().expect("frame")).collect();
        // Without skipping, slots 1..=5 would all be overdue and four frames would come at
        // once; with skipping they follow the 10 ms cadence from the current slot.
        let took = begin.elapsed();
        assert!(
            took >= Duration::from_millis(30),
            "burst: 4 frames in {took:?}"
        );
        assert_eq!(late.sequence, 1);
        assert_eq!(next[3].sequence, 5, "the counter counts delivered frames");
    }

    #[test]
    fn barcode_round_trips_at_every_supported_size() {
        for (w, h) in [
            (320, 240),
            (640, 480),
            (1280, 720),
            (1920, 1080),
            (336, 250),
        ] {
            let pattern = TestPattern::new(w, h, 30);
            for value in [0u32, 1, 0xDEAD_BEEF, u32::MAX, 0x8000_0000, 123_456_789] {
                let data = pattern.render(17, value);
                let decoded = decode_barcode(&data[..(w * h) as usize], w, h);
                assert_eq!(decoded, Some(value), "{w}x{h} value {value:#x}");
            }
        }
    }

    #[test]
    fn barcode_carries_wall_clock_milliseconds() {
        let mut pattern = TestPattern::new(640, 480, 100);
        let before = unix_millis_low32(SystemTime::now());
        let frame = pattern.next_raw().expect("frame");
        let after = unix_millis_low32(SystemTime::now());
        let value = decode_barcode(luma(&frame), 640, 480).expect("barcode");
        assert!(
            value.wrapping_sub(before) <= after.wrapping_sub(before),
            "{before} {value} {after}"
        );
    }

    #[test]
    fn damaged_barcodes_are_rejected() {
        let pattern = TestPattern::new(640, 480, 30);
        let mut data = pattern.render(0, 0x1234_5678);
        let cell = barcode_cell_size(640) as usize;
        let x0 = barcode_left(640, cell as u32) as usize;
        // Flip one data cell: the parity no longer matches.
        let left = x0 + (DATA_FIRST_CELL as usize + 5) * cell;
        let flipped = if data[left + cell / 2 + (cell / 2) * 640] > 128 {
            16
        } else {
            235
        };
        for row in 0..cell {
            data[row * 640 + left..row * 640 + left + cell].fill(flipped);
        }
        assert_eq!(decode_barcode(&data[..640 * 480], 640, 480), None);
        // A frame without a strip (all grey) has no start marker.
        assert_eq!(decode_barcode(&vec![128; 640 * 480], 640, 480), None);
        assert_eq!(decode_barcode(&[0; 10], 640, 480), None);
    }

    #[test]
    fn picture_moves_between_frames() {
        let pattern = TestPattern::new(640, 480, 30);
        let a = pattern.render(10, 0);
        let b = pattern.render(11, 0);
        let cell = barcode_cell_size(640) as usize;
        // Compare below the barcode strip and away from the counter.
        let below = 640 * (cell * 2 + 9 * 6 + 8);
        let changed = a[below..640 * 480]
            .iter()
            .zip(&b[below..640 * 480])
            .filter(|(x, y)| x != y)
            .count();
        assert!(changed > 640 * 10, "only {changed} luma samples changed");
    }

    #[test]
    fn counter_increments_and_is_drawn() {
        let mut pattern = TestPattern::new(320, 240, 200);
        let first = pattern.next_raw().expect("frame");
        let second = pattern.next_raw().expect("frame");
        assert_eq!(second.sequence, first.sequence + 1);
        // The counter plate differs between two frames that differ only in the counter.
        let a = pattern.render(5, 0);
        let b = pattern.render(6, 0);
        let c = pattern.render(5, 0);
        assert_eq!(a, c, "drawing is deterministic");
        let cell = barcode_cell_size(320) as usize;
        let scale = counter_scale(240);
        let plate_rows = (cell * 2 + 2)..(cell * 2 + 2 + 9 * scale);
        let last_digit_cols = (cell + scale + 5 * 6 * scale)..(cell + scale + 6 * 6 * scale);
        let differs = plate_rows.clone().any(|row| {
            last_digit_cols
                .clone()
                .any(|col| a[row * 320 + col] != b[row * 320 + col])
        });
        assert!(differs, "the last digit of the counter did not change");
    }

    #[test]
    fn frames_are_drawn_into_reused_pool_buffers() {
        let mut pattern = TestPattern::new(320, 240, 1000);
        // Three frames in flight at a time, as queues and encoders hold them.
        let mut in_flight = std::collections::VecDeque::new();
        for _ in 0..10 {
            in_flight.push_back(pattern.next_raw().expect("frame"));
            if in_flight.len() > 3 {
                in_flight.pop_front();
            }
        }
        let warmed_up = pattern.pool().allocations();
        assert_eq!(warmed_up, 4, "three held plus the one being drawn");
        for _ in 0..50 {
            in_flight.push_back(pattern.next_raw().expect("frame"));
            if in_flight.len() > 3 {
                in_flight.pop_front();
            }
        }
        assert_eq!(
            pattern.pool().allocations(),
            warmed_up,
            "steady state reuses buffers"
        );
        // A reused buffer is fully redrawn: same picture as a freshly allocated one.
        let frame = in_flight.pop_back().expect("frame");
        let mut expected = pattern.render(frame.sequence, 0);
        let barcode_rows = barcode_cell_size(320) as usize * 320;
        expected[..barcode_rows].copy_from_slice(&frame.data[..barcode_rows]);
        assert!(
            expected[..] == frame.data[..],
            "pooled frame differs from render()"
        );
    }

    #[test]
    fn counter_digits_are_zero_padded() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal_digits(0, &mut buf), b"000000");
        assert_eq!(decimal_digits(1234, &mut buf), b"001234");
        assert_eq!(decimal_digits(12_345_678, &mut buf), b"12345678");
        assert_eq!(decimal_digits(u64::MAX, &mut buf), b"18446744073709551615");
    }

    #[test]
    fn glyphs_are_distinct() {
        for (i, a) in DIGITS_5X7.iter().enumerate() {
            for (j, b) in DIGITS_5X7.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "digits {i} and {j}");
            }
        }
    }
}
