#!/usr/bin/env bash
# Builds tools/crd-check (Kueue and Gateway API objects against their CRDs'
# types) once per machine and version, outside any clone: its typed crates
# bring a Kubernetes client that would take minutes to build in every CI run.
#
#   tools/crd-check/install.sh              build if needed (fast no-op when done)
#   tools/crd-check/install.sh --print-bin  print the binary's path only
#   tools/crd-check/install.sh --cargo ARGS run cargo ARGS on the crate, in the cached target dir
#                                           (make lint: fmt and clippy)
#
# The binary lives at ${XDG_CACHE_HOME:-$HOME/.cache}/llm-gateway/crd-check-<hash12>/crd-check,
# <hash12> covering this script, the crate's manifest, lock file and source, and the
# toolchain. Cargo's target dir (crd-check-target beside it) is shared by every version,
# so a change rebuilds only what changed. env: XDG_CACHE_HOME.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cached.sh
. "$here/../cached.sh"
export CARGO_TARGET_DIR="$cache/crd-check-target"

if [ "${1:-}" = "--cargo" ]; then
  shift
  mkdir -p "$cache"
  cd "$here" && exec cargo "$@"
fi

key="$( { cat "${BASH_SOURCE[0]}" "$here/Cargo.toml" "$here/Cargo.lock" "$here"/src/*.rs; (cd "$here" && rustc -vV); } \
  | sha256sum | cut -c1-12)"
dir="$cache/crd-check-$key"
bin="$dir/crd-check"

if [ "${1:-}" = "--print-bin" ]; then
  echo "$bin"
  exit 0
fi
install_once "$dir" "$bin"

start=$(date +%s)
echo "crd-check: building into $CARGO_TARGET_DIR" >&2
(cd "$here" && cargo build --locked --quiet)
mkdir -p "$dir"
cp "$CARGO_TARGET_DIR/debug/crd-check" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "crd-check: done in $(( $(date +%s) - start ))s: $bin" >&2
