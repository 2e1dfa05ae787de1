//! H.264 bitstream helpers shared by capture, encoding and the session: Annex B NAL unit
//! splitting, NAL unit types, and RFC 6184 `profile-level-id` (read from an SPS, parsed from
//! and written to SDP fmtp lines).

// NAL unit types (H.264 table 7-1) peercam looks at.
/// A coded slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;
/// A coded slice of an IDR picture (a keyframe).
pub const NAL_IDR: u8 = 5;
/// A sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// A picture parameter set.
pub const NAL_PPS: u8 = 8;
/// An access unit delimiter.
pub const NAL_AUD: u8 = 9;

/// The 4-byte Annex B start code peercam writes.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The NAL units of an Annex B byte stream (3- or 4-byte start codes), without start codes.
/// Bytes before the first start code are skipped; empty units are not returned.
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
        // A 4-byte start code (or trailing_zero_8bits) leaves zeros before the next one.
        while end > start && data[end - 1] == 0 && n + 1 < starts.len() {
            end -= 1;
        }
        if end > start {
            units.push(&data[start..end]);
        }
    }
    units
}

/// The type of a NAL unit (low 5 bits of its first byte).
pub fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |b| b & 0x1f)
}

/// RFC 6184 `profile-level-id`: profile_idc, the constraint-flags byte and level_idc, as the
/// SPS carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileLevelId {
    /// `profile_idc`: 66 Baseline, 77 Main, 100 High, ...
    pub profile_idc: u8,
    /// constraint_set0..5 flags and reserved bits (the "profile-iop" byte).
    pub iop: u8,
    /// `level_idc`: 31 = level 3.1, 40 = level 4.0, ...
    pub level_idc: u8,
}

impl ProfileLevelId {
    /// From an SPS NAL unit (header byte first); `None` if it is too short or not an SPS.
    pub fn from_sps(sps: &[u8]) -> Option<ProfileLevelId> {
        if nal_type(sps) != NAL_SPS || sps.len() < 4 {
            return None;
        }
        Some(ProfileLevelId {
            profile_idc: sps[1],
            iop: sps[2],
            level_idc: sps[3],
        })
    }

    /// Parses the six hex digits of an fmtp `profile-level-id`.
    pub fn parse(hex: &str) -> Option<ProfileLevelId> {
        if hex.len() != 6 {
            return None;
        }
        let value = u32::from_str_radix(hex, 16).ok()?;
        let [_, profile_idc, iop, level_idc] = value.to_be_bytes();
        Some(ProfileLevelId {
            profile_idc,
            iop,
            level_idc,
        })
    }

    /// The six lower-case hex digits, e.g. `640028`.
    pub fn hex(self) -> String {
        format!(
            "{:02x}{:02x}{:02x}",
            self.profile_idc, self.iop, self.level_idc
        )
    }
}

impl std::fmt::Display for ProfileLevelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Most bytes one access unit may hold in [`AccessUnits`]; a larger one (a broken stream) is
/// dropped rather than grown without bound. 8 MiB is many times a 4K IDR.
pub const MAX_ACCESS_UNIT_BYTES: usize = 8 << 20;

/// Splits an Annex B byte stream that arrives in pieces of any size (a pipe from rpicam-vid)
/// into access units, one per picture, each NAL unit behind a 4-byte start code.
///
/// A NAL unit is complete when the next start code arrives; an access unit ends where the
/// next one starts (H.264 7.4.1.2.3): at an access unit delimiter, SEI, SPS or PPS, or a
/// slice with `first_mb_in_slice` 0, after a picture's slices. The next unit's header is
/// looked at as soon as its first two bytes are in, so a picture is handed on when the next
/// picture's data starts: one frame interval after it was written.
#[derive(Debug, Default)]
pub struct AccessUnits {
    /// Bytes not split yet; from the first start code on, they begin with one.
    pending: Vec<u8>,
    /// Where the search for the next start code resumes in `pending`.
    scan_from: usize,
    /// The access unit being built.
    current: Vec<u8>,
    /// `current` holds a slice of a picture.
    current_has_slice: bool,
    /// Access units dropped for exceeding [`MAX_ACCESS_UNIT_BYTES`].
    dropped: u64,
}

