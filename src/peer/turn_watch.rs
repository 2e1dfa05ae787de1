//! Whether TURN servers accept peercam's credentials, said once per episode. webrtc-rs logs
//! a failed allocation per call, without the server's verdict in words a user can act on;
//! this watches the TURN traffic of each call's own socket ([`super::ice_mux`]) instead.
//!
//! The first Allocate of a TURN client carries no credentials and is answered 401 (the
//! challenge that names the realm and nonce); only a 401 (or 431/441) to an Allocate that
//! carried a USERNAME means the server refused them. Then one warning names the server and
//! the keys to check, and `peercam_turn_refused_total` counts every refusal; the next
//! allocation the server accepts ends the episode with one line.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::ice_mux::{Stun, StunClass};

/// The STUN/TURN Allocate method.
const ALLOCATE: u16 = 0x003;
/// Allocate requests with credentials remembered per call socket (a client retries a
/// handful of times; older ones have long been answered).
const PENDING: usize = 8;
/// TURN servers whose verdict is remembered (a config names a few).
const MAX_SERVERS: usize = 32;

/// Refused allocations since the start, for `/metrics`.
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Per TURN server address: `true` while it refuses peercam's credentials.
static SERVERS: Mutex<Option<HashMap<SocketAddr, bool>>> = Mutex::new(None);

/// One call socket's Allocate requests that carried credentials.
#[derive(Debug, Default)]
pub(super) struct TurnWatch {
    pending: Mutex<VecDeque<[u8; 12]>>,
}

impl TurnWatch {
    /// A TURN message the call sends to a server.
    pub(super) fn sent(&self, data: &[u8]) {
        let Some(stun) = Stun::parse(data) else {
            return;
        };
        if stun.class == StunClass::Request && stun.method == ALLOCATE && stun.username.is_some() {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.len() == PENDING {
                pending.pop_front();
            }
            pending.push_back(stun.transaction);
        }
    }

    /// A datagram the call's own socket received from `from`.
    pub(super) fn received(&self, data: &[u8], from: SocketAddr) {
        let Some(stun) = Stun::parse(data) else {
            return;
        };
        if stun.method != ALLOCATE {
            return;
        }
        let answered = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let found = pending.iter().position(|t| *t == stun.transaction);
            found.map(|i| pending.remove(i)).is_some()
        };
        if !answered {
            return;
        }
        match (stun.class, stun.error_code) {
            (StunClass::Error, Some(code @ (401 | 431 | 441))) => refused(from, code),
            (StunClass::Success, _) => accepted(from),
            _ => {}
        }
    }
}

fn refused(server: SocketAddr, code: u16) {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    if set_refused(server, true) {
        let reason = match code {
            401 => "401 Unauthorized",
            431 => "431 Integrity Check Failure",
            _ => "441 Wrong Credentials",
        };
        log::warn!(
            "TURN server {server} refused peercam's credentials ({reason}): check username \
             and credential, or secret (coturn's static-auth-secret), in [webrtc] \
             ice_servers; calls that need a relay cannot connect until it accepts them"
        );
    }
}

fn accepted(server: SocketAddr) {
    if set_refused(server, false) {
        log::info!("TURN server {server} accepts peercam's credentials again");
    }
}

/// Records the server's verdict; whether it changed (a new episode).
fn set_refused(server: SocketAddr, refuses: bool) -> bool {
    let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let servers = servers.get_or_insert_with(HashMap::new);
    let before = servers.get(&server).copied().unwrap_or(false);
    if !servers.contains_key(&server) && servers.len() >= MAX_SERVERS {
        // A bound for the table, not a real case: forget the verdicts, keep watching.
        servers.clear();
    }
    servers.insert(server, refuses);
    before != refuses
}

/// `/metrics` lines.
pub fn metrics_text() -> String {
    format!(
        "# Allocations TURN servers refused for peercam's credentials.\n\
         peercam_turn_refused_total {}\n",
        REFUSED.load(Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::super::ice_mux::tests::stun_with as message;
    use super::*;

    const ALLOCATE_REQUEST: u16 = 0x0003;
    const ALLOCATE_ERROR: u16 = 0x0113;
    const ALLOCATE_SUCCESS: u16 = 0x0103;

    fn verdict(server: SocketAddr) -> Option<bool> {
        SERVERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|s| s.get(&server).copied())
    }

    #[test]
    fn the_challenge_is_not_a_refusal_but_a_401_to_credentials_is() {
        let server: SocketAddr = "192.0.2.7:3478".parse().expect("addr");
        let watch = TurnWatch::default();
        // The challenge: an Allocate without credentials, answered 401.
        watch.sent(&message(ALLOCATE_REQUEST, 1, None, None));
        watch.received(&message(ALLOCATE_ERROR, 1, None, Some(401)), server);
        assert_eq!(verdict(server), None);
        // With credentials, refused: one episode, counted.
        let before = REFUSED.load(Ordering::Relaxed);
        watch.sent(&message(ALLOCATE_REQUEST, 2, Some("viewer"), None));
        watch.received(&message(ALLOCATE_ERROR, 2, None, Some(401)), server);
        assert_eq!(verdict(server), Some(true));
        assert!(REFUSED.load(Ordering::Relaxed) > before);
        assert!(!set_refused(server, true), "the same episode goes on");
        // An answer to a transaction nobody sent is ignored.
        watch.received(&message(ALLOCATE_SUCCESS, 9, None, None), server);
        assert_eq!(verdict(server), Some(true));
        // Accepted again: the episode ends.
        watch.sent(&message(ALLOCATE_REQUEST, 3, Some("viewer"), None));
        watch.received(&message(ALLOCATE_SUCCESS, 3, None, None), server);
        assert_eq!(verdict(server), Some(false));
    }

    #[test]
    fn error_codes_are_read_from_error_responses() {
        let m = message(ALLOCATE_ERROR, 4, Some("u"), Some(441));
        let stun = Stun::parse(&m).expect("stun");
        assert_eq!(
            (stun.class, stun.method, stun.error_code),
            (StunClass::Error, ALLOCATE, Some(441))
        );
        assert_eq!(stun.username, Some("u"));
    }
}
