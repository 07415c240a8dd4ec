#!/usr/bin/env bash
# Validates what can be validated offline: the Envoy reference config, the
# docker-compose deployment, the Kubernetes / Istio manifests. Exits non-zero
# on the first failing group (all checks of a group are reported).
#
#   deploy/check.sh             everything available here
#   deploy/check.sh --no-smoke  skip the real run of envoy/gateway.yaml
#
# What runs (see deploy/README.md, "What is validated"):
#   1. YAML / JSON / TOML syntax of everything under envoy/ and deploy/
#   2. generated files (ECDS, the Istio EnvoyFilters) equal a fresh render of
#      their registry
#   3. the registries load in the real Rust code (tenantctl check, or
#      ratelimit-service started on loopback), when those binaries are built
#   4. envoy --mode validate on envoy/gateway.yaml (envoy/validate.sh), and a
#      real run against the built module and services (--smoke), when built
#   5. docker compose config when Docker Compose is installed; otherwise a
#      structural check of docker-compose.yml; Dockerfile structure
#   6. kustomize build of base and overlays/istio (kubectl kustomize or
#      kustomize), core kinds against the Kubernetes OpenAPI schemas
#      (kubernetes-validate, from PyPI), custom kinds against the list this
#      project uses, the Istio objects against Istio's typed models
#      (tools/istio-models), the Kueue and Gateway API objects against their
#      CRDs' types (tools/crd-check), and the Envoy config inside the Istio resources (the
#      ratelimit cluster, the gateway module's filter and config) through
#      envoy --mode validate with the built module
#   7. bash -n / py_compile of the scripts
set -euo pipefail

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$deploy")
venv=$root/.venv
k8s_version=${K8S_VERSION:-1.33.0}
smoke=--smoke
for arg in "$@"; do
  case $arg in
    --no-smoke) smoke= ;;
    *) echo "usage: $0 [--no-smoke]" >&2; exit 2 ;;
  esac
done

section() { printf '\n== %s\n' "$*"; }
skip() { printf 'SKIP: %s\n' "$*"; }

# Python with PyYAML: the project virtualenv (make setup creates it).
python=$venv/bin/python
if [[ ! -x $python ]]; then
  python3 -m venv "$venv"