impl AccessUnits {
    /// Takes the next piece of the stream and returns the access units it completed.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let Some(first) = find_start_code(&self.pending, 0) else {
                // Junk before any start code: keep only what could begin one.
                let keep = self.pending.len().min(2);
                self.pending.drain(..self.pending.len() - keep);
                self.scan_from = 0;
                break;
            };
            if first > 0 {
                self.pending.drain(..first);
                self.scan_from = 0;
            }
            // `pending` starts with 00 00 01 here.
            let from = self.scan_from.max(3);
            let Some(next) = find_start_code(&self.pending, from) else {
                self.hand_on_before_next(&mut out);
                self.scan_from = self.pending.len().saturating_sub(2).max(3);
                if self.pending.len() > MAX_ACCESS_UNIT_BYTES {
                    self.drop_current();
                    self.pending.clear();
                    self.scan_from = 0;
                }
                break;
            };
            let mut end = next;
            while end > 3 && self.pending[end - 1] == 0 {
                end -= 1;
            }
            let unit = self.pending[3..end].to_vec();
            self.add_unit(&unit, &mut out);
            self.pending.drain(..next);
            self.scan_from = 0;
        }
        out
    }

    /// When the unit `pending` begins with starts a new picture (its header is in), the
    /// current picture is complete: hand it on now rather than when that unit ends.
    fn hand_on_before_next(&mut self, out: &mut Vec<Vec<u8>>) {
        if let Some(header) = self.pending.get(3..5) {
            if self.current_has_slice && starts_access_unit(header) {
                out.push(std::mem::take(&mut self.current));
                self.current_has_slice = false;
            }
        }
    }

    /// The access unit still being built when the stream ended (its last NAL unit ends with
    /// the stream).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if self.pending.len() > 3 {
            let unit = self.pending[3..].to_vec();
            self.add_unit(&unit, &mut out);
        }
        self.pending.clear();
        self.scan_from = 0;
        if self.current_has_slice {
            out.push(std::mem::take(&mut self.current));
        }
        self.current.clear();
        self.current_has_slice = false;
        out.pop()
    }

    /// Access units dropped so far for exceeding [`MAX_ACCESS_UNIT_BYTES`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn add_unit(&mut self, unit: &[u8], out: &mut Vec<Vec<u8>>) {
        if unit.is_empty() {
            return;
        }
        if self.current_has_slice && starts_access_unit(unit) {
            out.push(std::mem::take(&mut self.current));
            self.current_has_slice = false;
        }
        if self.current.len() + START_CODE.len() + unit.len() > MAX_ACCESS_UNIT_BYTES {
            self.drop_current();
            return;
        }
        self.current.extend_from_slice(&START_CODE);
        self.current.extend_from_slice(unit);
        if matches!(nal_type(unit), NAL_SLICE..=NAL_IDR) {
            self.current_has_slice = true;
        }
    }

    fn drop_current(&mut self) {
        self.current.clear();
        self.current_has_slice = false;
        self.dropped += 1;
    }
}

