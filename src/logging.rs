//! Logging through the `log` facade: to the systemd journal when stderr is connected to it
//! (systemd sets `JOURNAL_STREAM`), else to stderr with time, level, target and message.
//!
//! Filtering: the configured level applies to everything; the WebRTC stack (`webrtc`,
//! `rtc_*` crates) is held at `warn` (or lower, if the level is lower) because it is chatty
//! at info and below. `RUST_LOG`, when set, is layered on top in env_logger syntax: a plain
//! level (`RUST_LOG=debug`) replaces the configured level, and module directives
//! (`RUST_LOG=info,webrtc=debug`) replace the defaults for those modules. The same rules
//! apply to both outputs. [`set_level`] replaces the configured level while running (the
//! relay's reload).
//!
//! Two guards sit between the filter and the output ([`GuardedLog`]):
//! - webrtc-rs's ICE agent warns "pingAllCandidates called with no candidate pairs" five
//!   times a second for every dial whose browser has sent no candidate yet (a dial that never
//!   connects: until `[limits] ice_timeout_s`). That and the other warnings of
//!   [`STACK_NOISE`] are demoted to `debug` (`RUST_LOG=rtc_ice=debug` shows them).
//! - The WebRTC stack logs per packet in places (a STUN message with a bad integrity, a DTLS
//!   record that fails): what a peer sends must not decide how many lines the journal gets.
//!   Each of its targets (`webrtc*`, `rtc*`) gets at most [`STACK_LINES`] lines per
//!   [`STACK_WINDOW`]; the next line that passes says how many were suppressed.
//! - No record can forge a line or flood one: control characters (newlines, escape
//!   sequences) are escaped and a message is cut after [`MAX_MESSAGE_CHARS`]. This is the
//!   backstop for dependencies that log what a peer sent; peercam's own lines quote what a
//!   client sent through [`client_str`], which cuts much shorter.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use env_filter::{Builder as FilterBuilder, Filter};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Log targets (prefixes) of dependencies that are noisy below `warn`.
const NOISY_TARGETS: &[&str] = &["webrtc", "rtc"];

/// The installed logger's filter, which [`set_level`] replaces.
static INSTALLED: std::sync::OnceLock<SharedFilter> = std::sync::OnceLock::new();

/// A filter the logger reads and a reload may replace.
type SharedFilter = std::sync::Arc<std::sync::RwLock<Filter>>;

