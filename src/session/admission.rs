//! Who may start a call, shared by every session of the daemon: the viewer limit
//! (`[limits] max_viewers`), the dials still connecting (`max_pending_dials`, and
//! `pending_dials_per_address` of them from one address) and the dials per minute from one
//! address (`dials_per_minute`). Sans-IO: the time is an argument.
//!
//! A session asks [`Admission::admit`] when an offer arrives and keeps the [`Ticket`] for as
//! long as the call lasts; the ticket holds one viewer slot, and one dial slot until
//! [`Ticket::connected`]. Dropping the ticket frees what it holds, so a call that ends in any
//! way gives its slots back.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::limits::{address_key, AddressCounts, RateLimiter};
use crate::session::protocol::{ErrorBody, ErrorCode};

/// The limits behind [`Admission`] (from `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Viewers in a call at once.
    pub max_viewers: usize,
    /// Calls that are still connecting (ICE/DTLS) at once.
    pub max_pending_dials: usize,
    /// Of those, calls from one IP address.
    pub pending_dials_per_address: usize,
    /// Dials a minute from one IP address.
    pub dials_per_minute: u32,
}

/// The shared counts of calls and dials.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    dial_rate: RateLimiter,
    counts: Mutex<Counts>,
    /// Viewers in a call, for whoever tells the pages ([`Admission::watch_viewers`]). A
    /// watch keeps only the latest number: nothing queues up, and a change never waits for
    /// a reader.
    viewers: tokio::sync::watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct Counts {
    in_call: usize,
    dialing: usize,
    /// Dials connecting per address (at most `max_pending_dials` entries).
    dialing_from: AddressCounts,
}

/// Why a dial was refused. Each names the limit, so the browser's error and the log say
/// which key to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over `dials_per_minute` from this address; the next dial is allowed after `wait`.
    DialRate {
        /// The refused address.
        ip: IpAddr,
        /// `[limits] dials_per_minute`.
        per_minute: u32,
        /// Until a dial is allowed again.
        wait: Duration,
    },
    /// `max_viewers` are in a call.
    Viewers {
        /// `[limits] max_viewers`.
        max: usize,
    },
    /// `max_pending_dials` calls are connecting.
    PendingDials {
        /// `[limits] max_pending_dials`.
        max: usize,
    },
    /// `pending_dials_per_address` calls from this address are connecting.
    PendingDialsFrom {
        /// The refused address.
        ip: IpAddr,
        /// `[limits] pending_dials_per_address`.
        max: usize,
    },
}

/// How long a dial refused for the dials still connecting is told to wait: a call on a LAN
/// connects (and frees its dial slot) well within it.
pub const DIAL_RETRY: Duration = Duration::from_secs(1);

fn millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
}

impl Refusal {
    /// The error the browser gets; a refusal that passes by itself says when to dial again
    /// (`retry_after_ms`).
    pub fn error_body(&self) -> ErrorBody {
        match self {
            Refusal::DialRate {
                ip,
                per_minute,
                wait,
            } => ErrorBody {
                code: ErrorCode::RateLimited,
                message: format!(
                    "too many dials from {ip} (limit {per_minute} a minute); try again in {} s",
                    wait.as_secs() + 1
                ),
                retry_after_ms: Some(millis(*wait)),
            },
            Refusal::Viewers { max } => ErrorBody {
                code: ErrorCode::ViewerLimit,
                message: format!("viewer limit {max} reached; try again when someone hangs up"),
                retry_after_ms: None,
            },
            Refusal::PendingDials { max } => ErrorBody {
                code: ErrorCode::DialLimit,
                message: format!(
                    "{max} other dials are connecting right now; try again in a moment"
                ),
                retry_after_ms: Some(millis(DIAL_RETRY)),
            },
            Refusal::PendingDialsFrom { ip, max } => ErrorBody {
                code: ErrorCode::DialLimit,
                message: format!(
                    "{max} dials from {ip} are connecting right now; try again in a moment"
                ),
                retry_after_ms: Some(millis(DIAL_RETRY)),
            },
        }
    }
}

