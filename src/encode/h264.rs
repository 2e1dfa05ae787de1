//! H.264 encoder (Cisco openh264, built from the bundled source).
//!
//! Output is Annex B (4-byte start codes). Every IDR access unit starts with SPS and PPS
//! (openh264 writes them before each IDR with the constant-ID strategy), so a viewer can
//! join at any keyframe.
//!
//! Profile: openh264 with `Profile::Baseline` writes `profile_idc` 66 with
//! `constraint_set0_flag` and `constraint_set1_flag` set (the profile-iop byte is `0xC0`),
//! which is Constrained Baseline; with level 3.1 the SPS says `42c01f`. Browsers negotiate
//! Constrained Baseline as `42e01f` (set2 is also set there, but it does not change what a
//! Constrained Baseline decoder must support), and decode this stream. Larger frames
//! (e.g. 1080p) make openh264 raise the level to what the size needs.
//!
//! The target bitrate changes at run time through openh264's `SetOption`
//! (`ENCODER_OPTION_BITRATE` and `ENCODER_OPTION_MAX_BITRATE`, which the `openh264` crate
//! reaches only through its raw API): rate control follows from the next frame, without a
//! keyframe.

use std::time::Instant;

use bytes::Bytes;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level,
    Profile, RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::formats::YUVSlices;
use openh264::{OpenH264API, Timestamp};
use openh264_sys2::{
    SBitrateInfo, ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE,
    SPATIAL_LAYER_0, SPATIAL_LAYER_ALL,
};

use crate::encode::{EncodeError, VideoEncoder, VideoEncoderSettings};
use crate::media::{EncodedFrame, PixelFormat, RawFrame, VideoCodec};

const CODEC: &str = "h264";

/// H.264 Constrained Baseline encoder for real-time streaming. Implements [`VideoEncoder`].
pub struct H264Encoder {
    encoder: Encoder,
    /// What the encoder was built with; `bitrate_kbps` is the current target.
    settings: VideoEncoderSettings,
    width: u32,
    height: u32,
    /// openh264 initializes itself on the first frame; `SetOption` needs that done.
    initialized: bool,
    /// Capture instant of the first frame; openh264's rate control gets millisecond
    /// timestamps relative to it.
    first_instant: Option<Instant>,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// An encoder for `settings.width` x `settings.height` at `settings.fps`, targeting
    /// `settings.bitrate_kbps` with bitrate-mode rate control (frames may be skipped to hold
    /// the rate) and an IDR every `keyframe_interval_s * fps` frames.
    pub fn new(settings: &VideoEncoderSettings) -> Result<Self, EncodeError> {
        validate(settings)?;
        Ok(H264Encoder {
            encoder: build(settings)?,
            settings: settings.clone(),
            width: settings.width,
            height: settings.height,
            initialized: false,
            first_instant: None,
        })
    }

    /// Sets one openh264 bitrate option (`SBitrateInfo` payload) for `layer`.
    fn set_bitrate_option(
        &mut self,
        option: ENCODER_OPTION,
        layer: openh264_sys2::LAYER_NUM,
        bitrate_bps: i32,
    ) -> Result<(), EncodeError> {
        let mut info = SBitrateInfo {
            iLayer: layer,
            iBitrate: bitrate_bps,
        };
        // SAFETY: the encoder has been initialized (a frame was encoded), both options take a
        // pointer to an `SBitrateInfo` that only has to live for the call, and neither changes
        // a parameter the crate keeps a copy of (size, format, rate-control mode).
        let code = unsafe {
            self.encoder
                .raw_api()
                .set_option(option, std::ptr::addr_of_mut!(info).cast())
        };
        if code != 0 {
            return Err(EncodeError::encode(
                CODEC,
                format!(
                    "openh264 SetOption({option}) to {bitrate_bps} bit/s failed with code {code}"
                ),
            ));
        }
        Ok(())
    }
}

