//! Network topologies for tests, built with `ip netns` and veth and removed on drop: the
//! daemon runs in a namespace of its own, the test process talks to it across a veth pair
//! from whatever source addresses the test gives the host side. Needs root (CI is root).

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace joined to the test's own by one veth pair. Dropping it deletes the
/// namespace, which deletes the pair too.
pub struct Link {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// The host end of the pair (in the test's namespace).
    pub host_if: String,
}

/// Runs `ip` with `args`; panics naming the command and its error output.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Link {
    /// A new namespace (loopback up) and a veth pair into it, both ends up.
    pub fn new() -> Link {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Interface names are at most 15 bytes.
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let link = Link {
            ns: format!("peercam-test-{id}"),
            host_if: format!("pch{id}"),
        };
        let ns_if = link.ns_if();
        ip(&["netns", "add", &link.ns]);
        ip(&[
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &link.ns]);
        ip(&["link", "set", &link.host_if, "up"]);
        ip(&["-n", &link.ns, "link", "set", "lo", "up"]);
        ip(&["-n", &link.ns, "link", "set", &ns_if, "up"]);
        link
    }

    /// The namespace's end of the pair.
    fn ns_if(&self) -> String {
        format!("{}n", self.host_if)
    }

    /// Gives the host end `addr/prefix` (IPv6 without duplicate address detection, so it
    /// is usable at once).
    pub fn host_addr(&self, addr: IpAddr, prefix: u8) {
        add_addr(None, &self.host_if, addr, prefix);
    }

    /// Gives the namespace's end `addr/prefix`.
    pub fn ns_addr(&self, addr: IpAddr, prefix: u8) {
        add_addr(Some(&self.ns), &self.ns_if(), addr, prefix);
    }
}

fn add_addr(ns: Option<&str>, dev: &str, addr: IpAddr, prefix: u8) {
    let cidr = format!("{addr}/{prefix}");
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["addr", "add", &cidr, "dev", dev]);
    if addr.is_ipv6() {
        args.push("nodad");
    }
    ip(&args);
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status();
        // Deleting the namespace deletes its end of the pair, and with it the host end.
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
