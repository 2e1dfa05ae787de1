//! Who may hold a TCP connection, so that nobody can lock the viewers out by opening
//! connections and never finishing them:
//! - at most `[limits] connections_per_address` from one IP address (an IPv6 /64 counts as
//!   one), whatever they carry: page loads, logins, TLS handshakes, WebSockets (an upgraded
//!   socket keeps its connection's slot);
//! - at most `2 * max_connections + 16` in all;
//! - of those, at most `max_connections` that have not yet sent a complete request header
//!   (TLS handshakes, slow headers), so connections that did always find room.
//!
//! Each request then has a deadline for its whole life, body included ([`REQUEST_DEADLINE`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::{address_key, AddressCounts, LimitLog};

/// A request must be read, handled and answered within this (a WebSocket's life after its
/// upgrade is not a request).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Connections closed by the per-address cap.
static PER_ADDRESS: LimitLog = LimitLog::new("[limits] connections_per_address");
/// Connections closed by the total cap.
static TOTAL: LimitLog = LimitLog::new("[limits] max_connections");
/// Connections closed because too many others had not sent a request yet.
static UNPROVEN: LimitLog = LimitLog::new("[limits] max_connections (handshakes)");
/// Requests cut by [`REQUEST_DEADLINE`].
static DEADLINE: LimitLog = LimitLog::new("request deadline (10 s)");

/// How often each connection limit was hit, for `/metrics`.
pub fn limit_hits() -> [(&'static str, u64); 4] {
    [
        ("tcp_connections", TOTAL.hits()),
        ("connections_per_address", PER_ADDRESS.hits()),
        ("handshakes", UNPROVEN.hits()),
        ("request_deadline", DEADLINE.hits()),
    ]
}

/// Counts a request cut by [`REQUEST_DEADLINE`].
pub fn deadline_hit(remote: std::net::SocketAddr) {
    DEADLINE.hit(|| format!("{remote}: request not finished within {REQUEST_DEADLINE:?}"));
}

/// The connection caps.
#[derive(Debug)]
pub struct Connections {
    per_address: usize,
    total: usize,
    total_slots: Arc<Semaphore>,
    unproven_slots: Arc<Semaphore>,
    counts: Mutex<AddressCounts>,
}

/// One admitted connection: its place in the total and per-address counts, and, until its
/// first request header arrives, in the unproven count. Dropping it frees them.
#[derive(Debug)]
pub struct Connection {
    connections: Arc<Connections>,
    key: IpAddr,
    _total: OwnedSemaphorePermit,
    unproven: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Connections {
    /// Caps: `per_address` from one address, `total` in all, `unproven` before a request.
    pub fn new(per_address: usize, total: usize, unproven: usize) -> Arc<Connections> {
        Arc::new(Connections {
            per_address,
            total,
            total_slots: Arc::new(Semaphore::new(total)),
            unproven_slots: Arc::new(Semaphore::new(unproven)),
            counts: Mutex::new(AddressCounts::default()),
        })
    }

    /// Admits a connection from `ip`, or logs (throttled) which cap refused it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Connection>> {
        let key = address_key(ip);
        let mut counts = self.lock();
        let count = counts.get(key);
        if count >= self.per_address {
            let max = self.per_address;
            PER_ADDRESS.hit(|| format!("closing a connection from {ip}: {max} open from it"));
            return None;
        }
        let Ok(total) = self.total_slots.clone().try_acquire_owned() else {
            let max = self.total;
            TOTAL.hit(|| format!("closing a connection from {ip}: {max} TCP connections open"));
            return None;
        };
        let Ok(unproven) = self.unproven_slots.clone().try_acquire_owned() else {
            UNPROVEN.hit(|| {
                format!("closing a connection from {ip}: too many connections have sent no request")
            });
            return None;
        };
        counts.add(key);
        Some(Arc::new(Connection {
            connections: Arc::clone(self),
            key,
            _total: total,
            unproven: Mutex::new(Some(unproven)),
        }))
    }

    /// Connections open from `ip`'s address (or /64).
    pub fn from_address(&self, ip: IpAddr) -> usize {
        self.lock().get(address_key(ip))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AddressCounts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Connection {
    /// A complete request header arrived: the connection no longer counts as unproven.
    pub fn proven(&self) {
        self.unproven
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.connections.lock().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn one_address_holds_at_most_its_share() {
        let c = Connections::new(2, 10, 10);
        let first = c.admit(A).expect("1");
        let _second = c.admit(A).expect("2");
        assert!(c.admit(A).is_none(), "third from A");
        assert!(c.admit(B).is_some(), "B has its own share");
        drop(first);
        assert_eq!(c.from_address(A), 1);
        assert!(c.admit(A).is_some(), "a closed connection makes room");
    }

    #[test]
    fn unproven_connections_cannot_take_every_slot() {
        let c = Connections::new(100, 4, 2);
        let handshaking: Vec<_> = (0..2).map(|_| c.admit(A).expect("unproven")).collect();
        assert!(
            c.admit(B).is_none(),
            "two are already waiting for a request"
        );
        handshaking[0].proven();
        let b = c.admit(B).expect("a slot for B");
        b.proven();
        // Two proven, one unproven, one unproven slot left: the total is the limit now.
        let _d = c.admit(B).expect("last");
        assert!(c.admit(B).is_none(), "total reached");
        assert!(c.lock().len() <= 2);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(address_key(one), address_key(other));
        assert_ne!(address_key(one), address_key(elsewhere));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("mapped");
        assert_eq!(address_key(mapped), A);
        let c = Connections::new(1, 10, 10);
        let _held = c.admit(one).expect("first of the /64");
        assert!(c.admit(other).is_none(), "same /64");
        assert!(c.admit(elsewhere).is_some());
    }
}
