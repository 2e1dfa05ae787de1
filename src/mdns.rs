//! Resolving browsers' `<uuid>.local` ICE candidates, the IO half (the session decides what
//! to ask: `session::mdns`). Query only: peercam sends A questions and reads answers; it
//! never answers a question or announces a name of its own (webrtc-rs's own mDNS stays
//! disabled, `peer/mod.rs`).
//!
//! A query goes to 224.0.0.251:5353 on each IPv4 interface (`[webrtc] ip_addresses`, else
//! every non-loopback address) from an ephemeral port, which gets unicast replies (RFC 6762
//! §5.1 one-shot queries). Chromium's responder answers by multicast to port 5353 even then
//! (seen with Chromium 156), so a second socket bound to 5353 (shared: `SO_REUSEPORT`, as
//! avahi binds it) joins the group for the query's lifetime and reads those too. Only a
//! response with an A (or a non-link-local AAAA) record for exactly the asked name counts.
//!
//! Bounds: [`QUERY_TIMEOUT`] per query, retried once; at most [`MAX_QUERIES`] under way in
//! the whole daemon (a call has at most `session::mdns::MAX_LOOKUPS_PER_CALL`); answers
//! cached for their TTL, at most [`CACHE_TTL`] and [`CACHE_ENTRIES`] names.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, TYPE};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// How long one query waits for its answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Queries per name: the first and one retry (multicast is lossy on Wi-Fi).
pub const ATTEMPTS: usize = 2;
/// Queries under way in the whole daemon; more fail at once.
pub const MAX_QUERIES: usize = 16;
/// Names remembered.
pub const CACHE_ENTRIES: usize = 64;
/// Longest an answer is remembered, whatever its TTL.
pub const CACHE_TTL: Duration = Duration::from_secs(120);

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;

/// An address and how long it may be remembered.
pub type Answer = (IpAddr, Duration);

/// One query for a name, answered within `wait` or not at all.
#[async_trait]
pub trait Query: Send + Sync {
    /// Asks once for `name`'s address.
    async fn query(&self, name: &str, wait: Duration) -> Option<Answer>;
}

/// Resolves names through a [`Query`] within the bounds above.
pub struct Resolver {
    query: Box<dyn Query>,
    slots: Semaphore,
    cache: Mutex<HashMap<String, (IpAddr, Instant)>>,
}

