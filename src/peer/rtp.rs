//! Turns encoded frames into RTP packets with timestamps taken from the capture clock.
//!
//! Timestamps derived from capture time (not from nominal frame durations) keep the browser's
//! jitter buffer small: a late frame is late in its timestamp too.
//!
//! No allocation per packet in steady state: a payload that is a slice of the frame (an H.264
//! NAL unit that fits, an Opus packet) shares the frame's bytes; a payload that has to be
//! built (H.264 FU-A fragments and STAP-A, AV1 aggregation) is written into a
//! [`PayloadArena`] chunk that is reused once every packet cut from it has been dropped
//! (webrtc-rs keeps sent packets for NACK retransmission for a while). The caller passes the
//! same `Vec<Packet>` for every frame. Measured by `benches/alloc.rs`.

mod av1;
mod h264;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;

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

/// The codec-specific part of packetizing, with the state it keeps between frames.
enum Payloader {
    H264(h264::H264Payloader),
    Av1(av1::Av1Payloader),
    Opus,
}

/// Packetizes one stream's frames: sequence numbers, timestamps, marker bits.
pub struct RtpPacketizer {
    payloader: Payloader,
    kind: StreamKind,
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    timestamp_base: u32,
    epoch: Option<Instant>,
    arena: PayloadArena,
    /// One frame's payloads, reused from frame to frame.
    payloads: Vec<Bytes>,
}

