#!/usr/bin/env bash
# Benchmarks (not tests): benches/run.sh [encoders] [latency] [daemon] [camera] [alloc]
#                         (default: the first three; camera and alloc only when named)
#
#   encoders  peercam's H.264 and AV1 encoders vs ffmpeg's libx264, librav1e and libsvtav1 on
#             the same test-pattern frames (benches/encode.rs)
#   latency   glass-to-glass latency in headless Chromium, H.264 640x480 and 1280x720, AV1
#             640x480 and 320x240, all at 30 fps (benches/browser/latency.mjs)
#   daemon    start to READY=1 (benches/ready.py); CPU and RSS with 1, 4 and 8 Chromium
#             viewers, idle RSS, and the fan-out ratio (benches/browser/viewers.mjs)
#   camera    the daemon's CPU per frame with the Camera Module played by the stand-in
#             rpicam-vid, passthrough (format h264) vs raw (format yu12), 640x480 and
#             1280x720 at 30 fps, one Chromium viewer, medians of 3 runs
#             (benches/browser/rpicam.mjs)
#   alloc     heap allocations per RTP packet in steady state: peercam's packetizer alone,
#             and the whole send path through webrtc-rs on a loopback peer connection
#             (benches/alloc.rs; dev profile, so --trace can name call sites). Counts,
#             not timings: the result does not depend on the machine's load
#
# Installs what it needs on Debian 12 (the test command's packages plus ffmpeg and
# gnuplot-nox), builds the release binary into target/x86_64-unknown-linux-gnu/release (the
# directory `scripts/test.sh --full`'s `cross/build.sh x86_64` fills, so it is reused), and writes the
# results (JSON, and latency.png) into target/bench/. Run it on a quiet machine: every number
# is a wall-clock or CPU measurement. BENCHMARKS.md holds the results and how to read them;
# benches/README.md says what each benchmark measures.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }

what=("$@")
((${#what[@]})) || what=(encoders latency daemon)
for w in "${what[@]}"; do
  case "$w" in
    encoders|latency|daemon|camera|alloc) ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "benches/run.sh: unknown benchmark '$w' (encoders, latency, daemon, camera, alloc)" >&2; exit 2 ;;
  esac
done
wants() { [[ " ${what[*]} " == *" $1 "* ]]; }

triple=x86_64-unknown-linux-gnu
# Cargo's target directory: CARGO_TARGET_DIR when set (the results still go to target/bench).
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
out=target/bench
bin="$target/$triple/release/peercam"
mkdir -p "$out"

timed() { wants encoders || wants latency || wants daemon || wants camera; }

step "system packages"
scripts/install-deps.sh --test
if timed; then
  scripts/apt-install.sh ffmpeg gnuplot-nox python3
  (cd tests/browser && { [[ -d node_modules/playwright-core ]] || npm ci --no-audit --no-fund; })

  step "release build (cargo build --release --target $triple)"
  # rpicam_vid_standin: the stand-in rpicam-vid of `camera`, found beside the binary.
  cargo build --locked --release --target "$triple" --bin peercam --example bench_encode \
    --example rpicam_vid_standin
fi
if wants alloc; then
  step "dev build of benches/alloc.rs (the test command's debug build is reused)"
  cargo build --locked --example bench_alloc
fi

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | sed -n 1p)," \
  "$(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "peercam $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%F)"

if wants encoders; then
  step "encoders: peercam vs ffmpeg on the same frames"
  "$target/$triple/release/examples/bench_encode" --out "$out"
fi
if wants latency; then
  step "glass-to-glass latency in headless Chromium"
  PEERCAM_BIN="$bin" node benches/browser/latency.mjs --out "$out"
fi
if wants daemon; then
  step "daemon: start to READY=1"
  python3 benches/ready.py "$bin" 10
  step "daemon: CPU and memory with 1, 4 and 8 viewers (H.264 640x480@30)"
  PEERCAM_BIN="$bin" node benches/browser/viewers.mjs --codec h264 --out "$out" 1 4 8
fi
if wants camera; then
  step "camera: daemon CPU per frame, passthrough vs raw (stand-in rpicam-vid)"
  PEERCAM_BIN="$bin" node benches/browser/rpicam.mjs --out "$out"
fi
if wants alloc; then
  step "alloc: heap allocations per RTP packet (packetizer; full send path over loopback)"
  "$target/debug/examples/bench_alloc" --out "$out"
fi
step "results in $out/"
ls -l "$out"
