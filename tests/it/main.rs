//! peercam's integration tests, in one test binary (as ripgrep and cargo do): every module
//! links the whole daemon and webrtc-rs, and one binary links them once instead of once per
//! file. Each module is one concern; `common` holds the shared helpers (start the real
//! `peercam` binary, talk to it over WebSocket, dial it with a webrtc-rs client).
//!
//! Run one module with a filter, e.g. `cargo test --test it security::`.
//!
//! The `load` and `soak` modules measure frame rates, leaks and RSS, which a test running
//! beside them on a 2-core machine would disturb: `scripts/test.sh` runs them in a second
//! pass with `--test-threads=1` after the rest (`-- --skip load:: --skip soak::`).

mod common;

mod adaptive_bitrate;
mod alsa_capture;
mod config_cli;
mod daemon_e2e;
mod doctor;
mod interop;
mod load;
mod logs;
mod relay;
mod rpicam;
mod security;
mod snapshot;
mod soak;
mod udp_mux;
mod watchdog;
mod whep;
