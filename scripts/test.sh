#!/usr/bin/env bash
# The test command (README "Test it"; `.ci/run` calls it). Installs what it needs on Debian 12.
#
#   bash scripts/test.sh          every change (CI): fmt; clippy, unit and integration tests
#                                 (security, load and the 45 s soak included) in one build;
#                                 a short fuzz pass; Chromium and Firefox (with the NAT
#                                 tests: namespaces, coturn, peercam relay); WHIP publishing to
#                                 Janus (an SFU) watched by four Chromium viewers; the V4L2 VM;
#                                 the systemd VM on a .deb of the test build; the aarch64
#                                 release build, its .deb and a Chromium dial of it under qemu-user
#   bash scripts/test.sh --full   all of that, then: the x86_64 and armv7 release builds and
#                                 their .debs, the systemd VM on the x86_64 release .deb, the
#                                 armv7 smoke dial, 5 minutes of fuzzing per target with every
#                                 crate instrumented, the 600 s soak. Must pass before a release.
#
# tests/README.md says what each step covers and where the time goes. Each step prints its
# elapsed time when it ends; the end prints every step's time and the total.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
full=0
case "${1:-}" in
  "") ;;
  --full) full=1 ;;
  -h | --help) usage; exit 0 ;;
  *) echo "test.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac
tier=$( ((full)) && echo "--full" || echo "default")

# --- step timing ------------------------------------------------------------------------------
start_all=$SECONDS
step_name=""
step_start=0
times=()
end_step() {
  [[ -n $step_name ]] || return 0
  local took=$((SECONDS - step_start))
  times+=("$(printf '%7d s  %s%s' "$took" "$step_name" "${1:-}")")
  printf '<== %d s: %s%s\n' "$took" "$step_name" "${1:-}"
  step_name=""
}
step() {
  end_step
  step_name=$*
  step_start=$SECONDS
  printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"
}
finish() {
  local status=$?
  ((status == 0)) && end_step || end_step "  <- FAILED (exit status $status)"
  printf '\n==> scripts/test.sh (%s tier): time per step\n' "$tier"
  printf '%s\n' "${times[@]}"
  printf '%7d s  total (%d min %d s): %s\n' "$((SECONDS - start_all))" \
    "$(((SECONDS - start_all) / 60))" "$(((SECONDS - start_all) % 60))" \
    "$( ((status == 0)) && echo passed || echo FAILED)"
  # The plain closing line: a failed step is the last one run.
  local steps=${#times[@]}
  if ((status == 0)); then
    printf 'steps: %d passed, 0 failed\n' "$steps"
  else
    printf 'steps: %d passed, 1 failed\n' "$((steps - 1))"
  fi
}
trap finish EXIT

# --- the default tier -------------------------------------------------------------------------
step "system packages"
scripts/install-deps.sh --test

step "cargo fmt --check"
cargo fmt --all -- --check

# One build lints and compiles: peercam's crates go through clippy-driver with warnings denied
# (scripts/clippy-rustc.sh, cargo's workspace wrapper), the dependencies through plain rustc,
# so there is no second pass over the dependency tree in check mode as `cargo clippy` makes.
# The same wrapper for the runs below, or cargo would compile peercam's crates again.
lint=(env RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/clippy-rustc.sh")
step "build and lint: the tests, benchmarks (benches/) and peercam with clippy -D warnings"
"${lint[@]}" cargo test --locked --all-targets --no-run
# `cargo test` builds examples as test harnesses (examples/<name>-<hash>); the tests run the
# stand-in rpicam-vid as a program, found at examples/rpicam_vid_standin, so it is built as one.
"${lint[@]}" cargo build --locked --example rpicam_vid_standin

step "unit and integration tests (but load and soak)"
"${lint[@]}" cargo test --locked --all-targets -- --skip load:: --skip soak::

# They measure frame rates, RSS and leaks: alone, one test at a time.
soak_seconds=$( ((full)) && echo 600 || echo 45)
step "load and soak tests, one at a time (soak: $soak_seconds s)"
PEERCAM_SOAK_SECONDS=$soak_seconds "${lint[@]}" cargo test --locked --test it -- \
  --test-threads=1 load:: soak::

step "fuzz: the corpus and 10 s per target (peercam's code instrumented)"
bash scripts/fuzz.sh --seconds 10

step "browser tests (headless Chromium and Firefox ESR; the NAT tests in network namespaces)"
PEERCAM_BIN="$PWD/target/debug/peercam" tests/browser/run.sh

# Janus from Debian in a network and PID namespace of the test's own (tests/sfu/README.md):
# about 26 s cold (apt and npm included), 15 s warm.
step "SFU: WHIP publish to Janus (VideoRoom), four Chromium viewers through Janus"
PEERCAM_BIN="$PWD/target/debug/peercam" tests/sfu/run.sh

step "V4L2 capture in a qemu VM (vivid, snd-aloop)"
tests/vm/run.sh --binary "$PWD/target/debug/peercam"

# The package's files, unit and maintainer scripts around the test build's binary (the release
# x86_64 package gets the same test in --full).
step "systemd in a qemu VM: a .deb of the test build installed, READY, dial, reload, watchdog, remove"
cross/build.sh --test-build x86_64
tests/vm/systemd.sh --deb "$(ls -1t target/debug/debian/peercam_*_amd64.deb | sed -n 1p)"

step "aarch64 release build and .deb; under qemu-user: --version, check-config, Chromium dial"
tests/cross/smoke.sh --targets aarch64 --deb

((full)) || exit 0

# --- the --full tier --------------------------------------------------------------------------
step "x86_64 and armv7 release builds and .debs; armv7 under qemu-user with a Chromium dial"
tests/cross/smoke.sh --targets "x86_64 armv7" --deb

step "systemd in a qemu VM: the x86_64 release .deb"
tests/vm/systemd.sh --deb "$(ls -1t target/x86_64-unknown-linux-gnu/debian/peercam_*_amd64.deb | sed -n 1p)"

step "fuzz: 5 min per target, every crate instrumented"
bash scripts/fuzz.sh --seconds 300 --instrument all
