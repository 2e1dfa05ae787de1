//! The newest picture, kept for `/snapshot.jpg` at almost no cost while nobody asks for one.
//!
//! The capture thread hands every frame to [`LatestPicture::record`]; nothing is copied,
//! encoded or decoded there:
//! - a raw frame (test pattern, converted camera formats, the placeholder) is kept by
//!   reference (the `Arc` the encoder queues share) in place of the one before;
//! - camera H.264 cannot be shown from one access unit unless it is an IDR, and a camera's
//!   keyframes may be seconds apart, so the latest IDR is kept with every access unit after
//!   it (again by reference) and the SPS/PPS it needs; a snapshot decodes them in order
//!   ([`crate::snapshot`]) and shows the newest picture.
//!
//! The group of pictures is bounded ([`GopLimits`]): past its frame count or bytes, or after
//! a gap in the camera's sequence numbers (a frame lost: nothing after it decodes), only the
//! IDR is kept and later frames are not added until the next IDR. Such a picture is old; a
//! snapshot of it asks the camera for a keyframe ([`LatestPicture::take_keyframe_wish`]), so
//! the next one is current.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::h264::{nal_type, nal_units, NAL_IDR, NAL_PPS, NAL_SLICE, NAL_SPS, START_CODE};
use crate::media::{CameraH264, VideoFrame};

/// Bounds on the camera H.264 kept after the latest IDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GopLimits {
    /// Access units kept at most, the IDR included.
    pub max_frames: usize,
    /// Bytes of access units kept at most, the IDR included.
    pub max_bytes: usize,
}

impl Default for GopLimits {
    /// 300 access units (10 s at 30 fps; 150 of them decode in 120 ms at 1280x720 on the
    /// build machine, BENCHMARKS.md "Snapshots", so a few times that on a Raspberry Pi is
    /// still within the render deadline) and 8 MiB (10 s at 6.7 Mbit/s).
    fn default() -> Self {
        GopLimits {
            max_frames: 300,
            max_bytes: 8 << 20,
        }
    }
}

/// What a snapshot is made from.
#[derive(Debug, Clone)]
pub enum Picture {
    /// An uncompressed frame ([`VideoFrame::Raw`]).
    Raw(Arc<VideoFrame>),
    /// Camera H.264 to decode in order: `parameter_sets` (SPS and PPS, Annex B), then
    /// `frames` (each a [`VideoFrame::H264`]), the first an IDR; the last is the picture.
    H264 {
        /// The SPS and PPS the IDR needs, with start codes.
        parameter_sets: Bytes,
        /// The IDR and the access units after it, in order, without gaps.
        frames: Vec<Arc<VideoFrame>>,
        /// Later frames could not be added (bounds, or a lost frame): the picture is old.
        stale: bool,
    },
}

/// Why there is no picture to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPicture {
    /// Nothing captured yet (the daemon or the camera is starting).
    NotYet,
    /// The last frame came this long ago: capture has stalled.
    Stalled(Duration),
}

/// A picture older than this is not shown: capture has stalled (sources deliver the
/// placeholder while the camera is away, so this means the capture thread is stuck).
pub const STALLED_AFTER: Duration = Duration::from_secs(3);

/// The newest picture (see the module documentation). Shared by the capture thread, which
/// records, and the HTTP server, which takes snapshots.
#[derive(Debug)]
pub struct LatestPicture {
    limits: GopLimits,
    state: Mutex<State>,
    /// A snapshot found the H.264 picture old: ask the camera for a keyframe.
    wants_keyframe: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    held: Held,
    /// The camera's latest SPS and PPS (slices of its access units, not copies).
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// Sequence number of the last H.264 access unit recorded.
    last_sequence: Option<u64>,
    /// When the last frame was recorded.
    updated: Option<Instant>,
}

#[derive(Debug, Default)]
enum Held {
    #[default]
    Nothing,
    Raw(Arc<VideoFrame>),
    H264(Gop),
}

#[derive(Debug)]
struct Gop {
    parameter_sets: Bytes,
    frames: Vec<Arc<VideoFrame>>,
    bytes: usize,
    /// No more frames are added until the next IDR.
    closed: bool,
}

impl LatestPicture {
    /// An empty store keeping camera H.264 within `limits`.
    pub fn new(limits: GopLimits) -> Self {
        LatestPicture {
            limits,
            state: Mutex::new(State::default()),
            wants_keyframe: AtomicBool::new(false),
        }
    }

    /// Keeps `frame` (by reference) as the newest picture, or adds it to the kept camera
    /// H.264. Called by the capture thread for every frame.
    pub fn record(&self, frame: &Arc<VideoFrame>, now: Instant) {
        let mut state = self.lock();
        state.updated = Some(now);
        match frame.as_ref() {
            VideoFrame::Raw(_) => {
                state.held = Held::Raw(frame.clone());
                state.last_sequence = None;
            }
            VideoFrame::H264(h264) => self.record_h264(&mut state, frame, h264),
        }
    }

