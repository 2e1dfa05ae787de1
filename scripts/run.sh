#!/usr/bin/env bash
# Builds and runs peercam in the foreground with config/peercam.toml (or $PEERCAM_CONFIG).
# With no camera or microphone it streams the built-in test pattern and tone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked
exec target/release/peercam --config "${PEERCAM_CONFIG:-config/peercam.toml}" "$@"
