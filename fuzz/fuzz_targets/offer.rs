//! The offer-handling / codec-choice path, without a WebRTC peer: the SDP reading of
//! `peercam::session::sdp`, the codec choice of `peercam::session::codec` and the session machine that turns a browser's
//! `{"sdp": offer}` into the answer plan (`Output::StartPeer`).
//!
//! Input: a 4-byte header, then a payload.
//! - header[0]: bits 0-2 the configured `video.codecs` (see `preferences`), bit 3 audio
//!   enabled, bit 4 a camera with H.264 passthrough whose `profile-level-id` is header[1..4],
//!   bit 5 structure-aware mode, bits 6-7 which real offer that mode edits.
//! - payload: the offer SDP (bytes that are not UTF-8 are replaced: it arrives inside a JSON
//!   string); in structure-aware mode, an edit script applied to the lines of a real browser
//!   offer (see `edit`).
//!
//! Properties: nothing panics; a chosen codec is one of the configured ones, with a payload
//! type the offer has, and passthrough only for H.264 with a camera; the state machine's
//! answer plan is the codec functions' choice; `replace_fmtp` keeps the lines of the SDP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peercam::h264::ProfileLevelId;
use peercam::media::VideoCodec::{self, Av1, H264};
use peercam::session::admission::{Admission, AdmissionLimits};
use peercam::session::codec;
use peercam::session::machine::{Input, MediaInfo, Output, Rules, Session, State};
use peercam::session::protocol::{Message, SdpKind, SessionDescription};
use peercam::session::sdp::{self, MediaKind};
use peercam::session::sdpfrag;

/// Real offers (tests/fixtures/offers) that structure-aware mode edits.
const OFFERS: [&str; 3] = [
    include_str!("../../tests/fixtures/offers/chromium-156.sdp"),
    include_str!("../../tests/fixtures/offers/firefox-esr-153.sdp"),
    include_str!("../../tests/fixtures/offers/safari.sdp"),
];

/// `limits.max_message_bytes`' default.
const MAX_MESSAGE_BYTES: usize = 65_536;

/// The media as the session sees it: the configured codecs, audio, the camera's H.264.
struct Media {
    codecs: Vec<VideoCodec>,
    audio: bool,
    camera: Option<ProfileLevelId>,
}

impl MediaInfo for Media {
    fn video_codecs(&self) -> Vec<VideoCodec> {
        self.codecs.clone()
    }
    fn has_audio(&self) -> bool {
        self.audio
    }
    fn camera_h264(&self) -> Option<ProfileLevelId> {
        self.camera
    }
}

/// Everything the session wants done, up to its next deadline.
fn drain(session: &mut Session) -> Vec<Output> {
    let mut outputs = Vec::new();
    loop {
        match session.poll_output() {
            Output::Timeout(_) => return outputs,
            o => outputs.push(o),
        }
    }
}

fn preferences(bits: u8) -> Vec<VideoCodec> {
    match bits & 7 {
        0 => vec![H264, Av1],
        1 => vec![Av1, H264],
        2 => vec![H264],
        3 => vec![Av1],
        // The config refuses these; the codec functions must not care.
        4 => Vec::new(),
        5 => vec![H264, H264],
        _ => vec![Av1, Av1, H264],
    }
}

/// Applies an edit script to the lines of `base`: a sequence of `[op, index]` pairs, `index`
/// counted modulo the number of lines; ops that insert text take `[length, bytes...]` after.
fn edit(base: &str, script: &[u8]) -> String {
    let mut lines: Vec<String> = base.split("\r\n").map(str::to_owned).collect();
    let mut rest = script;
    let text = |rest: &mut &[u8]| -> String {
        let (&len, tail) = rest.split_first().unwrap_or((&0, &[]));
        let len = usize::from(len).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        *rest = tail;
        String::from_utf8_lossy(bytes).into_owned()
    };
    while let [op, index, tail @ ..] = rest {
        rest = tail;
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = usize::from(*index) % lines.len();
        match op % 8 {
            0 => {
                lines.remove(i);
            }
            1 => lines.insert(i, lines[i].clone()),
            2 => {
                let j = (i + 1) % lines.len();
                lines.swap(i, j);
            }
            3 => lines[i] = text(&mut rest),
            4 => lines.insert(i, text(&mut rest)),
            5 => {
                // Cut the line after `n` characters.
                let n = usize::from(op / 8);
                if let Some((at, _)) = lines[i].char_indices().nth(n) {
                    lines[i].truncate(at);
                }
            }
            6 => {
                let extra = text(&mut rest);
                lines[i].push_str(&extra);
            }
            _ => {
                // Replace the part after the last space (a value: port, clock rate, fmtp).
                let extra = text(&mut rest);
                let line = &mut lines[i];
                let keep = line.rfind(' ').map_or(0, |at| at + 1);
                line.truncate(keep);
                line.push_str(&extra);
            }
        }
    }
    let line_end = if script.len() % 2 == 1 { "\n" } else { "\r\n" };
    lines.join(line_end)
}