/// A configured openh264 encoder for `settings` (it initializes itself on the first frame).
fn build(settings: &VideoEncoderSettings) -> Result<Encoder, EncodeError> {
    let bitrate_bps = bitrate_bps(settings.bitrate_kbps)?;
    let intra_period = settings.keyframe_interval_s.saturating_mul(settings.fps);
    // openh264 only spreads work over threads when a frame has several slices; we keep
    // one slice per frame (one NAL per picture), so extra threads would sit idle.
    let threads = u16::try_from(settings.threads.clamp(1, 4)).unwrap_or(1);
    let config = EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .level(Level::Level_3_1)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(bitrate_bps.unsigned_abs()))
        .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
        .skip_frames(true)
        .complexity(Complexity::Low)
        .intra_frame_period(IntraFramePeriod::from_num_frames(intra_period))
        .sps_pps_strategy(SpsPpsStrategy::ConstantId)
        .scene_change_detect(false)
        // Pre-analysis off, as x264's ultrafast preset has it: adaptive quantization and
        // background detection cost CPU per frame (profile in BENCHMARKS.md, "H.264").
        .adaptive_quantization(false)
        .background_detection(false)
        .num_threads(threads)
        // The capture sources produce BT.601 limited-range YUV.
        .vui(VuiConfig::bt601());
    Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| EncodeError::setup(CODEC, e.to_string()))
}

/// `kbps` in bit/s as openh264 takes it (a C int).
fn bitrate_bps(kbps: u32) -> Result<i32, EncodeError> {
    kbps.checked_mul(1000)
        .and_then(|b| i32::try_from(b).ok())
        .filter(|b| *b > 0)
        .ok_or_else(|| EncodeError::setup(CODEC, format!("bitrate {kbps} kbit/s is out of range")))
}

impl VideoEncoder for H264Encoder {
    fn codec(&self) -> VideoCodec {
        VideoCodec::H264
    }

    fn encode(
        &mut self,
        frame: &RawFrame,
        force_keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, EncodeError> {
        check_frame(frame, self.width, self.height)?;
        let (y, u, v) = frame.planes();
        let (w, h) = (self.width as usize, self.height as usize);
        let yuv = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let first = *self.first_instant.get_or_insert(frame.capture_instant);
        let millis = frame
            .capture_instant
            .saturating_duration_since(first)
            .as_millis();
        let timestamp = Timestamp::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
        if force_keyframe {
            self.encoder.force_intra_frame();
        }
        let stream = self
            .encoder
            .encode_at(&yuv, timestamp)
            .map_err(|e| EncodeError::encode(CODEC, e.to_string()))?;
        self.initialized = true;
        let keyframe = match stream.frame_type() {
            FrameType::IDR => true,
            FrameType::I | FrameType::P | FrameType::IPMixed => false,
            // Rate control dropped this frame: nothing to send.
            FrameType::Skip => return Ok(Vec::new()),
            FrameType::Invalid => {
                return Err(EncodeError::encode(
                    CODEC,
                    "openh264 returned an invalid frame",
                ))
            }
        };
        let data = stream.to_vec();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![EncodedFrame {
            data: Bytes::from(data),
            keyframe,
            capture_instant: frame.capture_instant,
        }])
    }

    fn set_bitrate_kbps(&mut self, kbps: u32) -> Result<(), EncodeError> {
        if kbps == self.settings.bitrate_kbps {
            return Ok(());
        }
        let new_bps = bitrate_bps(kbps)?;
        if !self.initialized {
            // Nothing encoded yet: SetOption would reach an uninitialized encoder, and a new
            // one costs nothing.
            let mut settings = self.settings.clone();
            settings.bitrate_kbps = kbps;
            self.encoder = build(&settings)?;
            self.settings = settings;
            return Ok(());
        }
        // openh264 rejects a target above the layer's maximum, and the crate sets the maximum
        // equal to the target: raise the maximum first going up, lower it last going down.
        if kbps > self.settings.bitrate_kbps {
            self.set_bitrate_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, new_bps)?;
            self.set_bitrate_option(ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, new_bps)?;
        } else {
            self.set_bitrate_option(ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, new_bps)?;
            self.set_bitrate_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, new_bps)?;
        }
        self.settings.bitrate_kbps = kbps;
        Ok(())
    }
}

