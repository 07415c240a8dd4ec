#!/usr/bin/env python3
"""Render the ECDS file of the gateway module from a registry TOML.

The module (llm_gateway.wasm: authentication, policy and admission as
phases in one VM per worker) gets one file `<out>/llm-gateway.json` holding
an ECDS discovery response: a TypedExtensionConfig whose Wasm
`configuration` is the module's JSON config, with the part of the registry
its phases read inside. Envoy watches the directory
(`watched_directory` in gateway.yaml) and applies a file when it is renamed
into place, so every file is written to a temporary name in the same
directory and then renamed: Envoy never reads a half-written file, and
requests in flight finish on the old configuration.

Only the Python standard library is needed (tomllib needs Python 3.11+), so
the script runs in a stock `python:3` container (see deploy/docker-compose.yml).
Where `tomli` is installed it parses the registry instead: the same parser
as the standard library's tomllib, compiled (mypyc), about 1.8 times faster
on a registry of 100,000 tenants (bench/README.md, "render-ecds.py").

    render-ecds.py --registry registry.toml --cache-secret-file secret --out /etc/gateway/ecds

The cache secret is read from a file (or $CACHE_SECRET), never from the
command line, where other users could see it in the process list.

This is the one renderer of the module's configuration: docker-compose, the
Kubernetes base, the Istio overlay (render-filters.py imports it) and the
testbed behind `make run`, the e2e tests and the benchmarks all run it.
`--chain` picks the phases a deployment runs (identity alone is
`--chain tenant-auth`); the Envoy chain holds the one module, right after
the header_mutation filter.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
from pathlib import Path

try:
    # tomllib is tomli vendored into the standard library, uncompiled: the
    # compiled tomli reads every TOML 1.0 document into the same values (and
    # TOML 1.1, as ratelimit-service's parser does).
    import tomli as tomllib
except ImportError:  # not installed: the standard library's
    import tomllib

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
EXTENSION_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
STRING_TYPE = "type.googleapis.com/google.protobuf.StringValue"

# The module: the ECDS resource name, root id and VM id, and its wasm file.
GATEWAY = "llm-gateway"
GATEWAY_WASM = "llm_gateway.wasm"

# The module's policy holds the request headers until the whole body is in
# (the pool and prefix key come from the body) and reads the body meanwhile.
# Envoy only delivers body data to a filter that paused the headers when
# this is set; otherwise the pause becomes StopAllIterationAndWatermark and
# the request hangs.
STOP_ITERATION_ON_HEADERS = {GATEWAY}

# What `--chain` names: the phases a deployment may run.
CHAIN = ("tenant-auth", "llm-policy", "admission")

# A VM that fails is replaced after this backoff (base, max).
DEFAULT_RELOAD_BACKOFF = ("1s", "30s")

# Too short for llm-policy (it wants >= 32 bytes), so an example file that
# still carries it makes the module refuse its config: it fails closed
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
    reject_toml_datetimes(registry)
    return registry


class _TomlDatetime(Exception):
    pass


def _toml_datetime(value):
    raise _TomlDatetime


def reject_toml_datetimes(registry: dict) -> None:
    """The Rust registry wants RFC 3339 *strings*; an unquoted TOML datetime
    would load here but be refused by ratelimit-service and the module.

    Found by the JSON encoder (C), which hands `default` what JSON lacks: of
    what TOML loads, only datetimes. A walk in Python over 100,000 tenants
    took longer than parsing them; it runs only to say where one is."""
    try:
        json.dumps(registry, default=_toml_datetime)
    except _TomlDatetime:
        name_toml_datetime(registry, "")


def name_toml_datetime(value, where: str) -> None:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        raise RenderError(f"{where}: quote the instant (\"{value}\"); the registry wants RFC 3339 strings")
    if isinstance(value, dict):
        for key, item in value.items():
            name_toml_datetime(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            name_toml_datetime(item, f"{where}[{i}]")


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


# What the module reads of the registry; the rest stays out of its config.
# With many tenants the registry is most of the ECDS file, parsed by the VM
# on every worker: no phase reads what only ratelimit-service enforces (a
# tenant's limits and weight), nor when a key was made.
SERVICE_TENANT_FIELDS = {"limits", "model_limits", "weight"}
SERVICE_KEY_FIELDS = {"created_at"}


def module_tenant(tenant: dict) -> dict:
    """`tenant` without what only ratelimit-service reads."""
    kept = {k: v for k, v in tenant.items() if k not in SERVICE_TENANT_FIELDS}
    if "api_keys" in kept:
        kept["api_keys"] = [{k: v for k, v in key.items() if k not in SERVICE_KEY_FIELDS} for key in kept["api_keys"]]
    return kept


def module_registry(registry: dict) -> dict:
    """The part of `registry` the module's phases read."""
    return {**registry, "tenants": [module_tenant(t) for t in registry.get("tenants", [])]}


