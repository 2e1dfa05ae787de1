//! Codec choice from a browser's offer (read by [`super::sdp`]): no WebRTC stack.
//!
//! The daemon sends the first codec of `video.codecs` that the offer contains, with the
//! browser's payload type. H.264 counts only with packetization-mode 1 and a Constrained
//! Baseline compatible profile (what openh264 produces and every browser decodes); among
//! several such entries the one closest to `42e01f` wins. AV1 counts with profile 0 (Main,
//! what rav1e produces) or no fmtp at all.
//!
//! When the camera's own H.264 can be passed through ([`choose_with_camera`]), an H.264 entry
//! whose profile plays the camera's stream is taken first, and the answer's
//! `profile-level-id` carries the camera's level.

use std::fmt;

use crate::h264::ProfileLevelId;
use crate::media::VideoCodec;
use crate::session::sdp::{fmtp_param, OfferedCodec};

/// The codec the answer will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Which codec.
    pub codec: VideoCodec,
    /// The browser's payload type for it.
    pub payload_type: u8,
    /// The fmtp line to answer with: the browser's for that payload type (empty if none),
    /// with the camera's level in `profile-level-id` for passthrough.
    pub fmtp: String,
    /// Send the camera's own H.264 (passthrough) rather than peercam's encoder output.
    pub passthrough: bool,
}

/// No offered codec is acceptable; the message names both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCodec {
    /// Distinct offered codec names, with notes (e.g. `H264 (packetization-mode 0 only)`).
    pub offered: Vec<String>,
    /// The configured preference list.
    pub configured: Vec<VideoCodec>,
}

impl fmt::Display for NoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offered = if self.offered.is_empty() {
            "nothing".to_owned()
        } else {
            self.offered.join(", ")
        };
        let configured: Vec<&str> = self.configured.iter().map(|c| c.config_name()).collect();
        write!(
            f,
            "no acceptable video codec: the browser offered {offered}; peercam is configured for {} (video.codecs)",
            configured.join(", ")
        )
    }
}

impl std::error::Error for NoCodec {}

/// H.264 profiles as libwebrtc classifies `profile-level-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H264Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
}

impl H264Profile {
    /// Whether a decoder negotiated for `self` plays a stream of `stream`'s profile.
    fn plays(self, stream: H264Profile) -> bool {
        use H264Profile::*;
        match stream {
            ConstrainedBaseline => true,
            Baseline => self == Baseline,
            Main => matches!(self, Main | High),
            ConstrainedHigh => matches!(self, ConstrainedHigh | High),
            High => self == High,
        }
    }
}

/// Classifies profile_idc and the profile-iop byte with the table libwebrtc uses. `None`:
/// a profile no browser negotiates (High 10, 4:4:4, ...).
fn classify(profile_idc: u8, iop: u8) -> Option<H264Profile> {
    // The reserved low 2 bits of profile-iop are zero in every profile of the table.
    if iop & 0x03 != 0 {
        return None;
    }
    Some(match profile_idc {
        // Baseline with constraint_set1 (x1xx_xxxx) is Constrained Baseline.
        0x42 if iop & 0x40 != 0 => H264Profile::ConstrainedBaseline,
        0x42 => H264Profile::Baseline,
        // Main with constraint_set0 (1xxx_xxxx): the stream is also Baseline-conformant.
        0x4d if iop & 0x80 != 0 => H264Profile::ConstrainedBaseline,
        0x4d => H264Profile::Main,
        // Extended with constraint_set0 and set1 (11xx_xxxx), or only set0 (10xx_xxxx).
        0x58 if iop & 0xc0 == 0xc0 => H264Profile::ConstrainedBaseline,
        0x58 if iop & 0x80 != 0 => H264Profile::Baseline,
        // High with constraint_set4 and set5 (xxxx_11xx): no B-frames.
        0x64 if iop & 0x0c == 0x0c => H264Profile::ConstrainedHigh,
        0x64 => H264Profile::High,
        _ => return None,
    })
}