impl RtpPacketizer {
    /// A packetizer for `kind` with the negotiated payload type and our SSRC.
    /// Sequence number and timestamp start at random values (RFC 3550).
    pub fn new(kind: StreamKind, payload_type: u8, ssrc: u32) -> Self {
        let payloader = match kind {
            StreamKind::Video(VideoCodec::H264) => Payloader::H264(Default::default()),
            StreamKind::Video(VideoCodec::Av1) => Payloader::Av1(Default::default()),
            StreamKind::Opus => Payloader::Opus,
        };
        RtpPacketizer {
            payloader,
            kind,
            payload_type,
            ssrc,
            sequence: rand::random(),
            timestamp_base: rand::random(),
            epoch: None,
            arena: PayloadArena::default(),
            payloads: Vec::new(),
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

    /// Splits one frame into RTP packets, appended to `packets` (which the caller empties,
    /// typically by draining it into the network, and passes again for the next frame); the
    /// last packet of a video frame has the marker bit. On error nothing is appended.
    pub fn packetize(
        &mut self,
        frame: &EncodedFrame,
        packets: &mut Vec<Packet>,
    ) -> Result<(), String> {
        let timestamp = self.timestamp_for(frame.capture_instant);
        self.payloads.clear();
        let payloaded = match &mut self.payloader {
            Payloader::H264(p) => {
                p.payload(
                    RTP_PAYLOAD_MTU,
                    &frame.data,
                    &mut self.arena,
                    &mut self.payloads,
                );
                Ok(())
            }
            Payloader::Av1(p) => p.payload(
                RTP_PAYLOAD_MTU,
                &frame.data,
                &mut self.arena,
                &mut self.payloads,
            ),
            Payloader::Opus => {
                if !frame.data.is_empty() {
                    self.payloads.push(frame.data.clone());
                }
                Ok(())
            }
        };
        if let Err(e) = payloaded {
            self.payloads.clear();
            return Err(format!("cannot packetize {:?} frame: {e}", self.kind));
        }
        let count = self.payloads.len();
        for (i, payload) in self.payloads.drain(..).enumerate() {
            let sequence_number = self.sequence;
            self.sequence = self.sequence.wrapping_add(1);
            packets.push(Packet {
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
            });
        }
        Ok(())
    }

    /// Payload chunks allocated so far; flat in steady state.
    pub fn chunks_allocated(&self) -> u64 {
        self.arena.chunks_allocated
    }
}

/// Size of one arena chunk: about 50 full-size payloads.
const CHUNK_SIZE: usize = 64 * 1024;
/// Chunks kept waiting for their packets to be dropped; beyond this the oldest is let go
/// (freed by whoever drops its last packet) rather than hoarded.
const MAX_WAITING_CHUNKS: usize = 64;

/// Memory for payloads that are built rather than sliced from a frame. Payloads are cut from
/// a large chunk (`BytesMut::split`, no allocation); a used-up chunk waits in a queue until
/// every payload cut from it is gone, then it is reused from its start (`try_reclaim`).
#[derive(Default)]
pub(crate) struct PayloadArena {
    current: BytesMut,
    /// Used-up chunks, oldest first: their payloads may still be referenced.
    waiting: VecDeque<BytesMut>,
    /// Room promised by the last `begin`, to check the payload kept to it.
    promised: usize,
    chunks_allocated: u64,
}

impl PayloadArena {
    /// Starts a payload of at most `max_len` bytes and returns the buffer to append it to
    /// (empty; write at most `max_len` bytes, or the chunk is reallocated), then call
    /// [`PayloadArena::finish`].
    pub(crate) fn begin(&mut self, max_len: usize) -> &mut BytesMut {
        debug_assert!(self.current.is_empty(), "begin without finish");
        if self.current.capacity() < max_len {
            self.next_chunk(max_len);
        }
        self.promised = max_len;
        &mut self.current
    }

    /// The bytes written since [`PayloadArena::begin`], as one payload.
    pub(crate) fn finish(&mut self) -> Bytes {
        debug_assert!(self.current.len() <= self.promised, "payload over its size");
        self.current.split().freeze()
    }

    /// Parks the used-up chunk and continues in the oldest waiting one if all its payloads
    /// are gone, else in a new chunk.
    fn next_chunk(&mut self, max_len: usize) {
        let size = CHUNK_SIZE.max(max_len);
        let used = std::mem::take(&mut self.current);
        // Before the first chunk, `current` is an empty placeholder: nothing to park.
        if self.chunks_allocated > 0 {
            if self.waiting.len() == MAX_WAITING_CHUNKS {
                self.waiting.pop_front();
            }
            self.waiting.push_back(used);
        }
        if let Some(oldest) = self.waiting.front_mut() {
            if oldest.try_reclaim(size) {
                self.current = self.waiting.pop_front().unwrap_or_default();
                return;
            }
        }
        self.current = BytesMut::with_capacity(size);
        self.chunks_allocated += 1;
    }
}

/// A small deterministic generator for the payloaders' comparison tests.
#[cfg(test)]
mod test_rng {
    pub(crate) struct Lcg(pub u64);

    impl Lcg {
        /// A number in `0..below`.
        pub(crate) fn next(&mut self, below: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % below.max(1)
        }
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

    fn idr_frame(len: usize) -> EncodedFrame {
        // One IDR NAL of `len` bytes in Annex B.
        let mut data = vec![0, 0, 0, 1, 0x65];
        data.extend(std::iter::repeat_n(0xAB, len));
        EncodedFrame {
            data: Bytes::from(data),
            keyframe: true,
            capture_instant: Instant::now(),
        }
    }

    #[test]
    fn large_h264_frame_is_fragmented_with_marker_on_last() {
        let mut p = RtpPacketizer::new(StreamKind::Video(VideoCodec::H264), 102, 7);
        let mut packets = Vec::new();
        p.packetize(&idr_frame(5000), &mut packets)
            .expect("packetize");
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

    #[test]
    fn packets_append_and_sequence_numbers_continue_across_frames() {
        let mut p = RtpPacketizer::new(StreamKind::Opus, 111, 3);
        let frame = EncodedFrame {
            data: Bytes::from_static(&[1, 2, 3]),
            keyframe: true,
            capture_instant: Instant::now(),
        };
        let mut packets = Vec::new();
        p.packetize(&frame, &mut packets).expect("first");
        p.packetize(&frame, &mut packets).expect("second");
        assert_eq!(packets.len(), 2);
        assert_eq!(
            packets[1].header.sequence_number,
            packets[0].header.sequence_number.wrapping_add(1)
        );
        assert!(packets
            .iter()
            .all(|p| !p.header.marker && p.payload[..] == [1, 2, 3]));
        // An empty frame gives no packet.
        let empty = EncodedFrame {
            data: Bytes::new(),
            ..frame
        };
        p.packetize(&empty, &mut packets).expect("empty");
        assert_eq!(packets.len(), 2);
    }

    #[test]
    fn arena_chunks_are_reused_once_their_packets_are_dropped() {
        let mut p = RtpPacketizer::new(StreamKind::Video(VideoCodec::H264), 102, 7);
        let frame = idr_frame(30_000);
        // Keep the last 200 packets alive, as webrtc-rs's NACK buffer does.
        let mut in_flight: VecDeque<Packet> = VecDeque::new();
        let mut packets = Vec::new();
        let mut run = |p: &mut RtpPacketizer, frames: usize| {
            for _ in 0..frames {
                p.packetize(&frame, &mut packets).expect("packetize");
                for packet in packets.drain(..) {
                    if in_flight.len() == 200 {
                        in_flight.pop_front();
                    }
                    in_flight.push_back(packet);
                }
            }
        };
        run(&mut p, 50);
        let warmed_up = p.chunks_allocated();
        assert!(warmed_up >= 4, "200 packets of 1.2 kB need several chunks");
        run(&mut p, 500);
        assert_eq!(
            p.chunks_allocated(),
            warmed_up,
            "steady state allocates no chunk"
        );
    }

    #[test]
    fn arena_payloads_stay_intact_while_chunks_are_reused() {
        let mut arena = PayloadArena::default();
        let mut kept = VecDeque::new();
        for i in 0..20_000u32 {
            let buf = arena.begin(1000);
            buf.extend_from_slice(&i.to_be_bytes());
            buf.extend(std::iter::repeat_n((i % 251) as u8, (i % 900) as usize));
            kept.push_back((i, arena.finish()));
            if kept.len() > 300 {
                kept.pop_front();
            }
            for (j, payload) in kept.iter().step_by(97) {
                assert_eq!(payload[..4], j.to_be_bytes());
                assert_eq!(payload.len(), 4 + (j % 900) as usize);
                assert!(payload[4..].iter().all(|&b| b == (j % 251) as u8));
            }
        }
        assert!(arena.chunks_allocated < 10, "{}", arena.chunks_allocated);
    }
}
