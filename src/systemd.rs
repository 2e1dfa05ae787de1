//! The systemd notification protocol (`Type=notify`): READY, RELOADING, STOPPING, STATUS and
//! WATCHDOG messages. Every call is a no-op when the daemon does not run under systemd
//! (`NOTIFY_SOCKET` unset), so the same code runs from a terminal.

use std::time::Duration;

use sd_notify::NotifyState;

/// The watchdog period systemd expects pings within (`WatchdogSec=`), if it set one for
/// this process.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Whether systemd listens for notifications from this process.
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Start-up (or a reload) is complete; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A configuration reload begins (systemd shows the unit as "reloading" until [`ready`]).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A new status line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The service is healthy: resets systemd's watchdog timer.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd ({e})");
    }
}
