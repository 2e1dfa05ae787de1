//! Turns encoded frames into RTP packets with timestamps taken from the capture clock.
//!
//! Timestamps derived from capture time (not from nominal frame durations) keep the browser's
//! jitter buffer small: a late frame is late in its timestamp too.

use std::time::Instant;

use bytes::Bytes;
use rtc::rtp::codec::av1::Av1Payloader;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::opus::OpusPayloader;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp::packetizer::Payloader;

use crate::media::{EncodedFrame, VideoCodec};

/// RTP payload size limit: 1200 bytes keeps packets under common path MTUs with SRTP overhead.
pub const RTP_PAYLOAD_MTU: usize = 1200;

/// What a stream carries, which decides the payloader and the RTP clock rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A video codec, 90 kHz clock.
    Video(VideoCodec),
    /// Opus, 48 kHz clock.
    Opus,
}

impl StreamKind {
    /// RTP clock rate in Hz.
    pub fn clock_rate(self) -> u32 {
        match self {
            StreamKind::Video(_) => 90_000,
            StreamKind::Opus => 48_000,
        }
    }
}

/// Packetizes one stream's frames: sequence numbers, timestamps, marker bits.
pub struct RtpPacketizer {
    payloader: Box<dyn Payloader>,
    kind: StreamKind,
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    timestamp_base: u32,
    epoch: Option<Instant>,
}

impl RtpPacketizer {
    /// A packetizer for `kind` with the negotiated payload type and our SSRC.
    /// Sequence number and timestamp start at random values (RFC 3550).
    pub fn new(kind: StreamKind, payload_type: u8, ssrc: u32) -> Self {
        let payloader: Box<dyn Payloader> = match kind {
            StreamKind::Video(VideoCodec::H264) => Box::new(H264Payloader::default()),
            StreamKind::Video(VideoCodec::Av1) => Box::new(Av1Payloader::default()),
            StreamKind::Opus => Box::new(OpusPayloader),
        };
        RtpPacketizer {
            payloader,
            kind,
            payload_type,
            ssrc,
            sequence: rand::random(),
            timestamp_base: rand::random(),
            epoch: None,
        }
    }

    /// RTP timestamp of a frame captured at `at`: the base plus the capture time since the
    /// first frame, in clock-rate units (wrapping, as RTP timestamps do).
    pub fn timestamp_for(&mut self, at: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(at);
        let elapsed = at.saturating_duration_since(epoch);
        let ticks = elapsed.as_nanos() * u128::from(self.kind.clock_rate()) / 1_000_000_000;
        self.timestamp_base.wrapping_add(ticks as u32)
    }

    /// Splits one frame into RTP packets; the last packet of a video frame has the marker bit.
    pub fn packetize(&mut self, frame: &EncodedFrame) -> Result<Vec<Packet>, String> {
        let timestamp = self.timestamp_for(frame.capture_instant);
        let payloads: Vec<Bytes> = self
            .payloader
            .payload(RTP_PAYLOAD_MTU, &frame.data)
            .map_err(|e| format!("cannot packetize {:?} frame: {e}", self.kind))?;
        let count = payloads.len();
        let packets = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let sequence_number = self.sequence;
                self.sequence = self.sequence.wrapping_add(1);
                Packet {
                    header: Header {
                        version: 2,
                        // Video: marker on the last packet of the frame. Audio: no talk spurts.
                        marker: matches!(self.kind, StreamKind::Video(_)) && i + 1 == count,
                        payload_type: self.payload_type,
                        sequence_number,
                        timestamp,
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload,
                }
            })
            .collect();
        Ok(packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_follow_capture_time() {
        let mut p = RtpPacketizer::new(StreamKind::Video(VideoCodec::H264), 102, 1);
        let t0 = Instant::now();
        let a = p.timestamp_for(t0);
        let b = p.timestamp_for(t0 + Duration::from_millis(100));
        assert_eq!(b.wrapping_sub(a), 9_000);
        let mut o = RtpPacketizer::new(StreamKind::Opus, 111, 2);
        let a = o.timestamp_for(t0);
        let b = o.timestamp_for(t0 + Duration::from_millis(20));
        assert_eq!(b.wrapping_sub(a), 960);
    }

    #[test]
    fn large_h264_frame_is_fragmented_with_marker_on_last() {
        let mut p = RtpPacketizer::new(StreamKind::Video(VideoCodec::H264), 102, 7);
        // One IDR NAL of 5000 bytes in Annex B.
        let mut data = vec![0, 0, 0, 1, 0x65];
        data.extend(std::iter::repeat_n(0xAB, 5000));
        let frame = EncodedFrame {
            data: Bytes::from(data),
            keyframe: true,
            capture_instant: Instant::now(),
        };
        let packets = p.packetize(&frame).expect("packetize");
        assert!(packets.len() >= 5, "{} packets", packets.len());
        assert!(packets.iter().all(|p| p.payload.len() <= RTP_PAYLOAD_MTU));
        assert!(packets.last().is_some_and(|p| p.header.marker));
        assert!(packets[..packets.len() - 1]
            .iter()
            .all(|p| !p.header.marker));
        let seqs: Vec<u16> = packets.iter().map(|p| p.header.sequence_number).collect();
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1));
        }
        assert!(packets
            .iter()
            .all(|p| p.header.ssrc == 7 && p.header.payload_type == 102));
    }
}
