//! AV1 encoder (rav1e), configured for real time: speed preset 10, `low_latency` (no frame
//! reordering), one frame of RDO lookahead, bitrate rate control.
//!
//! Each output is one temporal unit of OBUs in the low-overhead format; the temporal
//! delimiter OBU rav1e writes first is removed (the RTP payload format leaves it out). rav1e writes a sequence header OBU at the start
//! of every key frame's temporal unit, so a viewer can join at any keyframe; the tests
//! check it.
//!
//! rav1e holds a few frames before the first packet comes out (its lag, measured by the
//! tests and reported in BENCHMARKS.md); capture instants are kept in a small map from
//! input frame number to instant until their packet appears.
//!
//! rav1e cannot change its bitrate in place: a new target (adaptive bitrate) rebuilds the
//! context — the old one is flushed first, so no frame is lost, and the new one starts with a
//! keyframe. That costs a keyframe, so it happens only for a change of at least
//! [`REBUILD_MIN_CHANGE`] and at most every [`REBUILD_INTERVAL`] of capture time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rav1e::config::SpeedSettings;
use rav1e::prelude::{
    ChromaSampling, Config, Context, EncoderConfig, EncoderStatus, FrameParameters, FrameType,
    FrameTypeOverride, Rational,
};

use crate::encode::h264::{check_frame_for, validate_video_settings};
use crate::encode::{EncodeError, VideoEncoder, VideoEncoderSettings};
use crate::media::{EncodedFrame, RawFrame, VideoCodec};

const CODEC: &str = "av1";
/// rav1e's fastest preset.
pub const SPEED_PRESET: u8 = 10;
/// A new target rebuilds the context only when it differs from the current one by this
/// fraction or more.
pub const REBUILD_MIN_CHANGE: f64 = 0.2;
/// Least capture time between two context rebuilds.
pub const REBUILD_INTERVAL: Duration = Duration::from_secs(5);

/// AV1 encoder for real-time streaming. Implements [`VideoEncoder`].
pub struct Av1Encoder {
    context: Context<u8>,
    /// What the context was built with.
    settings: VideoEncoderSettings,
    /// The target asked for by [`VideoEncoder::set_bitrate_kbps`].
    wanted_kbps: u32,
    /// Capture instant of the first frame after the last rebuild (or the first frame).
    built_at: Option<Instant>,
    width: u32,
    height: u32,
    /// Frames sent to rav1e so far (the next frame's `input_frameno`).
    frames_in: u64,
    /// Capture instant of every frame sent whose packet has not come out yet.
    pending: BTreeMap<u64, Instant>,
}

