#!/usr/bin/env bash
# Installs the Debian 12 packages peercam needs to build (and, with --test, to run its
# browser tests). Skips apt entirely when everything is already installed.
set -euo pipefail
packages=(clang libclang-dev nasm pkg-config libopus-dev libasound2-dev cmake ca-certificates)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(chromium firefox-esr)
  command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins 1.95.0" >&2
  exit 1
fi
