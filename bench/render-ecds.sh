#!/usr/bin/env bash
# envoy/render-ecds.py of this checkout against the one of git revision REV,
# side by side in one hyperfine run, on a registry of N tenants (default
# 100,000, one API key each, as registry-scale generates). Both run with the
# project's Python (.venv, where make setup installs tomli).
#
#   bench/render-ecds.sh REV [TENANTS] [hyperfine args, e.g. --export-markdown FILE]
#
# Needs make setup and hyperfine (apt-get install hyperfine).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rev=${1:?usage: bench/render-ecds.sh REV [TENANTS] [hyperfine args]}
tenants=${2:-100000}
shift $(( $# < 2 ? $# : 2 ))
python=$root/.venv/bin/python
command -v hyperfine >/dev/null || { echo "hyperfine is not installed (apt-get install hyperfine)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$root" show "$rev:envoy/render-ecds.py" >"$work/render-ecds-$rev.py"
"$python" - "$root/envoy/registry.example.toml" "$work/registry.toml" "$tenants" <<'PY'
import hashlib, sys
example, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(out, "w") as f:
    f.write(open(example).read())
    for i in range(n):
        digest = hashlib.sha256(f"sk-scale-{i:07}".encode()).hexdigest()
        f.write(f'\n[[tenants]]\nid = "t{i:07}"\ntier = "standard"\nmodels = ["*"]\n'
                f'api_keys = [{{ id = "k", sha256 = "{digest}" }}]\n')
PY
echo "registry: $tenants tenants, $(( $(stat -c %s "$work/registry.toml") / 1024 / 1024 )) MiB" >&2
mkdir "$work/a" "$work/b"
args="--registry $work/registry.toml --cache-secret-placeholder"
hyperfine --warmup 1 --runs 5 "$@" \
  -n "$rev" "$python $work/render-ecds-$rev.py $args --out $work/a" \
  -n "this checkout" "$python $root/envoy/render-ecds.py $args --out $work/b"
cmp "$work/a/llm-gateway.json" "$work/b/llm-gateway.json" && echo "the same ECDS file, byte for byte" >&2
