#!/usr/bin/env bash
# cross's pre-build step (Cross.toml): runs as root while cross builds the image from
# debian:bookworm, as `/pre-build-script <target triple>` with CROSS_DEB_ARCH (arm64, armhf) set.
# The project is not mounted yet at this point: everything comes from apt. Installs the host
# tools the build scripts need (gcc for build scripts, clang + libclang for v4l's bindgen,
# pkg-config, cmake, nasm), Debian's cross gcc for the target, and the target's -dev packages
# peercam links against (libopus, libasound) through dpkg multiarch.
set -euo pipefail
triple="${1:?usage: pre-build.sh <target triple> (cross passes it)}"
case "$triple" in
  aarch64-unknown-linux-gnu)     arch=arm64; gnu=aarch64-linux-gnu ;;
  armv7-unknown-linux-gnueabihf) arch=armhf; gnu=arm-linux-gnueabihf ;;
  *) echo "pre-build.sh: unsupported target $triple (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2; exit 1 ;;
esac
if [[ -n "${CROSS_DEB_ARCH:-}" && "$CROSS_DEB_ARCH" != "$arch" ]]; then
  echo "pre-build.sh: CROSS_DEB_ARCH=$CROSS_DEB_ARCH but $triple is $arch" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
dpkg --add-architecture "$arch"
apt-get update
apt-get install -y --no-install-recommends \
  ca-certificates make file gcc g++ libc6-dev pkg-config clang libclang-dev cmake nasm \
  "gcc-$gnu" "g++-$gnu" \
  "libopus-dev:$arch" "libasound2-dev:$arch"
rm -rf /var/lib/apt/lists/*