/// Reads `profile-level-id` (RFC 6184 §8.1: profile_idc, profile-iop, level_idc, in hex) and
/// classifies it. Returns the profile and level_idc.
fn h264_profile(plid: &str) -> Option<(H264Profile, u8)> {
    let p = ProfileLevelId::parse(plid)?;
    Some((classify(p.profile_idc, p.iop)?, p.level_idc))
}

/// Level 3.1 (`level_idc` 31): 1280x720 at 30 fps, what `42e01f` announces.
const H264_LEVEL_3_1: u8 = 0x1f;

/// How well an H.264 entry fits what peercam sends: `None` = unusable; lower is better.
fn h264_rank(codec: &OfferedCodec) -> Option<u8> {
    let fmtp = codec.fmtp.as_deref().unwrap_or("");
    // Mode 0 (the default when absent) forbids fragmenting a NAL unit over several packets,
    // and a keyframe never fits one packet.
    if fmtp_param(fmtp, "packetization-mode") != Some("1") {
        return None;
    }
    // Absent means 42000a (Baseline, level 1.0): usable, but a poor match.
    let plid = fmtp_param(fmtp, "profile-level-id").unwrap_or("42000a");
    if plid.eq_ignore_ascii_case("42e01f") {
        return Some(0);
    }
    let (profile, level) = h264_profile(plid)?;
    let low_level = u8::from(level < H264_LEVEL_3_1);
    match profile {
        H264Profile::ConstrainedBaseline => Some(1 + low_level),
        // A Baseline decoder plays Constrained Baseline streams too.
        H264Profile::Baseline => Some(3 + low_level),
        // Main/High decoders play it as well, but browsers list a Baseline entry anyway and
        // answering Main for a Baseline stream would misdescribe it.
        _ => None,
    }
}

/// Picks like [`choose`], but first tries to send the camera's own H.264 (profile and level
/// from its SPS): when H.264 is the first preference and the offer has a packetization-mode
/// 1 entry whose profile plays the camera's stream and whose level allows it (or
/// `level-asymmetry-allowed=1`). Entries with the camera's exact profile bytes win, then the
/// same profile class. The answer's `profile-level-id` keeps the entry's profile bytes (the
/// WebRTC stacks match answers to offers on them) with the camera's level.
pub fn choose_with_camera(
    preferences: &[VideoCodec],
    offered: &[OfferedCodec],
    camera: Option<ProfileLevelId>,
) -> Result<Chosen, NoCodec> {
    if let (Some(VideoCodec::H264), Some(camera)) = (preferences.first(), camera) {
        if let Some(chosen) = passthrough_entry(offered, camera) {
            return Ok(chosen);
        }
    }
    choose(preferences, offered)
}

fn passthrough_entry(offered: &[OfferedCodec], camera: ProfileLevelId) -> Option<Chosen> {
    let stream = classify(camera.profile_idc, camera.iop)?;
    let best = offered
        .iter()
        .filter(|o| o.clock_rate == 90_000 && o.mime.eq_ignore_ascii_case("H264"))
        .filter_map(|o| {
            let fmtp = o.fmtp.as_deref().unwrap_or("");
            if fmtp_param(fmtp, "packetization-mode") != Some("1") {
                return None;
            }
            let plid = ProfileLevelId::parse(fmtp_param(fmtp, "profile-level-id")?)?;
            let profile = classify(plid.profile_idc, plid.iop)?;
            let asymmetric = fmtp_param(fmtp, "level-asymmetry-allowed") == Some("1");
            if !profile.plays(stream) || (!asymmetric && plid.level_idc < camera.level_idc) {
                return None;
            }
            let rank = if (plid.profile_idc, plid.iop) == (camera.profile_idc, camera.iop) {
                0
            } else if profile == stream {
                1
            } else {
                2
            };
            Some((rank, o, plid))
        })
        .min_by_key(|(rank, _, _)| *rank)?;
    let (_, o, plid) = best;
    let answered = ProfileLevelId {
        level_idc: camera.level_idc,
        ..plid
    };
    let fmtp = o
        .fmtp
        .as_deref()
        .unwrap_or("")
        .split(';')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.trim().eq_ignore_ascii_case("profile-level-id") => {
                format!("{}={}", k.trim(), answered.hex())
            }
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";");
    Some(Chosen {
        codec: VideoCodec::H264,
        payload_type: o.payload_type,
        fmtp,
        passthrough: true,
    })
}

