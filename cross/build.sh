#!/usr/bin/env bash
# Builds the peercam release binary and its Debian package for one target, on Debian 12
# (bookworm) without Docker: Debian's cross compilers, the target architecture's -dev packages
# through dpkg multiarch, and the Rust target from rustup. Installs what is missing.
#
# The binary links the bookworm glibc (2.36) and Debian's libopus/libasound, so it runs on
# Debian 12 and Raspberry Pi OS bookworm (and newer).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: cross/build.sh [--no-deb] TARGET...     TARGET: aarch64, armv7 or x86_64
       cross/build.sh --test-build x86_64

Builds target/<triple>/release/peercam and (unless --no-deb) the .deb in
target/<triple>/debian/ with cargo-deb, for each TARGET. Several targets are built by one
cargo run, which keeps both cores busy where one target alone leaves one idle (the link,
the biggest crates). Run as root or with sudo available on Debian 12; missing packages (cross
gcc, foreign-architecture libopus/libasound, clang, nasm, ...), the rustup targets and
cargo-deb are installed on first use.

  aarch64   aarch64-unknown-linux-gnu      .deb arch arm64  (64-bit Raspberry Pi OS, Pi 3/4/5)
  armv7     armv7-unknown-linux-gnueabihf  .deb arch armhf  (32-bit Raspberry Pi OS, Pi 2/3/4/5)
  x86_64    x86_64-unknown-linux-gnu       .deb arch amd64

Options:
  --no-deb      build the binary only
  --test-build  build nothing: package the test build's binary (target/debug/peercam, which
                `cargo test` built) into target/debug/debian/, stripped, for the systemd VM
                test of the default test tier; host (x86_64) only. Not a package to ship.
  -h, --help    this text

Environment: CARGO_TARGET_DIR is honoured (default: target/ in the repository).
EOF
}

# The cargo-deb the packages are made with (its flags and output are what the tests check).
CARGO_DEB_VERSION=3.8.0

die() { printf 'cross/build.sh: error: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

build_deb=1
test_build=0
names=()
while (($#)); do
  case "$1" in
    --no-deb) build_deb=0 ;;
    --test-build) test_build=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) names+=("$1") ;;
  esac
  shift
done
((${#names[@]})) || { usage >&2; exit 2; }
if ((test_build)); then
  [[ "${names[*]}" == x86_64 || "${names[*]}" == amd64 ]] || die "--test-build packages the host's test build: the target is x86_64, not ${names[*]}"
  ((build_deb)) || die "--test-build only makes the .deb: it does not go with --no-deb"
fi

# target_vars NAME: sets triple, deb_arch and gnu (the GNU triplet of Debian's cross gcc).
target_vars() {
  case "$1" in
    aarch64|arm64|aarch64-unknown-linux-gnu)
      triple=aarch64-unknown-linux-gnu; deb_arch=arm64; gnu=aarch64-linux-gnu ;;
    armv7|armhf|armv7-unknown-linux-gnueabihf)
      triple=armv7-unknown-linux-gnueabihf; deb_arch=armhf; gnu=arm-linux-gnueabihf ;;
    x86_64|amd64|x86_64-unknown-linux-gnu)
      triple=x86_64-unknown-linux-gnu; deb_arch=amd64; gnu=x86_64-linux-gnu ;;
    *) usage >&2; die "unknown target '$1' (aarch64, armv7 or x86_64)" ;;
  esac
}
triples=()
for name in "${names[@]}"; do
  target_vars "$name"
  [[ " ${triples[*]} " == *" $triple "* ]] || triples+=("$triple")
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
[[ -f /etc/debian_version ]] || die "this script needs Debian 12 (apt, dpkg multiarch); with Docker use \`cross\` (see cross/README.md)"

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "not root and no sudo: cannot install packages"
  SUDO=sudo
fi

host_arch="$(dpkg --print-architecture)"
[[ "$host_arch" == amd64 ]] || die "expects an amd64 build machine (this one is $host_arch)"
added_archs=()