/// Checks the settings every video encoder needs; the message names the bad value.
pub(crate) fn validate_video_settings(
    codec: &'static str,
    settings: &VideoEncoderSettings,
) -> Result<(), EncodeError> {
    let fail = |reason: String| Err(EncodeError::setup(codec, reason));
    if settings.width < 16
        || settings.height < 16
        || !settings.width.is_multiple_of(2)
        || !settings.height.is_multiple_of(2)
    {
        return fail(format!(
            "frame size {}x{} must be even and at least 16x16",
            settings.width, settings.height
        ));
    }
    if settings.fps == 0 || settings.fps > 240 {
        return fail(format!("frame rate {} must be 1..=240", settings.fps));
    }
    if settings.bitrate_kbps == 0 {
        return fail("bitrate must be at least 1 kbit/s".into());
    }
    if settings.keyframe_interval_s == 0 {
        return fail("keyframe interval must be at least 1 s".into());
    }
    Ok(())
}

/// Checks that `frame` is tightly packed I420 of the encoder's size.
pub(crate) fn check_frame_for(
    codec: &'static str,
    frame: &RawFrame,
    width: u32,
    height: u32,
) -> Result<(), EncodeError> {
    let fail = |reason: String| Err(EncodeError::encode(codec, reason));
    if frame.format != PixelFormat::I420 {
        return fail(format!("frame format {:?} is not I420", frame.format));
    }
    if (frame.width, frame.height) != (width, height) {
        return fail(format!(
            "frame is {}x{}, the encoder was set up for {width}x{height}",
            frame.width, frame.height
        ));
    }
    let expected = RawFrame::i420_len(width, height);
    if frame.data.len() != expected {
        return fail(format!(
            "frame holds {} bytes, I420 {width}x{height} needs {expected}",
            frame.data.len()
        ));
    }
    Ok(())
}

fn validate(settings: &VideoEncoderSettings) -> Result<(), EncodeError> {
    validate_video_settings(CODEC, settings)?;
    if settings.width > 3840 || settings.height > 2160 {
        return Err(EncodeError::setup(
            CODEC,
            format!(
                "frame size {}x{} is larger than openh264's 3840x2160",
                settings.width, settings.height
            ),
        ));
    }
    Ok(())
}

