//! Browsers' `<uuid>.local` ICE candidates, the sans-IO half: which names are worth a query,
//! the candidate line with the resolved address put in, and the lookups one call has under
//! way (how many, until when). The query itself is the IO layer's (`crate::mdns`); its
//! answer comes back as `Input::Resolved` and the candidate then meets the same address
//! checks as any other.
//!
//! Chromium and Firefox give a page without camera permission (every viewer) only such
//! names for their host addresses. Without resolving them, a call connects only if the
//! browser's own checks reach the daemon first.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::session::protocol::IceCandidate;

/// Names resolving at once in one call; a browser has one per local address (one or two),
/// an attacker could send twenty.
pub const MAX_LOOKUPS_PER_CALL: usize = 4;

/// How long a call waits for one name: the resolver gives up after two 1 s queries; this
/// is the session's backstop should its answer never come.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(2_500);

/// The longest name queried: a UUID (36) and `.local`.
pub const MAX_NAME_LEN: usize = 42;

/// Whether `name` is the kind of name browsers put in candidates: one label in the UUID
/// form (8-4-4-4-12 hex digits) and `.local`, in any case. Anything else is not queried.
pub fn is_browser_name(name: &str) -> bool {
    if name.len() > MAX_NAME_LEN {
        return false;
    }
    let Some(label) = name
        .len()
        .checked_sub(".local".len())
        .filter(|&at| name.is_char_boundary(at) && name[at..].eq_ignore_ascii_case(".local"))
        .map(|at| &name[..at])
    else {
        return false;
    };
    let groups: Vec<&str> = label.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `candidate` with its address field (the fifth) replaced by `ip`; every other byte of
/// the line as it was. `None` if the line has no address field.
pub fn with_address(candidate: &str, ip: IpAddr) -> Option<String> {
    let mut fields = 0;
    let mut start = None;
    let mut prev_space = true;
    for (at, c) in candidate.char_indices() {
        let space = c.is_ascii_whitespace();
        if prev_space && !space {
            fields += 1;
            if fields == 5 {
                start = Some(at);
            }
        }
        if let (Some(s), true) = (start, space) {
            return Some(format!("{}{ip}{}", &candidate[..s], &candidate[at..]));
        }
        prev_space = space;
    }
    // The address is the last field: the line has no port, so it is no candidate.
    None
}

/// Why a name was not looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldRefused {
    /// [`MAX_LOOKUPS_PER_CALL`] names are resolving already.
    TooMany,
}

/// One name being resolved and the candidates waiting for it.
#[derive(Debug)]
struct Lookup {
    name: String,
    candidates: Vec<IceCandidate>,
    deadline: Instant,
}

/// A call's names being resolved.
#[derive(Debug, Default)]
pub struct Lookups {
    pending: Vec<Lookup>,
    /// Candidates dropped because their name did not resolve (said once per call).
    pub unresolved: usize,
}

impl Lookups {
    /// Holds `candidate` until `name` resolves. `Ok(true)`: a new name, start a query;
    /// `Ok(false)`: a query for it is under way.
    pub fn hold(
        &mut self,
        name: &str,
        candidate: IceCandidate,
        now: Instant,
    ) -> Result<bool, HoldRefused> {
        if let Some(l) = self
            .pending
            .iter_mut()
            .find(|l| l.name.eq_ignore_ascii_case(name))
        {
            l.candidates.push(candidate);
            return Ok(false);
        }
        if self.pending.len() >= MAX_LOOKUPS_PER_CALL {
            return Err(HoldRefused::TooMany);
        }
        self.pending.push(Lookup {
            name: name.to_owned(),
            candidates: vec![candidate],
            deadline: now + LOOKUP_TIMEOUT,
        });
        Ok(true)
    }

    /// The candidates waiting for `name` (none if it was not asked for, or gave up).
    pub fn take(&mut self, name: &str) -> Vec<IceCandidate> {
        match self
            .pending
            .iter()
            .position(|l| l.name.eq_ignore_ascii_case(name))
        {
            Some(at) => self.pending.swap_remove(at).candidates,
            None => Vec::new(),
        }
    }

