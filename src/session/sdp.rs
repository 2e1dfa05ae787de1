//! Reading and editing the SDP of an offer or answer: plain text, no WebRTC stack. The media
//! sections and their direction, the codecs offered (`a=rtpmap`, with their `a=fmtp` and
//! `a=rtcp-fb`), Opus's payload type, fmtp parameters, and the one edit an answer needs
//! (replacing a payload type's fmtp line). What to choose from them is [`super::codec`]'s job.

/// One `a=rtpmap` entry of the offer's video section, with its fmtp and feedback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCodec {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name as written, e.g. `H264`, `VP8`, `AV1`, `rtx`.
    pub mime: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// The `a=fmtp` parameters, if any.
    pub fmtp: Option<String>,
    /// `a=rtcp-fb` values, e.g. `nack pli`.
    pub rtcp_fb: Vec<String>,
}

/// The offer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// No `m=video` line.
    #[error("the offer has no video section (m=video); offer to receive video")]
    NoVideo,
    /// A line that should be `a=rtpmap:<pt> <name>/<clock>` is not.
    #[error(
        "malformed line in the offer: `{0}` (expected a=rtpmap:<payload type> <name>/<clock rate>)"
    )]
    Malformed(String),
}

/// Kind of an SDP media section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
}

impl MediaKind {
    fn sdp_name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// The direction of a media section, from the offerer's (the browser's) side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (also the default when no direction is written).
    SendRecv,
    /// `a=sendonly`: the browser sends, it will not play what we send.
    SendOnly,
    /// `a=recvonly`: the browser only receives (the Dial page's offer).
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// Whether the browser wants to receive media in this section.
    pub fn browser_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_attribute(line: &str) -> Option<Self> {
        match line {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// Lines of the SDP without line ends (browsers send CRLF, people paste LF).
fn sdp_lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines().map(|l| l.trim_end_matches('\r'))
}

/// The `m=` line and the lines of the first media section of `kind` (up to the next `m=`).
fn media_section(sdp: &str, kind: MediaKind) -> Option<(&str, Vec<&str>)> {
    let mut lines = sdp_lines(sdp);
    let prefix = format!("m={} ", kind.sdp_name());
    let m_line = lines.by_ref().find(|l| l.starts_with(&prefix))?;
    Some((m_line, lines.take_while(|l| !l.starts_with("m=")).collect()))
}

/// Direction of the first media section of `kind`, or `None` if the offer has no such section
/// or rejected it (port 0). A direction written at session level applies when the section has
/// none; without either it is `sendrecv` (RFC 8866).
pub fn media_direction(sdp: &str, kind: MediaKind) -> Option<Direction> {
    let (m_line, section) = media_section(sdp, kind)?;
    if m_line.split_whitespace().nth(1) == Some("0") {
        return None;
    }
    let session_level = sdp_lines(sdp)
        .take_while(|l| !l.starts_with("m="))
        .find_map(Direction::from_attribute);
    Some(
        section
            .iter()
            .find_map(|l| Direction::from_attribute(l))
            .or(session_level)
            .unwrap_or(Direction::SendRecv),
    )
}

/// Codecs of the offer's first video section, in the browser's order.
pub fn offered_video_codecs(sdp: &str) -> Result<Vec<OfferedCodec>, CodecError> {
    let (_, section) = media_section(sdp, MediaKind::Video).ok_or(CodecError::NoVideo)?;
    parse_codecs(&section)
}

fn parse_codecs(section: &[&str]) -> Result<Vec<OfferedCodec>, CodecError> {
    let mut codecs: Vec<OfferedCodec> = Vec::new();
    for line in section {
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            // The line came from outside: quote at most 120 characters of it.
            let malformed = || CodecError::Malformed(line.chars().take(120).collect());
            let (pt, encoding) = rest.split_once(' ').ok_or_else(malformed)?;
            let payload_type: u8 = pt.trim().parse().map_err(|_| malformed())?;
            let mut parts = encoding.trim().split('/');
            let mime = parts
                .next()
                .filter(|m| !m.is_empty())
                .ok_or_else(malformed)?;
            let clock_rate: u32 = parts
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or_else(malformed)?;
            codecs.push(OfferedCodec {
                payload_type,
                mime: mime.to_owned(),
                clock_rate,
                fmtp: None,
                rtcp_fb: Vec::new(),
            });
        }
    }
    // fmtp and rtcp-fb may come before or after their rtpmap (Firefox writes them first).
    for line in section {
        let (attr, is_fmtp) = if let Some(rest) = line.strip_prefix("a=fmtp:") {
            (rest, true)
        } else if let Some(rest) = line.strip_prefix("a=rtcp-fb:") {
            (rest, false)
        } else {
            continue;
        };
        let Some((pt, value)) = attr.split_once(' ') else {
            continue;
        };
        let Ok(pt) = pt.parse::<u8>() else { continue };
        if let Some(codec) = codecs.iter_mut().find(|c| c.payload_type == pt) {
            if is_fmtp {
                codec.fmtp = Some(value.trim().to_owned());
            } else {
                codec.rtcp_fb.push(value.trim().to_owned());
            }
        }
    }
    Ok(codecs)
}

/// Payload type of Opus (`opus/48000/2`) in the offer's first audio section, if offered.
/// Whether the browser wants to receive audio at all is [`media_direction`]'s answer.
pub fn offered_opus(sdp: &str) -> Option<u8> {
    let (_, section) = media_section(sdp, MediaKind::Audio)?;
    parse_codecs(&section)
        .ok()?
        .into_iter()
        .find(|c| c.mime.eq_ignore_ascii_case("opus") && c.clock_rate == 48_000)
        .map(|c| c.payload_type)
}

/// A parameter of an fmtp line (`key=value;key=value`), case-insensitive key.
pub fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

/// Replaces the `a=fmtp:` line of `payload_type` in an SDP (the answer a WebRTC stack wrote
/// copies the offer's parameters; a passthrough answer must announce the camera's level).
/// Other lines and line endings are kept.
pub fn replace_fmtp(sdp: &str, payload_type: u8, fmtp: &str) -> String {
    let prefix = format!("a=fmtp:{payload_type} ");
    sdp.split_inclusive('\n')
        .map(|line| {
            if line.starts_with(&prefix) {
                let end = if line.ends_with("\r\n") {
                    "\r\n"
                } else if line.ends_with('\n') {
                    "\n"
                } else {
                    ""
                };
                format!("{prefix}{fmtp}{end}")
            } else {
                line.to_owned()
            }
        })
        .collect()
}

/// Where an ICE candidate (`candidate:<foundation> <component> <transport> <priority>
/// <address> <port> typ <type> ...`, RFC 8839) points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateAddress {
    /// An IP address and port.
    Ip(std::net::SocketAddr),
    /// A host name (browsers hide their addresses behind `<uuid>.local` names).
    Name(String),
}

