//! The relay's counters for `/metrics`: device links (attempts, registrations, refusals by
//! reason) and browsers (refusals by limit, messages dropped by which queue overflowed,
//! sockets closed for what the browser sent).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::session::relay_wire::RefusalCode;

/// Every count the relay keeps. Each refusal and drop has one.
#[derive(Debug, Default)]
pub struct Counters {
    /// `/link` upgrades (each registration attempt of a device).
    pub link_attempts: AtomicU64,
    /// Devices accepted.
    pub registered: AtomicU64,
    /// Devices refused: wrong token.
    pub refused_bad_token: AtomicU64,
    /// Devices refused: the name is connected already.
    pub refused_name_taken: AtomicU64,
    /// Devices refused: no `register` in time, or not one the relay speaks.
    pub refused_bad_register: AtomicU64,
    /// Links dropped after hearing nothing for the silence limit.
    pub links_silent: AtomicU64,
    /// Browsers that dialled a device that is not connected.
    pub browsers_offline: AtomicU64,
    /// Browsers refused: `[limits] browsers_per_device`.
    pub browsers_per_device: AtomicU64,
    /// Browsers refused: `[limits] max_connections`.
    pub browsers_total: AtomicU64,
    /// Browsers refused: `[limits] dials_per_minute`.
    pub browsers_rate: AtomicU64,
    /// Browsers refused: a page of another site.
    pub browsers_origin: AtomicU64,
    /// Browser messages dropped (and the browser closed): its device's link queue was full.
    pub link_queue_drops: AtomicU64,
    /// Device messages dropped (and the browser closed): the browser's queue was full.
    pub browser_queue_drops: AtomicU64,
    /// Binary messages from browsers (not forwarded).
    pub binary_dropped: AtomicU64,
    /// Browsers closed (1009) for a message over 4 × `[limits] max_message_bytes`.
    pub browser_too_big: AtomicU64,
    /// Browsers closed (1007) for text that is not UTF-8.
    pub browser_not_utf8: AtomicU64,
}

/// One more of `counter`.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The counter of a refusal.
    pub fn refused(&self, code: RefusalCode) -> &AtomicU64 {
        match code {
            RefusalCode::BadToken => &self.refused_bad_token,
            RefusalCode::NameTaken => &self.refused_name_taken,
            RefusalCode::BadRegister => &self.refused_bad_register,
        }
    }

    /// The Prometheus lines.
    pub fn text(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = format!(
            "peercam_relay_link_attempts_total {}\npeercam_relay_registered_total {}\n\
             peercam_relay_links_silent_total {}\n",
            get(&self.link_attempts),
            get(&self.registered),
            get(&self.links_silent),
        );
        for code in [
            RefusalCode::BadToken,
            RefusalCode::NameTaken,
            RefusalCode::BadRegister,
        ] {
            out.push_str(&format!(
                "peercam_relay_refused_total{{reason=\"{}\"}} {}\n",
                code.as_str(),
                get(self.refused(code))
            ));
        }
        for (reason, counter) in [
            ("device_offline", &self.browsers_offline),
            ("browsers_per_device", &self.browsers_per_device),
            ("max_connections", &self.browsers_total),
            ("dials_per_minute", &self.browsers_rate),
            ("origin", &self.browsers_origin),
        ] {
            out.push_str(&format!(
                "peercam_relay_browsers_refused_total{{reason=\"{reason}\"}} {}\n",
                get(counter)
            ));
        }
        for (queue, counter) in [
            ("link", &self.link_queue_drops),
            ("browser", &self.browser_queue_drops),
            ("binary", &self.binary_dropped),
        ] {
            out.push_str(&format!(
                "peercam_relay_dropped_total{{queue=\"{queue}\"}} {}\n",
                get(counter)
            ));
        }
        for (reason, counter) in [
            ("message_too_big", &self.browser_too_big),
            ("not_utf8", &self.browser_not_utf8),
        ] {
            out.push_str(&format!(
                "peercam_relay_browsers_closed_total{{reason=\"{reason}\"}} {}\n",
                get(counter)
            ));
        }
        out
    }
}
