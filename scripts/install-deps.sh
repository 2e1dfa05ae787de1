#!/usr/bin/env bash
# Installs the Debian 12 packages peercam needs to build (and, with --test, to run its
# browser tests and, with iproute2, iptables, coturn and openssl, its network-namespace and
# NAT tests; systemd for `systemd-analyze verify` of the units). Skips apt entirely when
# everything is already installed.
set -euo pipefail
packages=(clang libclang-dev nasm pkg-config libopus-dev libasound2-dev cmake ca-certificates)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(chromium firefox-esr iproute2 iptables coturn openssl systemd)
  command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
fi
"$(dirname "$0")/apt-install.sh" "${packages[@]}"
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins 1.95.0" >&2
  exit 1
fi
