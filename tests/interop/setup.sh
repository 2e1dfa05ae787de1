#!/usr/bin/env bash
# Makes (or reuses) the Python venv of the aiortc interop tools and prints its python's path
# as the only line on stdout; everything else goes to stderr.
#
#   py=$(bash tests/interop/setup.sh) && "$py" tests/interop/whep_client.py --url ...
#
# The venv is ${XDG_CACHE_HOME:-$HOME/.cache}/peercam-interop/venv, installed from PyPI with
# the exact versions and hashes of requirements.txt (wheels only: nothing is compiled, so no
# python3-dev). It is reused while requirements.txt and the interpreter are unchanged (a stamp
# file holds requirements.txt's sha256 and the interpreter), rebuilt otherwise. Concurrent runs
# wait for each other (flock), so parallel tests may all call it.
#
# The interpreter: $PEERCAM_INTEROP_PYTHON if set, else /usr/bin/python3 when present, else
# python3 on PATH. On Debian, a missing python3 or venv module is installed first through
# scripts/apt-install.sh (python3, python3-venv).
#
# To change the versions: edit requirements.in, then
#   pip-compile --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
#     --no-emit-find-links --output-file requirements.txt requirements.in
#
# Exit status: 0 ready, 1 could not make it (the reason on stderr).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
req="$here/requirements.txt"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/peercam-interop"
venv="$cache/venv"
stamp="$venv/.peercam-interop-stamp"
say() { echo "interop setup: $*" >&2; }
die() { say "$*"; exit 1; }
start=$(date +%s.%N)

on_debian() { command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; }

pick_python() {
  if [[ -n ${PEERCAM_INTEROP_PYTHON:-} ]]; then
    echo "$PEERCAM_INTEROP_PYTHON"
  elif [[ -x /usr/bin/python3 ]]; then
    echo /usr/bin/python3
  elif command -v python3 >/dev/null; then
    command -v python3
  elif on_debian; then
    bash "$repo/scripts/apt-install.sh" python3 python3-venv >&2 || die "could not install python3"
    echo /usr/bin/python3
  else
    die "no python3 (set PEERCAM_INTEROP_PYTHON to a Python 3.11 or later)"
  fi
}

python=$(pick_python)
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || die "$python is missing or older than 3.10 (aiortc 1.16 needs 3.10+)"
# Debian's python3 keeps ensurepip (which venv needs) in python3-venv.
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ $python == /usr/bin/* ]] && on_debian; then
    bash "$repo/scripts/apt-install.sh" python3-venv >&2 || die "could not install python3-venv"
  fi
  "$python" -c 'import venv, ensurepip' 2>/dev/null || die "$python cannot make a venv (no venv/ensurepip module)"
fi

want="$(sha256sum "$req" | cut -d' ' -f1) $(readlink -f "$(command -v "$python")") $("$python" -c 'import sys; print(sys.version.split()[0])')"

mkdir -p "$cache"
exec 9>"$cache/setup.lock"
flock 9

if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $venv/bin/python ]]; then
  echo "$venv/bin/python"
  exit 0
fi

say "making $venv with $python ($("$python" --version 2>&1)) from requirements.txt"
rm -rf "$venv"
"$python" -m venv "$venv" >&2 || die "python -m venv failed"
# Wheels only and every file's hash checked; --no-deps since requirements.txt pins them all.
if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --require-hashes --only-binary=:all: --no-deps -r "$req" >&2; then
  rm -rf "$venv"
  die "pip install failed (above). No network to PyPI, or no wheel for this platform ($(uname -m)): aiortc's av, cryptography, pylibsrtp... ship wheels for x86_64 and aarch64 Linux only"
fi
"$venv/bin/python" -c 'import aiortc, aiohttp, av' >&2 || { rm -rf "$venv"; die "the venv does not import aiortc/aiohttp/av"; }
echo "$want" >"$stamp"
say "ready in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
echo "$venv/bin/python"
