//! The one place inbound RTCP reaches peercam: an interceptor that hands the browser's
//! keyframe requests (PLI, FIR) to the application and its congestion feedback (REMB,
//! receiver reports' fraction lost for the video stream) to adaptive bitrate.
//!
//! webrtc-rs stops inbound RTCP at the end of its interceptor chain unless an interceptor marks
//! a packet `DeliverToApplication`; this one marks keyframe requests and drops everything else
//! (receiver reports and NACKs were already handled by the interceptors before it). Congestion
//! feedback does not take that path: it goes straight into a bounded channel (a full channel
//! drops the report; they come every second or so). Adapted from webrtc-rs' `rtcp-processing`
//! example.

use std::collections::VecDeque;
use std::time::Instant;

use log::debug;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use tokio::sync::mpsc;

use crate::pipeline::bitrate::Feedback;

/// Position in the interceptor chain: after every default interceptor.
pub const SLOT: usize = 14_000;

/// Congestion feedback reports buffered between the interceptor and the viewer's task.
pub const FEEDBACK_CAPACITY: usize = 16;

/// Marks inbound PLI/FIR for delivery to the application, sends REMB and the video stream's
/// loss to the feedback channel, and drops other inbound RTCP.
pub struct RtcpForwarder {
    /// SSRC of the video track this peer sends (receiver reports about others are ignored).
    video_ssrc: u32,
    /// Where congestion feedback goes; `None` when the video is not adaptive (passthrough).
    feedback: Option<mpsc::Sender<Feedback>>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpForwarder {
    /// A forwarder for a peer sending video as `video_ssrc`, reporting congestion feedback to
    /// `feedback`.
    pub fn new(video_ssrc: u32, feedback: Option<mpsc::Sender<Feedback>>) -> Self {
        RtcpForwarder {
            video_ssrc,
            feedback,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    fn report(&self, feedback: Feedback) {
        if let Some(tx) = &self.feedback {
            if tx.try_send(feedback).is_err() {
                debug!("congestion feedback dropped (queue full or viewer gone)");
            }
        }
    }
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// The congestion feedback in `packet` about the video stream `video_ssrc`.
pub fn congestion_feedback(packet: &dyn rtc::rtcp::Packet, video_ssrc: u32) -> Option<Feedback> {
    let any = packet.as_any();
    if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
        // A REMB is the receiver's estimate for everything it receives from this peer (an
        // empty SSRC list too); a negative or NaN value from a broken peer counts as 0.
        if remb.ssrcs.is_empty() || remb.ssrcs.contains(&video_ssrc) {
            let bitrate_bps = if remb.bitrate.is_finite() && remb.bitrate > 0.0 {
                remb.bitrate as u64
            } else {
                0
            };
            return Some(Feedback::Remb { bitrate_bps });
        }
        return None;
    }
    let rr = any.downcast_ref::<ReceiverReport>()?;
    rr.reports
        .iter()
        .find(|r| r.ssrc == video_ssrc)
        .map(|r| Feedback::Loss {
            fraction_lost: r.fraction_lost,
        })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                if let Some(feedback) = congestion_feedback(packet.as_ref(), self.video_ssrc) {
                    self.report(feedback);
                }
            }
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtcpForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use rtc::rtcp::reception_report::ReceptionReport;

    use super::*;

    #[test]
    fn remb_and_the_video_streams_loss_are_congestion_feedback() {
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: 350_000.0,
            ssrcs: vec![7, 42],
        };
        assert_eq!(
            congestion_feedback(&remb, 42),
            Some(Feedback::Remb {
                bitrate_bps: 350_000
            })
        );
        assert_eq!(congestion_feedback(&remb, 43), None, "about other streams");
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![
                ReceptionReport {
                    ssrc: 7,
                    fraction_lost: 200,
                    ..Default::default()
                },
                ReceptionReport {
                    ssrc: 42,
                    fraction_lost: 30,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            congestion_feedback(&rr, 42),
            Some(Feedback::Loss { fraction_lost: 30 })
        );
        assert_eq!(congestion_feedback(&rr, 9), None);
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 42,
        };
        assert_eq!(congestion_feedback(&pli, 42), None);
        assert!(is_keyframe_request(&pli));
    }
}