/// The address of an ICE candidate line, or `None` if the line does not have one.
pub fn candidate_address(candidate: &str) -> Option<CandidateAddress> {
    let mut fields = candidate
        .trim()
        .trim_start_matches("a=")
        .split_ascii_whitespace();
    let address = fields.nth(4)?;
    let port: u16 = fields.next()?.parse().ok()?;
    Some(match address.parse::<std::net::IpAddr>() {
        Ok(ip) => CandidateAddress::Ip(std::net::SocketAddr::new(ip, port)),
        Err(_) => CandidateAddress::Name(address.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    //! Reading stored real offers (tests/fixtures/offers, see its README.md).

    use super::*;

    const CHROMIUM: &str = include_str!("../../tests/fixtures/offers/chromium-156.sdp");
    const FIREFOX: &str = include_str!("../../tests/fixtures/offers/firefox-esr-153.sdp");
    const SAFARI: &str = include_str!("../../tests/fixtures/offers/safari.sdp");

    #[test]
    fn rtcp_feedback_and_fmtp_are_attached_to_their_payload_type() {
        let offered = offered_video_codecs(SAFARI).expect("parse");
        let h = offered
            .iter()
            .find(|o| o.payload_type == 98)
            .expect("pt 98");
        assert_eq!((h.mime.as_str(), h.clock_rate), ("H264", 90_000));
        assert!(h.rtcp_fb.iter().any(|f| f == "nack pli"));
        assert!(h.rtcp_fb.iter().any(|f| f == "ccm fir"));
        // Firefox writes every fmtp before the rtpmap lines.
        let ff = offered_video_codecs(FIREFOX).expect("parse");
        let vp8 = ff.iter().find(|o| o.payload_type == 120).expect("pt 120");
        assert_eq!(vp8.fmtp.as_deref(), Some("max-fs=12288;max-fr=60"));
        assert_eq!(ff.first().map(|o| o.mime.as_str()), Some("VP8"));
    }

    #[test]
    fn directions_say_whether_the_browser_receives() {
        use Direction::*;
        assert_eq!(media_direction(CHROMIUM, MediaKind::Video), Some(RecvOnly));
        assert_eq!(media_direction(CHROMIUM, MediaKind::Audio), Some(RecvOnly));
        // Firefox writes a=sendrecv at session level; the sections' recvonly wins.
        assert_eq!(media_direction(FIREFOX, MediaKind::Video), Some(RecvOnly));
        assert_eq!(media_direction(SAFARI, MediaKind::Audio), Some(SendRecv));
        assert!(SendRecv.browser_receives() && RecvOnly.browser_receives());
        assert!(!SendOnly.browser_receives() && !Inactive.browser_receives());
        let sdp = "v=0\r\na=sendonly\r\nm=audio 9 RTP/AVP 111\r\nm=video 0 RTP/AVP 96\r\n";
        assert_eq!(
            media_direction(sdp, MediaKind::Audio),
            Some(SendOnly),
            "session level"
        );
        assert_eq!(
            media_direction(sdp, MediaKind::Video),
            None,
            "port 0: rejected"
        );
        let none = "v=0\r\nm=video 9 RTP/AVP 96\r\n";
        assert_eq!(
            media_direction(none, MediaKind::Video),
            Some(SendRecv),
            "default"
        );
        assert_eq!(media_direction(none, MediaKind::Audio), None);
    }

    #[test]
    fn offers_without_video_or_with_broken_rtpmap_are_errors() {
        assert_eq!(
            offered_video_codecs("v=0\r\nm=audio 9 RTP/AVP 0\r\n"),
            Err(CodecError::NoVideo)
        );
        let broken = "v=0\r\nm=video 9 RTP/AVP 96\r\na=rtpmap:96\r\n";
        let e = offered_video_codecs(broken).expect_err("no encoding");
        assert!(e.to_string().contains("`a=rtpmap:96`"), "{e}");
        for line in [
            "a=rtpmap:x H264/90000",
            "a=rtpmap:96 H264",
            "a=rtpmap:300 H264/90000",
        ] {
            let sdp = format!("v=0\nm=video 9 RTP/AVP 96\n{line}\n");
            assert_eq!(
                offered_video_codecs(&sdp),
                Err(CodecError::Malformed(line.to_owned())),
                "{line}"
            );
        }
        assert_eq!(offered_opus("v=0\r\nm=video 9 RTP/AVP 96\r\n"), None);
    }

    #[test]
    fn replace_fmtp_touches_only_that_payload_type() {
        let sdp = "m=video 9 UDP/TLS/RTP/SAVPF 109 45\r\na=fmtp:109 packetization-mode=1;profile-level-id=4d001f\r\na=fmtp:45 x=1\r\n";
        assert_eq!(
            replace_fmtp(sdp, 109, "packetization-mode=1;profile-level-id=4d0028"),
            "m=video 9 UDP/TLS/RTP/SAVPF 109 45\r\na=fmtp:109 packetization-mode=1;profile-level-id=4d0028\r\na=fmtp:45 x=1\r\n"
        );
        assert_eq!(replace_fmtp("a=fmtp:1090 y\n", 109, "z"), "a=fmtp:1090 y\n");
    }

    #[test]
    fn candidate_addresses_are_read_from_the_fifth_field() {
        assert_eq!(
            candidate_address("candidate:1 1 udp 2122260223 192.0.2.4 50000 typ host"),
            Some(CandidateAddress::Ip(
                "192.0.2.4:50000".parse().expect("addr")
            ))
        );
        assert_eq!(
            candidate_address("a=candidate:1 1 UDP 1 2001:db8::1 9 typ srflx raddr 0.0.0.0"),
            Some(CandidateAddress::Ip(
                "[2001:db8::1]:9".parse().expect("addr")
            ))
        );
        assert_eq!(
            candidate_address("candidate:2 1 udp 1 4f1c-aa.local 54321 typ host"),
            Some(CandidateAddress::Name("4f1c-aa.local".to_owned()))
        );
        for broken in [
            "",
            "candidate:1 1 udp 1",
            "candidate:1 1 udp 1 192.0.2.4 port",
        ] {
            assert_eq!(candidate_address(broken), None, "{broken:?}");
        }
    }
}
