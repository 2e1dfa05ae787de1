//! AV1 RTP payloads (<https://aomediacodec.github.io/av1-rtp-spec/>), byte for byte what
//! webrtc-rs's `Av1Payloader` produces (itself a port of libwebrtc's
//! `rtp_packetizer_av1.cc`), without allocating: the OBU list and the packet plan live in
//! vectors kept from frame to frame, and payloads are written into the [`PayloadArena`].

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::PayloadArena;

const AGGREGATION_HEADER_SIZE: usize = 1;
/// With at most this many OBU elements in a packet, the last one has no size field.
const MAX_OBUS_TO_OMIT_SIZE: usize = 3;
const OBU_HAS_EXTENSION_BIT: u8 = 0b0000_0100;
const OBU_HAS_SIZE_BIT: u8 = 0b0000_0010;
const OBU_TYPE_MASK: u8 = 0b0111_1000;
const OBU_TYPE_SEQUENCE_HEADER: u8 = 1;
const OBU_TYPE_TEMPORAL_DELIMITER: u8 = 2;
const OBU_TYPE_TILE_LIST: u8 = 8;
const OBU_TYPE_PADDING: u8 = 15;

/// One OBU of the frame (temporal delimiters, tile lists and padding are not sent).
#[derive(Debug, Clone)]
struct Obu {
    header: u8,
    extension_header: u8,
    /// The OBU's payload in the frame (after its header and size field).
    payload: Range<usize>,
    /// Header (1 or 2 bytes) plus payload: what the packet carries.
    size: usize,
}

impl Obu {
    fn header_size(&self) -> usize {
        if self.header & OBU_HAS_EXTENSION_BIT != 0 {
            2
        } else {
            1
        }
    }
}

/// Which OBU elements one packet carries.
#[derive(Debug, Clone, Default)]
struct PacketPlan {
    first_obu: usize,
    obu_elements: usize,
    /// Offset into the first OBU (a continued fragment when > 0).
    first_obu_offset: usize,
    /// Bytes of the last OBU element in this packet.
    last_obu_size: usize,
    /// Payload bytes after the aggregation header.
    packet_size: usize,
}

/// Scratch space for one frame, kept so that steady state allocates nothing.
#[derive(Debug, Default)]
pub(super) struct Av1Payloader {
    obus: Vec<Obu>,
    plan: Vec<PacketPlan>,
}

impl Av1Payloader {
    /// Appends the payloads of one temporal unit (low-overhead OBU format) to `out`.
    pub(super) fn payload(
        &mut self,
        mtu: usize,
        frame: &Bytes,
        arena: &mut PayloadArena,
        out: &mut Vec<Bytes>,
    ) -> Result<(), String> {
        parse_obus(frame, &mut self.obus)?;
        plan_packets(&self.obus, mtu, &mut self.plan);
        for index in 0..self.plan.len() {
            let header = aggregation_header(&self.obus, &self.plan, index);
            let packet = &self.plan[index];
            let buf = arena.begin(AGGREGATION_HEADER_SIZE + packet.packet_size);
            buf.put_u8(header);
            write_packet(buf, frame, &self.obus, packet);
            out.push(arena.finish());
        }
        Ok(())
    }
}

/// Writes the OBU elements of `packet` after the aggregation header.
fn write_packet(buf: &mut BytesMut, frame: &[u8], obus: &[Obu], packet: &PacketPlan) {
    let mut obu_offset = packet.first_obu_offset;
    // Every element but the last carries its size.
    for obu in &obus[packet.first_obu..packet.first_obu + packet.obu_elements - 1] {
        put_leb128(buf, (obu.size - obu_offset) as u32);
        if obu_offset == 0 {
            buf.put_u8(obu.header & !OBU_HAS_SIZE_BIT);
        }
        if obu_offset <= 1 && obu.header & OBU_HAS_EXTENSION_BIT != 0 {
            buf.put_u8(obu.extension_header);
        }
        let skip = obu_offset.saturating_sub(obu.header_size());
        buf.put_slice(&frame[obu.payload.start + skip..obu.payload.end]);
        // Only the first element can start inside its OBU.
        obu_offset = 0;
    }
    let last = &obus[packet.first_obu + packet.obu_elements - 1];
    let mut fragment_size = packet.last_obu_size;
    if packet.obu_elements > MAX_OBUS_TO_OMIT_SIZE {
        put_leb128(buf, fragment_size as u32);
    }
    if obu_offset == 0 && fragment_size > 0 {
        buf.put_u8(last.header & !OBU_HAS_SIZE_BIT);
        fragment_size -= 1;
    }
    if obu_offset <= 1 && last.header & OBU_HAS_EXTENSION_BIT != 0 && fragment_size > 0 {
        buf.put_u8(last.extension_header);
        fragment_size -= 1;
    }
    let start = last.payload.start + obu_offset.saturating_sub(last.header_size());
    buf.put_slice(&frame[start..start + fragment_size]);
}