fn check_frame(frame: &RawFrame, width: u32, height: u32) -> Result<(), EncodeError> {
    check_frame_for(CODEC, frame, width, height)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::capture::test_pattern::TestPattern;
    use crate::h264::nal_units;

    fn settings(width: u32, height: u32, bitrate_kbps: u32) -> VideoEncoderSettings {
        VideoEncoderSettings {
            width,
            height,
            fps: 30,
            bitrate_kbps,
            keyframe_interval_s: 2,
            threads: 1,
        }
    }

    /// Test-pattern frames with capture instants 1/30 s apart, as a real source gives them.
    fn frames(width: u32, height: u32, count: u64) -> Vec<RawFrame> {
        let pattern = TestPattern::new(width, height, 30);
        let base = Instant::now();
        (0..count)
            .map(|n| RawFrame {
                width,
                height,
                format: PixelFormat::I420,
                data: pattern.render(n, n as u32 * 33).into(),
                capture_instant: base + Duration::from_millis(n * 1000 / 30),
                sequence: n,
            })
            .collect()
    }

    fn nal_types(frame: &EncodedFrame) -> Vec<u8> {
        nal_units(&frame.data).iter().map(|n| n[0] & 0x1F).collect()
    }

    #[test]
    fn first_frame_is_an_idr_with_sps_and_pps_constrained_baseline() {
        let mut enc = H264Encoder::new(&settings(320, 240, 300)).expect("encoder");
        assert_eq!(enc.codec(), VideoCodec::H264);
        let frame = &frames(320, 240, 1)[0];
        let out = enc.encode(frame, false).expect("encode");
        assert_eq!(out.len(), 1);
        assert!(out[0].keyframe);
        assert!(out[0].data.starts_with(&[0, 0, 0, 1]), "Annex B start code");
        assert_eq!(nal_types(&out[0]), vec![7, 8, 5]);
        assert_eq!(out[0].capture_instant, frame.capture_instant);
        let sps = nal_units(&out[0].data)[0];
        // profile_idc 66 (Baseline), constraint_set0 and set1 (Constrained Baseline), level 3.1.
        assert_eq!(sps[1], 66, "profile_idc");
        assert_eq!(sps[2] & 0xC0, 0xC0, "constraint flags {:#04x}", sps[2]);
        assert_eq!(sps[3], 31, "level_idc");
    }

    #[test]
    fn forced_and_periodic_keyframes() {
        // keyframe_interval_s = 2 at 30 fps: an IDR 60 frames after the previous one (a
        // forced IDR restarts the count).
        let mut enc = H264Encoder::new(&settings(320, 240, 500)).expect("encoder");
        let mut keyframes = Vec::new();
        let mut types = Vec::new();
        for (n, frame) in frames(320, 240, 100).iter().enumerate() {
            for out in enc.encode(frame, n == 20).expect("encode") {
                let nals = nal_types(&out);
                if out.keyframe {
                    keyframes.push(n);
                    assert_eq!(&nals[..3], &[7, 8, 5], "frame {n}: SPS, PPS, IDR");
                } else {
                    assert_eq!(nals, vec![1], "frame {n}: one non-IDR slice");
                    types.push(n);
                }
            }
        }
        assert_eq!(
            keyframes,
            vec![0, 20, 80],
            "keyframes at start, forced, periodic"
        );
        assert!(types.len() >= 80, "P frames: {}", types.len());
    }

    #[test]
    fn non_keyframes_are_p_slices() {
        let mut enc = H264Encoder::new(&settings(320, 240, 300)).expect("encoder");
        let all = frames(320, 240, 5);
        enc.encode(&all[0], false).expect("encode");
        let out = enc.encode(&all[1], false).expect("encode");
        let nal = nal_units(&out[0].data)[0];
        // slice_header: first_mb_in_slice ue(v) = 0 is the bit "1", then slice_type ue(v):
        // P is 0 or 5, coded "1" or "00110"; I would be 2/7 ("011" / "0001000").
        let bits = nal[1];
        assert_eq!(bits & 0x80, 0x80, "first_mb_in_slice = 0");
        let p_short = bits & 0x40 == 0x40; // slice_type 0
        let p_long = (bits >> 1) & 0x1F == 0b00110; // slice_type 5
        assert!(
            p_short || p_long,
            "slice header byte {bits:#010b} is not a P slice"
        );
    }

    #[test]
    fn bitrate_follows_the_target() {
        for target_kbps in [300u32, 1000] {
            let mut enc = H264Encoder::new(&settings(640, 480, target_kbps)).expect("encoder");
            let bytes: usize = frames(640, 480, 60)
                .iter()
                .map(|f| {
                    enc.encode(f, false)
                        .expect("encode")
                        .iter()
                        .map(|e| e.data.len())
                        .sum::<usize>()
                })
                .sum();
            let kbps = bytes as f64 * 8.0 / 2.0 / 1000.0; // 60 frames = 2 s
            let ratio = kbps / f64::from(target_kbps);
            assert!(
                (0.5..=2.0).contains(&ratio),
                "target {target_kbps} kbit/s, got {kbps:.0}"
            );
        }
    }

    /// kbit/s produced for `frames` (30 fps).
    fn kbps_of(enc: &mut H264Encoder, frames: &[RawFrame]) -> f64 {
        let bytes: usize = frames
            .iter()
            .flat_map(|f| enc.encode(f, false).expect("encode"))
            .map(|e| e.data.len())
            .sum();
        bytes as f64 * 8.0 * 30.0 / frames.len() as f64 / 1000.0
    }

    #[test]
    fn bitrate_follows_a_change_at_run_time() {
        // Set before the first frame (the encoder is rebuilt), then twice while encoding
        // (SetOption): down and back up. Each phase is measured after 1 s of settling. The
        // test pattern needs only ~500 kbit/s at 640x480 however high the target, so the
        // high phases are checked against the low one rather than against their target.
        let all = frames(640, 480, 450);
        let mut enc = H264Encoder::new(&settings(640, 480, 300)).expect("encoder");
        enc.set_bitrate_kbps(1000).expect("before the first frame");
        let phases = [
            (1000u32, &all[..150]),
            (150, &all[150..300]),
            (1000, &all[300..]),
        ];
        let mut measured = Vec::new();
        for (n, (target_kbps, phase)) in phases.iter().enumerate() {
            if n > 0 {
                enc.set_bitrate_kbps(*target_kbps).expect("set bitrate");
            }
            kbps_of(&mut enc, &phase[..30]);
            measured.push(kbps_of(&mut enc, &phase[30..]));
        }
        eprintln!("kbit/s per phase (targets 1000, 150, 1000): {measured:.0?}");
        let ratio = measured[1] / 150.0;
        assert!(
            (0.5..=1.5).contains(&ratio),
            "150 kbit/s target: {measured:?}"
        );
        assert!(
            measured[0] > 2.0 * measured[1] && measured[2] > 2.0 * measured[1],
            "down and back up: {measured:?}"
        );
        assert!(enc.set_bitrate_kbps(0).is_err(), "0 kbit/s is refused");
    }

    #[test]
    fn bad_settings_and_frames_are_rejected_with_a_reason() {
        let err = H264Encoder::new(&settings(321, 240, 300)).expect_err("odd width");
        assert!(err.to_string().contains("321x240"), "{err}");
        let mut bad = settings(320, 240, 300);
        bad.fps = 0;
        assert!(H264Encoder::new(&bad).is_err());
        let mut enc = H264Encoder::new(&settings(320, 240, 300)).expect("encoder");
        let frame = &frames(640, 480, 1)[0];
        let err = enc.encode(frame, false).expect_err("wrong size");
        assert!(err.to_string().contains("640x480"), "{err}");
    }

    #[test]
    fn barcode_survives_300_kbps_and_decoding() {
        use crate::capture::test_pattern::decode_barcode;
        use openh264::decoder::Decoder;
        use openh264::formats::YUVSource;

        let (w, h) = (320usize, 240usize);
        let mut enc = H264Encoder::new(&settings(320, 240, 300)).expect("encoder");
        let mut dec = Decoder::new().expect("decoder");
        let input = frames(320, 240, 45);
        let mut read = 0;
        for frame in &input {
            for out in enc.encode(frame, false).expect("encode") {
                let Some(yuv) = dec.decode(&out.data).expect("decode") else {
                    continue;
                };
                let stride = yuv.strides().0;
                let mut luma = Vec::with_capacity(w * h);
                for row in yuv.y().chunks(stride).take(h) {
                    luma.extend_from_slice(&row[..w]);
                }
                let expected = frame.sequence as u32 * 33;
                assert_eq!(
                    decode_barcode(&luma, 320, 240),
                    Some(expected),
                    "frame {}",
                    frame.sequence
                );
                read += 1;
            }
        }
        assert!(read >= 40, "decoded only {read} frames");
    }

    #[test]
    fn annex_b_splitter_handles_3_and_4_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
        ];
        let units = nal_units(&data);
        assert_eq!(
            units,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]
        );
    }
}