impl Admission {
    /// Counts for `limits`, with nobody in a call.
    pub fn new(limits: AdmissionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            dial_rate: RateLimiter::new(limits.dials_per_minute),
            counts: Mutex::new(Counts::default()),
            viewers: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The number of viewers in a call, changing as calls start and end; the current number
    /// counts as seen.
    pub fn watch_viewers(&self) -> tokio::sync::watch::Receiver<usize> {
        self.viewers.subscribe()
    }

    /// The limits this admits by.
    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Admits a dial from `ip` at `now`, or says which limit refuses it. The rate is checked
    /// (and a token taken) first, as a flood from one address must not look like a full house.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Ticket, Refusal> {
        if let Err(wait) = self.dial_rate.take(ip, now) {
            return Err(Refusal::DialRate {
                ip,
                per_minute: self.limits.dials_per_minute,
                wait,
            });
        }
        let mut counts = self.lock();
        if counts.in_call >= self.limits.max_viewers {
            return Err(Refusal::Viewers {
                max: self.limits.max_viewers,
            });
        }
        if counts.dialing >= self.limits.max_pending_dials {
            return Err(Refusal::PendingDials {
                max: self.limits.max_pending_dials,
            });
        }
        // One home or LAN behind an IPv6 /64 counts as one address.
        let key = address_key(ip);
        let from = counts.dialing_from.get(key);
        if from >= self.limits.pending_dials_per_address {
            return Err(Refusal::PendingDialsFrom {
                ip,
                max: self.limits.pending_dials_per_address,
            });
        }
        counts.in_call += 1;
        // Under the lock, so the numbers sent follow the counts' own order.
        self.viewers.send_replace(counts.in_call);
        counts.dialing += 1;
        counts.dialing_from.add(key);
        Ok(Ticket {
            admission: Arc::clone(self),
            key,
            dialing: true,
        })
    }

    /// Viewers in a call now (connecting or connected).
    pub fn viewers_in_call(&self) -> usize {
        self.lock().in_call
    }

