//! Where people on the LAN find the page: the URLs that work from another machine
//! (`http://<host>.local:7000/` and each LAN address), never `0.0.0.0`. The daemon logs them
//! at start and whenever the machine's addresses change, puts them in `systemctl status`,
//! and `peercam urls` prints them (the package's install message).
//!
//! [`urls`] decides, from facts; [`LanFacts::read`] reads the facts (the host name and the
//! interfaces' addresses). [`bind_hint`] says, from the same facts, what to do when the
//! listen address cannot be bound.

use std::net::{IpAddr, SocketAddr};

/// What the URLs are made from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LanFacts {
    /// The host name, when it is usable as a `.local` (mDNS) name.
    pub host: Option<String>,
    /// The addresses of the interfaces that are up, loopback and IPv6 link-local excluded,
    /// sorted (IPv4 first).
    pub addresses: Vec<IpAddr>,
}

impl LanFacts {
    /// Reads the host name ([`host_name`]) and the interfaces' addresses
    /// (`getifaddrs`). Either may come back empty; nothing here fails.
    pub fn read() -> LanFacts {
        let host = host_name().and_then(|name| mdns_host(&name));
        LanFacts {
            host,
            addresses: interface_addresses(),
        }
    }
}

/// This machine's host name (`uname`'s node name, which the service's sandbox keeps; its
/// `/proc/sys/kernel/hostname` is hidden there), unless it is empty or not UTF-8.
pub fn host_name() -> Option<String> {
    let name = gethostname::gethostname().into_string().ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The host name, if it can be asked for as `<name>.local`: one label of letters, digits
/// and hyphens, not `localhost`. A name with a domain gets no `.local` URL, as it gets no
/// `.local` entry in the names the server answers to (`http::hosts::local_names`).
pub fn mdns_host(name: &str) -> Option<String> {
    let name = name.trim();
    let usable = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.eq_ignore_ascii_case("localhost");
    usable.then(|| name.to_owned())
}

/// The addresses of the interfaces that are up, but loopback and IPv6 link-local (which
/// need a zone in a URL), sorted with IPv4 first and without duplicates.
fn interface_addresses() -> Vec<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut found: Vec<IpAddr> = interfaces
        .filter(|i| {
            i.flags.contains(InterfaceFlags::IFF_UP)
                && !i.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|i| {
            let address = i.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(|ip| reachable_from_lan(*ip))
        .collect();
    found.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    found.dedup();
    found
}

/// Whether another machine could use `ip` in a URL: not loopback, unspecified, or IPv6
/// link-local (`fe80::/10`, which needs the viewer's own zone index).
fn reachable_from_lan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The URLs of the page for a server listening on `listen`: `<scheme>://<host>.local:<port>/`
/// first when the server listens on every address and the host has a usable name, then
/// each LAN address the listening socket accepts (every one for `0.0.0.0` (IPv4) and `[::]`
/// (both families, as Linux binds it)), or the one address it listens on. When nothing else
/// is left (loopback only, or no network yet), the listen address itself.
pub fn urls(scheme: &str, listen: SocketAddr, facts: &LanFacts) -> Vec<String> {
    let port = listen.port();
    let url = |host: &str| format!("{scheme}://{host}:{port}/");
    let ip_url = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => url(&v4.to_string()),
        IpAddr::V6(v6) => url(&format!("[{v6}]")),
    };
    if !listen.ip().is_unspecified() {
        return vec![ip_url(listen.ip())];
    }
    let accepts = |ip: &IpAddr| listen.is_ipv6() || ip.is_ipv4();
    let mut out: Vec<String> = facts
        .host
        .iter()
        .map(|host| url(&format!("{host}.local")))
        .collect();
    out.extend(
        facts
            .addresses
            .iter()
            .filter(|ip| accepts(ip))
            .map(|ip| ip_url(*ip)),
    );
    if facts.addresses.iter().all(|ip| !accepts(ip)) {
        // No LAN address yet: the .local name may not resolve either; say what is bound.
        out.push(ip_url(if listen.is_ipv6() {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }));
    }
    out
}

/// What to do when binding `addr` failed with `error`; `key` names the setting that holds
/// the address (`[server] listen or --listen`).
pub fn bind_hint(addr: SocketAddr, error: &std::io::Error, key: &str, facts: &LanFacts) -> String {
    use std::io::ErrorKind;
    let port = addr.port();
    match error.kind() {
        ErrorKind::AddrInUse => format!(
            "another program already listens on port {port} (a second peercam? \
             `sudo ss -ltnp 'sport = :{port}'` names it); stop it, or choose another port \
             with {key}"
        ),
        ErrorKind::AddrNotAvailable => {
            let own: Vec<String> = facts.addresses.iter().map(IpAddr::to_string).collect();
            format!(
                "{} is not an address of this machine ({}); use 0.0.0.0 (every IPv4 \
                 address) or [::] (every address) in {key}",
                addr.ip(),
                if own.is_empty() {
                    "it has no network address besides loopback now".to_owned()
                } else {
                    format!("its addresses: {}", own.join(", "))
                }
            )
        }
        ErrorKind::PermissionDenied if port < 1024 => format!(
            "ports below 1024 need privileges peercam does not run with; use a port from \
             1024 up in {key} (7000 is the default), or forward port {port} to it"
        ),
        _ => format!("check {key}"),
    }
}

/// The URLs joined for one log line: `a, b or c`.
pub fn joined(urls: &[String]) -> String {
    match urls {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(host: Option<&str>, addresses: &[&str]) -> LanFacts {
        LanFacts {
            host: host.map(str::to_owned),
            addresses: addresses.iter().map(|a| a.parse().expect("ip")).collect(),
        }
    }

    #[test]
    fn every_ipv4_address_gets_the_local_name_and_each_address() {
        let f = facts(Some("pi"), &["192.168.1.20", "10.8.0.3", "2001:db8::20"]);
        assert_eq!(
            urls("http", "0.0.0.0:7000".parse().expect("addr"), &f),
            [
                "http://pi.local:7000/",
                "http://192.168.1.20:7000/",
                "http://10.8.0.3:7000/"
            ]
        );
        // [::] takes IPv4 too on Linux (bindv6only = 0).
        assert_eq!(
            urls("https", "[::]:7443".parse().expect("addr"), &f),
            [
                "https://pi.local:7443/",
                "https://192.168.1.20:7443/",
                "https://10.8.0.3:7443/",
                "https://[2001:db8::20]:7443/"
            ]
        );
    }

    #[test]
    fn one_listen_address_is_the_only_url() {
        let f = facts(Some("pi"), &["192.168.1.20"]);
        assert_eq!(
            urls("http", "192.168.1.20:7000".parse().expect("addr"), &f),
            ["http://192.168.1.20:7000/"]
        );
        assert_eq!(
            urls("http", "127.0.0.1:8080".parse().expect("addr"), &f),
            ["http://127.0.0.1:8080/"]
        );
    }

    #[test]
    fn without_a_lan_address_the_loopback_url_is_named() {
        assert_eq!(
            urls(
                "http",
                "0.0.0.0:7000".parse().expect("addr"),
                &facts(None, &[])
            ),
            ["http://127.0.0.1:7000/"]
        );
        assert_eq!(
            urls(
                "http",
                "0.0.0.0:7000".parse().expect("addr"),
                &facts(Some("cam"), &["2001:db8::1"])
            ),
            ["http://cam.local:7000/", "http://127.0.0.1:7000/"]
        );
    }

    #[test]
    fn host_names_usable_over_mdns() {
        assert_eq!(mdns_host("raspberrypi\n").as_deref(), Some("raspberrypi"));
        assert_eq!(mdns_host("door-cam").as_deref(), Some("door-cam"));
        assert_eq!(mdns_host("door-cam.example.org"), None);
        assert_eq!(mdns_host("localhost"), None);
        assert_eq!(mdns_host(""), None);
        assert_eq!(mdns_host("bad name"), None);
        assert_eq!(mdns_host("x_y"), None);
    }

    #[test]
    fn link_local_and_loopback_are_not_offered() {
        for ip in ["127.0.0.1", "::1", "fe80::1", "0.0.0.0"] {
            assert!(!reachable_from_lan(ip.parse().expect("ip")), "{ip}");
        }
        // 169.254/16 needs no zone: a laptop on a direct cable reaches it.
        for ip in ["192.168.1.2", "169.254.3.4", "fd00::2", "2001:db8::2"] {
            assert!(reachable_from_lan(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn each_bind_error_gets_its_own_hint() {
        use std::io::{Error, ErrorKind};
        let key = "[server] listen or --listen";
        let f = facts(Some("pi"), &["192.168.1.20"]);
        let hint = |addr: &str, kind: ErrorKind| {
            bind_hint(addr.parse().expect("addr"), &Error::from(kind), key, &f)
        };
        let in_use = hint("0.0.0.0:7000", ErrorKind::AddrInUse);
        assert!(
            in_use.starts_with("another program already listens on port 7000"),
            "{in_use}"
        );
        assert!(in_use.contains("sport = :7000"), "{in_use}");
        let foreign = hint("10.9.9.9:7000", ErrorKind::AddrNotAvailable);
        assert_eq!(
            foreign,
            "10.9.9.9 is not an address of this machine (its addresses: 192.168.1.20); use \
             0.0.0.0 (every IPv4 address) or [::] (every address) in [server] listen or --listen"
        );
        let privileged = hint("0.0.0.0:80", ErrorKind::PermissionDenied);
        assert!(
            privileged.starts_with("ports below 1024 need privileges"),
            "{privileged}"
        );
        assert!(privileged.contains("forward port 80"), "{privileged}");
        assert_eq!(
            hint("0.0.0.0:7000", ErrorKind::PermissionDenied),
            format!("check {key}")
        );
    }

    #[test]
    fn urls_join_for_a_sentence() {
        let u = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(joined(&u(&["a"])), "a");
        assert_eq!(joined(&u(&["a", "b"])), "a or b");
        assert_eq!(joined(&u(&["a", "b", "c"])), "a, b or c");
    }

    #[test]
    fn this_machine_has_addresses_or_none_but_never_loopback() {
        let f = LanFacts::read();
        assert!(
            f.addresses.iter().all(|ip| reachable_from_lan(*ip)),
            "{f:?}"
        );
    }
}
