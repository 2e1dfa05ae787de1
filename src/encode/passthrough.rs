//! Camera H.264 passthrough: the camera's access units go to viewers without re-encoding.
//!
//! What a browser needs that cameras do not always give:
//! - **SPS and PPS before every IDR**, so a viewer can start at any keyframe. Many UVC
//!   cameras send them once after STREAMON; [`H264Passthrough`] remembers the latest and
//!   inserts them in front of each IDR that lacks them.
//! - **A clean start**: after a gap (frames dropped on the way, a placeholder interlude, a
//!   replugged camera) everything up to the next IDR is useless to a decoder; it is dropped
//!   and [`Passed::want_keyframe`] asks for one.
//! - **The real profile**: [`ProfileLevelId`] is read from the camera's SPS, so the SDP
//!   answer announces what the camera actually sends.

use bytes::Bytes;

use crate::h264::{
    nal_type, nal_units, ProfileLevelId, NAL_AUD, NAL_IDR, NAL_PPS, NAL_SLICE, NAL_SPS, START_CODE,
};
use crate::media::{CameraH264, EncodedFrame};

/// The result of passing one camera access unit.
#[derive(Debug, Default)]
pub struct Passed {
    /// What to send viewers; `None` while waiting for an IDR.
    pub frame: Option<EncodedFrame>,
    /// The stream is unusable until the next IDR: ask the camera for one.
    pub want_keyframe: bool,
}

/// Turns the camera's access units into ones a joining browser can decode (see the module
/// documentation). One per passthrough output; not thread-safe by design.
#[derive(Debug, Default)]
pub struct H264Passthrough {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    profile: Option<ProfileLevelId>,
    last_sequence: Option<u64>,
    /// True until an IDR with known SPS/PPS has been sent (at start and after every gap).
    waiting: bool,
    started: bool,
}

impl H264Passthrough {
    /// A passthrough that waits for the first IDR.
    pub fn new() -> Self {
        H264Passthrough::default()
    }

    /// The profile and level of the latest SPS seen.
    pub fn profile(&self) -> Option<ProfileLevelId> {
        self.profile
    }

    /// Forget the stream position: the next frame must be an IDR (after a placeholder
    /// interlude or a camera change).
    pub fn restart(&mut self) {
        self.last_sequence = None;
        self.started = false;
    }

    /// Passes one access unit: remembers SPS/PPS, drops frames until a decodable IDR after
    /// a start or a gap in `frame.sequence`, and puts SPS/PPS in front of every IDR.
    pub fn push(&mut self, frame: &CameraH264) -> Passed {
        let gap = match self.last_sequence {
            Some(last) => frame.sequence != last.wrapping_add(1),
            None => true,
        };
        self.last_sequence = Some(frame.sequence);
        if gap || !self.started {
            self.waiting = true;
            self.started = true;
        }
        let units = nal_units(&frame.data);
        let mut has_sps = false;
        let mut has_pps = false;
        let mut idr = false;
        let mut slices = false;
        for unit in &units {
            match nal_type(unit) {
                NAL_SPS => {
                    has_sps = true;
                    self.sps = Some(Bytes::copy_from_slice(unit));
                    self.profile = ProfileLevelId::from_sps(unit).or(self.profile);
                }
                NAL_PPS => {
                    has_pps = true;
                    self.pps = Some(Bytes::copy_from_slice(unit));
                }
                NAL_IDR => idr = true,
                NAL_SLICE => slices = true,
                _ => {}
            }
        }
        if !idr && !slices {
            // Parameter sets or SEI only: remembered, nothing to show.
            return Passed {
                frame: None,
                want_keyframe: self.waiting,
            };
        }
        if self.waiting && !idr {
            return Passed {
                frame: None,
                want_keyframe: true,
            };
        }
        let (Some(sps), Some(pps)) = (self.sps.clone(), self.pps.clone()) else {
            // An IDR without any parameter sets seen yet: undecodable.
            return Passed {
                frame: None,
                want_keyframe: true,
            };
        };
        let mut out = Vec::with_capacity(frame.data.len() + sps.len() + pps.len() + 16);
        if idr {
            if !has_sps {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(&sps);
            }
            if !has_pps {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(&pps);
            }
            self.waiting = false;
        }
        for unit in units.iter().filter(|u| nal_type(u) != NAL_AUD) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(unit);
        }
        Passed {
            frame: Some(EncodedFrame {
                data: Bytes::from(out),
                keyframe: idr,
                capture_instant: frame.capture_instant,
            }),
            want_keyframe: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::h264::samples::{annex_b, IDR, PPS, SPS};

    const P: &[u8] = &[0x41, 0x9a, 0x02, 0x03];
    const AUD: &[u8] = &[0x09, 0xf0];

    fn au(sequence: u64, units: &[&[u8]]) -> CameraH264 {
        CameraH264 {
            width: 640,
            height: 480,
            data: Bytes::from(annex_b(units, sequence.is_multiple_of(2))),
            capture_instant: Instant::now(),
            sequence,
        }
    }

    #[test]
    fn sps_pps_are_inserted_before_every_idr_that_lacks_them() {
        let mut p = H264Passthrough::new();
        let first = p
            .push(&au(0, &[AUD, SPS, PPS, IDR]))
            .frame
            .expect("first IDR");
        assert!(first.keyframe);
        assert_eq!(nal_units(&first.data), vec![SPS, PPS, IDR], "AUD dropped");
        let delta = p.push(&au(1, &[P])).frame.expect("P frame");
        assert!(!delta.keyframe);
        assert_eq!(nal_units(&delta.data), vec![P]);
        // The camera's next IDR comes without parameter sets: they are added.
        let second = p.push(&au(2, &[IDR])).frame.expect("second IDR");
        assert!(second.keyframe);
        assert_eq!(nal_units(&second.data), vec![SPS, PPS, IDR]);
        assert_eq!(
            p.profile().map(ProfileLevelId::hex).as_deref(),
            Some("640028")
        );
    }

    #[test]
    fn waits_for_an_idr_at_start_and_after_a_gap() {
        let mut p = H264Passthrough::new();
        // Parameter sets alone: remembered, nothing sent yet.
        let r = p.push(&au(0, &[SPS, PPS]));
        assert!(r.frame.is_none() && r.want_keyframe);
        // A P frame before any IDR is useless.
        let r = p.push(&au(1, &[P]));
        assert!(r.frame.is_none() && r.want_keyframe);
        // An IDR without in-band parameter sets is completed from the remembered ones.
        let idr = p.push(&au(2, &[IDR])).frame.expect("idr");
        assert_eq!(nal_units(&idr.data), vec![SPS, PPS, IDR]);
        assert!(p.push(&au(3, &[P])).frame.is_some());
        // Frame 4 was dropped on the way: 5 cannot be decoded.
        let r = p.push(&au(5, &[P]));
        assert!(r.frame.is_none() && r.want_keyframe);
        assert!(p.push(&au(6, &[IDR])).frame.expect("idr").keyframe);
        assert!(p.push(&au(7, &[P])).frame.is_some());
        // After a restart (placeholder interlude) the next P frame waits too.
        p.restart();
        assert!(p.push(&au(8, &[P])).frame.is_none());
    }

    #[test]
    fn an_idr_without_any_parameter_sets_is_not_sent() {
        let mut p = H264Passthrough::new();
        let r = p.push(&au(0, &[IDR]));
        assert!(r.frame.is_none() && r.want_keyframe);
        assert!(p.profile().is_none());
    }
}
