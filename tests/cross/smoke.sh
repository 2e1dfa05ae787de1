#!/usr/bin/env bash
# CI smoke test of the cross builds: builds the targets with cross/build.sh, runs each binary
# under qemu-user (`--version`, `check-config config/peercam.toml`, a broken config), then runs
# each arm daemon under qemu-user with the test pattern and tone and lets the host's headless
# Chromium dial it and decode its H.264 (tests/cross/dial.test.mjs).
# Build output stays in target/ (or $CARGO_TARGET_DIR), so a second run only re-links if needed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tests/cross/smoke.sh [--targets "aarch64 armv7"] [--deb] [--no-dial]

  --targets LIST  targets to build and check (aarch64, armv7, x86_64; default "aarch64 armv7")
  --deb           also build and check the .deb (needs [package.metadata.deb] in Cargo.toml)
  --no-dial       skip the browser test (it runs for aarch64 and armv7 when built)
  -h, --help      this text

Debian 12, root or sudo: installs qemu-user-static, chromium and the tests/browser npm
packages when missing; cross/build.sh installs the cross toolchains.
Env: CARGO_TARGET_DIR (build output), PEERCAM_LOG=1 (echo the emulated daemon's log).
EOF
}

targets="aarch64 armv7"
deb=0
dial=1
while (($#)); do
  case "$1" in
    --targets) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; targets="$2"; shift ;;
    --targets=*) targets="${1#--targets=}" ;;
    --deb) deb=1 ;;
    --no-dial) dial=0 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; echo "smoke.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
read -r -a target_list <<<"$targets"
((${#target_list[@]})) || { echo "smoke.sh: --targets is empty" >&2; exit 2; }
for t in "${target_list[@]}"; do
  case "$t" in aarch64|armv7|x86_64) ;; *) echo "smoke.sh: unknown target '$t' (aarch64, armv7, x86_64)" >&2; exit 2 ;; esac
done

# The browser test runs the arm binaries under qemu-user.
dial_targets=()
for t in "${target_list[@]}"; do [[ "$t" == x86_64 ]] || dial_targets+=("$t"); done
((${#dial_targets[@]})) || dial=0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | sed -n 1p)"
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo

triple_of() {
  case "$1" in
    aarch64) echo aarch64-unknown-linux-gnu ;;
    armv7) echo armv7-unknown-linux-gnueabihf ;;
    x86_64) echo x86_64-unknown-linux-gnu ;;
  esac
}
deb_arch_of() { case "$1" in aarch64) echo arm64 ;; armv7) echo armhf ;; x86_64) echo amd64 ;; esac; }
bin_of() { echo "$target_dir/$(triple_of "$1")/release/peercam"; }

# Runs a binary of target $1 (under qemu-user for the arm targets), bounded in time. No -L:
# the loader and libraries come from the host's multiarch directories (runtime_libs below);
# with the cross gcc's sysroot as -L the arm64 daemon hung in pthread_create and the armhf one
# crashed (that sysroot's ld.so with the host's newer libc6:armhf).
run_target() {
  local target="$1"; shift
  case "$target" in
    aarch64) timeout 120 qemu-aarch64-static "$@" ;;
    armv7) timeout 120 qemu-arm-static "$@" ;;
    x86_64) timeout 120 "$@" ;;
  esac
}

# --- steps ----------------------------------------------------------------------------------
summary=()
overall=$SECONDS
print_summary() {
  printf '\n==> summary (%d s in all)\n' "$((SECONDS - overall))"
  printf '  %s\n' "${summary[@]}"
}
# step NAME COMMAND...: runs COMMAND with errexit in force (as a background job: a function
# called from `if` would run with errexit off), times it, stops the script on failure.
step() {
  local name="$1"; shift
  printf '\n==> [%s] %s\n' "$(date +%T)" "$name"
  local start=$SECONDS rc=0
  "$@" &
  wait $! || rc=$?
  local took=$((SECONDS - start))
  if ((rc == 0)); then
    summary+=("$(printf '%-58s ok     %5d s' "$name" "$took")")
    printf -- '--- ok: %s (%d s)\n' "$name" "$took"
  else
    summary+=("$(printf '%-58s FAILED %5d s' "$name" "$took")")
    printf -- '--- FAILED: %s (exit %d after %d s)\n' "$name" "$rc" "$took" >&2
    print_summary
    echo "smoke.sh: FAILED at: $name" >&2
    exit 1
  fi
}

host_packages() {
  local packages=(qemu-user-static binutils file)
  if ((dial)); then
    packages+=(chromium)
    command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
  fi
  scripts/apt-install.sh "${packages[@]}"
  qemu-aarch64-static --version | sed -n 1p
}