fn rank(codec: VideoCodec, offered: &OfferedCodec) -> Option<u8> {
    if offered.clock_rate != 90_000 {
        return None;
    }
    match codec {
        VideoCodec::H264 if offered.mime.eq_ignore_ascii_case("H264") => h264_rank(offered),
        VideoCodec::Av1 if offered.mime.eq_ignore_ascii_case("AV1") => {
            // rav1e emits Main profile (0); skip an entry that asks for another.
            let profile = offered
                .fmtp
                .as_deref()
                .and_then(|f| fmtp_param(f, "profile"));
            matches!(profile, None | Some("0")).then_some(0)
        }
        _ => None,
    }
}

/// Payload types the daemon uses when it makes the offer (WHIP): those of Chromium's offers.
pub const OFFER_H264_PT: u8 = 102;
/// AV1's payload type in the daemon's own offers.
pub const OFFER_AV1_PT: u8 = 45;
/// Opus's payload type in the daemon's own offers.
pub const OFFER_OPUS_PT: u8 = 111;

/// What the daemon offers when it is the offerer (publishing by WHIP): the first of
/// `preferences` that `running` encodes, with the daemon's own payload types; H.264 is the
/// camera's own stream (its profile and level) when `camera` passes it through and H.264
/// comes first, else Constrained Baseline `42e01f`. `None`: none of them runs.
pub fn for_offer(
    preferences: &[VideoCodec],
    running: &[VideoCodec],
    camera: Option<ProfileLevelId>,
) -> Option<Chosen> {
    let codec = *preferences.iter().find(|c| running.contains(c))?;
    Some(match codec {
        VideoCodec::H264 => {
            let passthrough = preferences.first() == Some(&VideoCodec::H264) && camera.is_some();
            let plid = camera
                .filter(|_| passthrough)
                .map_or_else(|| "42e01f".to_owned(), |c| c.hex());
            Chosen {
                codec,
                payload_type: OFFER_H264_PT,
                fmtp: format!(
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={plid}"
                ),
                passthrough,
            }
        }
        VideoCodec::Av1 => Chosen {
            codec,
            payload_type: OFFER_AV1_PT,
            fmtp: String::new(),
            passthrough: false,
        },
    })
}

/// Picks the first codec of `preferences` that the offer contains (its best-fitting entry;
/// among equals, the browser's first).
pub fn choose(preferences: &[VideoCodec], offered: &[OfferedCodec]) -> Result<Chosen, NoCodec> {
    for &codec in preferences {
        let best = offered
            .iter()
            .filter_map(|o| rank(codec, o).map(|r| (r, o)))
            .min_by_key(|(r, _)| *r);
        if let Some((_, o)) = best {
            return Ok(Chosen {
                codec,
                payload_type: o.payload_type,
                fmtp: o.fmtp.clone().unwrap_or_default(),
                passthrough: false,
            });
        }
    }
    Err(NoCodec {
        offered: describe_offered(offered),
        configured: preferences.to_vec(),
    })
}

/// Distinct codec names of the offer (without retransmission/FEC entries), with a note when
/// H.264 was offered only in a form peercam cannot send.
fn describe_offered(offered: &[OfferedCodec]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for o in offered {
        let upper = o.mime.to_ascii_uppercase();
        if matches!(upper.as_str(), "RTX" | "RED" | "ULPFEC" | "FLEXFEC-03") {
            continue;
        }
        if !names.contains(&upper) {
            names.push(upper);
        }
    }
    let h264: Vec<&OfferedCodec> = offered
        .iter()
        .filter(|o| o.mime.eq_ignore_ascii_case("H264"))
        .collect();
    if !h264.is_empty() && h264.iter().all(|o| h264_rank(o).is_none()) {
        let mode_1 = |o: &&OfferedCodec| {
            fmtp_param(o.fmtp.as_deref().unwrap_or(""), "packetization-mode") == Some("1")
        };
        let note = if h264.iter().any(mode_1) {
            "H264 (no Constrained Baseline profile)"
        } else {
            "H264 (packetization-mode 0 only)"
        };
        if let Some(n) = names.iter_mut().find(|n| n.as_str() == "H264") {
            *n = note.to_owned();
        }
    }
    names
}

