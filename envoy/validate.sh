#!/usr/bin/env bash
# Validates envoy/gateway.yaml with the real Envoy, offline.
#
#   envoy/validate.sh           envoy --mode validate on gateway.yaml, and a
#                               check that envoy/ecds/llm-gateway.json is what
#                               render-ecds.py makes of registry.example.toml
#   envoy/validate.sh --smoke   also runs gateway.yaml for real against the
#                               built module, ratelimit-service and mock-vllm
#                               (envoy/smoke-test.py); skipped if not built
#
# gateway.yaml refers to absolute paths under /etc/gateway/ (ECDS files,
# TLS files) that validate mode insists exist, so the files are staged in a
# temporary directory and the paths rewritten there; nothing else changes.
#
# Environment: ENVOY (default .venv/bin/envoy, `make setup` installs it),
# PYTHON (default .venv/bin/python, needs PyYAML for --smoke).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
envoy=${ENVOY:-$root/.venv/bin/envoy}
python=${PYTHON:-$root/.venv/bin/python}
[[ -x $python ]] || python=python3

smoke=false
for arg in "$@"; do
  case $arg in
    --smoke) smoke=true ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
  esac
done

if [[ ! -x $envoy ]]; then
  echo "validate.sh: no Envoy at $envoy (run \`make setup\` or set ENVOY)" >&2
  exit 1
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/gateway-validate.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# 1. The committed example is exactly what the renderer produces (the
# gateway module, render-ecds.py's default), and nothing else is there.
"$python" "$here/render-ecds.py" --registry "$here/registry.example.toml" \
  --cache-secret-placeholder --out "$stage/rendered" >/dev/null
stale=$(cd "$here/ecds" && ls *.json | grep -vx 'llm-gateway.json' || true)
if [[ -n $stale ]]; then
  echo "validate.sh: envoy/ecds holds files render-ecds.py no longer makes: $stale" >&2
  exit 1
fi
for f in llm-gateway; do
  if ! cmp -s "$stage/rendered/$f.json" "$here/ecds/$f.json"; then
    echo "validate.sh: envoy/ecds/$f.json is stale; regenerate with:" >&2
    echo "  envoy/render-ecds.py --registry envoy/registry.example.toml --cache-secret-placeholder --out envoy/ecds" >&2
    exit 1
  fi
  "$python" -c 'import json, sys; d = json.load(open(sys.argv[1])); json.loads(d["resources"][0]["typed_config"]["config"]["configuration"]["value"])' \
    "$here/ecds/$f.json"
done
echo "ok: envoy/ecds/llm-gateway.json is valid JSON, in sync with registry.example.toml"

# 2. envoy --mode validate, with /etc/gateway/ staged under $stage.
mkdir -p "$stage/etc/ecds" "$stage/etc/tls"
for f in "$here"/ecds/*.json; do
  sed "s#/etc/gateway/#$stage/etc/#g" "$f" >"$stage/etc/ecds/$(basename "$f")"
done
# Validate mode loads the TLS files of the :8443 listener: a throwaway pair.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -keyout "$stage/etc/tls/tls.key" -out "$stage/etc/tls/tls.crt" 2>/dev/null
cp "$stage/etc/tls/tls.crt" "$stage/etc/tls/client-ca.crt"
sed "s#/etc/gateway/#$stage/etc/#g" "$here/gateway.yaml" >"$stage/gateway.yaml"
if ! out=$("$envoy" --mode validate -c "$stage/gateway.yaml" --log-level warn 2>&1); then
  echo "$out" >&2
  echo "validate.sh: envoy --mode validate FAILED on envoy/gateway.yaml" >&2
  exit 1
fi
if grep -q "Deprecated field" <<<"$out"; then
  grep "Deprecated field" <<<"$out" >&2
  echo "validate.sh: gateway.yaml uses deprecated fields" >&2
  exit 1
fi
echo "ok: envoy --mode validate accepts envoy/gateway.yaml ($("$envoy" --version | grep -o '[0-9]\+\.[0-9]\+\.[0-9]\+' | head -1))"

# 3. Optionally, a real run.
if $smoke; then
  set +e
  "$python" "$here/smoke-test.py"
  rc=$?
  set -e
  if [[ $rc == 77 ]]; then
    echo "skip: smoke test (binaries not built)"
  elif [[ $rc != 0 ]]; then
    exit "$rc"
  fi
fi