# What the binary loads at run time under qemu-user from the host's multiarch directories
# (libc6, libopus0 and libasound2 of the target come with cross/build.sh's -dev packages;
# listed anyway, with the C++ runtime openh264 needs).
runtime_libs() {
  local arch
  arch="$(deb_arch_of "$1")"
  scripts/apt-install.sh "libc6:$arch" "libstdc++6:$arch" "libgcc-s1:$arch" "libopus0:$arch" "libasound2:$arch"
  echo "installed"
}

# All targets in one cross/build.sh (one cargo run keeps both cores busy).
build() {
  if ((deb)); then
    cross/build.sh "${target_list[@]}"
  else
    cross/build.sh --no-deb "${target_list[@]}"
  fi
}

check_version() {
  local target="$1" out
  out="$(run_target "$target" "$(bin_of "$target")" --version)"
  echo "peercam --version: $out"
  [[ "$out" == "peercam $version" ]] || { echo "expected 'peercam $version'" >&2; return 1; }
}

check_config() {
  local target="$1" bin out rc=0 bad
  bin="$(bin_of "$target")"
  out="$(run_target "$target" "$bin" check-config config/peercam.toml 2>&1)"
  echo "peercam check-config config/peercam.toml: $out"
  [[ "$out" == "config/peercam.toml: ok" ]] || { echo "expected 'config/peercam.toml: ok'" >&2; return 1; }
  # A broken file: exit status 2 and the line, column and key named.
  bad="$(mktemp --suffix=.toml)"
  printf '[video]\nfps = 0\n' >"$bad"
  out="$(run_target "$target" "$bin" check-config "$bad" 2>&1)" || rc=$?
  rm -f "$bad"
  echo "peercam check-config <fps = 0>: exit $rc: $out"
  ((rc == 2)) || { echo "expected exit status 2" >&2; return 1; }
  [[ "$out" == *":2:"*"[video] fps"* ]] || { echo "expected the line and key in the message" >&2; return 1; }
}

check_deb() {
  local target="$1" arch file path
  arch="$(deb_arch_of "$target")"
  file="$(ls -1t "$target_dir/$(triple_of "$target")/debian/"peercam_*_"$arch".deb | sed -n 1p)"
  echo "$file"
  [[ "$(dpkg-deb -f "$file" Architecture)" == "$arch" ]] || { echo "Architecture is not $arch" >&2; return 1; }
  local contents
  contents="$(dpkg-deb -c "$file")"
  for path in ./usr/bin/peercam ./etc/peercam/peercam.toml ./usr/share/man/man1/peercam.1.gz; do
    grep " $path\$" <<<"$contents" >/dev/null || { echo "no ${path#.} in $file" >&2; return 1; }
  done
  [[ "$(dpkg-deb --ctrl-tarfile "$file" | tar -xO ./conffiles)" == "/etc/peercam/peercam.toml" ]] \
    || { echo "/etc/peercam/peercam.toml is not the conffile of $file" >&2; return 1; }
  dpkg-deb -f "$file" Package Version Architecture Depends
}

npm_packages() {
  if [[ -d tests/browser/node_modules/playwright-core && -d tests/browser/node_modules/ws ]]; then
    echo "tests/browser/node_modules present"
  else
    (cd tests/browser && npm ci --no-audit --no-fund)
  fi
}

dial() {
  PEERCAM_CROSS_ARCH="$1" PEERCAM_CROSS_BIN="$(bin_of "$1")" \
    timeout 600 node --test --test-concurrency=1 --test-reporter=spec tests/cross/dial.test.mjs
}

# --- run ------------------------------------------------------------------------------------
echo "peercam $version cross smoke test: targets ${target_list[*]}$( ((deb)) && echo ', with .deb'), output in $target_dir"
step "host packages (qemu-user-static$( ((dial)) && echo ", chromium, node"))" host_packages
step "cross/build.sh$( ((deb)) || echo ' --no-deb') ${target_list[*]}" build
for t in "${target_list[@]}"; do
  if [[ "$t" != x86_64 ]]; then step "$t: runtime libraries for qemu-user" runtime_libs "$t"; fi
  step "$t: peercam --version" check_version "$t"
  step "$t: peercam check-config" check_config "$t"
  if ((deb)); then step "$t: .deb contents" check_deb "$t"; fi
done
if ((dial)); then
  step "npm packages for the browser test" npm_packages
  for t in "${dial_targets[@]}"; do
    step "$t under qemu-user: Chromium dials, decodes H.264" dial "$t"
  done
else
  echo "(browser test skipped: --no-dial, or no arm target)"
fi
print_summary
echo "smoke.sh: all passed"
