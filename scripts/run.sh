#!/usr/bin/env bash
# Builds and runs peercam in the foreground with config/peercam.toml (or $PEERCAM_CONFIG).
# With no camera or microphone it streams the built-in test pattern and tone.
set -euo pipefail
cd "$(dirname "$0")/.."
# Rust first: without it, installing the Debian packages would be time spent for nothing.
if ! command -v cargo >/dev/null; then
  cat >&2 <<'MSG'
scripts/run.sh: cargo not found. Install Rust with rustup, then run this script again:

  apt-get install -y curl      # if curl is missing
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
  . "$HOME/.cargo/env"

(rust-toolchain.toml pins Rust 1.95.0; rustup installs it on the first build.)
MSG
  exit 1
fi
scripts/install-deps.sh
bin="${CARGO_TARGET_DIR:-target}/release/peercam"
if [[ ! -x "$bin" ]]; then
  echo "Building peercam (release). The first build takes about 10-15 minutes on 2 cores;"
  echo "later runs start in seconds (a few minutes after a change to the source)."
fi
cargo build --release --locked
exec "$bin" --config "${PEERCAM_CONFIG:-config/peercam.toml}" "$@"
