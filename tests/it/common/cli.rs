//! Running the `peercam` binary once, as a user would at a shell, for the command-line tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `peercam ARGS`, its output collected (outside systemd, no `RUST_LOG`).
pub fn peercam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peercam"))
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .output()
        .expect("run peercam")
}

/// A file of the repository, by its path from the top.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
