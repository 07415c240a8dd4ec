#!/usr/bin/env python3
"""Render the ECDS files of the three gateway filters from a registry TOML.

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
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
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

# llm-policy holds the request headers until the whole body is in (the pool
# and prefix key come from the body) and reads the body meanwhile. Envoy only
# delivers body data to a filter that paused the headers when this is set;
# otherwise the pause becomes StopAllIterationAndWatermark and the request
# hangs. admission must NOT have it: it pauses the headers while Admit is
# pending and does not handle body callbacks, so with the flag the body would
# resume the request before admission decided.
STOP_ITERATION_ON_HEADERS = {"llm-policy"}

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


def filter_configs(registry: dict, cache_secret: str, cluster: str) -> dict[str, dict]:
    """The JSON each filter's on_configure receives (see testbed/src/lib.rs)."""
    return {
        "tenant-auth": {"registry": registry},
        # llm-policy asks ratelimit-service (the admission filter's cluster) for
        # the pools' real max_model_len: it refuses what the pool would refuse.
        "llm-policy": {"registry": registry, "cache_secret": cache_secret, "limits_cluster": cluster},
        "admission-open": {"registry": registry, "cluster": cluster, "phase": "open"},
        "admission": {"registry": registry, "cluster": cluster, "phase": "reserve"},
    }


def ecds_resource(name: str, wasm_path: str, config: dict) -> dict:
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
                        "reload_config": {"backoff": {"base_interval": "1s", "max_interval": "30s"}},
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
    parser.add_argument("--ratelimit-cluster", default="ratelimit", help="Envoy cluster of ratelimit-service")
    parser.add_argument("--only", choices=sorted(FILTERS), action="append", help="render only this filter (repeatable)")
    args = parser.parse_args(argv)
    try:
        registry = load_registry(args.registry)
        # Only llm-policy carries the secret: rendering the other two needs none.
        needs_secret = not args.only or "llm-policy" in args.only
        secret = read_cache_secret(args) if needs_secret else ""
        configs = filter_configs(registry, secret, args.ratelimit_cluster)
        args.out.mkdir(parents=True, exist_ok=True)
        for name, wasm in FILTERS.items():
            if args.only and name not in args.only:
                continue
            resource = ecds_resource(name, f"{args.wasm_dir.rstrip('/')}/{wasm}", configs[name])
            write_atomically(args.out / f"{name}.json", json.dumps(resource, indent=2) + "\n")
            print(f"wrote {args.out / f'{name}.json'}")
    except RenderError as e:
        print(f"render-ecds: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
