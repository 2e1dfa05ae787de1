#!/usr/bin/env bash
# Installs the Debian packages given (NAME or NAME:ARCH) when any is missing; does nothing,
# not even `apt-get update`, when all are installed. Shared by the build and test scripts.
#
# `apt-get update` is retried: a mirror in the middle of a sync serves index files that do
# not match its Release file. When it keeps failing, the install is tried anyway with the
# indexes apt has, because one broken index (say a foreign architecture's security index,
# after `dpkg --add-architecture armhf`) must not stop installing packages from the others.
#
# Usage: scripts/apt-install.sh PACKAGE...   (root, or sudo available)
# Exit status: 0 installed or nothing to do, 1 `apt-get install` failed.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
echo "installing: ${missing[*]}"
for attempt in 1 2 3; do
  $SUDO apt-get update -qq && break
  if ((attempt == 3)); then
    echo "warning: apt-get update kept failing (above); installing with the indexes apt has" >&2
  else
    echo "apt-get update failed (attempt $attempt of 3), retrying in 10 s" >&2
    sleep 10
  fi
done
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  || { echo "apt-get install ${missing[*]} failed" >&2; exit 1; }