#[cfg(test)]
mod tests {
    //! Codec choice from stored real offers (tests/fixtures/offers, see its README.md).

    use super::*;
    use crate::session::sdp::{offered_opus, offered_video_codecs};
    use VideoCodec::{Av1, H264};

    const CHROMIUM: &str = include_str!("../../tests/fixtures/offers/chromium-156.sdp");
    const FIREFOX: &str = include_str!("../../tests/fixtures/offers/firefox-esr-153.sdp");
    const SAFARI: &str = include_str!("../../tests/fixtures/offers/safari.sdp");

    fn pick(sdp: &str, prefs: &[VideoCodec]) -> Result<Chosen, NoCodec> {
        choose(prefs, &offered_video_codecs(sdp).expect("offer parses"))
    }

    fn section(pts: &str, lines: &[&str]) -> String {
        format!(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF {pts}\r\n{}\r\n",
            lines.join("\r\n")
        )
    }

    #[test]
    fn the_daemons_own_offer_takes_the_first_running_codec() {
        use VideoCodec::{Av1, H264};
        let h = for_offer(&[H264, Av1], &[H264, Av1], None).expect("h264");
        assert_eq!((h.codec, h.payload_type, h.passthrough), (H264, 102, false));
        assert!(h.fmtp.ends_with("profile-level-id=42e01f"), "{}", h.fmtp);
        let a = for_offer(&[Av1, H264], &[H264, Av1], None).expect("av1");
        assert_eq!((a.codec, a.payload_type, a.fmtp.as_str()), (Av1, 45, ""));
        assert_eq!(for_offer(&[Av1], &[H264], None), None);
        // The camera's High 4.0 stream passes through when H.264 comes first.
        let camera = ProfileLevelId::parse("640028");
        let p = for_offer(&[H264], &[H264], camera).expect("passthrough");
        assert!(
            p.passthrough && p.fmtp.ends_with("profile-level-id=640028"),
            "{p:?}"
        );
        let not = for_offer(&[Av1, H264], &[H264], camera).expect("h264");
        assert!(!not.passthrough);
    }

    #[test]
    fn chromium_gets_42e01f_h264_with_its_payload_type() {
        for prefs in [&[H264][..], &[H264, Av1]] {
            let c = pick(CHROMIUM, prefs).expect("h264");
            assert_eq!(c.codec, H264);
            // Chromium 156 lists 42001f (pt 102) before 42e01f (pt 108); the exact match wins
            // over offer order, and mode-0 42e01f (pt 114) is never taken.
            assert_eq!(c.payload_type, 108);
            assert_eq!(
                c.fmtp,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            );
        }
        assert_eq!(offered_opus(CHROMIUM), Some(111));
    }

    #[test]
    fn chromium_gets_profile_0_av1_when_av1_is_preferred() {
        let c = pick(CHROMIUM, &[Av1, H264]).expect("av1");
        // pt 45 is AV1 profile 0; pt 47 (profile 1) would be undecodable from rav1e's view.
        assert_eq!((c.codec, c.payload_type), (Av1, 45));
        assert!(c.fmtp.contains("profile=0"), "{}", c.fmtp);
    }

    #[test]
    fn offline_firefox_has_no_h264_and_falls_back_to_av1() {
        let c = pick(FIREFOX, &[H264, Av1]).expect("av1 fallback");
        assert_eq!((c.codec, c.payload_type, c.fmtp.as_str()), (Av1, 99, ""));
        assert_eq!(pick(FIREFOX, &[Av1]).map(|c| c.payload_type), Ok(99));
        assert_eq!(offered_opus(FIREFOX), Some(109));
        let e = pick(FIREFOX, &[H264]).expect_err("no h264 in offline firefox");
        assert_eq!(
            e.to_string(),
            "no acceptable video codec: the browser offered VP8, VP9, AV1; \
             peercam is configured for h264 (video.codecs)"
        );
    }