/// Splits a temporal unit into its OBUs (into `obus`, cleared first).
fn parse_obus(frame: &[u8], obus: &mut Vec<Obu>) -> Result<(), String> {
    obus.clear();
    let mut at = 0;
    while at < frame.len() {
        let header = frame[at];
        let header_size = if header & OBU_HAS_EXTENSION_BIT != 0 {
            2
        } else {
            1
        };
        let extension_header = if header_size == 2 {
            *frame
                .get(at + 1)
                .ok_or("AV1 OBU too short for its extension header")?
        } else {
            0
        };
        let after_header = at + header_size;
        let payload = if header & OBU_HAS_SIZE_BIT != 0 {
            let (size, size_len) = read_leb128(frame.get(after_header..).unwrap_or_default())
                .ok_or("AV1 OBU too short for its size field")?;
            let start = after_header + size_len;
            let end = start
                .checked_add(size as usize)
                .filter(|&end| end <= frame.len())
                .ok_or("AV1 OBU size beyond the end of the frame")?;
            start..end
        } else {
            after_header.min(frame.len())..frame.len()
        };
        let size = header_size + payload.len();
        // The next OBU starts after this one's header, size field and payload.
        at = payload.end.max(after_header);
        let obu_type = (header & OBU_TYPE_MASK) >> 3;
        if !matches!(
            obu_type,
            OBU_TYPE_TEMPORAL_DELIMITER | OBU_TYPE_TILE_LIST | OBU_TYPE_PADDING
        ) {
            obus.push(Obu {
                header,
                extension_header,
                payload,
                size,
            });
        }
    }
    Ok(())
}

/// Reads an unsigned LEB128 number: (value, bytes it took); `None` if it does not end.
fn read_leb128(data: &[u8]) -> Option<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in data.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value as u32, i + 1));
        }
    }
    None
}

fn leb128_size(mut value: u32) -> usize {
    let mut size = 1;
    while value >= 0x80 {
        size += 1;
        value >>= 7;
    }
    size
}