# --- system packages ------------------------------------------------------------------------
step "system packages for ${triples[*]}"
packages=(clang libclang-dev pkg-config nasm cmake gcc g++ libc6-dev dpkg-dev file)
for triple_ in "${triples[@]}"; do
  target_vars "$triple_"
  packages+=("libopus-dev:$deb_arch" "libasound2-dev:$deb_arch")
  [[ "$deb_arch" == "$host_arch" ]] && continue
  # No libc6-dev:<arch>: the cross gcc brings its own (libc6-dev-<arch>-cross in /usr/<gnu>),
  # and the multiarch libc6-dev would pull linux-libc-dev, libssl3, ... at exactly the amd64
  # versions, which fails whenever the foreign security index lags behind the amd64 one.
  packages+=("gcc-$gnu" "g++-$gnu")
  if ! dpkg --print-foreign-architectures | grep -x "$deb_arch" >/dev/null; then
    echo "dpkg --add-architecture $deb_arch"
    $SUDO dpkg --add-architecture "$deb_arch"
    added_archs+=("$deb_arch")
  fi
done
# scripts/apt-install.sh does nothing when all are installed; it retries `apt-get update`
# and, when that keeps failing (a mirror mid-sync), still installs with the indexes apt has.
if ! "$repo/scripts/apt-install.sh" "${packages[@]}"; then
  # Leave the machine as it was: an added architecture whose indexes are broken would make
  # every later `apt-get update` fail, for everyone.
  for arch in "${added_archs[@]}"; do
    $SUDO dpkg --remove-architecture "$arch" 2>/dev/null && echo "removed the $arch architecture again" >&2
  done
  die "installing the packages failed (above). Foreign-architecture packages must have exactly the versions of the installed native ones: an inconsistent mirror? Try again later, or \`apt-get upgrade\` first"
fi
echo "all installed"

# --- Rust targets ---------------------------------------------------------------------------
step "rust targets ${triples[*]}"
command -v rustup >/dev/null || die "rustup not found: install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins the toolchain"
for triple_ in "${triples[@]}"; do
  target_vars "$triple_"
  rustup target list --installed | grep -x "$triple" >/dev/null && continue
  rustup target add "$triple" || die "rustup target add $triple failed (no network to static.rust-lang.org?).
  Fallback on Debian 12: install Debian's Rust with the target's standard library,
    apt-get install rustc-web cargo-web libstd-rust-web-dev:$deb_arch
  and build with that toolchain outside rustup (rust-toolchain.toml pins 1.95.0, so call it
  explicitly, e.g. RUSTC=/usr/bin/rustc-web /usr/bin/cargo-web build --release --target $triple)."
done
echo "installed"

# --- cross environment ----------------------------------------------------------------------
# Variables are per target triple so host build scripts and proc macros are untouched.
target_args=()
for triple_ in "${triples[@]}"; do
  target_vars "$triple_"
  target_args+=(--target "$triple")
  [[ "$deb_arch" == "$host_arch" ]] && continue
  t_="${triple//-/_}"
  T_="$(tr '[:lower:]' '[:upper:]' <<<"$t_")"
  export "CARGO_TARGET_${T_}_LINKER=$gnu-gcc"
  # cc crate: openh264's C++ sources, rav1e's aarch64 assembly, ring.
  export "CC_${t_}=$gnu-gcc" "CXX_${t_}=$gnu-g++" "AR_${t_}=$gnu-ar"
  # pkg-config crate (audiopus_sys -> libopus, alsa-sys -> libasound): only the target's .pc files.
  export PKG_CONFIG_ALLOW_CROSS=1
  # (The pkg-config crate reads PKG_CONFIG_LIBDIR_<triple> before PKG_CONFIG_LIBDIR.)
  export "PKG_CONFIG_LIBDIR_${t_}=/usr/lib/$gnu/pkgconfig:/usr/share/pkgconfig" "PKG_CONFIG_PATH_${t_}="
  # bindgen (v4l2-sys-mit): the target's kernel and libc headers, not the host's.
  # /usr/$gnu is the sysroot of Debian's cross gcc (libc6-dev-*-cross, linux-libc-dev-*-cross).
  export "BINDGEN_EXTRA_CLANG_ARGS_${t_}=--target=$gnu --sysroot=/usr/$gnu -I/usr/$gnu/include"