    /// Calls still connecting now.
    pub fn pending_dials(&self) -> usize {
        self.lock().dialing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Two counters updated together: a panic elsewhere cannot leave them half-written.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One admitted call's slots; dropping it frees them.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    /// The address (or IPv6 /64) the dial counts against.
    key: IpAddr,
    dialing: bool,
}

impl Ticket {
    /// The call connected: its dial slot is free for the next dial.
    pub fn connected(&mut self) {
        if std::mem::take(&mut self.dialing) {
            self.admission.lock().dial_done(self.key);
        }
    }
}

impl Counts {
    fn dial_done(&mut self, key: IpAddr) {
        self.dialing = self.dialing.saturating_sub(1);
        self.dialing_from.remove(key);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.in_call = counts.in_call.saturating_sub(1);
        self.admission.viewers.send_replace(counts.in_call);
        if self.dialing {
            counts.dial_done(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn admission(max_viewers: usize, max_pending_dials: usize, per_minute: u32) -> Arc<Admission> {
        Admission::new(AdmissionLimits {
            max_viewers,
            max_pending_dials,
            pending_dials_per_address: max_pending_dials,
            dials_per_minute: per_minute,
        })
    }

    #[test]
    fn one_address_cannot_hold_every_dial_slot() {
        let a = Admission::new(AdmissionLimits {
            max_viewers: 8,
            max_pending_dials: 4,
            pending_dials_per_address: 2,
            dials_per_minute: 100,
        });
        let now = Instant::now();
        let first = a.admit(A, now).expect("1");
        let mut second = a.admit(A, now).expect("2");
        let refusal = a.admit(A, now).unwrap_err();
        assert_eq!(refusal, Refusal::PendingDialsFrom { ip: A, max: 2 });
        assert_eq!(refusal.error_body().code, ErrorCode::DialLimit);
        assert!(refusal.error_body().message.contains("192.0.2.1"));
        // Another address still dials.
        let _b = a.admit(B, now).expect("B");
        // A connected or ended dial makes room for its address again.
        second.connected();
        let third = a.admit(A, now).expect("after a connect");
        drop(first);
        drop(third);
        assert!(a.admit(A, now).is_ok());
        assert!(
            a.lock().dialing_from.len() <= 2,
            "entries go when their count is zero"
        );
    }

    #[test]
    fn tickets_hold_slots_until_dropped() {
        let a = admission(2, 1, 100);
        let now = Instant::now();
        let mut first = a.admit(A, now).expect("first dial");
        assert_eq!((a.viewers_in_call(), a.pending_dials()), (1, 1));
        // One dial may connect at a time.
        assert_eq!(
            a.admit(B, now).unwrap_err(),
            Refusal::PendingDials { max: 1 }
        );
        first.connected();
        first.connected(); // twice is harmless
        assert_eq!((a.viewers_in_call(), a.pending_dials()), (1, 0));
        let second = a.admit(B, now).expect("second dial");
        assert_eq!(a.admit(B, now).unwrap_err(), Refusal::Viewers { max: 2 });
        drop(second);
        assert_eq!((a.viewers_in_call(), a.pending_dials()), (1, 0));
        drop(first);
        assert_eq!((a.viewers_in_call(), a.pending_dials()), (0, 0));
    }

    #[test]
    fn the_rate_is_per_address_and_refills() {
        let a = admission(100, 100, 2);
        let t0 = Instant::now();
        let _first = a.admit(A, t0).expect("1");
        let _second = a.admit(A, t0).expect("2");
        let refusal = a.admit(A, t0).unwrap_err();
        assert!(matches!(refusal, Refusal::DialRate { per_minute: 2, .. }));
        let body = refusal.error_body();
        assert_eq!(body.code, ErrorCode::RateLimited);
        assert!(body.message.contains("192.0.2.1"), "{}", body.message);
        // The wait the browser is told is the limiter's own: a token refills in 30 s.
        let Refusal::DialRate { wait, .. } = refusal else {
            unreachable!()
        };
        assert_eq!(body.retry_after_ms, Some(millis(wait)));
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(a.admit(B, t0).is_ok(), "another address has its own budget");
        assert!(a.admit(A, t0 + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn refusals_name_their_limit() {
        assert_eq!(
            Refusal::Viewers { max: 4 }.error_body().code,
            ErrorCode::ViewerLimit
        );
        assert!(Refusal::PendingDials { max: 3 }
            .error_body()
            .message
            .starts_with("3 other dials"));
        // Waiting cures a full dial queue, not a full house.
        let ip = A;
        for refusal in [
            Refusal::PendingDials { max: 3 },
            Refusal::PendingDialsFrom { ip, max: 1 },
        ] {
            assert_eq!(refusal.error_body().retry_after_ms, Some(1000));
        }
        assert_eq!(
            Refusal::Viewers { max: 4 }.error_body().retry_after_ms,
            None
        );
    }

    #[test]
    fn the_viewer_count_is_watched() {
        let a = admission(2, 2, 100);
        let now = Instant::now();
        let mut watch = a.watch_viewers();
        assert!(
            !watch.has_changed().expect("open"),
            "the current count is seen"
        );
        let first = a.admit(A, now).expect("1");
        let second = a.admit(B, now).expect("2");
        // Two changes, one value to read: the latest.
        assert!(watch.has_changed().expect("open"));
        assert_eq!(*watch.borrow_and_update(), 2);
        // A refused dial changes nothing.
        assert!(a.admit(A, now).is_err());
        assert!(!watch.has_changed().expect("open"));
        drop(first);
        assert_eq!(*watch.borrow_and_update(), 1);
        drop(second);
        assert!(watch.has_changed().expect("open"));
        assert_eq!(*watch.borrow_and_update(), 0);
    }
}