impl std::fmt::Debug for Av1Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Av1Encoder")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("frames_in", &self.frames_in)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Av1Encoder {
    /// An encoder for `settings.width` x `settings.height` at `settings.fps`, targeting
    /// `settings.bitrate_kbps`, with a keyframe every `keyframe_interval_s * fps` frames
    /// (and no scene-cut keyframes in between), using up to `settings.threads` threads and as
    /// many tiles (fewer on small pictures: see `tiles_for`).
    pub fn new(settings: &VideoEncoderSettings) -> Result<Self, EncodeError> {
        validate_video_settings(CODEC, settings)?;
        Ok(Av1Encoder {
            context: new_context(settings)?,
            settings: settings.clone(),
            wanted_kbps: settings.bitrate_kbps,
            built_at: None,
            width: settings.width,
            height: settings.height,
            frames_in: 0,
            pending: BTreeMap::new(),
        })
    }

    /// The bitrate the current context encodes at, in kbit/s.
    pub fn bitrate_kbps(&self) -> u32 {
        self.settings.bitrate_kbps
    }

    /// Rebuilds the context for the wanted bitrate when the change is large enough and the
    /// last rebuild long enough ago (capture time `now`); returns the packets the old context
    /// still held.
    fn maybe_rebuild(&mut self, now: Instant) -> Result<Vec<EncodedFrame>, EncodeError> {
        let current = self.settings.bitrate_kbps;
        let built_at = *self.built_at.get_or_insert(now);
        let change = f64::from(self.wanted_kbps.abs_diff(current)) / f64::from(current);
        if change < REBUILD_MIN_CHANGE || now.saturating_duration_since(built_at) < REBUILD_INTERVAL
        {
            return Ok(Vec::new());
        }
        let mut settings = self.settings.clone();
        settings.bitrate_kbps = self.wanted_kbps;
        let context = new_context(&settings)?;
        // Flush the old context so the frames it holds still come out, then start over.
        self.context.flush();
        let flushed = self.drain()?;
        self.context = context;
        self.settings = settings;
        self.frames_in = 0;
        self.pending.clear();
        self.built_at = Some(now);
        log::debug!(
            "av1 encoder rebuilt for {current} -> {} kbit/s",
            self.wanted_kbps
        );
        Ok(flushed)
    }

    /// Frames sent to the encoder whose packets have not come out yet.
    pub fn frames_pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes every packet rav1e has ready.
    fn drain(&mut self) -> Result<Vec<EncodedFrame>, EncodeError> {
        let mut out = Vec::new();
        loop {
            match self.context.receive_packet() {
                Ok(packet) => {
                    let frameno = packet.input_frameno;
                    let capture_instant = self.pending.get(&frameno).copied().ok_or_else(|| {
                        EncodeError::encode(
                            CODEC,
                            format!("rav1e returned unknown input frame {frameno}"),
                        )
                    })?;
                    // Packets come out in input order: drop this frame and any before it.
                    self.pending = self.pending.split_off(&(frameno + 1));
                    out.push(EncodedFrame {
                        data: strip_temporal_delimiter(packet.data),
                        keyframe: packet.frame_type == FrameType::KEY,
                        capture_instant,
                    });
                }
                // A frame went into the encoder's state without a packet yet; ask again.
                Err(EncoderStatus::Encoded) => {}
                Err(EncoderStatus::NeedMoreData) | Err(EncoderStatus::LimitReached) => break,
                Err(e) => return Err(EncodeError::encode(CODEC, format!("receive_packet: {e}"))),
            }
        }
        Ok(out)
    }
}

impl VideoEncoder for Av1Encoder {
    fn codec(&self) -> VideoCodec {
        VideoCodec::Av1
    }