/// `RUST_LOG`, when set to something.
fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Whether [`init`] installed the journal logger.
static TO_JOURNAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the log goes to the systemd journal (so stderr, which systemd sends there too,
/// need not repeat it).
pub fn to_journal() -> bool {
    TO_JOURNAL.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global logger. Call once, early; later calls do nothing (the first logger
/// stays), which keeps tests that start the CLI in-process safe.
pub fn init(level: LevelFilter) {
    let filter = build_filter(level, rust_log().as_deref());
    let max_level = filter.filter();
    let shared: SharedFilter = std::sync::Arc::new(std::sync::RwLock::new(filter));
    let installed = if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => {
                let installed =
                    log::set_boxed_logger(Box::new(GuardedLog::shared(journal, shared.clone())));
                if installed.is_ok() {
                    TO_JOURNAL.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                installed
            }
            Err(e) => {
                eprintln!("peercam: cannot open the systemd journal ({e}); logging to stderr");
                log::set_boxed_logger(Box::new(stderr_logger(shared.clone())))
            }
        }
    } else {
        log::set_boxed_logger(Box::new(stderr_logger(shared.clone())))
    };
    if installed.is_ok() {
        log::set_max_level(max_level);
        let _ = INSTALLED.set(shared);
    }
}

/// Replaces the configured level of the logger [`init`] installed (a reload's `[log]
/// level`), with the same rules: `RUST_LOG`, when set, still applies on top. Does nothing
/// when [`init`] installed no logger.
pub fn set_level(level: LevelFilter) {
    let Some(shared) = INSTALLED.get() else {
        return;
    };
    let filter = build_filter(level, rust_log().as_deref());
    let max_level = filter.filter();
    *shared.write().unwrap_or_else(|e| e.into_inner()) = filter;
    log::set_max_level(max_level);
}

/// The filter: `level` for everything, noisy dependencies capped at `warn`, then `RUST_LOG`.
fn build_filter(level: LevelFilter, rust_log: Option<&str>) -> Filter {
    // A plain level in RUST_LOG is the level the user asked for; cap the noisy crates
    // relative to it so that RUST_LOG=error really silences their warnings.
    let base = rust_log.and_then(plain_level).unwrap_or(level);
    let mut builder = FilterBuilder::new();
    builder.filter_level(level);
    for target in NOISY_TARGETS {
        builder.filter_module(target, base.min(LevelFilter::Warn));
    }
    if let Some(spec) = rust_log {
        builder.parse(spec);
    }
    builder.build()
}

/// The global level in an env_logger spec (`debug`, `info,foo=trace`), if it has one.
fn plain_level(spec: &str) -> Option<LevelFilter> {
    let directives = spec.split('/').next().unwrap_or("");
    directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.contains('='))
        .find_map(|d| d.parse().ok())
}

/// env_logger writing every record to stderr (filtering is done by the wrapper), as
/// `2025-01-31T12:00:00.123Z INFO  peercam::daemon: message`.
fn stderr_logger(filter: SharedFilter) -> GuardedLog<env_logger::Logger> {
    let logger = env_logger::Builder::new()
        .filter_level(LevelFilter::Trace)
        .target(env_logger::Target::Stderr)
        .format(|buf, record| {
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "{} {style}{:<5}{style:#} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .build();
    GuardedLog::shared(logger, filter)
}

/// Characters of a client-supplied string that [`client_str`] writes by default.
pub const CLIENT_STR_CHARS: usize = 120;

/// Characters of any one log message; the rest is cut (see [`GuardedLog`]).
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// A string that came from outside (a client, a browser, a peer), ready for a log line:
/// control characters, other non-printable characters and backslashes escaped as Rust's
/// `escape_debug` does (`\n`, `\u{1b}`, `\\`), and cut after [`CLIENT_STR_CHARS`]
/// characters (or [`ClientStr::max`]) with `…(N more)`. A client cannot forge a log line
/// with it, nor make one huge.
pub fn client_str(s: &str) -> ClientStr<'_> {
    ClientStr {
        s,
        max: CLIENT_STR_CHARS,
    }
}

/// See [`client_str`].
#[derive(Debug, Clone, Copy)]
pub struct ClientStr<'a> {
    s: &'a str,
    max: usize,
}

impl ClientStr<'_> {
    /// Writes at most `max` characters instead of [`CLIENT_STR_CHARS`].
    pub fn max(self, max: usize) -> Self {
        ClientStr { max, ..self }
    }
}

impl fmt::Display for ClientStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.s, self.max, true)
    }
}

/// Writes `s` with control and non-printable characters escaped (and `\\` too if
/// `backslash`), cut after `max` characters with `…(N more)`.
fn write_escaped(out: &mut impl fmt::Write, s: &str, max: usize, backslash: bool) -> fmt::Result {
    let mut chars = s.chars();
    for c in chars.by_ref().take(max) {
        if needs_escape(c) || (backslash && c == '\\') {
            write!(out, "{}", c.escape_debug())?;
        } else {
            out.write_char(c)?;
        }
    }
    let more = chars.count();
    if more > 0 {
        write!(out, "…({more} more)")?;
    }
    Ok(())
}

/// Whether `c` is escaped in a log line: control characters (newline, carriage return,
/// escape), line and paragraph separators, bidirectional overrides and the other characters
/// Rust's `escape_debug` escapes, but not the quotes or the backslash it also escapes.
fn needs_escape(c: char) -> bool {
    !matches!(c, '"' | '\'' | '\\') && c.escape_debug().nth(1).is_some()
}

/// `message` as it may go into a log line: unchanged when it is short and has nothing to
/// escape (the usual case), else escaped and cut after [`MAX_MESSAGE_CHARS`].
fn guarded(message: &str) -> Cow<'_, str> {
    let mut count = 0;
    let clean = message.chars().all(|c| {
        count += 1;
        count <= MAX_MESSAGE_CHARS && !needs_escape(c)
    });
    if clean {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS * 2));
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, message, MAX_MESSAGE_CHARS, false);
    Cow::Owned(out)
}

