#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (with the security, load
# and short soak tests), short fuzz runs, headless browser tests, VM and cross-build tests.
# Installs what it needs on Debian 12. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "system packages"
scripts/install-deps.sh --test

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (unit + integration)"
cargo test --locked --all-targets

step "fuzz: signaling, offer, config (30 s each; longer runs in BENCHMARKS.md)"
bash scripts/fuzz.sh --seconds 30

step "browser tests (headless Chromium and Firefox)"
cargo build --locked --bin peercam
PEERCAM_BIN="$PWD/target/debug/peercam" tests/browser/run.sh

step "real kernel: V4L2 capture in a qemu VM"
tests/vm/run.sh --binary "$PWD/target/debug/peercam"

step "release builds + Debian packages: amd64, arm64 (aarch64), armhf (armv7)"
# One cargo run for the three targets keeps both cores busy; the steps below reuse it.
cross/build.sh x86_64 aarch64 armv7
DEB=$(ls -1t target/x86_64-unknown-linux-gnu/debian/peercam_*_amd64.deb | sed -n 1p)

step "systemd in a qemu VM: install the .deb, READY, dial, reload, watchdog, stop, remove"
tests/vm/systemd.sh --deb "$DEB"

step "cross builds under qemu-user: --version, check-config, .deb, Chromium dials aarch64 and armv7"
tests/cross/smoke.sh --targets "aarch64 armv7" --deb