/// Whether a NAL unit beginning with `header` (at least its first byte; the second for
/// slices) begins a new access unit after a picture's slices.
fn starts_access_unit(header: &[u8]) -> bool {
    match nal_type(header) {
        // AUD, SEI, SPS, PPS, and the types reserved for the same place (14..=18).
        6..=9 | 14..=18 => true,
        // A slice whose first_mb_in_slice is 0: ue(v) 0 is the single bit 1.
        NAL_SLICE..=NAL_IDR => header.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// The index of the next `00 00 01` in `data` at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| i + from)
}

/// Small NAL units and an Annex B writer for the tests of this module and of passthrough.
#[cfg(test)]
pub(crate) mod samples {
    use super::START_CODE;

    /// An SPS: High profile (100), level 4.0.
    pub const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x28, 0xac, 0xd9];
    /// A PPS.
    pub const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];
    /// An IDR slice.
    pub const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x21];

    /// `units` as an Annex B stream, with 3- or 4-byte start codes.
    pub fn annex_b(units: &[&[u8]], three_byte: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for u in units {
            if three_byte {
                out.extend_from_slice(&[0, 0, 1]);
            } else {
                out.extend_from_slice(&START_CODE);
            }
            out.extend_from_slice(u);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::samples::{annex_b, IDR, PPS, SPS};
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let mut data = vec![0xff]; // junk before the first start code is skipped
        data.extend(annex_b(&[SPS, PPS], false));
        data.extend(annex_b(&[IDR], true));
        assert_eq!(nal_units(&data), vec![SPS, PPS, IDR]);
        assert!(nal_units(&[0, 0, 0, 0]).is_empty());
        assert!(nal_units(&[]).is_empty());
    }

    /// A P slice with first_mb_in_slice 0, and a second slice of the same picture.
    const P_FIRST: &[u8] = &[0x41, 0x9a, 0x02, 0x00, 0x05];
    const P_SECOND: &[u8] = &[0x41, 0x2a, 0x11];

    #[test]
    fn access_units_are_split_from_a_stream_read_in_any_pieces() {
        // Picture 1: SPS PPS IDR; picture 2: two slices; picture 3: one slice.
        let stream = annex_b(&[SPS, PPS, IDR, P_FIRST, P_SECOND, P_FIRST], false);
        let expected = vec![
            annex_b(&[SPS, PPS, IDR], false),
            annex_b(&[P_FIRST, P_SECOND], false),
            annex_b(&[P_FIRST], false),
        ];
        for piece in [1, 2, 3, 5, 7, stream.len()] {
            let mut splitter = AccessUnits::default();
            let mut got = Vec::new();
            let mut junk = vec![0xff, 0x00];
            junk.extend_from_slice(&stream);
            for chunk in junk.chunks(piece) {
                got.extend(splitter.push(chunk));
            }
            // The first two pictures are out as soon as the third one's header is in.
            assert_eq!(got, expected[..2], "pieces of {piece}");
            got.extend(splitter.finish());
            assert_eq!(got, expected, "pieces of {piece}");
            assert_eq!(splitter.finish(), None);
        }
    }

    #[test]
    fn three_byte_start_codes_and_a_runaway_unit() {
        let stream = annex_b(&[SPS, PPS, IDR, P_FIRST], true);
        let mut splitter = AccessUnits::default();
        let got = splitter.push(&stream);
        assert_eq!(got, vec![annex_b(&[SPS, PPS, IDR], false)]);
        // A unit that never ends is dropped at the bound, and the stream recovers.
        let mut splitter = AccessUnits::default();
        splitter.push(&annex_b(&[IDR], false));
        let huge = vec![0x55; MAX_ACCESS_UNIT_BYTES + 1];
        assert!(splitter.push(&huge).is_empty());
        assert_eq!(splitter.dropped(), 1);
        let got = splitter.push(&annex_b(&[SPS, PPS, IDR, P_FIRST], false));
        assert_eq!(got, vec![annex_b(&[SPS, PPS, IDR], false)]);
    }

    #[test]
    fn profile_level_id_comes_from_the_sps() {
        let plid = ProfileLevelId::from_sps(SPS).expect("sps");
        assert_eq!(plid.hex(), "640028");
        assert_eq!(ProfileLevelId::parse("640028"), Some(plid));
        assert_eq!(ProfileLevelId::from_sps(PPS), None);
        assert_eq!(ProfileLevelId::parse("64002"), None);
        assert_eq!(ProfileLevelId::parse("zz0028"), None);
    }
}