    #[test]
    fn safari_gets_constrained_baseline_not_high_profile() {
        // Safari lists High 640c1f (pt 96) first; 42e01f mode 1 is pt 98.
        let c = pick(SAFARI, &[H264, Av1]).expect("h264");
        assert_eq!((c.codec, c.payload_type), (H264, 98));
        assert_eq!(pick(SAFARI, &[Av1, H264]).map(|c| c.codec), Ok(H264));
        // The audio section comes first in this offer; the video section is still found.
        assert_eq!(offered_opus(SAFARI), Some(111));
        let e = pick(SAFARI, &[Av1]).expect_err("no AV1 in this Safari offer");
        assert!(
            e.to_string().contains(
                "the browser offered H264, H265, VP8, VP9; peercam is configured for av1"
            ),
            "{e}"
        );
    }

    #[test]
    fn h264_with_only_packetization_mode_0_is_rejected_with_a_note() {
        let sdp = section(
            "104 120",
            &[
                "a=rtpmap:104 H264/90000",
                "a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
                "a=rtpmap:120 VP8/90000",
                "a=rtpmap:121 VP9/90000",
            ],
        );
        let e = pick(&sdp, &[H264, Av1]).expect_err("mode 0 only");
        assert_eq!(
            e.to_string(),
            "no acceptable video codec: the browser offered H264 (packetization-mode 0 only), \
             VP8, VP9; peercam is configured for h264, av1 (video.codecs)"
        );
        // No fmtp at all means mode 0 too.
        let bare = section("96", &["a=rtpmap:96 H264/90000"]);
        assert!(pick(&bare, &[H264]).is_err());
    }

    #[test]
    fn high_and_main_only_h264_is_rejected() {
        let sdp = section(
            "96 97",
            &[
                "a=rtpmap:96 H264/90000",
                "a=fmtp:96 packetization-mode=1;profile-level-id=640c1f",
                "a=rtpmap:97 H264/90000",
                "a=fmtp:97 packetization-mode=1;profile-level-id=4d001f",
            ],
        );
        let e = pick(&sdp, &[H264]).expect_err("high/main only");
        assert!(
            e.to_string()
                .contains("H264 (no Constrained Baseline profile)"),
            "{e}"
        );
    }

    #[test]
    fn h264_entries_rank_by_closeness_to_42e01f() {
        // Index of the entry chosen among packetization-mode 1 entries with these ids.
        let chosen = |plids: &[&str]| {
            let lines: Vec<String> = (100u8..)
                .zip(plids)
                .flat_map(|(pt, plid)| {
                    [
                        format!("a=rtpmap:{pt} H264/90000"),
                        format!("a=fmtp:{pt} packetization-mode=1;profile-level-id={plid}"),
                    ]
                })
                .collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            pick(&section("100", &refs), &[H264]).map(|c| c.payload_type - 100)
        };
        // Exact 42e01f beats everything, wherever it is.
        assert_eq!(chosen(&["42e034", "42001f", "42E01F"]), Ok(2));
        // Constrained Baseline (42e0xx, 42c0xx, 4d8xxx) at level >= 3.1 next.
        assert_eq!(chosen(&["42001f", "42e00d", "42c034"]), Ok(2));
        assert_eq!(chosen(&["42001f", "4d801f"]), Ok(1));
        // Then low-level Constrained Baseline, then plain Baseline; ties go to the first.
        assert_eq!(chosen(&["42001f", "42e00d"]), Ok(1));
        assert_eq!(chosen(&["42000d", "42001f", "42001f"]), Ok(1));
        // Malformed or reserved-bit profile ids are skipped, not fatal.
        assert_eq!(chosen(&["zz", "42e10f", "42000a"]), Ok(2));
    }