done
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

# --- build ----------------------------------------------------------------------------------
if ((test_build)); then
  [[ -x "$target_dir/debug/peercam" ]] || die "no test build in $target_dir/debug/peercam: run \`cargo test --no-run\` (or scripts/test.sh) first"
else
  step "cargo build --locked --release ${target_args[*]} --bin peercam"
  start=$SECONDS
  cargo build --locked --release "${target_args[@]}" --bin peercam || die "cargo build for ${triples[*]} failed"
  echo "built in $((SECONDS - start)) s"
fi

# check_binary: the binary must be for the target and link the system libopus/libasound (what
# the .deb depends on), not a bundled copy built because pkg-config did not find the target's
# library. Uses triple, deb_arch and out.
check_binary() {
  [[ -x "$out" ]] || die "cargo succeeded but $out is missing"
  local info needed lib glibc
  info="$(file -b "$out")"
  echo "$info"
  case "$deb_arch" in
    arm64) [[ "$info" == *"ARM aarch64"* ]] ;;
    armhf) [[ "$info" == *"ARM, EABI5"* ]] ;;
    amd64) [[ "$info" == *"x86-64"* ]] ;;
  esac || die "$out is not a $deb_arch executable"
  needed="$(LC_ALL=C readelf -d "$out" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  echo "needs: $needed"
  for lib in libopus.so.0 libasound.so.2; do
    [[ " $needed " == *" $lib "* ]] || die "$out does not link $lib (pkg-config did not find the $deb_arch library?)"
  done
  glibc="$(LC_ALL=C readelf -W --dyn-syms "$out" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
  echo "newest glibc symbol: $glibc"
}

# build_deb: cargo deb for triple (or, with --test-build, for the test build); sets deb to the
# package's path.
build_deb() {
  if ! grep -q '^\[package\.metadata\.deb\]' Cargo.toml; then
    die "Cargo.toml has no [package.metadata.deb] section yet: cannot build the .deb (use --no-deb for the binary only)"
  fi
  if [[ "$(cargo deb --version 2>/dev/null)" != *" $CARGO_DEB_VERSION" ]]; then
    echo "installing cargo-deb $CARGO_DEB_VERSION into ~/.cargo/bin"
    (cd / && env -u CARGO_TARGET_DIR cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION") ||
      die "cargo install cargo-deb failed"
  fi
  local deb_dir="$target_dir/$triple/debian" before
  local deb_args=(--target "$triple" --no-build --no-strip)
  if ((test_build)); then
    # Where cargo test put the binary (no --target); cargo deb maps target/release/ in the
    # assets to the profile's directory. Stripped: the VM installs it through a 9p share.
    deb_dir="$target_dir/debug/debian"
    deb_args=(--profile dev --no-build --strip --output "$deb_dir/")
  fi
  before="$(ls -1 "$deb_dir"/*.deb 2>/dev/null || true)"
  cargo deb "${deb_args[@]}" || die "cargo deb ${deb_args[*]} failed"
  deb="$(ls -1t "$deb_dir"/peercam_*_"$deb_arch".deb 2>/dev/null | sed -n 1p)"
  [[ -n "$deb" ]] || die "cargo deb succeeded but no peercam_*_$deb_arch.deb is in $deb_dir (before: $before)"
  dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\|Installed-Size\):/  \1:/p'
}

results=()
for triple_ in "${triples[@]}"; do
  target_vars "$triple_"
  out="$target_dir/$triple/release/peercam"
  ((test_build)) && out="$target_dir/debug/peercam"
  step "check $out"
  check_binary
  deb=""
  if ((build_deb)); then
    step "cargo deb for $out"
    build_deb
  fi
  results+=("$triple: $out ($(stat -c %s "$out") bytes)${deb:+
  $triple: $deb ($(stat -c %s "$deb") bytes)}")
done

# --- summary --------------------------------------------------------------------------------
step "result"
printf '%s\n' "${results[@]}"
