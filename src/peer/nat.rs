//! `[webrtc] nat_1to1_ips`: host candidates advertise an external address in place of the
//! local one, for a camera behind a 1:1 NAT or a port forward that keeps the port (qemu user
//! networking, a router forwarding the UDP range). webrtc-rs 0.21 has a NAT 1:1 setting but
//! never applies it to gathered candidates, so peercam rewrites the candidate text it sends.

use std::net::IpAddr;

use crate::config::NatMapping;

/// The address `local` is advertised as: the first mapping naming `local` exactly, else the
/// first unqualified mapping of the same IP family, else `None` (advertise as is).
pub fn external_for(local: IpAddr, mappings: &[NatMapping]) -> Option<IpAddr> {
    mappings
        .iter()
        .find(|m| m.local == Some(local))
        .or_else(|| {
            mappings
                .iter()
                .find(|m| m.local.is_none() && m.external.is_ipv4() == local.is_ipv4())
        })
        .map(|m| m.external)
}

/// Rewrites the address of a `host` candidate (`candidate:F C proto prio ADDR port typ host
/// ...`, with or without the `candidate:`/`a=candidate:` prefix). Other candidate types (srflx,
/// relay) and lines that do not parse are returned unchanged.
pub fn rewrite_candidate(candidate: &str, mappings: &[NatMapping]) -> String {
    if mappings.is_empty() {
        return candidate.to_owned();
    }
    let fields: Vec<&str> = candidate.split(' ').collect();
    let is_host = fields.len() >= 8 && fields[6] == "typ" && fields[7] == "host";
    let Some(local) = is_host.then(|| fields[4].parse::<IpAddr>().ok()).flatten() else {
        return candidate.to_owned();
    };
    match external_for(local, mappings) {
        Some(external) => {
            let external = external.to_string();
            let mut fields = fields;
            fields[4] = &external;
            fields.join(" ")
        }
        None => candidate.to_owned(),
    }
}

/// Rewrites every `a=candidate:` line of an SDP (candidates gathered before the answer was
/// taken) and the `c=` connection lines naming a mapped local address.
pub fn rewrite_sdp(sdp: &str, mappings: &[NatMapping]) -> String {
    if mappings.is_empty() {
        return sdp.to_owned();
    }
    map_lines(sdp, |body| {
        if body.starts_with("a=candidate:") {
            return Some(rewrite_candidate(body, mappings));
        }
        let addr = body
            .strip_prefix("c=IN IP4 ")
            .or_else(|| body.strip_prefix("c=IN IP6 "))?;
        let external = addr
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified())
            .and_then(|ip| external_for(ip, mappings))?;
        let family = if external.is_ipv4() { "IP4" } else { "IP6" };
        Some(format!("c=IN {family} {external}"))
    })
}

/// `sdp` with each line (without its line ending) replaced by what `rewrite` returns for it,
/// or kept where it returns `None`; line endings are kept as they are.
pub fn map_lines(sdp: &str, mut rewrite: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let (body, end) = match line.find(['\r', '\n']) {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        match rewrite(body) {
            Some(new) => out.push_str(&new),
            None => out.push_str(body),
        }
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> NatMapping {
        NatMapping::parse(text).expect("mapping")
    }

    #[test]
    fn host_candidates_take_the_external_address() {
        let maps = [m("127.0.0.1/10.0.2.15")];
        assert_eq!(
            rewrite_candidate(
                "candidate:1 1 udp 2130706431 10.0.2.15 47000 typ host",
                &maps
            ),
            "candidate:1 1 udp 2130706431 127.0.0.1 47000 typ host"
        );
        // Another local address is not named by the mapping: unchanged.
        let other = "candidate:1 1 udp 2130706431 10.0.3.9 47000 typ host";
        assert_eq!(rewrite_candidate(other, &maps), other);
    }

    #[test]
    fn unqualified_mappings_apply_per_family_and_exact_ones_win() {
        let maps = [
            m("203.0.113.7"),
            m("2001:db8::7"),
            m("198.51.100.1/192.168.1.20"),
        ];
        assert_eq!(
            external_for("192.168.1.20".parse().expect("ip"), &maps),
            Some("198.51.100.1".parse().expect("ip"))
        );
        assert_eq!(
            external_for("192.168.1.21".parse().expect("ip"), &maps),
            Some("203.0.113.7".parse().expect("ip"))
        );
        assert_eq!(
            external_for("fe80::1".parse().expect("ip"), &maps),
            Some("2001:db8::7".parse().expect("ip"))
        );
        assert_eq!(
            external_for("fe80::1".parse().expect("ip"), &maps[..1]),
            None
        );
    }

    #[test]
    fn other_candidate_types_and_garbage_are_left_alone() {
        let maps = [m("203.0.113.7")];
        for text in [
            "candidate:2 1 udp 1694498815 198.51.100.2 50000 typ srflx raddr 10.0.0.2 rport 50000",
            "candidate:1 1 udp 2130706431 host.local 47000 typ host",
            "candidate:1 1 udp",
            "",
        ] {
            assert_eq!(rewrite_candidate(text, &maps), text);
        }
        assert_eq!(
            rewrite_candidate("candidate:1 1 udp 1 10.0.0.2 5 typ host", &[]),
            "candidate:1 1 udp 1 10.0.0.2 5 typ host"
        );
    }

    #[test]
    fn sdp_candidate_and_connection_lines_are_rewritten() {
        let maps = [m("127.0.0.1/10.0.2.15")];
        let sdp = "v=0\r\nc=IN IP4 10.0.2.15\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                   c=IN IP4 0.0.0.0\r\n\
                   a=candidate:1 1 udp 2130706431 10.0.2.15 47000 typ host\r\na=mid:0\r\n";
        assert_eq!(
            rewrite_sdp(sdp, &maps),
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
             c=IN IP4 0.0.0.0\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 47000 typ host\r\na=mid:0\r\n"
        );
    }
}