    #[test]
    fn av1_with_another_profile_is_skipped() {
        let sdp = section(
            "45 47",
            &[
                "a=rtpmap:47 AV1/90000",
                "a=fmtp:47 profile=1",
                "a=rtpmap:45 VP8/90000",
            ],
        );
        assert!(pick(&sdp, &[Av1]).is_err());
        let bare = section("35", &["a=rtpmap:35 AV1/90000"]);
        assert_eq!(pick(&bare, &[Av1]).map(|c| c.payload_type), Ok(35));
    }

    fn pick_camera(sdp: &str, prefs: &[VideoCodec], camera: &str) -> Chosen {
        let offered = offered_video_codecs(sdp).expect("offer parses");
        choose_with_camera(prefs, &offered, ProfileLevelId::parse(camera)).expect("a codec")
    }

    #[test]
    fn a_main_profile_camera_is_passed_through_to_chromium_with_its_level() {
        // The simulated camera's SPS says 4d4c28 (Main, level 4.0); Chromium 156 offers Main
        // as 4d001f (pt 116) with level-asymmetry-allowed=1.
        let c = pick_camera(CHROMIUM, &[H264, Av1], "4d4c28");
        assert!(c.passthrough);
        assert_eq!((c.codec, c.payload_type), (H264, 116));
        assert_eq!(
            c.fmtp,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d0028"
        );
    }

    #[test]
    fn a_camera_profile_the_browser_cannot_take_falls_back_to_encoding() {
        // Firefox offers only Baseline entries; Safari's High entry is Constrained High,
        // which does not cover a High stream (B-frames); Chromium 156 offers no High at all.
        for sdp in [FIREFOX, SAFARI, CHROMIUM] {
            let c = pick_camera(sdp, &[H264, Av1], "640028");
            assert!(!c.passthrough, "{c:?}");
        }
        let c = pick_camera(FIREFOX, &[H264, Av1], "4d4c28");
        assert_eq!((c.codec, c.passthrough), (Av1, false));
        // Not the first preference: no passthrough either.
        let c = pick_camera(CHROMIUM, &[Av1, H264], "4d4c28");
        assert_eq!((c.codec, c.passthrough), (Av1, false));
        // No camera profile known (camera streams raw, or no SPS yet).
        let offered = offered_video_codecs(CHROMIUM).expect("offer");
        assert!(
            !choose_with_camera(&[H264], &offered, None)
                .expect("h264")
                .passthrough
        );
    }

    #[test]
    fn a_constrained_baseline_camera_plays_everywhere_and_high_where_offered() {
        // (The stored Firefox offer has no H.264: its OpenH264 plugin was never downloaded.)
        for (sdp, pt) in [(CHROMIUM, 108), (SAFARI, 98)] {
            let c = pick_camera(sdp, &[H264], "42c028");
            assert!(c.passthrough, "{c:?}");
            assert!(c.fmtp.contains("profile-level-id=42e028"), "{}", c.fmtp);
            assert_eq!(c.payload_type, pt);
        }
        // Safari's Constrained High entry takes a Constrained High camera.
        let c = pick_camera(SAFARI, &[H264], "640c28");
        assert_eq!((c.payload_type, c.passthrough), (96, true));
        assert!(c.fmtp.contains("profile-level-id=640c28"));
        // Without level-asymmetry-allowed the offered level must cover the camera's.
        let strict = section(
            "96",
            &[
                "a=rtpmap:96 H264/90000",
                "a=fmtp:96 packetization-mode=1;profile-level-id=4d001f",
            ],
        );
        let offered = offered_video_codecs(&strict).expect("offer");
        let camera = ProfileLevelId::parse("4d4c28");
        assert!(choose_with_camera(&[H264, Av1], &offered, camera).is_err());
        let camera = ProfileLevelId::parse("4d401e");
        let c = choose_with_camera(&[H264], &offered, camera).expect("level 3.0 fits 3.1");
        assert!(c.passthrough);
        assert_eq!(c.fmtp, "packetization-mode=1;profile-level-id=4d001e");
    }
}
