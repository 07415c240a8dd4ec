#!/usr/bin/env bash
# Builds a small root with CPython 3.14 and Istio's typed models
# (cloudcoil-models-istio, generated from Istio 1.31's CRDs), cached outside
# any clone. deploy/checks.py istio-kinds runs validate.py in it (chroot).
#
#   tools/istio-models/install.sh               build if needed (fast no-op when done)
#   tools/istio-models/install.sh --print-root  print the root's path only
#
# Why a root of its own: the models require Python >= 3.14 and this machine's
# Python is 3.11; Debian forky's python3 is 3.14, so debootstrap (minbase)
# makes the interpreter and the host's pip puts the pinned wheels, built for
# cp314, into it. Nothing in the root reaches the network.
#
# The root lives at ${XDG_CACHE_HOME:-$HOME/.cache}/llm-gateway/istio-models-<hash12>,
# <hash12> covering this script, requirements.txt, the suite and the mirror. A stamp
# is written last, so an interrupted build is redone from scratch. Needs root
# (debootstrap) and debootstrap (make setup installs it).
#
# env: DEBIAN_MIRROR, XDG_CACHE_HOME.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# forky is Debian testing; sid's debootstrap script serves it (bookworm's
# debootstrap has no script named forky). Its Release is signed with the
# bookworm and trixie keys bookworm's keyring holds.
suite=forky
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
key="$( { cat "${BASH_SOURCE[0]}" "$here/requirements.txt"; echo "$suite $mirror"; } | sha256sum | cut -c1-12)"
# shellcheck source=../cached.sh
. "$here/../cached.sh"
root="$cache/istio-models-$key"
stamp="$root/.llm-gateway-install-ok"

if [ "${1:-}" = "--print-root" ]; then
  echo "$root"
  exit 0
fi
install_once "$root" "$stamp"

log() { echo "istio-models: $*" >&2; }
command -v debootstrap >/dev/null || { log "debootstrap is not installed (make setup)"; exit 1; }
# shellcheck source=../rootfs.sh
. "$here/../rootfs.sh"
start=$(date +%s)
unmount_below "$root"
rm -rf --one-file-system "$root"
mkdir -p "$root"
log "debootstrap $suite (python3) -> $root/rootfs"
status=0
debootstrap --variant=minbase --include=python3 "$suite" "$root/rootfs" "$mirror" \
  /usr/share/debootstrap/scripts/sid >"$root/debootstrap.log" 2>&1 || status=$?
unmount_below "$root"
if [ "$status" != 0 ]; then
  tail -n 30 "$root/debootstrap.log" >&2
  exit 1
fi
rm -rf "$root/rootfs/var/cache/apt/archives/"*.deb "$root/rootfs/var/lib/apt/lists/"*
pyver=$(chroot "$root/rootfs" python3 -c 'import sys; print("%d%d" % sys.version_info[:2])')
[ "$pyver" = 314 ] || { log "forky's python3 is $pyver, the pins are for 314"; exit 1; }

# The host's pip fetches wheels for the root's interpreter: cp314, manylinux.
# --ignore-requires-python because pip checks Requires-Python (>=3.14) against
# the Python it runs on, not the one named by --python-version.
unset PIP_FIND_LINKS
wheels="$root/wheels"
target=(--only-binary=:all: --python-version 3.14 --implementation cp --abi cp314
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64)
python3 -m pip download -q --disable-pip-version-check --no-deps "${target[@]}" \
  -d "$wheels" -r "$here/requirements.txt"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --no-index --ignore-requires-python \
  "${target[@]}" --find-links "$wheels" --target "$root/rootfs/opt/istio-models" -r "$here/requirements.txt"
rm -rf "$wheels"

chroot "$root/rootfs" env PYTHONPATH=/opt/istio-models python3 -c \
  'import cloudcoil.models.istio.networking.v1alpha3, importlib.metadata as m; print("istio-models: ok: cloudcoil-models-istio", m.version("cloudcoil-models-istio"))' >&2
touch "$stamp"
log "done in $(( $(date +%s) - start ))s: $root"
