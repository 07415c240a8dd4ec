#!/usr/bin/env python3
"""Offline checks of the deployment files, run by deploy/check.sh.

    checks.py syntax            every YAML / JSON / TOML file under envoy/ and deploy/ parses
    checks.py compose           structure of deploy/docker-compose.yml (no Docker engine needed)
    checks.py dockerfiles       stages, non-root final user, COPY sources exist
    checks.py generated         committed generated files equal a fresh render
    checks.py kinds FILE...     every object's apiVersion/kind is one this project means to use
    checks.py istio-envoy ENVOY WASM_DIR  the Istio gateway's chain, built as istiod builds it, is the gateway's order and passes envoy --mode validate

Each prints one `ok:` line per check, or `FAIL:` lines and exits 1.
Needs Python 3.11+ and PyYAML.
"""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
ENVOY = ROOT / "envoy"

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"FAIL: {message}")


def ok(message: str) -> None:
    print(f"ok: {message}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def files(*patterns: str) -> list[Path]:
    found: set[Path] = set()
    for base in (ENVOY, DEPLOY):
        for pattern in patterns:
            found.update(p for p in base.rglob(pattern) if "secrets" not in p.relative_to(ROOT).parts)
    return sorted(found)


# ---------------------------------------------------------------- syntax


def check_syntax() -> None:
    counts = {"YAML": 0, "JSON": 0, "TOML": 0}
    for path in files("*.yaml", "*.yml"):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(f"{rel(path)}: {e}")
            continue
        if not docs:
            fail(f"{rel(path)}: no YAML document")
        counts["YAML"] += 1
    for path in files("*.json"):
        try:
            value = json.loads(path.read_text())
        except ValueError as e:
            fail(f"{rel(path)}: {e}")
            continue
        # ECDS files carry the filter config as a JSON string: parse it too.
        for resource in value.get("resources", []) if isinstance(value, dict) else []:
            inner = resource.get("typed_config", {}).get("config", {}).get("configuration", {}).get("value")
            if inner is not None:
                try:
                    json.loads(inner)
                except ValueError as e:
                    fail(f"{rel(path)}: filter configuration is not JSON: {e}")
        counts["JSON"] += 1
    for path in files("*.toml"):
        try:
            tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            fail(f"{rel(path)}: {e}")
            continue
        counts["TOML"] += 1
    ok(", ".join(f"{n} {kind} files parse" for kind, n in counts.items()))


# ---------------------------------------------------------------- compose

# Keys of the Compose Specification this file may use; anything else is
# most likely a typo (no engine here to tell us).
SERVICE_KEYS = {
    "build", "image", "command", "entrypoint", "environment", "env_file", "depends_on", "ports",
    "expose", "volumes", "networks", "secrets", "configs", "restart", "read_only", "cap_add",
    "cap_drop", "security_opt", "user", "profiles", "healthcheck", "deploy", "network_mode",
    "tmpfs", "ulimits", "labels", "container_name", "working_dir", "stop_grace_period",
    "stop_signal", "logging", "extra_hosts", "init", "shm_size", "sysctls", "devices",
}
TOP_KEYS = {"name", "services", "networks", "volumes", "secrets", "configs", "include"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def expand(value: str) -> str:
    """`${NAME:-default}` -> default: what compose substitutes with NAME unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def check_compose() -> None:
    path = DEPLOY / "docker-compose.yml"
    compose = yaml.safe_load(path.read_text())
    before = len(failures)
    for key in compose:
        if key not in TOP_KEYS and not key.startswith("x-"):
            fail(f"compose: unknown top-level key {key!r}")
    services = compose.get("services", {})
    volumes = set(compose.get("volumes") or {})
    secrets = set(compose.get("secrets") or {})
    networks = set(compose.get("networks") or {}) | {"default"}
    for name, service in services.items():
        where = f"compose: services.{name}"
        for key in service:
            if key not in SERVICE_KEYS and not key.startswith("x-"):
                fail(f"{where}: unknown key {key!r}")
        if "image" not in service and "build" not in service:
            fail(f"{where}: needs image or build")
        build = service.get("build")
        if isinstance(build, dict):
            context = (DEPLOY / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                fail(f"{where}: build.dockerfile {dockerfile} does not exist")
        deps = service.get("depends_on", {})
        for dep, spec in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            if dep not in services:
                fail(f"{where}: depends_on unknown service {dep!r}")
            if isinstance(spec, dict) and spec.get("condition", "service_started") not in CONDITIONS:
                fail(f"{where}: depends_on.{dep}.condition {spec.get('condition')!r}")
            if isinstance(spec, dict) and dep in services and services[dep].get("profiles") and spec.get("required", True):
                fail(f"{where}: depends on {dep}, which only runs in a profile: set required: false")
        for volume in service.get("volumes", []):
            source = expand(volume).split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                target = (DEPLOY / source).resolve()
                # deploy/secrets is made by gen-dev-secrets.sh, never committed.
                if not target.exists() and "secrets" not in Path(source).parts:
                    fail(f"{where}: bind mount source {source} does not exist")
            elif source not in volumes:
                fail(f"{where}: volume {source!r} is not declared")
        for secret in service.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret.get("source")
            if secret_name not in secrets:
                fail(f"{where}: secret {secret_name!r} is not declared")
        svc_networks = service.get("networks", [])
        for network in svc_networks if isinstance(svc_networks, list) else svc_networks.keys():
            if network not in networks:
                fail(f"{where}: network {network!r} is not declared")
        for port in service.get("ports", []):
            if not re.fullmatch(r"((\d{1,3}\.){3}\d{1,3}:)?\d+(:\d+)?(/(tcp|udp))?", expand(str(port))):
                fail(f"{where}: port {port!r} is not HOST:CONTAINER")
    # The topology the testbed has: Envoy, ratelimit-service, 2 + 2 replicas.
    aliases: dict[str, int] = {}
    for service in services.values():
        nets = service.get("networks")
        if isinstance(nets, dict):
            for spec in nets.values():
                for alias in (spec or {}).get("aliases", []):
                    aliases[alias] = aliases.get(alias, 0) + 1
    if aliases.get("vllm-latency") != 2 or aliases.get("vllm-throughput") != 2:
        fail(f"compose: expected two replicas behind each pool alias, got {aliases}")
    for needed in ("envoy", "ratelimit-service", "ecds-render", "redis"):
        if needed not in services:
            fail(f"compose: service {needed!r} missing")
    if len(failures) == before:
        ok(f"docker-compose.yml structure ({len(services)} services; keys, references, build files, mounts)")


# ---------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def check_dockerfiles() -> None:
    before = len(failures)
    paths = sorted((DEPLOY / "docker").glob("Dockerfile*"))
    if not (ROOT / ".dockerignore").is_file():
        fail(".dockerignore missing (the build context is the whole repository)")
    targets = 0
    for path in paths:
        where = rel(path)
        # ARG defaults before the first FROM name the base images.
        args: dict[str, str] = {}
        stages: list[str] = []
        users: dict[str, str | None] = {}
        scratch: dict[str, bool] = {}
        for word, rest in dockerfile_instructions(path.read_text()):
            if word == "ARG" and not stages:
                name, _, default = rest.partition("=")
                args[name] = default
                if not default:
                    fail(f"{where}: base image ARG {name} has no default")
            elif word == "FROM":
                parts = rest.split()
                image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
                if "${" in image:
                    fail(f"{where}: FROM {parts[0]} names no ARG declared before the first FROM")
                elif image.endswith(":latest") or (":" not in image and image != "scratch") or "-latest" in image:
                    fail(f"{where}: FROM {image} is not pinned to a version")
                stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
                stages.append(stage)
                users[stage] = None
                scratch[stage] = image == "scratch"
            elif word == "USER" and stages:
                users[stages[-1]] = rest.split(":")[0]
            elif word == "COPY":
                copy_args = rest.split()
                source_stage = next((a.split("=", 1)[1] for a in copy_args if a.startswith("--from=")), None)
                if source_stage is not None:
                    if source_stage not in stages[:-1]:
                        fail(f"{where}: COPY --from={source_stage} names no earlier stage")
                    continue
                sources = [a for a in copy_args if not a.startswith("--")][:-1]
                for source in sources:
                    if source != "." and not (ROOT / source).exists():
                        fail(f"{where}: COPY source {source} does not exist in the repository")
        # Every stage a user runs (all but `build`) switches to a non-root
        # user; a scratch image holds only a .wasm file.
        for stage in stages:
            if stage == "build" or scratch[stage]:
                continue
            targets += 1
            if users[stage] is None or users[stage] in ("0", "root"):
                fail(f"{where}: target {stage} does not switch to a non-root USER")
    if len(failures) == before:
        ok(f"{len(paths)} Dockerfile(s), {targets} runnable targets: pinned bases, non-root users, COPY sources exist")


# ---------------------------------------------------------------- generated files


def run_python(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True)


def same_dir_files(expected: Path, actual: Path, names: list[str], what: str, regenerate: str) -> None:
    stale = [n for n in names if not (actual / n).is_file() or (expected / n).read_bytes() != (actual / n).read_bytes()]
    if stale:
        fail(f"{what} stale: {', '.join(stale)}; regenerate with:\n      {regenerate}")
    else:
        ok(f"{what} in sync with its registry")


def check_generated() -> None:
    render = str(ENVOY / "render-ecds.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "envoy"
        run_python(render, "--registry", str(ENVOY / "registry.example.toml"), "--cache-secret-placeholder", "--out", str(out))
        same_dir_files(out, ENVOY / "ecds", ["tenant-auth.json", "admission-open.json", "llm-policy.json", "admission.json"],
                       "envoy/ecds/*.json",
                       "envoy/render-ecds.py --registry envoy/registry.example.toml --cache-secret-placeholder --out envoy/ecds")
        base = DEPLOY / "k8s/base/config"
        out = Path(tmp) / "k8s"
        run_python(render, "--registry", str(base / "registry.toml"), "--only", "tenant-auth", "--only", "admission-open",
                   "--only", "admission", "--out", str(out))
        same_dir_files(out, base / "ecds", ["tenant-auth.json", "admission-open.json", "admission.json"],
                       "deploy/k8s/base/config/ecds/*.json",
                       "envoy/render-ecds.py --registry deploy/k8s/base/config/registry.toml "
                       "--only tenant-auth --only admission-open --only admission --out deploy/k8s/base/config/ecds")
        istio = DEPLOY / "k8s/overlays/istio"
        out = Path(tmp) / "istio"
        out.mkdir()
        run_python(str(istio / "render-filters.py"), "--registry", str(base / "registry.toml"), "--out-dir", str(out))
        same_dir_files(out, istio, ["wasmplugins.yaml", "envoyfilter-llm-policy.example.yaml"],
                       "deploy/k8s/overlays/istio filter resources",
                       "deploy/k8s/overlays/istio/render-filters.py --registry deploy/k8s/base/config/registry.toml "
                       "--out-dir deploy/k8s/overlays/istio")
    # Each deployment's registry names the replicas the way its platform does.
    expect = {
        ENVOY / "registry.example.toml": r"vllm-(latency|throughput)-\d:8000",
        DEPLOY / "config/registry.toml": r"vllm-(latency|throughput)-\d:8000",
        DEPLOY / "k8s/base/config/registry.toml": r"vllm-(latency|throughput)-\d\.vllm-(latency|throughput):8000",
    }
    for path, pattern in expect.items():
        registry = tomllib.loads(path.read_text())
        replicas = [r for pool in registry.get("pools", {}).values() for r in pool.get("replicas", [])]
        wrong = [r for r in replicas if not re.fullmatch(pattern, r)]
        if not replicas or wrong:
            fail(f"{rel(path)}: pool replicas {wrong or 'missing'} do not match {pattern}")
    ok("pool replica names fit each platform (compose service names, StatefulSet pod DNS names)")


# ---------------------------------------------------------------- kinds

KNOWN_KINDS = {
    ("v1", "Namespace"), ("v1", "ServiceAccount"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"), ("v1", "ResourceQuota"), ("v1", "LimitRange"),
    ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"), ("kueue.x-k8s.io/v1beta2", "ClusterQueue"),
    ("kueue.x-k8s.io/v1beta2", "LocalQueue"),
    ("extensions.istio.io/v1alpha1", "WasmPlugin"), ("networking.istio.io/v1alpha3", "EnvoyFilter"),
    ("networking.istio.io/v1", "DestinationRule"), ("security.istio.io/v1", "PeerAuthentication"),
    ("gateway.networking.k8s.io/v1", "Gateway"), ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}
CLUSTER_SCOPED = {"Namespace", "ResourceFlavor", "ClusterQueue"}


def check_kinds(paths: list[str]) -> None:
    before = len(failures)
    count = 0
    for name in paths:
        for doc in yaml.safe_load_all(Path(name).read_text()):
            if not doc:
                continue
            count += 1
            kind = (doc.get("apiVersion"), doc.get("kind"))
            meta = doc.get("metadata", {})
            where = f"{name}: {kind[1]}/{meta.get('name')}"
            if kind not in KNOWN_KINDS:
                fail(f"{where}: unexpected apiVersion/kind {kind}")
            if kind[1] in CLUSTER_SCOPED and "namespace" in meta:
                fail(f"{where}: cluster-scoped object with a namespace")
            if kind[1] not in CLUSTER_SCOPED and meta.get("namespace") != "llm-gateway":
                fail(f"{where}: not in namespace llm-gateway")
    if len(failures) == before:
        ok(f"{count} objects: known apiVersion/kind, namespaced where they must be ({', '.join(Path(p).name for p in paths)})")


# ---------------------------------------------------------------- Istio EnvoyFilters

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
ROUTER = "envoy.filters.http.router"

# A gateway's HTTP filters as istiod builds them (pilot/pkg/networking/core,
# buildHTTPConnectionManager): WasmPlugins by phase, between Istio's own
# filters. Istio-only extensions (metadata exchange, istio_authn,
# istio.stats) are not in upstream Envoy and are left out; the rest are
# what Istio puts there, with neutral configs.
ISTIO_GATEWAY_CHAIN = [
    "AUTHN",
    "AUTHZ",
    ("envoy.filters.http.rbac", "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"),
    "STATS",
    "UNSPECIFIED_PHASE",
    ("envoy.filters.http.grpc_stats", "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"),
    ("envoy.filters.http.fault", "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"),
    ("envoy.filters.http.cors", "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"),
    (ROUTER, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
]

# The gateway chain, by the filters' own names (what a WasmPlugin's root id
# and the EnvoyFilter's filter are called).
GATEWAY_ORDER = ["tenant-auth", "admission-open", "llm-policy", "admission", ROUTER]


def render_ecds():
    """envoy/render-ecds.py as a module: the one table of filters and modules."""
    spec = importlib.util.spec_from_file_location("render_ecds", ENVOY / "render-ecds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wasm_plugin_filter(plugin: dict, wasm_dir: Path, modules: dict[str, str]) -> dict:
    """A WasmPlugin as istiod turns it into an HTTP filter: named
    <namespace>.<name>, its pluginConfig as the configuration's JSON text,
    the module as istio-agent hands it over (a local file)."""
    meta, spec = plugin["metadata"], plugin["spec"]
    name = f"{meta['namespace']}.{meta['name']}"
    # The module the plugin runs in every other form (render-ecds.py's table).
    module = modules[spec["pluginName"]]
    config = {
        "name": name,
        "root_id": spec["pluginName"],
        "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(wasm_dir / module)}}},
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(spec["pluginConfig"])},
    }
    if spec.get("failStrategy") == "FAIL_RELOAD":
        config["failure_policy"] = "FAIL_RELOAD"
    return {"name": name, "typed_config": {"@type": WASM_TYPE, "config": config}}


def istio_gateway_filters(plugins: list[dict], wasm_dir: Path, modules: dict[str, str]) -> list[dict]:
    """The HTTP filters istiod builds for the gateway, before EnvoyFilters."""
    filters = []
    for slot in ISTIO_GATEWAY_CHAIN:
        if isinstance(slot, tuple):
            filters.append({"name": slot[0], "typed_config": {"@type": slot[1]}})
            continue
        # Within a phase, the higher priority first.
        phase = [p for p in plugins if p["spec"].get("phase", "UNSPECIFIED_PHASE") == slot]
        phase.sort(key=lambda p: -p["spec"].get("priority", 0))
        filters += [wasm_plugin_filter(p, wasm_dir, modules) for p in phase]
    return filters


def apply_http_filter_patch(filters: list[dict], patch: dict, extensions: dict[str, dict]) -> bool:
    """One EnvoyFilter HTTP_FILTER patch as istiod applies it; False when
    istiod would skip it (its sub-filter is not in the chain). ADD appends:
    istiod ignores filterClass (istio/istio#51177). A filter configured by
    ECDS gets the EXTENSION_CONFIG of its name, as Envoy would receive it."""
    value = dict(patch["patch"]["value"])
    if "config_discovery" in value:
        value = {"name": value["name"], "typed_config": extensions[value["name"]]}
    operation = patch["patch"]["operation"]
    if operation == "ADD":
        filters.append(value)
        return True
    if operation == "INSERT_FIRST":
        filters.insert(0, value)
        return True
    sub = patch["match"]["listener"]["filterChain"]["filter"].get("subFilter", {}).get("name")
    names = [f["name"] for f in filters]
    if sub not in names:
        return False
    at = names.index(sub)
    if operation == "INSERT_BEFORE":
        filters.insert(at, value)
    elif operation == "INSERT_AFTER":
        filters.insert(at + 1, value)
    else:
        raise ValueError(f"operation {operation} is not simulated")
    return True


def role(filter: dict) -> str:
    """A gateway filter's own name: the plugin's root id, or its name."""
    config = filter.get("typed_config", {}).get("config", {})
    return config.get("root_id") or filter["name"]


def check_istio_envoy(envoy: str, wasm_dir: Path) -> None:
    """The Istio overlay as the gateway's Envoy would get it: the
    WasmPlugins placed as istiod places them, the EnvoyFilter patches
    applied as istiod applies them, the modules as istio-agent hands them
    over (the built ones). The chain must be the gateway's order, and Envoy
    must accept the listener (validate mode starts every VM and configures
    every plugin, so the placeholder cache secret is swapped for a valid
    throwaway one)."""
    istio = DEPLOY / "k8s/overlays/istio"
    modules = render_ecds().FILTERS
    missing = sorted({m for m in modules.values() if not (wasm_dir / m).is_file()})
    if missing:
        fail(f"{wasm_dir}: modules {missing} not built (make wasm): the Istio chain cannot be checked")
        return
    cluster = yaml.safe_load((istio / "envoyfilter-ratelimit.yaml").read_text())["spec"]["configPatches"][0]["patch"]["value"]
    plugins = [p for p in yaml.safe_load_all((istio / "wasmplugins.yaml").read_text()) if p]
    filters = istio_gateway_filters(plugins, wasm_dir, modules)
    patches = yaml.safe_load((istio / "envoyfilter-llm-policy.example.yaml").read_text())["spec"]["configPatches"]
    extensions = {}
    for patch in patches:
        if patch["applyTo"] != "EXTENSION_CONFIG":
            continue
        typed = patch["patch"]["value"]["typed_config"]
        name = patch["patch"]["value"]["name"]
        wasm = json.loads(json.dumps(typed["value"]))
        wasm["config"]["vm_config"]["code"] = {"local": {"filename": str(wasm_dir / modules[name])}}
        configuration = wasm["config"]["configuration"]
        inner = json.loads(configuration["value"])
        inner["cache_secret"] = secrets.token_hex(32)
        configuration["value"] = json.dumps(inner)
        extensions[name] = {"@type": typed["type_url"], **wasm}
    for patch in patches:
        if patch["applyTo"] == "HTTP_FILTER" and not apply_http_filter_patch(filters, patch, extensions):
            fail(f"istiod would skip the EnvoyFilter patch of {patch['patch']['value']['name']}: "
                 f"no filter {patch['match']['listener']['filterChain']['filter']['subFilter']['name']} in the chain")
    chain = [role(f) for f in filters if role(f) in GATEWAY_ORDER]
    if chain != GATEWAY_ORDER:
        fail(f"the Istio gateway's chain is {chain}, not {GATEWAY_ORDER}")
    with tempfile.TemporaryDirectory() as tmp:
        bootstrap = {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "clusters": [cluster],
                "listeners": [{
                    "name": "check",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "check",
                            "route_config": {"virtual_hosts": [{"name": "x", "domains": ["*"], "routes": []}]},
                            "http_filters": filters,
                        },
                    }]}],
                }],
            },
        }
        path = Path(tmp) / "istio-gateway.json"
        path.write_text(json.dumps(bootstrap))
        run = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--log-level", "warn"],
                             capture_output=True, text=True)
    if run.returncode != 0:
        fail(f"Envoy refuses the Istio gateway's listener: {run.stdout.strip()} {run.stderr.strip()}")
    elif "Deprecated field" in run.stderr:
        fail(f"the Istio gateway's listener uses deprecated fields: {run.stderr.strip()}")
    else:
        ok(f"the Istio gateway's chain as istiod builds it is {' -> '.join(chain)}; envoy --mode validate "
           f"accepts it with the built modules and the ratelimit cluster")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "istio-envoy":
            check_istio_envoy(rest[0], Path(rest[1]))
            return 1 if failures else 0
        {
            "syntax": check_syntax,
            "compose": check_compose,
            "dockerfiles": check_dockerfiles,
            "generated": check_generated,
        }.get(command, lambda: check_kinds(rest))()
    except subprocess.CalledProcessError as e:
        fail(f"{' '.join(e.cmd)}: {e.stderr.strip()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