    fn record_h264(&self, state: &mut State, frame: &Arc<VideoFrame>, h264: &CameraH264) {
        let follows = state
            .last_sequence
            .is_some_and(|last| h264.sequence == last.wrapping_add(1));
        state.last_sequence = Some(h264.sequence);
        let (mut idr, mut slice) = (false, false);
        for unit in nal_units(&h264.data) {
            match nal_type(unit) {
                NAL_SPS => state.sps = Some(h264.data.slice_ref(unit)),
                NAL_PPS => state.pps = Some(h264.data.slice_ref(unit)),
                NAL_IDR => idr = true,
                NAL_SLICE => slice = true,
                _ => {}
            }
        }
        let bytes = h264.data.len();
        if idr {
            let (Some(sps), Some(pps)) = (&state.sps, &state.pps) else {
                // Undecodable without parameter sets: keep what was there.
                return;
            };
            let parameter_sets = [&START_CODE[..], sps, &START_CODE[..], pps].concat();
            state.held = Held::H264(Gop {
                parameter_sets: Bytes::from(parameter_sets),
                frames: vec![frame.clone()],
                bytes,
                closed: bytes > self.limits.max_bytes,
            });
            return;
        }
        if !slice {
            return; // Parameter sets or SEI only.
        }
        let Held::H264(gop) = &mut state.held else {
            return; // No IDR since the placeholder or the start: nothing to decode from.
        };
        if gop.closed {
            return;
        }
        if !follows {
            gop.closed = true;
            return;
        }
        if gop.frames.len() >= self.limits.max_frames || gop.bytes + bytes > self.limits.max_bytes {
            // Keep just the keyframe: a picture that decodes quickly, and memory freed.
            gop.frames.truncate(1);
            gop.bytes = gop.frames.first().map_or(0, |f| frame_bytes(f));
            gop.closed = true;
            return;
        }
        gop.frames.push(frame.clone());
        gop.bytes += bytes;
    }

    /// The newest picture as of `now`, or why there is none. A stale H.264 picture also
    /// asks the camera for a keyframe, so that the next snapshot is current.
    pub fn picture(&self, now: Instant) -> Result<Picture, NoPicture> {
        let state = self.lock();
        let updated = state.updated.ok_or(NoPicture::NotYet)?;
        let age = now.saturating_duration_since(updated);
        if age > STALLED_AFTER {
            return Err(NoPicture::Stalled(age));
        }
        match &state.held {
            Held::Nothing => Err(NoPicture::NotYet),
            Held::Raw(frame) => Ok(Picture::Raw(frame.clone())),
            Held::H264(gop) => {
                if gop.closed {
                    self.wants_keyframe.store(true, Ordering::Relaxed);
                }
                Ok(Picture::H264 {
                    parameter_sets: gop.parameter_sets.clone(),
                    frames: gop.frames.clone(),
                    stale: gop.closed,
                })
            }
        }
    }