    /// Gives up on the names due at `now`; how many candidates were dropped with them.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        self.pending.retain(|l| {
            let due = now >= l.deadline;
            if due {
                dropped += l.candidates.len();
            }
            !due
        });
        dropped
    }

    /// When the next name is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|l| l.deadline).min()
    }

    /// Whether no name is being resolved.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets every name (an ICE restart: the old candidates are stale).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "557ea1ac-2173-4579-9787-a2e14c2bbd73.local";

    fn candidate(text: &str) -> IceCandidate {
        IceCandidate {
            candidate: text.to_owned(),
            sdp_mid: Some("0".to_owned()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }
    }

    #[test]
    fn only_browser_style_names_are_queried() {
        assert!(is_browser_name(NAME));
        assert!(is_browser_name(
            "557EA1AC-2173-4579-9787-A2E14C2BBD73.LOCAL"
        ));
        for bad in [
            "",
            ".local",
            "printer.local",
            "557ea1ac-2173-4579-9787-a2e14c2bbd73.local.",
            "557ea1ac-2173-4579-9787-a2e14c2bbd73.example",
            "x.557ea1ac-2173-4579-9787-a2e14c2bbd73.local",
            "557ea1ac-2173-4579-9787-a2e14c2bbd7z.local",
            "557ea1ac2173-4579-9787-a2e14c2bbd73-.local",
            "557ea1ac-2173-4579-9787-a2e14c2bbd7.local",
            "557ea1ac-2173-4579-9787-a2e14c2bbd733.local",
            "557ea1ac-2173-4579-9787-a2e14c2bbd73\n.local",
            "é57ea1ac-2173-4579-9787-a2e14c2bbd73.local",
        ] {
            assert!(!is_browser_name(bad), "{bad:?}");
        }
        assert!(!is_browser_name(&format!("{}.local", "a".repeat(1000))));
    }

    #[test]
    fn the_address_is_substituted_and_the_rest_of_the_line_kept() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let line = format!(
            "candidate:3344676764 1 udp 2113937151 {NAME} 58601 typ host generation 0 \
             ufrag wFX8 network-cost 999"
        );
        assert_eq!(
            with_address(&line, ip).unwrap(),
            "candidate:3344676764 1 udp 2113937151 192.0.2.7 58601 typ host generation 0 \
             ufrag wFX8 network-cost 999"
        );
        // The SDP form and odd spacing survive as they were.
        let sdp = format!("a=candidate:1  1 UDP 2 {NAME}\t9 typ host tcptype active");
        assert_eq!(
            with_address(&sdp, "2001:db8::5".parse().unwrap()).unwrap(),
            "a=candidate:1  1 UDP 2 2001:db8::5\t9 typ host tcptype active"
        );
        assert_eq!(with_address("candidate:1 1 udp 2", ip), None);
        assert_eq!(
            with_address(&format!("candidate:1 1 udp 2 {NAME}"), ip),
            None
        );
    }

    #[test]
    fn lookups_are_capped_shared_per_name_and_expire() {
        let t0 = Instant::now();
        let mut lookups = Lookups::default();
        assert_eq!(lookups.hold(NAME, candidate("a"), t0), Ok(true));
        // The same name (Chromium's UDP and TCP candidates share one) waits for the same query.
        assert_eq!(
            lookups.hold(&NAME.to_uppercase(), candidate("b"), t0),
            Ok(false)
        );
        for i in 1..MAX_LOOKUPS_PER_CALL {
            let name = format!("{i:08x}-2173-4579-9787-a2e14c2bbd73.local");
            assert_eq!(lookups.hold(&name, candidate("c"), t0), Ok(true));
        }
        let one_more = "ffffffff-2173-4579-9787-a2e14c2bbd73.local";
        assert_eq!(
            lookups.hold(one_more, candidate("d"), t0),
            Err(HoldRefused::TooMany)
        );
        assert_eq!(lookups.deadline(), Some(t0 + LOOKUP_TIMEOUT));
        let waiting = lookups.take(NAME);
        assert_eq!(waiting.len(), 2);
        assert!(lookups.take(NAME).is_empty(), "answered once");
        // A freed place takes a new name.
        assert_eq!(lookups.hold(one_more, candidate("d"), t0), Ok(true));
        assert_eq!(lookups.expire(t0 + LOOKUP_TIMEOUT / 2), 0);
        assert_eq!(lookups.expire(t0 + LOOKUP_TIMEOUT), MAX_LOOKUPS_PER_CALL);
        assert!(lookups.is_empty());
        assert_eq!(lookups.deadline(), None);
    }
}
