//! Logging through the `log` facade: to the systemd journal when stderr is connected to it
//! (systemd sets `JOURNAL_STREAM`), else to stderr with time, level, target and message.
//!
//! Filtering: the configured level applies to everything; the WebRTC stack (`webrtc`,
//! `rtc_*` crates) is held at `warn` (or lower, if the level is lower) because it is chatty
//! at info and below. `RUST_LOG`, when set, is layered on top in env_logger syntax: a plain
//! level (`RUST_LOG=debug`) replaces the configured level, and module directives
//! (`RUST_LOG=info,webrtc=debug`) replace the defaults for those modules. The same rules
//! apply to both outputs.

use std::io::Write;

use env_filter::{Builder as FilterBuilder, Filter, FilteredLog};
use log::LevelFilter;

/// Log targets (prefixes) of dependencies that are noisy below `warn`.
const NOISY_TARGETS: &[&str] = &["webrtc", "rtc"];

/// Installs the global logger. Call once, early; later calls do nothing (the first logger
/// stays), which keeps tests that start the CLI in-process safe.
pub fn init(level: LevelFilter) {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = build_filter(level, rust_log.as_deref());
    let max_level = filter.filter();
    let installed = if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => log::set_boxed_logger(Box::new(FilteredLog::new(journal, filter))),
            Err(e) => {
                eprintln!("peercam: cannot open the systemd journal ({e}); logging to stderr");
                log::set_boxed_logger(Box::new(stderr_logger(filter)))
            }
        }
    } else {
        log::set_boxed_logger(Box::new(stderr_logger(filter)))
    };
    if installed.is_ok() {
        log::set_max_level(max_level);
    }
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
fn stderr_logger(filter: Filter) -> FilteredLog<env_logger::Logger> {
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
    FilteredLog::new(logger, filter)
}

#[cfg(test)]
mod tests {
    use log::{Level, Metadata};

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
    fn plain_level_is_found_in_a_spec() {
        assert_eq!(plain_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(plain_level("webrtc=trace, warn"), Some(LevelFilter::Warn));
        assert_eq!(plain_level("peercam=debug"), None);
        assert_eq!(plain_level("info/foo"), Some(LevelFilter::Info));
    }
}