fn put_leb128(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value & 0x7F) as u8 | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Decides which OBUs (or fragments) go into which packet: fill each packet as far as it
/// goes, fragmenting OBUs that do not fit, and even out the last two packets of the frame.
/// The plan goes into `plan` (cleared first).
fn plan_packets(obus: &[Obu], mtu: usize, plan: &mut Vec<PacketPlan>) {
    plan.clear();
    // Very small MTUs are impractical and not handled (as in libwebrtc).
    if obus.is_empty() || mtu < 3 {
        return;
    }
    let max_payload = mtu - AGGREGATION_HEADER_SIZE;
    plan.push(PacketPlan::default());
    let mut remaining = max_payload;
    for (obu_index, obu) in obus.iter().enumerate() {
        let mut packet = plan.pop().unwrap_or_default();
        // Adding an element makes the previous one not last: it then needs its size field.
        let mut previous_extra = previous_element_size_field(&packet);
        let min_required = if packet.obu_elements >= MAX_OBUS_TO_OMIT_SIZE {
            2
        } else {
            1
        };
        if remaining < previous_extra + min_required {
            plan.push(packet);
            packet = PacketPlan {
                first_obu: obu_index,
                ..PacketPlan::default()
            };
            remaining = max_payload;
            previous_extra = 0;
        }
        packet.packet_size += previous_extra;
        remaining -= previous_extra;
        packet.obu_elements += 1;
        let must_write_size = packet.obu_elements > MAX_OBUS_TO_OMIT_SIZE;

        let mut required = obu.size;
        if must_write_size {
            required += leb128_size(obu.size as u32);
        }
        if required < remaining {
            // The whole OBU fits.
            packet.last_obu_size = obu.size;
            packet.packet_size += required;
            remaining -= required;
            plan.push(packet);
            continue;
        }

        // Fragment: as much as fits here (leaving at least one byte for later)...
        let max_first = if must_write_size {
            max_fragment_size(remaining)
        } else {
            remaining
        };
        let first_fragment = (obu.size - 1).min(max_first);
        if first_fragment == 0 {
            // Rather than a zero-size element at the tail, take the OBU out again.
            packet.obu_elements -= 1;
            packet.packet_size -= previous_extra;
        } else {
            packet.packet_size += first_fragment;
            if must_write_size {
                packet.packet_size += leb128_size(first_fragment as u32);
            }
            packet.last_obu_size = first_fragment;
        }
        plan.push(packet);

        // ...full packets in the middle...
        let mut obu_offset = first_fragment;
        while obu_offset + max_payload < obu.size {
            plan.push(PacketPlan {
                first_obu: obu_index,
                obu_elements: 1,
                first_obu_offset: obu_offset,
                last_obu_size: max_payload,
                packet_size: max_payload,
            });
            obu_offset += max_payload;
        }

        // ...and the rest (at most `max_payload` bytes, by the loop above; libwebrtc's
        // split of an oversized last fragment cannot happen here).
        let last_fragment = obu.size - obu_offset;
        plan.push(PacketPlan {
            first_obu: obu_index,
            obu_elements: 1,
            first_obu_offset: obu_offset,
            last_obu_size: last_fragment,
            packet_size: last_fragment,
        });
        remaining = max_payload - last_fragment;
    }
}

/// Bytes the size field of the packet's last element takes once another element follows.
fn previous_element_size_field(packet: &PacketPlan) -> usize {
    if packet.packet_size == 0 || packet.obu_elements > MAX_OBUS_TO_OMIT_SIZE {
        0
    } else {
        leb128_size(packet.last_obu_size as u32)
    }
}

/// The largest fragment that fits in `remaining` bytes together with its LEB128 size.
fn max_fragment_size(remaining: usize) -> usize {
    if remaining <= 1 {
        return 0;
    }
    let mut i = 1;
    while remaining >= (1 << (7 * i)) + i {
        i += 1;
    }
    remaining - i
}

