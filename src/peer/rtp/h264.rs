//! H.264 RTP payloads (RFC 6184, packetization-mode 1), byte for byte what webrtc-rs's
//! `H264Payloader` produces, without allocating: a NAL unit that fits is a slice of the
//! frame; SPS and PPS go out as one STAP-A before the next NAL unit; larger NAL units are
//! split into FU-A fragments written into the [`PayloadArena`].

use bytes::{BufMut, Bytes};

use super::PayloadArena;

const NALU_TYPE_MASK: u8 = 0x1F;
const NALU_REF_IDC_MASK: u8 = 0x60;
const SPS: u8 = 7;
const PPS: u8 = 8;
const ACCESS_UNIT_DELIMITER: u8 = 9;
const FILLER: u8 = 12;
const FU_A: u8 = 28;
const FU_START: u8 = 0x80;
const FU_END: u8 = 0x40;
const FU_A_HEADER_SIZE: usize = 2;
/// STAP-A NAL header as webrtc-rs writes it (F=0, NRI=3, type 24).
const STAP_A_HEADER: u8 = 0x78;

/// The SPS and PPS seen since the last STAP-A (slices of their frames).
#[derive(Debug, Default)]
pub(super) struct H264Payloader {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

impl H264Payloader {
    /// Appends the payloads of one Annex B access unit to `out`.
    pub(super) fn payload(
        &mut self,
        mtu: usize,
        frame: &Bytes,
        arena: &mut PayloadArena,
        out: &mut Vec<Bytes>,
    ) {
        if frame.is_empty() || mtu == 0 {
            return;
        }
        // As webrtc-rs: bytes before the first start code are dropped; a frame without a
        // start code is one NAL unit.
        let Some((start, len)) = next_start_code(frame, 0) else {
            self.emit(frame.clone(), mtu, arena, out);
            return;
        };
        let mut nal_start = start + len;
        loop {
            match next_start_code(frame, nal_start) {
                Some((next, len)) => {
                    self.emit(frame.slice(nal_start..next), mtu, arena, out);
                    nal_start = next + len;
                }
                None => {
                    self.emit(frame.slice(nal_start..), mtu, arena, out);
                    return;
                }
            }
        }
    }

    fn emit(&mut self, nal: Bytes, mtu: usize, arena: &mut PayloadArena, out: &mut Vec<Bytes>) {
        let Some(&header) = nal.first() else {
            return;
        };
        let nal_type = header & NALU_TYPE_MASK;
        match nal_type {
            ACCESS_UNIT_DELIMITER | FILLER => return,
            SPS => {
                self.sps = Some(nal);
                return;
            }
            PPS => {
                self.pps = Some(nal);
                return;
            }
            _ => {}
        }
        if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
            let len = 1 + 2 + sps.len() + 2 + pps.len();
            // As webrtc-rs: a STAP-A too large for one packet is left out.
            if len <= mtu {
                let buf = arena.begin(len);
                buf.put_u8(STAP_A_HEADER);
                buf.put_u16(sps.len() as u16);
                buf.put_slice(sps);
                buf.put_u16(pps.len() as u16);
                buf.put_slice(pps);
                out.push(arena.finish());
            }
            self.sps = None;
            self.pps = None;
        }
        if nal.len() <= mtu {
            out.push(nal);
            return;
        }
        // FU-A: the NAL header byte is not sent; its NRI and type go in the FU indicator
        // and FU header.
        let Some(max_fragment) = mtu.checked_sub(FU_A_HEADER_SIZE).filter(|&m| m > 0) else {
            return;
        };
        let body = &nal[1..];
        let fragments = body.chunks(max_fragment);
        let last = fragments.len() - 1;
        for (i, fragment) in fragments.enumerate() {
            let mut fu_header = nal_type;
            if i == 0 {
                fu_header |= FU_START;
            } else if i == last {
                fu_header |= FU_END;
            }
            let buf = arena.begin(FU_A_HEADER_SIZE + fragment.len());
            buf.put_u8(FU_A | (header & NALU_REF_IDC_MASK));
            buf.put_u8(fu_header);
            buf.put_slice(fragment);
            out.push(arena.finish());
        }
    }
}