    fn encode(
        &mut self,
        frame: &RawFrame,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, EncodeError> {
        check_frame_for(CODEC, frame, self.width, self.height)?;
        let mut out = self.maybe_rebuild(frame.capture_instant)?;
        let (y, u, v) = frame.planes();
        let (w, cw) = (self.width as usize, self.width as usize / 2);
        let mut input = self.context.new_frame();
        input.planes[0].copy_from_raw_u8(y, w, 1);
        input.planes[1].copy_from_raw_u8(u, cw, 1);
        input.planes[2].copy_from_raw_u8(v, cw, 1);
        let params = FrameParameters {
            frame_type_override: if force_keyframe {
                FrameTypeOverride::Key
            } else {
                FrameTypeOverride::No
            },
            ..FrameParameters::default()
        };
        match self.context.send_frame((input, params)) {
            Ok(()) => {}
            // Cannot happen while every packet is drained after each frame, as below.
            Err(EncoderStatus::EnoughData) => {
                return Err(EncodeError::encode(
                    CODEC,
                    "rav1e refused a frame (queue full); packets were not drained",
                ))
            }
            Err(e) => return Err(EncodeError::encode(CODEC, format!("send_frame: {e}"))),
        }
        self.pending.insert(self.frames_in, frame.capture_instant);
        self.frames_in += 1;
        out.extend(self.drain()?);
        Ok(out)
    }

    fn set_bitrate_kbps(&mut self, kbps: u32) -> Result<(), EncodeError> {
        if kbps == 0
            || kbps
                .checked_mul(1000)
                .and_then(|b| i32::try_from(b).ok())
                .is_none()
        {
            return Err(EncodeError::encode(
                CODEC,
                format!("bitrate {kbps} kbit/s is out of range"),
            ));
        }
        self.wanted_kbps = kbps;
        Ok(())
    }
}

/// A rav1e context for `settings` (see [`Av1Encoder::new`]).
fn new_context(settings: &VideoEncoderSettings) -> Result<Context<u8>, EncodeError> {
    let tiles = tiles_for(settings.width, settings.height, settings.threads);
    rav1e_config(settings, SPEED_PRESET, tiles, tiles)?
        .new_context::<u8>()
        .map_err(|e| EncodeError::setup(CODEC, format!("invalid configuration: {e}")))
}

/// The rav1e configuration peercam encodes with for `settings` (its `threads` aside), at speed
/// preset `speed` with `tiles` tiles on `threads` threads. [`Av1Encoder`] uses
/// [`SPEED_PRESET`] and `tiles_for` tiles and threads; the parameter sweep
/// (benches/av1_sweep.rs) varies the three.
pub fn rav1e_config(
    settings: &VideoEncoderSettings,
    speed: u8,
    tiles: usize,
    threads: usize,
) -> Result<Config, EncodeError> {
    let bitrate_bps = settings
        .bitrate_kbps
        .checked_mul(1000)
        .and_then(|b| i32::try_from(b).ok())
        .ok_or_else(|| {
            EncodeError::setup(
                CODEC,
                format!("bitrate {} kbit/s is too large", settings.bitrate_kbps),
            )
        })?;
    let (tiles, threads) = (tiles.clamp(1, 16), threads.clamp(1, 16));
    let keyframe_interval = u64::from(settings.keyframe_interval_s) * u64::from(settings.fps);

    let mut speed_settings = SpeedSettings::from_preset(speed);
    speed_settings.rdo_lookahead_frames = 1;
    let mut enc = EncoderConfig::with_speed_preset(speed);
    enc.speed_settings = speed_settings;
    enc.width = settings.width as usize;
    enc.height = settings.height as usize;
    enc.time_base = Rational::new(1, u64::from(settings.fps));
    enc.bit_depth = 8;
    enc.chroma_sampling = ChromaSampling::Cs420;
    enc.still_picture = false;
    enc.low_latency = true;
    enc.bitrate = bitrate_bps;
    // min == max: keyframes only on schedule or on request (a scene cut in a camera
    // picture is rare, and an unplanned keyframe is a bitrate spike).
    enc.set_key_frame_interval(keyframe_interval, keyframe_interval);
    enc.tiles = tiles;

    Ok(Config::new().with_encoder_config(enc).with_threads(threads))
}

/// Drops the temporal delimiter OBU rav1e puts at the start of every temporal unit: RTP
/// (the AV1 RTP payload format) leaves it out, and without it a key frame's data begins with
/// the sequence header OBU.
fn strip_temporal_delimiter(mut data: Vec<u8>) -> Bytes {
    // Type 2, has_size_field, size 0.
    if data.starts_with(&[0x12, 0x00]) {
        data.drain(..2);
    }
    Bytes::from(data)
}

/// Tiles (and as many threads) for a `width` x `height` picture with up to `cores` threads:
/// one per 150,000 pixels, at least 1. Splitting a small picture costs more than it gains:
/// in the sweep recorded in BENCHMARKS.md ("AV1 settings"), 320x240 encoded in 14.9 ms of CPU
/// per frame on one tile and 19.2 ms on two (barely faster in wall time), while 640x480 went
/// from 47.7 ms to 38.2 ms per frame on two tiles and threads.
fn tiles_for(width: u32, height: u32, cores: usize) -> usize {
    let by_size = (width as usize * height as usize) / 150_000;
    by_size.clamp(1, cores.clamp(1, 16))
}

/// The type of every OBU in a low-overhead-format temporal unit (1 = sequence header,
/// 2 = temporal delimiter, 3 = frame header, 6 = frame, ...), or `None` if the data is not
/// a well-formed sequence of OBUs with size fields.
pub fn obu_types(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut types = Vec::new();
    while !data.is_empty() {
        let header = data[0];
        let obu_type = (header >> 3) & 0x0F;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        if header & 0x80 != 0 || !has_size {
            return None;
        }
        let mut pos = 1 + usize::from(has_extension);
        // leb128 size
        let mut size: u64 = 0;
        for i in 0..8 {
            let byte = *data.get(pos)?;
            pos += 1;
            size |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                break;
            }
        }
        let end = pos.checked_add(usize::try_from(size).ok()?)?;
        if end > data.len() {
            return None;
        }
        types.push(obu_type);
        data = &data[end..];
    }
    Some(types)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn small_pictures_get_one_tile_larger_ones_one_per_150000_pixels() {
        assert_eq!(tiles_for(320, 240, 4), 1);
        assert_eq!(tiles_for(640, 480, 4), 2);
        assert_eq!(tiles_for(1280, 720, 4), 4);
        assert_eq!(tiles_for(1280, 720, 2), 2);
        assert_eq!(tiles_for(1920, 1080, 64), 13);
        assert_eq!(tiles_for(160, 120, 0), 1);
    }
    use crate::capture::test_pattern::TestPattern;
    use crate::media::PixelFormat;