impl Resolver {
    /// A resolver asking through `query`.
    pub fn new(query: Box<dyn Query>) -> Arc<Resolver> {
        Arc::new(Resolver {
            query,
            slots: Semaphore::new(MAX_QUERIES),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The multicast resolver on `interfaces` (IPv4 addresses; empty: every non-loopback
    /// one, looked up at each query).
    pub fn multicast(interfaces: Vec<IpAddr>) -> Arc<Resolver> {
        Resolver::new(Box::new(MulticastQuery { interfaces }))
    }

    /// `name`'s address, or `None` if it does not resolve within [`ATTEMPTS`] ×
    /// [`QUERY_TIMEOUT`] or too many queries are under way.
    pub async fn resolve(&self, name: &str) -> Option<IpAddr> {
        let key = name.to_ascii_lowercase();
        if let Some(ip) = self.cached(&key) {
            return Some(ip);
        }
        let Ok(_slot) = self.slots.try_acquire() else {
            log::debug!("mDNS: {MAX_QUERIES} queries under way; not asking for another");
            return None;
        };
        for _ in 0..ATTEMPTS {
            let asked = self.query.query(&key, QUERY_TIMEOUT);
            if let Ok(Some((ip, ttl))) = tokio::time::timeout(QUERY_TIMEOUT, asked).await {
                self.remember(key, ip, ttl);
                return Some(ip);
            }
        }
        None
    }

    fn cached(&self, key: &str) -> Option<IpAddr> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        cache.retain(|_, (_, until)| *until > now);
        cache.get(key).map(|(ip, _)| *ip)
    }

    fn remember(&self, key: String, ip: IpAddr, ttl: Duration) {
        let ttl = ttl.min(CACHE_TTL);
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(&key) {
            // Full: forget the entry that expires first.
            if let Some(first) = cache
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&first);
            }
        }
        cache.insert(key, (ip, Instant::now() + ttl));
    }
}

/// The A question for `name`, as sent (id 0, as RFC 6762 §18.1 asks for multicast).
pub fn question(name: &str) -> Option<Vec<u8>> {
    let mut packet = Packet::new_query(0);
    packet.questions.push(Question::new(
        Name::new(name).ok()?,
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().ok()
}

/// The address `packet` gives for `name`: a response (not a question) with an A record, or
/// an AAAA record that is not link-local (a candidate cannot carry its scope), for exactly
/// `name`. Anything else, including what does not parse, is `None`.
pub fn answer_for(packet: &[u8], name: &str) -> Option<Answer> {
    let packet = Packet::parse(packet).ok()?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    packet
        .answers
        .iter()
        .chain(&packet.additional_records)
        .filter(|r| r.name.to_string().eq_ignore_ascii_case(name))
        .find_map(|r| {
            let ip = match &r.rdata {
                RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
                RData::AAAA(a) => {
                    let v6 = Ipv6Addr::from(a.address);
                    if v6.is_unicast_link_local() {
                        return None;
                    }
                    IpAddr::V6(v6)
                }
                _ => return None,
            };
            Some((ip, Duration::from_secs(u64::from(r.ttl))))
        })
}

/// Queries by IPv4 multicast on the local links.
struct MulticastQuery {
    interfaces: Vec<IpAddr>,
}

impl MulticastQuery {
    /// The IPv4 addresses to ask from.
    fn interfaces(&self) -> Vec<Ipv4Addr> {
        let configured = self.interfaces.iter().filter_map(|ip| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(*v4),
            _ => None,
        });
        let mut found: Vec<Ipv4Addr> = if self.interfaces.is_empty() {
            rtc::shared::ifaces::ifaces()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| match i.addr?.ip() {
                    IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
                    _ => None,
                })
                .collect()
        } else {
            configured.collect()
        };
        found.sort();
        found.dedup();
        found
    }
}

/// The socket that reads answers multicast to port 5353, joined on `interfaces`; `None` if
/// the port cannot be shared (then unicast answers are all there is).
fn group_listener(interfaces: &[Ipv4Addr]) -> Option<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).ok()?;
    socket.set_reuse_address(true).ok()?;
    socket.set_reuse_port(true).ok()?;
    socket.set_nonblocking(true).ok()?;
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT);
    socket.bind(&SocketAddr::V4(any).into()).ok()?;
    let joined = interfaces
        .iter()
        .filter(|i| socket.join_multicast_v4(&MDNS_GROUP, i).is_ok())
        .count();
    if joined == 0 {
        return None;
    }
    UdpSocket::from_std(socket.into()).ok()
}

