#!/usr/bin/env bash
# Runs inside the cross image before the build: add the target architecture and install the
# -dev packages peercam links (libopus, libasound) plus the tools -sys crates need.
set -euo pipefail
: "${CROSS_DEB_ARCH:?cross sets CROSS_DEB_ARCH (arm64, armhf)}"
dpkg --add-architecture "$CROSS_DEB_ARCH"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  "libopus-dev:$CROSS_DEB_ARCH" "libasound2-dev:$CROSS_DEB_ARCH" \
  pkg-config clang libclang-dev nasm cmake
