//! The test pattern as a simulated H.264 camera (`source = "test"`, `format = "h264"`), so
//! the passthrough path runs end to end without such a camera: it behaves like a typical UVC
//! H.264 webcam: Main profile at level 4.0 (`4d4c28`, not Constrained Baseline, so the
//! answer must announce the camera's profile), SPS/PPS only in front of the first IDR, an IDR every `keyframe_interval_s`, and keyframes on request
//! (like a camera with the force-key-frame control). It is a test source, not a real part of
//! the data path: real cameras stream H.264 through [`super::v4l2::V4l2Source`].

use bytes::Bytes;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level,
    Profile, RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

use super::test_pattern::TestPattern;
use super::{CaptureError, VideoSource};
use crate::encode::EncodeError;
use crate::h264::{nal_type, nal_units};
use crate::media::{CameraH264, VideoFrame};

/// Bitrate of the simulated camera's stream.
const BITRATE_BPS: u32 = 1_500_000;

/// A [`VideoSource`] delivering the test pattern as camera H.264 access units.
pub struct TestH264Camera {
    pattern: TestPattern,
    encoder: Encoder,
    width: u32,
    height: u32,
    fps: u32,
    /// SPS/PPS were sent once; later IDRs come without them, as from many cameras.
    sent_parameter_sets: bool,
    keyframe_requested: bool,
}

impl TestH264Camera {
    /// A simulated camera of `width` x `height` at `fps`, an IDR every `keyframe_interval_s`.
    pub fn new(
        width: u32,
        height: u32,
        fps: u32,
        keyframe_interval_s: u32,
    ) -> Result<Self, EncodeError> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Main)
            .level(Level::Level_4_0)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(BITRATE_BPS))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .skip_frames(true)
            .complexity(Complexity::Low)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                keyframe_interval_s.saturating_mul(fps),
            ))
            .scene_change_detect(false);
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| {
                EncodeError::Setup {
                    codec: "h264 (simulated camera)",
                    reason: e.to_string(),
                }
            })?;
        Ok(TestH264Camera {
            pattern: TestPattern::new(width, height, fps),
            encoder,
            width,
            height,
            fps,
            sent_parameter_sets: false,
            keyframe_requested: false,
        })
    }
}

impl VideoSource for TestH264Camera {
    fn describe(&self) -> String {
        format!(
            "test pattern as a simulated H.264 camera {}x{}@{}",
            self.width, self.height, self.fps
        )
    }

    fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    fn next_frame(&mut self) -> Result<VideoFrame, CaptureError> {
        let failed = |reason: String| CaptureError::Stopped {
            source_name: "simulated H.264 camera".to_owned(),
            reason,
        };
        loop {
            let raw = self.pattern.next_raw()?;
            let (y, u, v) = raw.planes();
            let (w, h) = (raw.width as usize, raw.height as usize);
            let yuv = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
            if std::mem::take(&mut self.keyframe_requested) {
                self.encoder.force_intra_frame();
            }
            let stream = self
                .encoder
                .encode(&yuv)
                .map_err(|e| failed(e.to_string()))?;
            if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
                continue;
            }
            let encoded = stream.to_vec();
            let mut data = Vec::with_capacity(encoded.len());
            for unit in nal_units(&encoded) {
                if matches!(nal_type(unit), 7 | 8) && self.sent_parameter_sets {
                    continue;
                }
                data.extend_from_slice(&[0, 0, 0, 1]);
                data.extend_from_slice(unit);
            }
            self.sent_parameter_sets = true;
            return Ok(VideoFrame::H264(CameraH264 {
                width: raw.width,
                height: raw.height,
                data: Bytes::from(data),
                capture_instant: raw.capture_instant,
                sequence: raw.sequence,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::ProfileLevelId;

    fn access_unit(camera: &mut TestH264Camera) -> CameraH264 {
        match camera.next_frame().expect("frame") {
            VideoFrame::H264(f) => f,
            VideoFrame::Raw(_) => panic!("raw frame from the H.264 camera"),
        }
    }

    #[test]
    fn behaves_like_a_uvc_h264_camera() {
        let mut camera = TestH264Camera::new(320, 240, 30, 1).expect("camera");
        let first = access_unit(&mut camera);
        let types: Vec<u8> = nal_units(&first.data).iter().map(|u| nal_type(u)).collect();
        assert!(types.starts_with(&[7, 8]), "SPS, PPS first: {types:?}");
        assert!(types.contains(&5), "first frame is an IDR: {types:?}");
        let sps = nal_units(&first.data)[0].to_vec();
        let plid = ProfileLevelId::from_sps(&sps).expect("sps");
        assert_eq!(
            plid.hex(),
            "4d4c28",
            "Main profile, level 4.0, like a UVC camera"
        );
        // Frames 1..29 are P frames; frame 30 is the periodic IDR, without SPS/PPS.
        let rest: Vec<CameraH264> = (1..=30).map(|_| access_unit(&mut camera)).collect();
        let idrs: Vec<u64> = rest
            .iter()
            .filter(|f| nal_units(&f.data).iter().any(|u| nal_type(u) == 5))
            .map(|f| f.sequence)
            .collect();
        assert_eq!(idrs, vec![30], "one periodic IDR after 1 s");
        assert!(rest.iter().all(|f| nal_units(&f.data)
            .iter()
            .all(|u| !matches!(nal_type(u), 7 | 8))));
        // A keyframe on request.
        camera.request_keyframe();
        let forced = access_unit(&mut camera);
        assert!(nal_units(&forced.data).iter().any(|u| nal_type(u) == 5));
    }
}
