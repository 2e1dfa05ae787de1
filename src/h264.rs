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