    /// Whether a snapshot asked for a camera keyframe since the last call (the capture
    /// thread passes the wish on to the camera).
    pub fn take_keyframe_wish(&self) -> bool {
        self.wants_keyframe.swap(false, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every write leaves the state whole: a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn frame_bytes(frame: &VideoFrame) -> usize {
    match frame {
        VideoFrame::H264(h264) => h264.data.len(),
        VideoFrame::Raw(raw) => raw.data.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::samples::{annex_b, IDR, PPS, SPS};
    use crate::media::{PixelFormat, RawFrame};

    const P: &[u8] = &[0x41, 0x9a, 0x02, 0x03];

    fn au(sequence: u64, units: &[&[u8]]) -> Arc<VideoFrame> {
        Arc::new(VideoFrame::H264(CameraH264 {
            width: 640,
            height: 480,
            data: Bytes::from(annex_b(units, false)),
            capture_instant: Instant::now(),
            sequence,
        }))
    }

    fn raw() -> Arc<VideoFrame> {
        Arc::new(VideoFrame::Raw(RawFrame {
            width: 2,
            height: 2,
            format: PixelFormat::I420,
            data: vec![0; 6].into(),
            capture_instant: Instant::now(),
            sequence: 0,
        }))
    }

    fn gop(latest: &LatestPicture) -> (Vec<u64>, bool, Bytes) {
        match latest.picture(Instant::now()) {
            Ok(Picture::H264 {
                frames,
                stale,
                parameter_sets,
            }) => {
                let sequences = frames
                    .iter()
                    .map(|f| match f.as_ref() {
                        VideoFrame::H264(h) => h.sequence,
                        VideoFrame::Raw(_) => panic!("raw frame in a GOP"),
                    })
                    .collect();
                (sequences, stale, parameter_sets)
            }
            other => panic!("expected H.264, got {other:?}"),
        }
    }

    #[test]
    fn nothing_before_the_first_frame_and_the_newest_raw_frame_after() {
        let latest = LatestPicture::new(GopLimits::default());
        assert_eq!(
            latest.picture(Instant::now()).err(),
            Some(NoPicture::NotYet)
        );
        let (first, second) = (raw(), raw());
        latest.record(&first, Instant::now());
        latest.record(&second, Instant::now());
        match latest.picture(Instant::now()) {
            Ok(Picture::Raw(frame)) => assert!(Arc::ptr_eq(&frame, &second), "not a copy"),
            other => panic!("expected the raw frame, got {other:?}"),
        }
        assert_eq!(Arc::strong_count(&first), 1, "the older frame is let go");
    }

    #[test]
    fn a_stalled_capture_has_no_picture() {
        let latest = LatestPicture::new(GopLimits::default());
        let then = Instant::now();
        latest.record(&raw(), then);
        let later = then + STALLED_AFTER + Duration::from_secs(1);
        assert_eq!(
            latest.picture(later).err(),
            Some(NoPicture::Stalled(STALLED_AFTER + Duration::from_secs(1)))
        );
    }

    #[test]
    fn keeps_the_latest_idr_and_the_frames_after_it_with_remembered_parameter_sets() {
        let latest = LatestPicture::new(GopLimits::default());
        // Parameter sets only once, in front of the first IDR (as many cameras do).
        latest.record(&au(0, &[SPS, PPS, IDR]), Instant::now());
        latest.record(&au(1, &[P]), Instant::now());
        latest.record(&au(2, &[P]), Instant::now());
        let (frames, stale, parameter_sets) = gop(&latest);
        assert_eq!((frames, stale), (vec![0, 1, 2], false));
        assert_eq!(nal_units(&parameter_sets), vec![SPS, PPS]);
        // The next IDR (without parameter sets) starts over.
        latest.record(&au(3, &[IDR]), Instant::now());
        latest.record(&au(4, &[P]), Instant::now());
        let (frames, stale, parameter_sets) = gop(&latest);
        assert_eq!((frames, stale), (vec![3, 4], false));
        assert_eq!(nal_units(&parameter_sets), vec![SPS, PPS]);
        assert!(!latest.take_keyframe_wish());
    }

    #[test]
    fn an_idr_without_parameter_sets_or_p_frames_before_any_idr_are_not_kept() {
        let latest = LatestPicture::new(GopLimits::default());
        latest.record(&au(0, &[P]), Instant::now());
        assert_eq!(
            latest.picture(Instant::now()).err(),
            Some(NoPicture::NotYet)
        );
        latest.record(&au(1, &[IDR]), Instant::now());
        assert_eq!(
            latest.picture(Instant::now()).err(),
            Some(NoPicture::NotYet)
        );
        // After the placeholder, P frames before the camera's IDR leave the placeholder.
        latest.record(&raw(), Instant::now());
        latest.record(&au(2, &[P]), Instant::now());
        assert!(matches!(
            latest.picture(Instant::now()),
            Ok(Picture::Raw(_))
        ));
    }

    #[test]
    fn a_lost_frame_closes_the_group_and_a_snapshot_of_it_asks_for_a_keyframe() {
        let latest = LatestPicture::new(GopLimits::default());
        latest.record(&au(0, &[SPS, PPS, IDR]), Instant::now());
        latest.record(&au(1, &[P]), Instant::now());
        latest.record(&au(3, &[P]), Instant::now()); // 2 was lost
        latest.record(&au(4, &[P]), Instant::now());
        assert_eq!(gop(&latest).0, vec![0, 1]);
        assert!(gop(&latest).1, "stale");
        assert!(latest.take_keyframe_wish());
        assert!(!latest.take_keyframe_wish(), "taken once");
        latest.record(&au(5, &[IDR]), Instant::now());
        assert_eq!(gop(&latest).0, vec![5]);
        assert!(!gop(&latest).1);
    }

    #[test]
    fn past_its_bounds_only_the_keyframe_is_kept() {
        let limits = GopLimits {
            max_frames: 3,
            max_bytes: 1 << 20,
        };
        let latest = LatestPicture::new(limits);
        for sequence in 0..10 {
            let units: &[&[u8]] = if sequence == 0 {
                &[SPS, PPS, IDR]
            } else {
                &[P]
            };
            latest.record(&au(sequence, units), Instant::now());
        }
        let (frames, stale, _) = gop(&latest);
        assert_eq!((frames, stale), (vec![0], true));

        let idr_bytes = au(0, &[SPS, PPS, IDR]).as_ref().clone();
        let by_bytes = LatestPicture::new(GopLimits {
            max_frames: 100,
            max_bytes: frame_bytes(&idr_bytes) + 2 * annex_b(&[P], false).len(),
        });
        for sequence in 0..5 {
            let units: &[&[u8]] = if sequence == 0 {
                &[SPS, PPS, IDR]
            } else {
                &[P]
            };
            by_bytes.record(&au(sequence, units), Instant::now());
        }
        let (frames, stale, _) = gop(&by_bytes);
        assert_eq!((frames, stale), (vec![0], true));
    }
}
