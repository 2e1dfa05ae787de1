//! ICE in SDP fragments and answers, for transports that carry SDP rather than JSON: WHEP's
//! `PATCH` bodies (`application/trickle-ice-sdpfrag`, RFC 8840) are read into trickled
//! candidates or an ICE restart, its replies written; and an answer gets the daemon's
//! gathered candidates written into it (a WHEP client cannot be sent candidates later).

use crate::session::protocol::IceCandidate;

/// Largest `PATCH` body read.
pub const MAX_SDPFRAG_BYTES: usize = 16 * 1024;

/// What a trickle-ice-sdpfrag says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag`: with `ice_pwd`, the client's ICE credentials. New ones mean an ICE
    /// restart.
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`.
    pub ice_pwd: Option<String>,
    /// `a=candidate` lines, each with the `a=mid` and m-line index of its section.
    pub candidates: Vec<IceCandidate>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// Reads an `application/trickle-ice-sdpfrag` body. Only what ICE needs is read; other
/// lines are ignored. An error names the first line that is not SDP.
pub fn parse(frag: &str) -> Result<SdpFrag, String> {
    if frag.len() > MAX_SDPFRAG_BYTES {
        return Err(format!(
            "the fragment is {} bytes; at most {MAX_SDPFRAG_BYTES}",
            frag.len()
        ));
    }
    let mut out = SdpFrag::default();
    let mut mid: Option<String> = None;
    let mut m_index: Option<u16> = None;
    for (n, line) in frag.lines().map(|l| l.trim_end_matches('\r')).enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(format!("line {} is not an SDP line (type=value)", n + 1));
        };
        if kind.len() != 1 || !kind.as_bytes()[0].is_ascii_lowercase() {
            return Err(format!("line {} is not an SDP line (type=value)", n + 1));
        }
        match kind {
            "m" => {
                m_index = Some(m_index.map_or(0, |i| i.saturating_add(1)));
                mid = None;
            }
            "a" => {
                let (name, attr) = value.split_once(':').unwrap_or((value, ""));
                match name {
                    "ice-ufrag" => out.ice_ufrag = Some(attr.trim().to_owned()),
                    "ice-pwd" => out.ice_pwd = Some(attr.trim().to_owned()),
                    "mid" => mid = Some(attr.trim().to_owned()),
                    "end-of-candidates" => out.end_of_candidates = true,
                    "candidate" => out.candidates.push(IceCandidate {
                        candidate: format!("candidate:{}", attr.trim()),
                        sdp_mid: mid.clone(),
                        sdp_m_line_index: m_index.or(Some(0)),
                        username_fragment: out.ice_ufrag.clone(),
                    }),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// An offer's `a=candidate` lines taken out of it, so that they go the way trickled ones go
/// (the address checks, the per-call cap, `.local` lookups): the offer without them and
/// without `a=end-of-candidates`, the candidates with their section's `a=mid` and m-line
/// index, and whether the offer said end-of-candidates.
pub fn take_candidates(sdp: &str) -> (String, Vec<IceCandidate>, bool) {
    if !sdp.contains("a=candidate:") && !sdp.contains("a=end-of-candidates") {
        return (sdp.to_owned(), Vec::new(), false);
    }
    let end = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.lines().map(|l| l.trim_end_matches('\r')).collect();
    // Each section's a=mid, wherever in the section it is.
    let mut mids: Vec<Option<String>> = Vec::new();
    for line in &lines {
        if line.starts_with("m=") {
            mids.push(None);
        } else if let (Some(mid), Some(last)) = (line.strip_prefix("a=mid:"), mids.last_mut()) {
            *last = Some(mid.trim().to_owned());
        }
    }
    let mut out = String::with_capacity(sdp.len());
    let mut candidates = Vec::new();
    let mut end_of_candidates = false;
    let mut section: Option<usize> = None;
    for line in lines {
        if line.starts_with("m=") {
            section = Some(section.map_or(0, |i| i + 1));
        }
        if let Some(attr) = line.strip_prefix("a=candidate:") {
            candidates.push(IceCandidate {
                candidate: format!("candidate:{}", attr.trim()),
                sdp_mid: section.and_then(|i| mids.get(i).cloned().flatten()),
                sdp_m_line_index: Some(section.map_or(0, |i| u16::try_from(i).unwrap_or(u16::MAX))),
                username_fragment: None,
            });
        } else if line == "a=end-of-candidates" {
            end_of_candidates = true;
        } else {
            out.push_str(line);
            out.push_str(end);
        }
    }
    (out, candidates, end_of_candidates)
}

/// The ICE credentials of an SDP: the first `a=ice-ufrag` and `a=ice-pwd` (session or media
/// level; with BUNDLE every section carries the same).
pub fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |name: &str| {
        sdp.lines()
            .map(|l| l.trim_end_matches('\r'))
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// `sdp` with every `a=ice-ufrag` and `a=ice-pwd` replaced by `ufrag` and `pwd`, and its
/// candidates and end-of-candidates removed: the offer of an ICE restart, built from the
/// first offer and the client's new credentials.
pub fn with_ice_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let end = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}{end}"));
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}{end}"));
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(line);
            out.push_str(end);
        }
    }
    out
}

/// `answer` with `candidates` (their `candidate:` attributes) written into every media
/// section that is not rejected, before any it already has, and `a=end-of-candidates` when
/// gathering is `complete`.
pub fn with_candidates(answer: &str, candidates: &[String], complete: bool) -> String {
    let end = if answer.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut lines: Vec<String> = answer
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let mut extra = Vec::new();
    for c in candidates {
        extra.push(format!("a={}", c.trim().trim_start_matches("a=")));
    }
    if complete {
        extra.push("a=end-of-candidates".to_owned());
    }
    // Insert at the end of each media section (before the next m= or the end).
    let mut out = Vec::with_capacity(lines.len() + extra.len() * 2);
    let mut in_live_section = false;
    for line in lines.drain(..) {
        if line.starts_with("m=") {
            if in_live_section {
                out.extend(extra.iter().cloned());
            }
            // A rejected section has port 0.
            in_live_section = line.split_ascii_whitespace().nth(1) != Some("0");
        } else if in_live_section
            && (line.starts_with("a=candidate:") || line == "a=end-of-candidates")
        {
            // The stack's own candidates (if any) are replaced by the gathered set.
            continue;
        }
        out.push(line);
    }
    if in_live_section {
        out.extend(extra);
    }
    let mut text = out.join(end);
    text.push_str(end);
    text
}

/// The reply to an ICE restart: the daemon's new credentials, and its candidates in the
/// section of the first media id of `mids` (with BUNDLE, the one that carries the
/// transport), marked complete.
pub fn restart_reply(ufrag: &str, pwd: &str, mids: &[String], candidates: &[String]) -> String {
    let mut out = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    if let Some(mid) = mids.first() {
        out.push_str(&format!("m=audio 9 RTP/AVP 0\r\na=mid:{mid}\r\n"));
        for c in candidates {
            out.push_str(&format!("a={}\r\n", c.trim().trim_start_matches("a=")));
        }
        out.push_str("a=end-of-candidates\r\n");
    }
    out
}

/// The `a=mid` values of an SDP's media sections, in order.
pub fn mids(sdp: &str) -> Vec<String> {
    sdp.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offers_candidates_are_taken_out_with_their_sections() {
        let offer = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                     a=candidate:1 1 udp 2122260223 abc.local 61764 typ host\r\na=mid:0\r\n\
                     m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n\
                     a=candidate:2 1 udp 1 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
        let (rest, candidates, end) = take_candidates(offer);
        assert_eq!(
            rest,
            "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n"
        );
        assert!(end);
        assert_eq!(candidates.len(), 2);
        assert_eq!(
            candidates[0].candidate,
            "candidate:1 1 udp 2122260223 abc.local 61764 typ host"
        );
        // The mid comes after the candidate in its section, and still names it.
        assert_eq!(candidates[0].sdp_mid.as_deref(), Some("0"));
        assert_eq!(candidates[0].sdp_m_line_index, Some(0));
        assert_eq!(candidates[1].sdp_mid.as_deref(), Some("1"));
        assert_eq!(candidates[1].sdp_m_line_index, Some(1));
        let (same, none, end) = take_candidates("v=0\nm=video 9 X 96\na=mid:0\n");
        assert_eq!(
            (same.as_str(), none.len(), end),
            ("v=0\nm=video 9 X 96\na=mid:0\n", 0, false)
        );
    }

    /// The trickle fragment of RFC 8840 section 4.4's shape, as WHEP clients send it.
    const TRICKLE: &str = "a=ice-ufrag:EsAw\r\n\
        a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
        m=audio 9 RTP/AVP 0\r\n\
        a=mid:0\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
        a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn a_trickle_fragment_gives_its_candidates_with_mid_and_ufrag() {
        let frag = parse(TRICKLE).expect("parse");
        assert_eq!(frag.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.ice_pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(frag.candidates.len(), 2);
        let c = &frag.candidates[0];
        assert!(c.candidate.starts_with("candidate:1387637174 1 udp"));
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_m_line_index, Some(0));
        assert_eq!(c.username_fragment.as_deref(), Some("EsAw"));
        assert!(frag.end_of_candidates);
    }

    #[test]
    fn what_is_not_an_sdp_fragment_is_named_and_refused() {
        assert!(parse("hello world").unwrap_err().contains("line 1"));
        assert!(parse("a=ice-ufrag:x\r\n{\"candidate\": 1}")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse(&"a=x\r\n".repeat(5000))
            .unwrap_err()
            .contains("at most"));
        // Empty is valid: nothing to add.
        assert_eq!(parse("").expect("empty"), SdpFrag::default());
    }

    #[test]
    fn candidates_go_into_each_live_section_of_the_answer() {
        let answer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            a=group:BUNDLE 0 1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=ice-ufrag:abc\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n\
            m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let host = "candidate:1 1 udp 2130706431 192.0.2.7 50000 typ host".to_owned();
        let with = with_candidates(answer, std::slice::from_ref(&host), true);
        let sections: Vec<&str> = with.split("m=").collect();
        assert_eq!(sections.len(), 4);
        for live in &sections[1..3] {
            assert!(live.contains(&format!("a={host}\r\n")), "{live}");
            assert!(live.ends_with("a=end-of-candidates\r\n"), "{live}");
        }
        assert!(!sections[3].contains("candidate"), "the rejected section");
        assert!(with.starts_with("v=0\r\n") && !with.contains("\r\n\r\n"));
        // Still complete: not marked.
        assert!(!with_candidates(answer, &[host], false).contains("end-of-candidates"));
    }

    #[test]
    fn an_ice_restart_offer_has_the_new_credentials_and_no_old_candidates() {
        let offer = "v=0\r\nm=video 9 X 96\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n\
            a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\na=end-of-candidates\r\n\
            m=audio 9 X 111\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n";
        let restarted = with_ice_credentials(offer, "new", "newpwd");
        assert_eq!(
            ice_credentials(&restarted),
            Some(("new".to_owned(), "newpwd".to_owned()))
        );
        assert_eq!(restarted.matches("a=ice-ufrag:new").count(), 2);
        assert!(!restarted.contains("old") && !restarted.contains("candidate"));
        let reply = restart_reply(
            "u",
            "p",
            &mids("a=mid:0\r\na=mid:1\r\n"),
            &["candidate:9 1 udp 1 192.0.2.9 9 typ host".to_owned()],
        );
        let parsed = parse(&reply).expect("our reply parses");
        assert_eq!(parsed.ice_ufrag.as_deref(), Some("u"));
        assert_eq!(parsed.candidates.len(), 1);
        assert_eq!(parsed.candidates[0].sdp_mid.as_deref(), Some("0"));
    }
}
