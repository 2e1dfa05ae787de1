#!/usr/bin/env bash
# Which top-level module of src/ imports which: one line per module, "a -> b c d".
#   scripts/module-deps.sh [COMMIT]   (default: the work tree)
# Reads `crate::<module>` paths in each module's code (not comments), leaving out unit tests (the
# `#[cfg(test)]` module at the end of a file, and files under a tests/ child folder).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-}
files() {
  if [[ -n $rev ]]; then git ls-tree -r --name-only "$rev" -- src; else git ls-files src; fi
}
show() {
  if [[ -n $rev ]]; then git show "$rev:$1"; else cat "$1"; fi
}
declare -A deps
while read -r f; do
  [[ $f == *.rs && $f != */tests.rs && $f != */tests/* && $f != *_tests.rs ]] || continue
  rel=${f#src/}
  module=${rel%%/*}
  module=${module%.rs}
  [[ $module == main || $module == lib ]] && continue
  used=$(show "$f" | awk '/^#\[cfg\(test\)\]/ { exit } !/^[[:space:]]*\/\// { print }' \
    | grep -o 'crate::[a-z0-9_]*' | sed 's/crate:://' | sort -u || true)
  for u in $used; do
    [[ $u != "$module" ]] && deps[$module]+=" $u"
  done
  deps[$module]+=""
done < <(files)
for m in $(printf '%s\n' "${!deps[@]}" | sort); do
  printf '%-9s -> %s\n' "$m" "$(tr ' ' '\n' <<<"${deps[$m]}" | sort -u | grep -v '^$' | tr '\n' ' ')"
done