/// The next Annex B start code at or after `from`: (index of its first zero, length). Like
/// webrtc-rs, every zero byte before the `01` counts as part of the start code.
fn next_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut zeros = 0;
    for (i, &b) in data.get(from..)?.iter().enumerate() {
        if b == 0 {
            zeros += 1;
            continue;
        }
        if b == 1 && zeros >= 2 {
            return Some((from + i - zeros, zeros + 1));
        }
        zeros = 0;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::h264::H264Payloader as Reference;
    use rtc::rtp::packetizer::Payloader as _;

    use crate::peer::rtp::test_rng::Lcg;

    fn nal(rng: &mut Lcg, nal_type: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0x60 | nal_type];
        // No zero bytes inside (they could form start codes); the last may be zero (trailing).
        v.extend((1..len).map(|_| 1 + rng.next(255) as u8));
        v
    }

    fn random_access_unit(rng: &mut Lcg) -> Vec<u8> {
        let mut data = Vec::new();
        if rng.next(4) == 0 {
            data.extend([0xAA, 0xBB]); // garbage before the first start code
        }
        for _ in 0..1 + rng.next(5) {
            let start_code: &[u8] = if rng.next(2) == 0 {
                &[0, 0, 1]
            } else {
                &[0, 0, 0, 1]
            };
            data.extend(start_code);
            let nal_type = [1, 5, SPS, PPS, ACCESS_UNIT_DELIMITER, FILLER, 6][rng.next(7)];
            let len = [1, 2, 10, 500, 1199, 1200, 1201, 1202, 4000, 20_000][rng.next(10)];
            data.extend(nal(rng, nal_type, len));
            if rng.next(5) == 0 {
                data.push(0); // a trailing zero byte
            }
        }
        data
    }

    #[test]
    fn payloads_match_webrtc_rs_byte_for_byte() {
        let mut rng = Lcg(42);
        for mtu in [1200, 1, 2, 3, 50, 1500] {
            let mut ours = H264Payloader::default();
            let mut reference = Reference::default();
            let mut arena = PayloadArena::default();
            for round in 0..300 {
                let frame = Bytes::from(random_access_unit(&mut rng));
                let mut out = Vec::new();
                ours.payload(mtu, &frame, &mut arena, &mut out);
                let expected = reference.payload(mtu, &frame).expect("reference");
                assert_eq!(out, expected, "mtu {mtu}, round {round}");
            }
        }
        // No start code at all: the whole frame is one NAL unit.
        let frame = Bytes::from(nal(&mut rng, 1, 3000));
        let mut out = Vec::new();
        H264Payloader::default().payload(1200, &frame, &mut PayloadArena::default(), &mut out);
        let expected = Reference::default()
            .payload(1200, &frame)
            .expect("reference");
        assert_eq!(out, expected);
    }

    #[test]
    fn sps_and_pps_go_out_once_as_stap_a_before_the_idr() {
        let mut rng = Lcg(7);
        let mut frame = Vec::new();
        for (t, len) in [(SPS, 12), (PPS, 4), (5, 100)] {
            frame.extend([0, 0, 0, 1]);
            frame.extend(nal(&mut rng, t, len));
        }
        let mut out = Vec::new();
        let mut p = H264Payloader::default();
        p.payload(
            1200,
            &Bytes::from(frame),
            &mut PayloadArena::default(),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0][0], STAP_A_HEADER);
        assert_eq!(out[0].len(), 1 + 2 + 12 + 2 + 4);
        assert_eq!(out[1][0] & NALU_TYPE_MASK, 5);
        assert!(p.sps.is_none() && p.pps.is_none());
    }
}