/// Warnings of the WebRTC stack that say nothing wrong, by target prefix and words (rtc 0.21):
/// - the ICE agent's "no candidate pairs yet", five times a second per dial
///   (`Agent::ping_all_candidates`);
/// - the ICE agent's "remote mDNS candidate added, but mDNS is disabled", once per `.local`
///   candidate that reaches it unresolved (`[webrtc] resolve_mdns` off, or inside a WHEP
///   offer); such browsers connect peer-reflexive;
/// - DTLS's "conn.remote_addr is empty", once per call (the server name defaults to
///   `localhost`, which a DTLS server never uses);
/// - DTLS's "Unsupported Extension Type", twice per handshake with aiortc (and other
///   OpenSSL-based stacks) for an extension it then ignores;
/// - "password is empty" from the ICE handler, when a WHIP server's first connectivity
///   check arrives before its answer has been applied (the next check succeeds).
const STACK_NOISE: [(&str, &str); 5] = [
    ("rtc_ice", "pingAllCandidates called with no candidate"),
    (
        "rtc_ice",
        "remote mDNS candidate added, but mDNS is disabled",
    ),
    ("rtc_dtls", "conn.remote_addr is empty"),
    ("rtc_dtls", "Unsupported Extension Type"),
    (
        "rtc::peer_connection",
        "IceHandler.handle_read got error: password is empty",
    ),
];

/// Whether a record is one of [`STACK_NOISE`]: it is logged at `debug`.
fn is_ice_noise(target: &str, message: &str) -> bool {
    STACK_NOISE
        .iter()
        .any(|(prefix, words)| target.starts_with(prefix) && message.contains(words))
}

/// Lines per [`STACK_WINDOW`] from one target of the WebRTC stack.
const STACK_LINES: u32 = 10;
/// The window of [`STACK_LINES`].
const STACK_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `target` is the WebRTC stack's (webrtc-rs and its `rtc*` crates).
fn is_stack(target: &str) -> bool {
    target.starts_with("webrtc") || target.starts_with("rtc")
}

/// Per-target line budgets of the WebRTC stack: (window start, lines in it, suppressed).
/// Targets are module paths of the stack, a fixed set, so the map stays small.
#[derive(Default)]
struct StackThrottle {
    targets: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32, u64)>>,
}

impl StackThrottle {
    /// `None`: drop this line. `Some(n)`: log it; `n` lines were suppressed before it.
    fn admit(&self, target: &str, now: std::time::Instant) -> Option<u64> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = targets.entry(target.to_owned()).or_insert((now, 0, 0));
        if now.duration_since(entry.0) >= STACK_WINDOW {
            entry.0 = now;
            entry.1 = 0;
        }
        if entry.1 >= STACK_LINES {
            entry.2 += 1;
            return None;
        }
        entry.1 += 1;
        Some(std::mem::take(&mut entry.2))
    }
}

/// The filter in front of an output (stderr or the journal), with the guards of this
/// module: known noise demoted to `debug`, the WebRTC stack's lines throttled, every message
/// escaped and bounded.
struct GuardedLog<L> {
    log: L,
    filter: SharedFilter,
    stack: StackThrottle,
}

impl<L: Log> GuardedLog<L> {
    #[cfg(test)]
    fn new(log: L, filter: Filter) -> Self {
        Self::shared(log, std::sync::Arc::new(std::sync::RwLock::new(filter)))
    }

    fn shared(log: L, filter: SharedFilter) -> Self {
        GuardedLog {
            log,
            filter,
            stack: StackThrottle::default(),
        }
    }