fn check(sdp: &str, preferences: &[VideoCodec], audio: bool, camera: Option<ProfileLevelId>) {
    // The codec functions, as the state machine calls them.
    let chosen = sdp::offered_video_codecs(sdp).map(|offered| {
        let chosen = codec::choose_with_camera(preferences, &offered, camera);
        (offered, chosen)
    });
    let _ = sdp::media_direction(sdp, MediaKind::Audio);
    let video_direction = sdp::media_direction(sdp, MediaKind::Video);
    let opus = sdp::offered_opus(sdp);
    match &chosen {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok((_, Err(no_codec))) => {
            let shown = no_codec.to_string();
            assert_eq!(no_codec.configured, preferences, "{shown}");
        }
        Ok((offered, Ok(c))) => {
            assert!(
                preferences.contains(&c.codec),
                "{c:?} not in {preferences:?}"
            );
            assert!(
                offered.iter().any(|o| o.payload_type == c.payload_type),
                "{c:?} not offered: {offered:?}"
            );
            if c.passthrough {
                assert_eq!(c.codec, H264, "{c:?}");
                assert!(camera.is_some(), "{c:?}");
            }
            // The answer's fmtp rewrite keeps every line and its line end.
            let replaced = sdp::replace_fmtp(sdp, c.payload_type, &c.fmtp);
            assert_eq!(
                replaced.split_inclusive('\n').count(),
                sdp.split_inclusive('\n').count()
            );
            if !c.fmtp.contains('\n') {
                assert_eq!(replaced.matches('\n').count(), sdp.matches('\n').count());
            }
        }
    }

    // The same offer through the state machine, as a browser sends it.
    let now = std::time::Instant::now();
    let admission = Admission::new(AdmissionLimits {
        max_viewers: 1,
        max_pending_dials: 1,
        pending_dials_per_address: 1,
        dials_per_minute: 1,
    });
    let media = std::sync::Arc::new(Media {
        codecs: preferences.to_vec(),
        audio,
        camera,
    });
    let rules = Rules {
        max_message_bytes: MAX_MESSAGE_BYTES,
        ice_timeout: std::time::Duration::from_secs(15),
        idle_timeout: std::time::Duration::from_secs(120),
        loopback_candidates: false,
        // `.local` candidates become lookups (outputs) the fuzzer's drain leaves unanswered.
        resolve_mdns: true,
        ice_servers: Vec::new(),
        camera_name: Some("fuzz".to_owned()),
    };
    let remote = std::net::SocketAddr::from(([192, 0, 2, 1], 40_000));
    let mut session = Session::new(media, admission.clone(), rules, remote, now);
    assert!(matches!(
        drain(&mut session).as_slice(),
        [Output::Send(Message::Hello(_))]
    ));
    let message = Message::Sdp(SessionDescription {
        kind: SdpKind::Offer,
        sdp: sdp.to_owned(),
    })
    .to_json();
    session.handle_input(Input::Text(&message), now);
    let actions = drain(&mut session);
    let plan = actions.iter().find_map(|a| match a {
        Output::StartPeer { offer_sdp, plan } => {
            // The peer gets the offer without its candidates (they follow, checked).
            let (without, _, _) = sdpfrag::take_candidates(sdp);
            assert_eq!(offer_sdp, &without);
            assert!(!offer_sdp.lines().any(|l| l.starts_with("a=candidate:")));
            Some(plan)
        }
        _ => None,
    });
    match plan {
        Some(plan) => {
            assert_eq!(session.state(), State::Answering);
            let Ok((_, Ok(c))) = &chosen else {
                panic!("a plan {plan:?} without a codec choice: {chosen:?}");
            };
            assert_eq!(&plan.video, c);
            assert_eq!(admission.viewers_in_call(), 1);
            assert!(video_direction.is_some_and(sdp::Direction::browser_receives));
            if plan.opus_payload_type.is_some() {
                assert!(audio);
                assert_eq!(plan.opus_payload_type, opus);
            }
            // The peer answers; then the browser hangs up.
            let answer = sdp::replace_fmtp(sdp, plan.video.payload_type, &plan.video.fmtp);
            session.handle_input(Input::PeerReady(Ok(answer)), now);
            assert_eq!(session.state(), State::Active);
            session.handle_input(Input::Text(r#"{"bye":{}}"#), now);
            assert_eq!(session.state(), State::Idle);
            assert_eq!(admission.viewers_in_call(), 0, "hang-up frees the slot");
        }
        None => {
            // Refused with an error message (or too large for the limit).
            assert_eq!(session.state(), State::Idle);
            assert!(
                matches!(actions.as_slice(), [Output::Send(Message::Error(_))]),
                "{actions:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((header, payload)) = data.split_first_chunk::<4>() else {
        return;
    };
    let flags = header[0];
    let camera = (flags & 0x10 != 0).then_some(ProfileLevelId {
        profile_idc: header[1],
        iop: header[2],
        level_idc: header[3],
    });
    let sdp = if flags & 0x20 != 0 {
        let base = OFFERS[usize::from(flags >> 6) % OFFERS.len()];
        edit(base, payload)
    } else {
        String::from_utf8_lossy(payload).into_owned()
    };
    check(&sdp, &preferences(flags), flags & 0x08 != 0, camera);
});