def gateway_config(registry: dict, cache_secret: str, cluster: str, chain: set[str] = set(CHAIN),
                   one_call_max_body_bytes: int | None = None, admit_stream: bool = True) -> dict:
    """The gateway module's JSON: the registry once (what its phases read),
    and a section per phase of `chain` (authentication always runs; admission needs the
    policy, since it admits what the policy decided)."""
    unknown = chain - set(CHAIN)
    if unknown:
        raise RenderError(f"--chain: unknown phase(s) {sorted(unknown)}; choose from {list(CHAIN)}")
    if "tenant-auth" not in chain:
        raise RenderError("--chain: the chain must include tenant-auth (it names the tenant)")
    if "admission" in chain and "llm-policy" not in chain:
        raise RenderError("--chain: admission needs llm-policy in the chain")
    if not cluster and "admission" in chain:
        raise RenderError("admission needs ratelimit-service: give --ratelimit-cluster")
    config: dict = {"registry": module_registry(registry), "auth": {}}
    if "llm-policy" in chain:
        config["policy"] = {"cache_secret": cache_secret, **({"limits_cluster": cluster} if cluster else {})}
    if "admission" in chain:
        config["admission"] = {"cluster": cluster}
        if one_call_max_body_bytes is not None:
            if one_call_max_body_bytes < 0:
                raise RenderError("--one-call-max-body-bytes: must be >= 0")
            config["admission"]["one_call_max_body_bytes"] = one_call_max_body_bytes
        if not admit_stream:
            config["admission"]["admit_stream"] = False
    return config


def ecds_resource(name: str, wasm_path: str, config: dict, reload_backoff=DEFAULT_RELOAD_BACKOFF,
                  stop_iteration_on_headers: bool | None = None) -> dict:
    if stop_iteration_on_headers is None:
        stop_iteration_on_headers = name in STOP_ITERATION_ON_HEADERS
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
                        # A module whose VM fails (a trap: the module never
                        # panics, this is the second line of defence) is
                        # replaced by a fresh VM for the next request, after a
                        # backoff; never let through unauthenticated or
                        # unmetered. Other failures fall back to FAIL_CLOSED.
                        # Reloads show as wasm.<module>.vm_reload (alerted).
                        "failure_policy": "FAIL_RELOAD",
                        "reload_config": {"backoff": {"base_interval": reload_backoff[0], "max_interval": reload_backoff[1]}},
                        **({"allow_on_headers_stop_iteration": True} if stop_iteration_on_headers else {}),
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
    if not sep or not re.fullmatch(r"[a-z0-9-]+", name) or name == GATEWAY:
        raise RenderError(f"--probe-filter {text!r}: want NAME=WASM_PATH, NAME not {GATEWAY}")
    return name, wasm


def parse_probe_config(text: str, probes: dict[str, str]) -> tuple[str, dict]:
    name, sep, raw = text.partition("=")
    if not sep or name not in probes:
        raise RenderError(f"--probe-config {text!r}: want NAME=JSON, NAME one of the --probe-filter names")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise RenderError(f"--probe-config {name}: not JSON: {e}") from e
    if not isinstance(config, dict):
        raise RenderError(f"--probe-config {name}: want a JSON object")
    return name, config


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
                        help=f"comma-separated phases to run, from {','.join(CHAIN)} (default: all)")
    parser.add_argument("--one-call-max-body-bytes", type=int, metavar="N",
                        help="largest announced body admitted in one call once it is in "
                             "(default: the module's, 16384; 0: every request is admitted on its headers)")
    parser.add_argument("--no-admit-stream", action="store_true",
                        help="admit by one unary Admit call per admission instead of messages on "
                             "each worker's AdmitStream (calls are balanced per call across replicas)")
    parser.add_argument("--reload-backoff", default=":".join(DEFAULT_RELOAD_BACKOFF),
                        help="BASE:MAX backoff before a failed VM is replaced (default 1s:30s)")
    parser.add_argument("--probe-filter", action="append", default=[], metavar="NAME=WASM",
                        help="tests only: a module placed first in the chain, with an empty config (repeatable)")
    parser.add_argument("--probe-config", action="append", default=[], metavar="NAME=JSON",
                        help="tests only: the configuration of the --probe-filter NAME instead of {} (repeatable)")
    args = parser.parse_args(argv)
    try:
        registry = load_registry(args.registry)
        chain = {name.strip() for name in args.chain.split(",") if name.strip()}
        backoff = parse_backoff(args.reload_backoff)
        probes = [parse_probe(p) for p in args.probe_filter]
        probe_configs = dict(parse_probe_config(c, dict(probes)) for c in args.probe_config)
        wasm_dir = args.wasm_dir.rstrip("/")
        resources = [(name, wasm, probe_configs.get(name, {})) for name, wasm in probes]
        if chain:
            # Only the policy carries the secret: identity alone needs none.
            secret = read_cache_secret(args) if "llm-policy" in chain else ""
            config = gateway_config(registry, secret, args.ratelimit_cluster, chain,
                                    args.one_call_max_body_bytes, not args.no_admit_stream)
            resources.append((GATEWAY, f"{wasm_dir}/{GATEWAY_WASM}", config))
        args.out.mkdir(parents=True, exist_ok=True)
        # Probes may hold the headers for the body, as the module does.
        holds_headers = STOP_ITERATION_ON_HEADERS | {name for name, _ in probes}
        for name, wasm, config in resources:
            resource = ecds_resource(name, wasm, config, backoff, stop_iteration_on_headers=name in holds_headers)
            write_atomically(args.out / f"{name}.json", json.dumps(resource, indent=2) + "\n")
            print(f"wrote {args.out / f'{name}.json'}")
    except RenderError as e:
        print(f"render-ecds: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