    fn filter(&self) -> std::sync::RwLockReadGuard<'_, Filter> {
        self.filter.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl<L: Log> Log for GuardedLog<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter().enabled(metadata) && self.log.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter().matches(record) {
            return;
        }
        let message = match record.args().as_str() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(record.args().to_string()),
        };
        let mut level = record.level();
        if level < Level::Debug && is_ice_noise(record.target(), &message) {
            level = Level::Debug;
            let demoted = Metadata::builder()
                .level(level)
                .target(record.target())
                .build();
            if !self.filter().enabled(&demoted) {
                return;
            }
        }
        let suppressed = if is_stack(record.target()) {
            match self.stack.admit(record.target(), std::time::Instant::now()) {
                Some(n) => n,
                None => return,
            }
        } else {
            0
        };
        let message = guarded(&message);
        let note = if suppressed > 0 {
            format!(" ({suppressed} similar lines suppressed)")
        } else {
            String::new()
        };
        self.log.log(
            &record
                .to_builder()
                .level(level)
                .args(format_args!("{message}{note}"))
                .build(),
        );
    }

    fn flush(&self) {
        self.log.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(filter: &Filter, target: &str, level: Level) -> bool {
        filter.enabled(&Metadata::builder().target(target).level(level).build())
    }

    #[test]
    fn config_level_applies_and_webrtc_is_quiet() {
        let f = build_filter(LevelFilter::Debug, None);
        assert!(enabled(&f, "peercam::daemon", Level::Debug));
        assert!(!enabled(&f, "peercam::daemon", Level::Trace));
        assert!(!enabled(&f, "webrtc::peer_connection", Level::Info));
        assert!(enabled(&f, "webrtc::peer_connection", Level::Warn));
        assert!(!enabled(&f, "rtc_ice::agent", Level::Info));
    }

    #[test]
    fn a_lower_level_also_quiets_dependencies() {
        let f = build_filter(LevelFilter::Error, None);
        assert!(!enabled(&f, "webrtc::peer_connection", Level::Warn));
        assert!(enabled(&f, "webrtc::peer_connection", Level::Error));
        let f = build_filter(LevelFilter::Info, Some("error"));
        assert!(!enabled(&f, "peercam::daemon", Level::Warn));
        assert!(!enabled(&f, "rtc_dtls::conn", Level::Warn));
    }

    #[test]
    fn rust_log_overrides_the_config_level() {
        let f = build_filter(LevelFilter::Info, Some("trace"));
        assert!(enabled(&f, "peercam::http", Level::Trace));
        assert!(
            !enabled(&f, "webrtc::ice", Level::Info),
            "plain level keeps the WebRTC stack quiet"
        );
        let f = build_filter(LevelFilter::Info, Some("warn,webrtc=debug"));
        assert!(!enabled(&f, "peercam::http", Level::Info));
        assert!(enabled(&f, "webrtc::ice", Level::Debug));
    }

    #[test]
    fn client_str_escapes_what_could_break_a_line() {
        let forged = "x\r\n2026-01-01T00:00:00.000Z INFO  peercam::daemon: forged";
        assert_eq!(
            client_str(forged).to_string(),
            "x\\r\\n2026-01-01T00:00:00.000Z INFO  peercam::daemon: forged"
        );
        // Terminal escapes, NUL, tabs, Unicode line separators and bidirectional overrides.
        assert_eq!(
            client_str("\u{1b}[31mred\0\t\u{2028}\u{202e}").to_string(),
            "\\u{1b}[31mred\\0\\t\\u{2028}\\u{202e}"
        );
        // A backslash is escaped so that `\n` in the log always means a newline was sent;
        // quotes and printable Unicode stay as they are.
        assert_eq!(client_str(r"a\n").to_string(), r"a\\n");
        assert_eq!(
            client_str("\"Küche\" 'é' 日本").to_string(),
            "\"Küche\" 'é' 日本"
        );
        assert_eq!(client_str("lab-1_A").to_string(), "lab-1_A");
        assert_eq!(client_str("").to_string(), "");
    }

    #[test]
    fn client_str_cuts_long_strings_and_says_how_much() {
        let long = "a".repeat(8000);
        let shown = client_str(&long).to_string();
        assert_eq!(
            shown,
            format!("{}…(7880 more)", "a".repeat(CLIENT_STR_CHARS))
        );
        let exact = "b".repeat(CLIENT_STR_CHARS);
        assert_eq!(
            client_str(&exact).to_string(),
            exact,
            "nothing cut, no suffix"
        );
        assert_eq!(client_str("ünïcödé").max(3).to_string(), "ünï…(4 more)");
        // The bound counts characters as sent; their escapes may be longer.
        assert_eq!(client_str("\n\n\n").max(2).to_string(), "\\n\\n…(1 more)");
    }

    /// Records that reach the output: (level, target, message).
    #[derive(Default)]
    struct Capture(std::sync::Mutex<Vec<(Level, String, String)>>);

    impl Log for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &Record<'_>) {
            let mut records = self.0.lock().expect("lock");
            records.push((
                record.level(),
                record.target().to_owned(),
                record.args().to_string(),
            ));
        }
        fn flush(&self) {}
    }

    fn guarded_log(level: LevelFilter, rust_log: Option<&str>) -> GuardedLog<Capture> {
        GuardedLog::new(Capture::default(), build_filter(level, rust_log))
    }

    fn emit(log: &GuardedLog<Capture>, level: Level, target: &str, message: &str) {
        log.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{message}"))
                .build(),
        );
    }

    fn taken(log: &GuardedLog<Capture>) -> Vec<(Level, String, String)> {
        std::mem::take(&mut *log.log.0.lock().expect("lock"))
    }

    /// rtc-ice 0.21's line, as `Agent::ping_all_candidates` writes it.
    const PING: &str = "[controlled]: pingAllCandidates called with no candidate pairs. \
                        Connection is not possible yet.";

    #[test]
    fn ice_ping_noise_is_demoted_to_debug() {
        let log = guarded_log(LevelFilter::Info, None);
        emit(&log, Level::Warn, "rtc_ice::agent", PING);
        assert!(taken(&log).is_empty(), "dropped at the default level");
        // Other ICE warnings, and the same words from elsewhere, stay.
        let discard = "[controlled]: discard message from (192.0.2.1:5000), bad integrity";
        emit(&log, Level::Warn, "rtc_ice::agent", discard);
        emit(&log, Level::Warn, "peercam::http", PING);
        let kept = taken(&log);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(
            kept[0],
            (Level::Warn, "rtc_ice::agent".into(), discard.into())
        );
        assert_eq!(kept[1].0, Level::Warn);

        // Asked for, it shows, as debug.
        for spec in ["info,rtc_ice=debug", "rtc_ice::agent=trace"] {
            let log = guarded_log(LevelFilter::Info, Some(spec));
            emit(&log, Level::Warn, "rtc_ice::agent", PING);
            let shown = taken(&log);
            assert_eq!(
                shown,
                vec![(Level::Debug, "rtc_ice::agent".into(), PING.into())],
                "{spec}"
            );
        }
        let log = guarded_log(LevelFilter::Debug, Some("debug"));
        emit(&log, Level::Warn, "rtc_ice::agent", PING);
        assert!(
            taken(&log).is_empty(),
            "a plain level keeps the WebRTC stack at warn"
        );
        // The other harmless warnings, as rtc 0.21 writes them.
        let log = guarded_log(LevelFilter::Info, None);
        emit(
            &log,
            Level::Warn,
            "rtc_ice::agent",
            "remote mDNS candidate added, but mDNS is disabled: (61cd5712-aa.local)",
        );
        emit(
            &log,
            Level::Warn,
            "rtc_dtls::config",
            "conn.remote_addr is empty, please set explicitly server_name in Config! Use \
             default \"localhost\" as server_name now",
        );
        assert!(taken(&log).is_empty());
    }

    #[test]
    fn every_record_is_escaped_and_bounded() {
        let log = guarded_log(LevelFilter::Info, None);
        // A dependency logging what a peer sent, e.g. a candidate's address.
        emit(
            &log,
            Level::Warn,
            "rtc_ice::agent",
            "remote mDNS candidate: (x\n2026-01-01T00:00:00Z ERROR forged.local)",
        );
        emit(&log, Level::Info, "peercam::http", &"z".repeat(9000));
        emit(&log, Level::Info, "peercam::daemon", r"C:\path \ stays");
        log.log(&Record::builder().args(format_args!("static")).build());
        let lines = taken(&log);
        assert_eq!(
            lines[0].2,
            "remote mDNS candidate: (x\\n2026-01-01T00:00:00Z ERROR forged.local)"
        );
        assert_eq!(
            lines[1].2,
            format!("{}…(7000 more)", "z".repeat(MAX_MESSAGE_CHARS))
        );
        assert_eq!(lines[2].2, r"C:\path \ stays", "backslashes are kept");
        assert_eq!(lines[3].2, "static");
        assert!(matches!(guarded("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn plain_level_is_found_in_a_spec() {
        assert_eq!(plain_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(plain_level("webrtc=trace, warn"), Some(LevelFilter::Warn));
        assert_eq!(plain_level("peercam=debug"), None);
        assert_eq!(plain_level("info/foo"), Some(LevelFilter::Info));
    }

    #[test]
    fn the_webrtc_stack_cannot_flood_the_log() {
        let log = guarded_log(LevelFilter::Info, None);
        for i in 0..100 {
            emit(
                &log,
                Level::Warn,
                "rtc_ice::agent",
                &format!("[controlled]: discard message from (192.0.2.1:{i}), bad integrity"),
            );
        }
        assert_eq!(
            taken(&log).len(),
            STACK_LINES as usize,
            "one window's budget"
        );
        // peercam's own lines are not throttled here (they have their own, per episode).
        for _ in 0..100 {
            emit(&log, Level::Warn, "peercam::http", "a line");
        }
        assert_eq!(taken(&log).len(), 100);
        // The next window's first line says how many were dropped.
        let t0 = std::time::Instant::now();
        let throttle = StackThrottle::default();
        for _ in 0..STACK_LINES + 5 {
            throttle.admit("rtc_dtls", t0);
        }
        assert_eq!(throttle.admit("rtc_dtls", t0 + STACK_WINDOW), Some(5));
        assert_eq!(throttle.admit("rtc_ice", t0), Some(0), "per target");
    }
}
