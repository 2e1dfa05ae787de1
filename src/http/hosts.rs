//! The names the daemon answers to, against DNS rebinding, and the same-origin check for
//! browser requests that act (a WebSocket, a login), against cross-site requests.
//!
//! A request names the daemon in `Host` (or, with `[server] trust_forwarded_host`, in
//! `X-Forwarded-Host`). Known are: any IP address (a page served from an IP address is that
//! address's own origin), `localhost`, the host name and `<host name>.local`, and
//! `[server] hosts`. A rebinding page names its own domain and is not known. Without a
//! password every path refuses unknown names; with one, the session cookie (SameSite=Strict,
//! no Domain) is never sent to such a page anyway, and the Origin check below applies.

use std::net::IpAddr;

use axum::http::{header, HeaderMap};

use crate::config::{ServerSettings, TlsMode};

/// The names and scheme the daemon serves.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// Names besides IP addresses (compared ignoring case).
    names: Vec<String>,
    trust_forwarded: bool,
    /// `http` or `https`: what a same-origin page's `Origin` starts with.
    scheme: &'static str,
}

impl Hosts {
    /// The names for `server`, with this machine's host name.
    pub fn new(server: &ServerSettings) -> Hosts {
        let mut names = local_names();
        names.extend(server.hosts.iter().cloned());
        Hosts {
            names,
            trust_forwarded: server.trust_forwarded_host,
            scheme: if server.tls == TlsMode::Off {
                "http"
            } else {
                "https"
            },
        }
    }

    /// The authority (`host[:port]`) the request names: `Host`, or `X-Forwarded-Host` when
    /// trusted and present.
    pub fn authority<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let forwarded = self
            .trust_forwarded
            .then(|| headers.get("x-forwarded-host"))
            .flatten();
        forwarded
            .or_else(|| headers.get(header::HOST))
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// Whether `authority` (`host[:port]`) names this daemon. No authority at all (HTTP/1.0
    /// tools) is let through: a browser always sends one.
    pub fn knows(&self, authority: Option<&str>) -> bool {
        let Some(authority) = authority else {
            return true;
        };
        let host = host_of(authority);
        host.parse::<IpAddr>().is_ok() || self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    /// Whether a browser request comes from the daemon's own page: its `Origin` (or, without
    /// one, its `Referer`) has the daemon's scheme and exactly the authority the request
    /// names, and that authority is known. Requests from tools, which send neither, pass.
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        let origin = headers
            .get(header::ORIGIN)
            .or_else(|| headers.get(header::REFERER))
            .and_then(|v| v.to_str().ok());
        let Some(origin) = origin else {
            return true;
        };
        let authority = self.authority(headers);
        let scheme = if self.trust_forwarded {
            headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(self.scheme)
        } else {
            self.scheme
        };
        let Some(rest) = origin
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://"))
        else {
            return false;
        };
        let origin_authority = rest.split('/').next().unwrap_or_default();
        authority.is_some_and(|a| a.eq_ignore_ascii_case(origin_authority)) && self.knows(authority)
    }
}

/// The names this machine goes by: its host name (and its mDNS `.local` name, when the host
/// name has no domain) and `localhost`. The self-signed certificate is made for these too.
pub fn local_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Some(host) = crate::lan::host_name() {
        let host = host.as_str();
        if host != "localhost" {
            names.push(host.to_owned());
            if !host.contains('.') {
                names.push(format!("{host}.local"));
            }
        }
    }
    names.push("localhost".to_owned());
    names
}

/// The host part of `host[:port]` (IPv6 literals in brackets lose them).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hosts(extra: &[&str], tls: bool, trust: bool) -> Hosts {
        let server = ServerSettings {
            hosts: extra.iter().map(|h| h.to_string()).collect(),
            trust_forwarded_host: trust,
            tls: if tls {
                TlsMode::SelfSigned
            } else {
                TlsMode::Off
            },
            ..ServerSettings::default()
        };
        Hosts::new(&server)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn ip_addresses_local_names_and_configured_hosts_are_known() {
        let h = hosts(&["cam.example.org"], false, false);
        for known in [
            "192.168.1.20:7000",
            "192.168.1.20",
            "[fe80::1]:7000",
            "localhost:7000",
            "cam.example.org",
            "CAM.example.org:443",
        ] {
            assert!(h.knows(Some(known)), "{known}");
        }
        for unknown in [
            "evil.example:7000",
            "rebind.attacker.test",
            "localhost.evil.test",
        ] {
            assert!(!h.knows(Some(unknown)), "{unknown}");
        }
        assert!(h.knows(None), "no Host at all: not a browser");
    }

    #[test]
    fn forwarded_host_counts_only_when_trusted() {
        let request = headers(&[
            ("host", "127.0.0.1:7000"),
            ("x-forwarded-host", "evil.example"),
        ]);
        assert_eq!(
            hosts(&[], false, false).authority(&request),
            Some("127.0.0.1:7000")
        );
        assert_eq!(
            hosts(&[], false, true).authority(&request),
            Some("evil.example")
        );
        assert!(!hosts(&[], false, true).knows(hosts(&[], false, true).authority(&request)));
    }

    #[test]
    fn the_origin_must_be_this_scheme_and_this_authority() {
        let h = hosts(&[], false, false);
        let own = headers(&[
            ("host", "192.168.1.20:7000"),
            ("origin", "http://192.168.1.20:7000"),
        ]);
        assert!(h.same_origin(&own));
        for (origin, why) in [
            ("https://192.168.1.20:7000", "another scheme"),
            ("http://192.168.1.20:8000", "another port"),
            ("http://evil.example", "another site"),
            ("null", "an opaque origin"),
        ] {
            let request = headers(&[("host", "192.168.1.20:7000"), ("origin", origin)]);
            assert!(!h.same_origin(&request), "{why}");
        }
        // A rebinding page: Host and Origin agree, but the name is not the camera's.
        let rebound = headers(&[
            ("host", "evil.example:7000"),
            ("origin", "http://evil.example:7000"),
        ]);
        assert!(!h.same_origin(&rebound));
        // Without Origin the Referer counts; without either, a tool.
        let referred = headers(&[
            ("host", "192.168.1.20:7000"),
            ("referer", "http://evil.example/x"),
        ]);
        assert!(!h.same_origin(&referred));
        let page = headers(&[
            ("host", "192.168.1.20:7000"),
            ("referer", "http://192.168.1.20:7000/"),
        ]);
        assert!(h.same_origin(&page));
        assert!(h.same_origin(&headers(&[("host", "192.168.1.20:7000")])));
        // HTTPS serves https origins.
        let tls = headers(&[
            ("host", "localhost:7000"),
            ("origin", "https://localhost:7000"),
        ]);
        assert!(hosts(&[], true, false).same_origin(&tls));
    }
}