    const OBU_SEQUENCE_HEADER: u8 = 1;

    fn settings() -> VideoEncoderSettings {
        VideoEncoderSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate_kbps: 300,
            keyframe_interval_s: 1,
            threads: 2,
        }
    }

    fn frames(count: u64) -> Vec<RawFrame> {
        let pattern = TestPattern::new(320, 240, 30);
        let base = Instant::now();
        (0..count)
            .map(|n| RawFrame {
                width: 320,
                height: 240,
                format: PixelFormat::I420,
                data: pattern.render(n, n as u32).into(),
                capture_instant: base + Duration::from_millis(n * 1000 / 30),
                sequence: n,
            })
            .collect()
    }

    /// Encodes `frames`, forcing a keyframe at `force_at`; returns (input index, output) for
    /// every packet, where the input index is the frame being sent when it came out.
    fn encode_all(
        enc: &mut Av1Encoder,
        frames: &[RawFrame],
        force_at: Option<usize>,
    ) -> Vec<(usize, EncodedFrame)> {
        let mut out = Vec::new();
        for (n, frame) in frames.iter().enumerate() {
            for packet in enc.encode(frame, force_at == Some(n)).expect("encode") {
                out.push((n, packet));
            }
        }
        out
    }

    fn frame_index(frames: &[RawFrame], packet: &EncodedFrame) -> usize {
        frames
            .iter()
            .position(|f| f.capture_instant == packet.capture_instant)
            .expect("capture instant of a sent frame")
    }

    #[test]
    fn first_packet_is_a_keyframe_with_a_sequence_header_and_lag_is_small() {
        let mut enc = Av1Encoder::new(&settings()).expect("encoder");
        assert_eq!(enc.codec(), VideoCodec::Av1);
        let input = frames(12);
        let out = encode_all(&mut enc, &input, None);
        assert!(!out.is_empty(), "no packets after 12 frames");
        let (sent_at, first) = &out[0];
        assert!(first.keyframe);
        let types = obu_types(&first.data).expect("well-formed OBUs");
        assert_eq!(types[0], OBU_SEQUENCE_HEADER, "OBU types {types:?}");
        assert!(!types.contains(&2), "temporal delimiter removed: {types:?}");
        assert_eq!(frame_index(&input, first), 0);
        // The encoder lag: frames in before the first packet out.
        println!("rav1e lag: first packet after {} frames in", sent_at + 1);
        assert!(*sent_at < 8, "lag of {} frames", sent_at + 1);
    }

    #[test]
    fn capture_instants_map_to_their_input_frames_in_order() {
        let mut enc = Av1Encoder::new(&settings()).expect("encoder");
        let input = frames(20);
        let out = encode_all(&mut enc, &input, None);
        let indices: Vec<usize> = out.iter().map(|(_, p)| frame_index(&input, p)).collect();
        let expected: Vec<usize> = (0..indices.len()).collect();
        assert_eq!(indices, expected, "one packet per frame, in order");
        assert!(
            indices.len() >= 14,
            "only {} of 20 frames came out",
            indices.len()
        );
        assert!(
            enc.frames_pending() <= 6,
            "pending {}",
            enc.frames_pending()
        );
        for (_, packet) in &out[1..] {
            assert!(!packet.keyframe);
            assert!(obu_types(&packet.data).is_some_and(|t| !t.contains(&OBU_SEQUENCE_HEADER)));
        }
    }

    #[test]
    fn forced_and_periodic_keyframes_carry_a_sequence_header() {
        // keyframe_interval_s = 1 at 30 fps: a keyframe 30 frames after the previous one
        // (a forced keyframe restarts the count); forced at 12.
        let mut enc = Av1Encoder::new(&settings()).expect("encoder");
        let input = frames(50);
        let out = encode_all(&mut enc, &input, Some(12));
        let keys: Vec<usize> = out
            .iter()
            .filter(|(_, p)| p.keyframe)
            .map(|(_, p)| frame_index(&input, p))
            .collect();
        assert_eq!(keys, vec![0, 12, 42], "keyframes by input frame");
        for (_, packet) in out.iter().filter(|(_, p)| p.keyframe) {
            let types = obu_types(&packet.data).expect("well-formed OBUs");
            assert_eq!(types[0], OBU_SEQUENCE_HEADER, "{types:?}");
        }
        // The forced keyframe comes out within the encoder lag.
        let (sent_at, _) = out
            .iter()
            .find(|(_, p)| frame_index(&input, p) == 12)
            .expect("frame 12");
        assert!(
            *sent_at < 12 + 8,
            "forced keyframe out only when frame {sent_at} went in"
        );
    }

    #[test]
    fn a_new_bitrate_rebuilds_only_when_large_and_not_too_often_and_loses_no_frame() {
        let mut long_gop = settings();
        long_gop.keyframe_interval_s = 60;
        let mut enc = Av1Encoder::new(&long_gop).expect("encoder");
        let input = frames(170);
        let mut out = Vec::new();
        for (n, frame) in input.iter().enumerate() {
            match n {
                10 => enc.set_bitrate_kbps(330).expect("small change"),
                20 => enc.set_bitrate_kbps(1000).expect("large change"),
                _ => {}
            }
            let packets = enc.encode(frame, false).expect("encode");
            if n < 150 {
                // A 10 % change never rebuilds; a large one waits 5 s after the first frame.
                assert_eq!(enc.bitrate_kbps(), 300, "frame {n}");
            }
            out.extend(packets);
        }
        assert_eq!(
            enc.bitrate_kbps(),
            1000,
            "rebuilt after 5 s of capture time"
        );
        let keyframes: Vec<usize> = out
            .iter()
            .filter(|p| p.keyframe)
            .map(|p| frame_index(&input, p))
            .collect();
        assert_eq!(keyframes, vec![0, 150], "the rebuild costs one keyframe");
        let indices: Vec<usize> = out.iter().map(|p| frame_index(&input, p)).collect();
        let expected: Vec<usize> = (0..input.len() - enc.frames_pending()).collect();
        assert_eq!(indices, expected, "every frame comes out once, in order");
        assert!(enc.set_bitrate_kbps(0).is_err());
    }

    #[test]
    fn obu_parser_rejects_garbage() {
        assert_eq!(obu_types(&[0x12, 0x00]), Some(vec![2]));
        assert_eq!(obu_types(&[0x0A, 0x05, 1, 2]), None, "size past the end");
        assert_eq!(obu_types(&[0x10]), None, "no size field");
    }
}
