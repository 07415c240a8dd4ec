#!/usr/bin/env python3
"""Render the ECDS files of the gateway filters from a registry TOML.

Each filter (tenant-auth, llm-policy, admission) gets one file
`<out>/<filter>.json` holding an ECDS discovery response: a
TypedExtensionConfig whose Wasm `configuration` is the filter's JSON config,
with the whole registry inside. Envoy watches the directory
(`watched_directory` in gateway.yaml) and applies a file when it is renamed
into place, so every file is written to a temporary name in the same
directory and then renamed: Envoy never reads a half-written file, and
requests in flight finish on the old configuration.

Only the Python standard library is used (tomllib needs Python 3.11+), so the
script runs in a stock `python:3` container (see deploy/docker-compose.yml).

    render-ecds.py --registry registry.toml --cache-secret-file secret --out /etc/gateway/ecds

The cache secret is read from a file (or $CACHE_SECRET), never from the
command line, where other users could see it in the process list.

This is the one renderer of the filters' configuration: docker-compose, the
Kubernetes base, the Istio overlay (render-filters.py imports it) and the
testbed behind `make run`, the e2e tests and the benchmarks all run it.
`--chain` picks the filters a deployment runs (identity alone is
`--chain tenant-auth`); leave out of envoy/gateway.yaml the filters it does
not render, since the listener serves only once every filter has a config.

`--module gateway` renders the same chain as one module instead,
`llm-gateway.json` (llm_gateway.wasm): the phases run in one VM per worker
over one registry, and `--chain` switches phases off. The Envoy chain then
holds that one filter, right after the header_mutation filter.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import tomllib
from pathlib import Path

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
EXTENSION_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
STRING_TYPE = "type.googleapis.com/google.protobuf.StringValue"

# Filter name (also the ECDS resource name, root id and VM id) -> wasm file.
# In chain order. admission runs twice (two-phase admission): "admission-open"
# before llm-policy takes the request count and concurrency slot on the
# headers, so a tenant over either is refused before its body is buffered;
# "admission" after it reserves tokens and waits in the pool's fair queue.
FILTERS = {
    "tenant-auth": "tenant_auth.wasm",
    "admission-open": "admission_filter.wasm",
    "llm-policy": "llm_policy.wasm",
    "admission": "admission_filter.wasm",
}

# `--module gateway`: the whole chain as one module (one VM per worker, one
# registry), its phases picked by `--chain` like the filters above.
GATEWAY = "llm-gateway"
GATEWAY_WASM = "llm_gateway.wasm"
MODULES = ("filters", "gateway")

# llm-policy holds the request headers until the whole body is in (the pool
# and prefix key come from the body) and reads the body meanwhile. Envoy only
# delivers body data to a filter that paused the headers when this is set;
# otherwise the pause becomes StopAllIterationAndWatermark and the request
# hangs. admission must NOT have it: it pauses the headers while Admit is
# pending and does not handle body callbacks, so with the flag the body would
# resume the request before admission decided.
STOP_ITERATION_ON_HEADERS = {"llm-policy", GATEWAY}

# What `--chain` names: the three filters a deployment may run.
CHAIN = ("tenant-auth", "llm-policy", "admission")

# A VM that fails is replaced after this backoff (base, max).
DEFAULT_RELOAD_BACKOFF = ("1s", "30s")

# Too short for llm-policy (it wants >= 32 bytes), so an example file that
# still carries it makes the filter refuse its config: it fails closed
# instead of salting every tenant's cache with a published secret.
PLACEHOLDER_SECRET = "REPLACE-ME"


class RenderError(Exception):
    pass


def load_registry(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            registry = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RenderError(f"{path}: {e}") from e
    reject_toml_datetimes(registry, "")
    return registry


def reject_toml_datetimes(value, where: str) -> None:
    """The Rust registry wants RFC 3339 *strings*; an unquoted TOML datetime
    would load here but be refused by ratelimit-service and the filters."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        raise RenderError(f"{where}: quote the instant (\"{value}\"); the registry wants RFC 3339 strings")
    if isinstance(value, dict):
        for key, item in value.items():
            reject_toml_datetimes(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            reject_toml_datetimes(item, f"{where}[{i}]")


def read_cache_secret(args) -> str:
    if args.cache_secret_placeholder:
        return PLACEHOLDER_SECRET
    if args.cache_secret_file:
        try:
            secret = Path(args.cache_secret_file).read_text().strip()
        except OSError as e:
            raise RenderError(f"cache secret: {e}") from e
    else:
        secret = os.environ.get("CACHE_SECRET", "").strip()
    if len(secret.encode()) < 32:
        raise RenderError(
            "cache secret missing or shorter than 32 bytes "
            "(--cache-secret-file FILE or $CACHE_SECRET; e.g. `openssl rand -hex 32`)"
        )
    return secret


def chain_filters(chain: set[str]) -> list[str]:
    """The filters (ECDS resource names) `chain` runs, in chain order.
    Admission is two-phase when llm-policy runs (admission-open before it,
    admission after it); without llm-policy, one admission does it all."""
    unknown = chain - set(CHAIN)
    if unknown:
        raise RenderError(f"--chain: unknown filter(s) {sorted(unknown)}; choose from {list(CHAIN)}")
    two_phase = {"llm-policy", "admission"} <= chain
    names = ["tenant-auth"] if "tenant-auth" in chain else []
    if two_phase:
        names.append("admission-open")
    if "llm-policy" in chain:
        names.append("llm-policy")
    if "admission" in chain:
        names.append("admission")
    return names


# What each filter reads of the registry; the rest stays out of its config.
# With many tenants the registry is most of every ECDS file, parsed by every
# VM on every worker: admission reads no tenant at all, tenant-auth only who
# a credential names, llm-policy everything but credentials and audit. No
# filter reads what only ratelimit-service enforces (a tenant's limits and
# weight), nor when a key was made.
SERVICE_TENANT_FIELDS = {"limits", "model_limits", "weight"}
SERVICE_KEY_FIELDS = {"created_at"}
AUTH_TENANT_FIELDS = {"id", "tier", "disabled", "api_keys", "spiffe_ids"}
POLICY_TENANT_SKIPS = {"api_keys", "spiffe_ids", "audit"} | SERVICE_TENANT_FIELDS
ADMISSION_SECTIONS = {"tiers", "pools"}


def filters_tenant(tenant: dict) -> dict:
    """`tenant` without what only ratelimit-service reads."""
    kept = {k: v for k, v in tenant.items() if k not in SERVICE_TENANT_FIELDS}
    if "api_keys" in kept:
        kept["api_keys"] = [{k: v for k, v in key.items() if k not in SERVICE_KEY_FIELDS} for key in kept["api_keys"]]
    return kept


def registry_for(name: str, registry: dict) -> dict:
    """The part of `registry` the filter `name` reads ("llm-gateway": what
    its phases read, together)."""
    if name not in ("tenant-auth", "llm-policy", GATEWAY):
        return {k: v for k, v in registry.items() if k in ADMISSION_SECTIONS}
    tenants = [filters_tenant(t) for t in registry.get("tenants", [])]
    if name == "tenant-auth":
        return {**registry, "tenants": [{k: v for k, v in t.items() if k in AUTH_TENANT_FIELDS} for t in tenants]}
    if name == "llm-policy":
        return {**registry, "tenants": [{k: v for k, v in t.items() if k not in POLICY_TENANT_SKIPS} for t in tenants]}
    return {**registry, "tenants": tenants}


def filter_configs(registry: dict, cache_secret: str, cluster: str, chain: set[str] = set(CHAIN),
                   whole_registry: bool = False, only: list[str] | None = None) -> dict[str, dict]:
    """The JSON each filter of `chain` (or of it, those in `only`) receives
    in on_configure, in chain order. `cluster` is ratelimit-service's Envoy
    cluster ("" when there is none: then no admission, and llm-policy does
    not ask for the pools' limits). Each filter gets the part of the
    registry it reads, or with `whole_registry` all of it (as before; kept
    for the registry-scale benchmark)."""
    if not cluster and "admission" in chain:
        raise RenderError("admission needs ratelimit-service: give --ratelimit-cluster")
    names = chain_filters(chain)
    # Two-phase when llm-policy runs (admission-open is in the chain then).
    admission_phase = {"admission-open": "open", "admission": "reserve" if "admission-open" in names else "full"}

    def part(name: str) -> dict:
        return registry if whole_registry else registry_for(name, registry)

    def config_of(name: str) -> dict:
        if name == "tenant-auth":
            return {"registry": part(name)}
        if name == "llm-policy":
            policy = {"registry": part(name), "cache_secret": cache_secret}
            if cluster:
                # llm-policy asks ratelimit-service for the pools' real
                # max_model_len: it refuses what the pool would refuse.
                policy["limits_cluster"] = cluster
            return policy
        return {"registry": part("admission"), "cluster": cluster, "phase": admission_phase[name]}

    return {name: config_of(name) for name in names if not only or name in only}


def gateway_config(registry: dict, cache_secret: str, cluster: str, chain: set[str] = set(CHAIN)) -> dict:
    """The gateway module's JSON: the registry once (what its phases read),
    and a section per phase of `chain` (authentication always runs; admission needs the
    policy, since it admits what the policy decided)."""
    unknown = chain - set(CHAIN)
    if unknown:
        raise RenderError(f"--chain: unknown filter(s) {sorted(unknown)}; choose from {list(CHAIN)}")
    if "tenant-auth" not in chain:
        raise RenderError("--module gateway: the chain must include tenant-auth (it names the tenant)")
    if "admission" in chain and "llm-policy" not in chain:
        raise RenderError("--module gateway: admission needs llm-policy in the chain")
    if not cluster and "admission" in chain:
        raise RenderError("admission needs ratelimit-service: give --ratelimit-cluster")
    config: dict = {"registry": registry_for(GATEWAY, registry), "auth": {}}
    if "llm-policy" in chain:
        config["policy"] = {"cache_secret": cache_secret, **({"limits_cluster": cluster} if cluster else {})}
    if "admission" in chain:
        config["admission"] = {"cluster": cluster}
    return config


def ecds_resource(name: str, wasm_path: str, config: dict, reload_backoff=DEFAULT_RELOAD_BACKOFF) -> dict:
    return {
        "resources": [
            {
                "@type": EXTENSION_TYPE,
                "name": name,
                "typed_config": {
                    "@type": WASM_TYPE,
                    "config": {
                        "name": name,
                        "root_id": name,
                        "configuration": {
                            "@type": STRING_TYPE,
                            "value": json.dumps(config, separators=(",", ":")),
                        },
                        "vm_config": {
                            "vm_id": name,
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": wasm_path}},
                        },
                        # A filter whose VM fails (a trap: the filters never
                        # panic, this is the second line of defence) is
                        # replaced by a fresh VM for the next request, after a
                        # backoff; never let through unauthenticated or
                        # unmetered. Other failures fall back to FAIL_CLOSED.
                        # Reloads show as wasm.<filter>.vm_reload (alerted).
                        "failure_policy": "FAIL_RELOAD",
                        "reload_config": {"backoff": {"base_interval": reload_backoff[0], "max_interval": reload_backoff[1]}},
                        **({"allow_on_headers_stop_iteration": True} if name in STOP_ITERATION_ON_HEADERS else {}),
                    },
                },
            }
        ]
    }


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_backoff(text: str) -> tuple[str, str]:
    base, sep, most = text.partition(":")
    if not sep or not all(re.fullmatch(r"[0-9]+(\.[0-9]+)?s", d) for d in (base, most)):
        raise RenderError(f"--reload-backoff {text!r}: want BASE:MAX in seconds, e.g. 1s:30s")
    return base, most


def parse_probe(text: str) -> tuple[str, str]:
    name, sep, wasm = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z0-9-]+", name) or name in FILTERS or name == GATEWAY:
        raise RenderError(f"--probe-filter {text!r}: want NAME=WASM_PATH, NAME not a gateway filter")
    return name, wasm


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", required=True, type=Path, help="registry TOML")
    parser.add_argument("--out", required=True, type=Path, help="ECDS directory (Envoy's watched_directory)")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--cache-secret-file", help="file holding llm-policy's cache secret (default: $CACHE_SECRET)")
    secret.add_argument(
        "--cache-secret-placeholder",
        action="store_true",
        help=f"write the placeholder {PLACEHOLDER_SECRET!r} (examples only: llm-policy refuses it)",
    )
    parser.add_argument("--wasm-dir", default="/etc/gateway/wasm", help="where the .wasm files are inside the Envoy container")
    parser.add_argument("--ratelimit-cluster", default="ratelimit",
                        help="Envoy cluster of ratelimit-service (empty: none, so no admission)")
    parser.add_argument("--chain", default=",".join(CHAIN),
                        help=f"comma-separated filters to run, from {','.join(CHAIN)} (default: all)")
    parser.add_argument("--reload-backoff", default=":".join(DEFAULT_RELOAD_BACKOFF),
                        help="BASE:MAX backoff before a failed VM is replaced (default 1s:30s)")
    parser.add_argument("--probe-filter", action="append", default=[], metavar="NAME=WASM",
                        help="tests only: a module placed first in the chain, with an empty config (repeatable)")
    parser.add_argument("--whole-registry", action="store_true",
                        help="give every filter the whole registry instead of the part it reads (benchmarks)")
    parser.add_argument("--only", choices=sorted(FILTERS), action="append", help="render only this filter (repeatable)")
    parser.add_argument("--module", choices=MODULES, default="gateway",
                        help="gateway: the chain as one module, llm-gateway (default, what envoy/gateway.yaml runs); "
                             "filters: one module per filter")
    args = parser.parse_args(argv)
    try:
        registry = load_registry(args.registry)
        chain = {name.strip() for name in args.chain.split(",") if name.strip()}
        backoff = parse_backoff(args.reload_backoff)
        probes = [parse_probe(p) for p in args.probe_filter]
        wasm_dir = args.wasm_dir.rstrip("/")
        resources = [(name, wasm, {}) for name, wasm in probes]
        if args.module == "gateway" and chain:
            secret = read_cache_secret(args) if "llm-policy" in chain else ""
            config = gateway_config(registry, secret, args.ratelimit_cluster, chain)
            resources.append((GATEWAY, f"{wasm_dir}/{GATEWAY_WASM}", config))
        elif args.module == "filters":
            names = [n for n in chain_filters(chain) if not args.only or n in args.only]
            # Only llm-policy carries the secret: rendering the others needs none.
            secret = read_cache_secret(args) if "llm-policy" in names else ""
            configs = filter_configs(registry, secret, args.ratelimit_cluster, chain, args.whole_registry, names)
            resources += [(name, f"{wasm_dir}/{FILTERS[name]}", config) for name, config in configs.items()]
        args.out.mkdir(parents=True, exist_ok=True)
        for name, wasm, config in resources:
            resource = ecds_resource(name, wasm, config, backoff)
            write_atomically(args.out / f"{name}.json", json.dumps(resource, indent=2) + "\n")
            print(f"wrote {args.out / f'{name}.json'}")
    except RenderError as e:
        print(f"render-ecds: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