#[async_trait]
impl Query for MulticastQuery {
    async fn query(&self, name: &str, wait: Duration) -> Option<Answer> {
        use socket2::{Domain, Protocol, Socket, Type};
        let interfaces = self.interfaces();
        let packet = question(name)?;
        let sender = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).ok()?;
        sender.set_nonblocking(true).ok()?;
        // RFC 6762 §11: mDNS packets carry TTL 255.
        sender.set_multicast_ttl_v4(255).ok()?;
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
        sender.bind(&SocketAddr::V4(any).into()).ok()?;
        let listener = group_listener(&interfaces);
        let group = SocketAddr::V4(SocketAddrV4::new(MDNS_GROUP, MDNS_PORT));
        let mut sent = 0;
        for interface in &interfaces {
            // The interface is chosen here, so no multicast route is needed.
            if sender.set_multicast_if_v4(interface).is_ok()
                && sender.send_to(&packet, &group.into()).is_ok()
            {
                sent += 1;
            }
        }
        if sent == 0 {
            log::debug!("mDNS: no IPv4 interface to ask on");
            return None;
        }
        let sender = UdpSocket::from_std(sender.into()).ok()?;
        let read = async {
            let mut unicast = [0u8; 1500];
            let mut multicast = [0u8; 1500];
            loop {
                let got = tokio::select! {
                    r = sender.recv_from(&mut unicast) => r.ok().map(|(n, _)| &unicast[..n]),
                    r = async {
                        match &listener {
                            Some(l) => l.recv_from(&mut multicast).await,
                            None => std::future::pending().await,
                        }
                    } => r.ok().map(|(n, _)| &multicast[..n]),
                };
                if let Some(answer) = got.and_then(|p| answer_for(p, name)) {
                    return answer;
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const NAME: &str = "557ea1ac-2173-4579-9787-a2e14c2bbd73.local";

    /// Answers after `delay` (or never), counting the queries and the most at once.
    struct TestQuery {
        answer: Option<IpAddr>,
        delay: Duration,
        asked: Arc<AtomicUsize>,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Query for TestQuery {
        async fn query(&self, _name: &str, _wait: Duration) -> Option<Answer> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Some((self.answer?, Duration::from_secs(120)))
        }
    }

    fn resolver(
        answer: Option<IpAddr>,
        delay: Duration,
    ) -> (Arc<Resolver>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let query = TestQuery {
            answer,
            delay,
            asked: asked.clone(),
            running: Arc::new(AtomicUsize::new(0)),
            most: most.clone(),
        };
        (Resolver::new(Box::new(query)), asked, most)
    }

    // Real time (the crate's tokio has no test-util): this test takes 2 s.
    #[tokio::test]
    async fn a_name_that_does_not_answer_is_asked_twice_then_given_up() {
        let (resolver, asked, _) = resolver(None, Duration::from_secs(3600));
        let t0 = Instant::now();
        assert_eq!(resolver.resolve(NAME).await, None);
        let took = t0.elapsed();
        let deadline = QUERY_TIMEOUT * ATTEMPTS as u32;
        assert!(
            took >= deadline && took < deadline + Duration::from_millis(500),
            "{took:?}"
        );
        assert_eq!(asked.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn answers_are_cached_and_queries_capped_in_total() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let (resolver, asked, most) = resolver(Some(ip), Duration::from_millis(100));
        assert_eq!(resolver.resolve(NAME).await, Some(ip));
        assert_eq!(resolver.resolve(&NAME.to_uppercase()).await, Some(ip));
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "the second came from the cache"
        );
        // Many names at once: MAX_QUERIES are asked, the rest fail at once.
        let names: Vec<String> = (0..MAX_QUERIES + 5)
            .map(|i| format!("{i:08x}-2173-4579-9787-a2e14c2bbd73.local"))
            .collect();
        let results =
            futures_util::future::join_all(names.iter().map(|n| resolver.resolve(n))).await;
        assert_eq!(results.iter().filter(|r| r.is_some()).count(), MAX_QUERIES);
        assert_eq!(most.load(Ordering::SeqCst), MAX_QUERIES);
        // The cache holds at most CACHE_ENTRIES names and forgets them after their TTL.
        assert!(resolver.cache.lock().unwrap().len() <= CACHE_ENTRIES);
        // An answer is remembered no longer than its TTL, and not at all with TTL 0.
        let short = "0badc0de-2173-4579-9787-a2e14c2bbd73.local";
        resolver.remember(short.to_owned(), ip, Duration::from_millis(20));
        assert_eq!(resolver.cached(short), Some(ip));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(resolver.cached(short), None);
        resolver.remember(short.to_owned(), ip, Duration::ZERO);
        assert_eq!(resolver.cached(short), None);
    }

    #[test]
    fn only_a_response_for_exactly_the_name_counts() {
        let q = question(NAME).expect("question");
        assert_eq!(answer_for(&q, NAME), None, "a question is no answer");
        let reply = |name: &str, rdata: RData<'static>| {
            let mut p = Packet::new_reply(0);
            p.answers.push(simple_dns::ResourceRecord::new(
                Name::new_unchecked(name).into_owned(),
                CLASS::IN,
                120,
                rdata,
            ));
            p.build_bytes_vec().unwrap()
        };
        let a = RData::A(simple_dns::rdata::A {
            address: 0xc000_0207,
        });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            answer_for(&reply(NAME, a.clone()), NAME),
            Some((ip, Duration::from_secs(120)))
        );
        assert_eq!(answer_for(&reply("other.local", a), NAME), None);
        let link_local = RData::AAAA(simple_dns::rdata::AAAA {
            address: u128::from(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        });
        assert_eq!(answer_for(&reply(NAME, link_local), NAME), None);
        assert_eq!(answer_for(b"\x00\x01garbage", NAME), None);
    }
}