/// The aggregation header (Z, Y, W, N) of packet `index`.
fn aggregation_header(obus: &[Obu], plan: &[PacketPlan], index: usize) -> u8 {
    let packet = &plan[index];
    let mut header = 0;
    // Z: the first element continues an OBU from the previous packet.
    if packet.first_obu_offset > 0 {
        header |= 1 << 7;
    }
    // Y: the last element continues in the next packet.
    let last_offset = if packet.obu_elements == 1 {
        packet.first_obu_offset
    } else {
        0
    };
    let last_obu = &obus[(packet.first_obu + packet.obu_elements).saturating_sub(1)];
    if last_offset + packet.last_obu_size < last_obu.size {
        header |= 1 << 6;
    }
    // W: the element count, when small enough.
    if packet.obu_elements <= MAX_OBUS_TO_OMIT_SIZE {
        header |= (packet.obu_elements as u8) << 4;
    }
    // N: a new coded video sequence (a frame starting with a sequence header, as webrtc-rs
    // decides it).
    if index == 0 && (obus[0].header & OBU_TYPE_MASK) >> 3 == OBU_TYPE_SEQUENCE_HEADER {
        header |= 1 << 3;
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::rtp::test_rng::Lcg;
    use rtc::rtp::codec::av1::Av1Payloader as Reference;
    use rtc::rtp::packetizer::Payloader as _;

    /// One OBU in the low-overhead format: header, [extension], [LEB128 size], payload.
    fn obu(rng: &mut Lcg, obu_type: u8, extension: bool, with_size: bool, len: usize) -> Vec<u8> {
        let mut header = obu_type << 3;
        if extension {
            header |= OBU_HAS_EXTENSION_BIT;
        }
        if with_size {
            header |= OBU_HAS_SIZE_BIT;
        }
        let mut v = vec![header];
        if extension {
            v.push(0b0010_1000);
        }
        if with_size {
            let mut size = BytesMut::new();
            put_leb128(&mut size, len as u32);
            v.extend_from_slice(&size);
        }
        v.extend((0..len).map(|_| rng.next(256) as u8));
        v
    }

    fn random_temporal_unit(rng: &mut Lcg) -> Vec<u8> {
        let mut data = Vec::new();
        let count = 1 + rng.next(7);
        for i in 0..count {
            let obu_type = [1, 2, 3, 4, 5, 6, 6, 15][rng.next(8)];
            let len = [
                0, 1, 5, 126, 127, 128, 1000, 1196, 1197, 1198, 1199, 1200, 5000, 20_000,
            ][rng.next(14)];
            // Only the last OBU may lack a size field (it then runs to the end).
            let with_size = i + 1 < count || rng.next(3) != 0;
            let extension = rng.next(4) == 0;
            data.extend(obu(rng, obu_type, extension, with_size, len));
        }
        data
    }

    #[test]
    fn payloads_match_webrtc_rs_byte_for_byte() {
        let mut rng = Lcg(2026);
        for mtu in [1200, 3, 4, 10, 130, 1500] {
            let mut ours = Av1Payloader::default();
            let mut arena = PayloadArena::default();
            for round in 0..400 {
                let frame = Bytes::from(random_temporal_unit(&mut rng));
                let mut out = Vec::new();
                ours.payload(mtu, &frame, &mut arena, &mut out)
                    .expect("ours");
                let expected = Reference::default()
                    .payload(mtu, &frame)
                    .expect("reference");
                assert_eq!(out, expected, "mtu {mtu}, round {round}");
            }
        }
    }

    #[test]
    fn real_rav1e_frames_match_webrtc_rs() {
        use crate::capture::test_pattern::TestPattern;
        use crate::encode::av1::Av1Encoder;
        use crate::encode::{VideoEncoder, VideoEncoderSettings};
        use crate::media::{PixelFormat, RawFrame};
        let settings = VideoEncoderSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate_kbps: 600,
            keyframe_interval_s: 1,
            threads: 1,
        };
        let mut encoder = Av1Encoder::new(&settings).expect("encoder");
        let pattern = TestPattern::new(320, 240, 30);
        let mut ours = Av1Payloader::default();
        let mut arena = PayloadArena::default();
        let mut compared = 0;
        for sequence in 0..20 {
            let raw = RawFrame {
                width: 320,
                height: 240,
                format: PixelFormat::I420,
                data: pattern.render(sequence, 0).into(),
                capture_instant: std::time::Instant::now(),
                sequence,
            };
            for frame in encoder.encode(&raw, sequence == 0).expect("encode") {
                let mut out = Vec::new();
                ours.payload(1200, &frame.data, &mut arena, &mut out)
                    .expect("ours");
                let expected = Reference::default()
                    .payload(1200, &frame.data)
                    .expect("reference");
                assert_eq!(out, expected);
                compared += 1;
            }
        }
        assert!(compared > 10, "{compared} frames");
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut p = Av1Payloader::default();
        let mut arena = PayloadArena::default();
        let mut out = Vec::new();
        // Extension flag, no extension byte.
        assert!(p
            .payload(1200, &Bytes::from_static(&[0x34]), &mut arena, &mut out)
            .is_err());
        // Size field missing, unterminated, or beyond the end.
        for bad in [&[0x32][..], &[0x32, 0x80], &[0x32, 0x05, 1, 2]] {
            let frame = Bytes::copy_from_slice(bad);
            assert!(
                p.payload(1200, &frame, &mut arena, &mut out).is_err(),
                "{bad:?}"
            );
        }
        assert!(out.is_empty());
    }
}
