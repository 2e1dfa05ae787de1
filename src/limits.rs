//! Per-address rate limits (an IPv4 address, an IPv6 /64) and throttled "limit hit" log
//! lines, shared by every transport (HTTP login, signaling) and the session core's admission
//! of calls.
//!
//! A flood must cost the daemon nothing but a counter: the rate limiter's table is bounded,
//! and a limit that is hit a thousand times a second writes one log line every few seconds.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most; past this, full buckets (addresses that are under their limit
/// anyway) are forgotten first, then the least recently seen [`EVICTED_AT_ONCE`].
const MAX_TRACKED_ADDRESSES: usize = 4096;

/// Buckets forgotten at once when the table is full of addresses that used tokens: the
/// least recently seen eighth, so that a flood of new addresses sorts the table once per
/// 512 of them, not once each.
const EVICTED_AT_ONCE: usize = MAX_TRACKED_ADDRESSES / 8;

/// A token bucket per client: `per_minute` events, refilled evenly over a minute, with a
/// burst of `per_minute`. A client is an IPv4 address or an IPv6 /64 (see [`address_key`]).
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The bucket `addr` counts against: an IPv4 address is its own; an IPv6 address shares one
/// with its /64, the smallest network a host is given (one host may use all 2^64 addresses
/// of it); an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, a dual-stack socket) is that
/// IPv4 address.
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` events per minute from each address (at least 1).
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `addr` (its /64, for IPv6) if there is one. `Err` says how long
    /// until the next one.
    pub fn take(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let addr = address_key(addr);
        let mut buckets = self.lock();
        let capacity = f64::from(self.per_minute);
        if buckets.len() >= MAX_TRACKED_ADDRESSES && !buckets.contains_key(&addr) {
            let per_minute = self.per_minute;
            buckets.retain(|_, b| refilled(*b, now, per_minute) < capacity);
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                evict_least_recent(&mut buckets);
            }
        }
        let bucket = buckets.entry(addr).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens = refilled(*bucket, now, self.per_minute);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let seconds_per_token = 60.0 / capacity;
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) * seconds_per_token,
            ))
        }
    }

    /// Whether `addr` (its /64, for IPv6) has no token left now (without taking one). An
    /// address asked about counts as seen now: one that is refused and keeps trying is the
    /// last to be forgotten when the table is full.
    pub fn exhausted(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let mut buckets = self.lock();
        let bucket = buckets.get_mut(&address_key(addr))?;
        // Refilling is linear, so storing the refilled count at `now` changes nothing but
        // the time last seen.
        bucket.tokens = refilled(*bucket, now, self.per_minute);
        bucket.updated = now;
        let tokens = bucket.tokens;
        (tokens < 1.0)
            .then(|| Duration::from_secs_f64((1.0 - tokens) * 60.0 / f64::from(self.per_minute)))
    }

    /// Addresses tracked now (for tests).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Forgets the [`EVICTED_AT_ONCE`] buckets updated longest ago. An address that is over its
/// limit and keeps trying stays limited however many new addresses arrive.
fn evict_least_recent(buckets: &mut HashMap<IpAddr, Bucket>) {
    let mut by_age: Vec<(Instant, IpAddr)> =
        buckets.iter().map(|(addr, b)| (b.updated, *addr)).collect();
    let n = EVICTED_AT_ONCE.min(by_age.len());
    if n == 0 {
        return;
    }
    by_age.select_nth_unstable(n - 1);
    for (_, addr) in &by_age[..n] {
        buckets.remove(addr);
    }
}

/// Tokens in `b` at `now`.
fn refilled(b: Bucket, now: Instant, per_minute: u32) -> f64 {
    let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
    let capacity = f64::from(per_minute);
    (b.tokens + elapsed * capacity / 60.0).min(capacity)
}

/// How many things (connections, dials) are open per address key ([`address_key`]). An
/// entry exists only while its count is above zero, so the map is bounded by whatever caps
/// the things themselves.
#[derive(Debug, Default)]
pub struct AddressCounts(HashMap<IpAddr, usize>);

impl AddressCounts {
    /// How many are open under `key`.
    pub fn get(&self, key: IpAddr) -> usize {
        self.0.get(&key).copied().unwrap_or(0)
    }

    /// One more under `key`.
    pub fn add(&mut self, key: IpAddr) {
        *self.0.entry(key).or_insert(0) += 1;
    }

    /// One fewer under `key` (the entry goes at zero).
    pub fn remove(&mut self, key: IpAddr) {
        if let Some(n) = self.0.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&key);
            }
        }
    }

    /// Keys with something open.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is open.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How often a limit that keeps being hit is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A warning for one limit, logged at most every [`LOG_EVERY`] with the number of hits in
/// between; every hit is counted (see `/metrics`).
#[derive(Debug)]
pub struct LimitLog {
    /// The config key, e.g. `[limits] max_connections`; named in every line.
    key: &'static str,
    hits: AtomicU64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl LimitLog {
    /// A log for the limit set by `key`.
    pub const fn new(key: &'static str) -> Self {
        LimitLog {
            key,
            hits: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Counts a hit and logs `what` (with the key, and the hits since the last line) unless
    /// a line was written less than [`LOG_EVERY`] ago.
    pub fn hit(&self, what: impl FnOnce() -> String) {
        let hits = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let since = match *last {
            Some((at, _)) if now.duration_since(at) < LOG_EVERY => return,
            Some((_, logged_at)) => hits - logged_at - 1,
            None => 0,
        };
        *last = Some((now, hits));
        drop(last);
        let more = if since > 0 {
            format!(" ({since} more since the last report)")
        } else {
            String::new()
        };
        log::warn!("{} ({}){more}", what(), self.key);
    }

    /// Times this limit was hit since the start.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The config key.
    pub fn key(&self) -> &'static str {
        self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_burst_of_the_rate_then_one_per_interval() {
        let limiter = RateLimiter::new(6); // one every 10 s
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(limiter.take(A, t0).is_ok());
        }
        let wait = limiter.take(A, t0).expect_err("seventh at once is refused");
        assert!((9.9..=10.1).contains(&wait.as_secs_f64()), "{wait:?}");
        // Another address has its own bucket.
        assert!(limiter.take(B, t0).is_ok());
        assert!(limiter.take(A, t0 + Duration::from_secs(5)).is_err());
        assert!(limiter.take(A, t0 + Duration::from_secs(10)).is_ok());
        assert!(limiter.take(A, t0 + Duration::from_secs(10)).is_err());
        assert!(limiter.exhausted(A, t0 + Duration::from_secs(11)).is_some());
        assert!(limiter.exhausted(A, t0 + Duration::from_secs(20)).is_none());
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_addresses() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 * 3) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.take(addr, t0);
        }
        assert!(limiter.tracked() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn a_limited_address_stays_limited_while_new_addresses_flood_in() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        assert!(limiter.take(A, t0).is_ok());
        // Three tables' worth of new addresses, each using its token (so none is "full" and
        // free to forget), while A keeps trying now and then.
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 * 3) {
            let now = t0 + Duration::from_micros(u64::from(i));
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limiter.take(addr, now).is_ok(), "a new address has a token");
            // A is refused as the daemon refuses it: asked, not charged.
            if i % 256 == 0 {
                assert!(
                    limiter.exhausted(A, now).is_some(),
                    "A forgotten after {i} addresses"
                );
            }
            assert!(limiter.tracked() <= MAX_TRACKED_ADDRESSES);
        }
        let now = t0 + Duration::from_millis(20);
        assert!(limiter.exhausted(A, now).is_some());
        // The newest addresses are still tracked, the oldest were forgotten.
        let last = IpAddr::V4(std::net::Ipv4Addr::from(
            0x0a00_0000 + MAX_TRACKED_ADDRESSES as u32 * 3 - 1,
        ));
        assert!(limiter.exhausted(last, now).is_some());
        let first = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0001));
        assert!(limiter.exhausted(first, now).is_none());
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        // Two addresses of one /64 share a bucket.
        assert!(limiter.take(ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(limiter
            .take(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"), t0)
            .is_ok());
        assert!(limiter.take(ip("2001:db8:1:2::3"), t0).is_err());
        assert!(limiter.exhausted(ip("2001:db8:1:2::77"), t0).is_some());
        // The next /64 has its own.
        assert!(limiter.take(ip("2001:db8:1:3::1"), t0).is_ok());
        assert!(limiter.exhausted(ip("2001:db8:1:3::1"), t0).is_none());
        assert_eq!(limiter.tracked(), 2);
        // IPv4 stays per address; an IPv4-mapped IPv6 address is that IPv4 address.
        assert!(limiter.take(A, t0).is_ok());
        assert!(limiter.take(ip("::ffff:192.0.2.1"), t0).is_ok());
        assert!(limiter.take(A, t0).is_err());
        assert!(limiter.take(B, t0).is_ok());
        assert_eq!(limiter.tracked(), 4);
        assert_eq!(
            address_key(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), A);
        assert_eq!(address_key(A), A);
        assert_eq!(address_key(ip("::1")), ip("::"));
    }

    #[test]
    fn limit_log_counts_every_hit() {
        let log = LimitLog::new("[limits] test");
        for _ in 0..100 {
            log.hit(|| "hit".to_owned());
        }
        assert_eq!(log.hits(), 100);
        assert_eq!(log.key(), "[limits] test");
    }
}