fi
if ! "$python" -c 'import yaml' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check pyyaml
fi
export PYTHON=$python
checks() { "$python" "$deploy/checks.py" "$@"; }
work=$(mktemp -d "${TMPDIR:-/tmp}/deploy-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

section "1. syntax"
checks syntax

section "2. generated files"
checks generated

section "3. registries in the real parser"
tenantctl=$root/target/debug/tenantctl
ratelimit=$root/target/debug/ratelimit-service
registries=("$root/envoy/registry.example.toml" "$deploy/config/registry.toml" "$deploy/k8s/base/config/registry.toml")
if [[ -x $tenantctl ]]; then
  for r in "${registries[@]}"; do
    "$tenantctl" --registry "$r" check >/dev/null
    echo "ok: tenantctl check ${r#"$root"/}"
  done
elif [[ -x $ratelimit ]]; then
  # ratelimit-service refuses to start on a registry that does not validate.
  for r in "${registries[@]}"; do
    out=$work/rls.out
    "$ratelimit" --registry "$r" --admin-insecure --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
      --data-dir "$work/ledger" >"$out" 2>"$work/rls.err" &
    pid=$!
    for _ in $(seq 100); do
      grep -q '^LISTENING' "$out" && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if grep -q '^LISTENING' "$out"; then
      kill "$pid"; wait "$pid" 2>/dev/null || true
      echo "ok: ratelimit-service loads ${r#"$root"/}"
    else
      kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
      cat "$work/rls.err" >&2
      echo "FAIL: ratelimit-service refuses ${r#"$root"/}"
      exit 1
    fi
  done
else
  skip "neither tenantctl nor ratelimit-service is built (make build); registries only parsed as TOML"
fi

section "4. Envoy"
"$root/envoy/validate.sh" $smoke

section "5. docker-compose and Dockerfiles"
if docker compose version >/dev/null 2>&1; then
  # Compose wants the files gen-dev-secrets.sh makes; give it throwaway ones.
  cp -r "$deploy" "$work/deploy" && cp -r "$root/envoy" "$work/envoy"
  rm -rf "$work/deploy/secrets" && "$work/deploy/gen-dev-secrets.sh" >/dev/null
  docker compose -f "$work/deploy/docker-compose.yml" config --quiet
  COMPOSE_PROFILES=redis RATELIMIT_REDIS_ARGS="--redis redis://redis:6379/0" \
    docker compose -f "$work/deploy/docker-compose.yml" config --quiet
  echo "ok: docker compose config (default and redis profile)"
else
  skip "docker compose is not installed; structural check only"
fi
checks compose
checks dockerfiles

section "6. Kubernetes / Istio"
if command -v kustomize >/dev/null; then
  kustomize=(kustomize build)
elif command -v kubectl >/dev/null; then
  kustomize=(kubectl kustomize)
else
  kustomize=()
fi
if ((${#kustomize[@]})); then
  "${kustomize[@]}" "$deploy/k8s/base" >"$work/base.yaml"
  "${kustomize[@]}" "$deploy/k8s/overlays/istio" >"$work/istio.yaml"
  echo "ok: kustomize build of base ($(grep -c '^kind:' "$work/base.yaml") objects) and overlays/istio ($(grep -c '^kind:' "$work/istio.yaml") objects)"
  manifests=("$work/base.yaml" "$work/istio.yaml")
else
  skip "no kustomize or kubectl: overlays not built; checking the files one by one"
  mapfile -t manifests < <(find "$deploy/k8s" -name '*.yaml' ! -name kustomization.yaml)
fi
manifests+=("$deploy/k8s/base/secrets.example.yaml" "$deploy/k8s/overlays/istio/envoyfilter-llm-gateway-config.example.yaml")
checks kinds "${manifests[@]}"
if ! "$python" -c 'import kubernetes_validate' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate 2>/dev/null || true
fi
if "$python" -c 'import kubernetes_validate' 2>/dev/null; then
  # Custom kinds (Kueue, Istio, Gateway API) have no schema there: warned, not failed.
  "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$k8s_version" "${manifests[@]}"
  echo "ok: core kinds valid against the Kubernetes $k8s_version OpenAPI schemas (strict: no unknown fields)"
else
  skip "kubernetes-validate unavailable (pip install kubernetes-validate); core kinds not schema-checked"
fi
# The Istio objects against Istio's own schemas (typed models generated from
# its CRDs, in a Python 3.14 root tools/istio-models builds; needs root).
if "$root/tools/istio-models/install.sh"; then
  checks istio-kinds
else
  skip "tools/istio-models/install.sh failed (root and debootstrap needed): Istio objects not schema-checked"
fi
# The Kueue and Gateway API objects against their CRDs' types (tools/crd-check,
# built once outside the clone).
if "$root/tools/crd-check/install.sh"; then
  checks crd-kinds
else
  skip "tools/crd-check/install.sh failed: Kueue and Gateway API objects not schema-checked"
fi
# What Istio would paste into its Envoy, checked by Envoy itself.
if [[ -x ${ENVOY:-$venv/bin/envoy} ]]; then
  checks istio-envoy "${ENVOY:-$venv/bin/envoy}" "$root/target/wasm32-wasip1/wasm"
else
  skip "no Envoy: the Istio EnvoyFilter configs are not checked by Envoy"
fi

section "7. scripts"
for f in "$deploy"/*.sh "$root"/envoy/*.sh; do bash -n "$f"; done
"$python" -m py_compile "$deploy/checks.py" "$root/envoy/render-ecds.py" "$root/envoy/smoke-test.py" \
  "$deploy/k8s/overlays/istio/render-filters.py"
find "$deploy" "$root/envoy" -name __pycache__ -type d -prune -exec rm -rf {} +
echo "ok: shell and Python scripts compile"

printf '\nALL CHECKS PASSED\n'
