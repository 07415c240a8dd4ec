#!/usr/bin/env python3
"""Offline checks of the deployment files, run by deploy/check.sh.

    checks.py syntax            every YAML / JSON / TOML file under envoy/ and deploy/ parses
    checks.py compose           structure of deploy/docker-compose.yml (no Docker engine needed)
    checks.py dockerfiles       stages, non-root final user, COPY sources exist
    checks.py generated         committed generated files equal a fresh render
    checks.py kinds FILE...     every object's apiVersion/kind is one this project means to use
    checks.py istio-envoy ENVOY WASM_DIR  the Istio gateway's chain, built as istiod builds it, is the gateway module before the router and passes envoy --mode validate
    checks.py istio-kinds [FILE...]  every Istio object (default: those under deploy/k8s) fits Istio's own typed models (tools/istio-models)
    checks.py crd-kinds [FILE...]    every Kueue and Gateway API object (default: those under deploy/k8s) fits its CRD's types (tools/crd-check)

Each prints one `ok:` line per check, or `FAIL:` lines and exits 1.
Needs Python 3.11+ and PyYAML.
"""

from __future__ import annotations

import importlib.util
import json
import os
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
ISTIO = DEPLOY / "k8s/overlays/istio"
# The Istio overlay's gateway module: its HTTP filter (in the overlay) and its
# configuration (out of band: it holds the cache secret), by render-filters.py.
ISTIO_FILTER_FILE = "envoyfilter-llm-gateway.yaml"
ISTIO_CONFIG_FILE = "envoyfilter-llm-gateway-config.example.yaml"

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
    check_wasm_build(DEPLOY / "docker/Dockerfile")
    if len(failures) == before:
        ok(f"{len(paths)} Dockerfile(s), {targets} runnable targets: pinned bases, non-root users, COPY sources exist; "
           "the gateway module and the three filters in the Envoy image, the module built by its own cargo call")


def check_wasm_build(path: Path) -> None:
    """The build stage puts the gateway module into /out/wasm (the Envoy
    image's /etc/gateway/wasm) in both branches, from the host's
    PREBUILT_DIR and from its own compile."""
    ecds = render_ecds()
    modules = [ecds.GATEWAY_WASM]
    run = next((rest for word, rest in dockerfile_instructions(path.read_text())
                if word == "RUN" and "/out/wasm" in rest), "")
    where = rel(path)
    for module in modules:
        if f'"$PREBUILT_DIR/wasm/{module}"' not in run:
            fail(f"{where}: the PREBUILT_DIR branch does not copy {module} to /out/wasm")
        if f"target/wasm32-wasip1/wasm/{module}" not in run:
            fail(f"{where}: the compiling branch does not copy {module} to /out/wasm")
    builds = [c for c in re.split(r"&&|;", run) if "cargo build" in c and "wasm32-wasip1" in c]
    if not any(c for c in builds if f"-p {ecds.GATEWAY}" in c):
        fail(f"{where}: {ecds.GATEWAY} is not built for wasm32-wasip1, got {builds}")


# ---------------------------------------------------------------- generated files


def run_python(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True)


def same_dir_files(expected: Path, actual: Path, names: list[str], what: str, regenerate: str,
                   stale_glob: str | None = None) -> None:
    """`names` in `actual` equal those in `expected`; with `stale_glob`, no
    other file of `actual` matches it (a file the renderer no longer makes)."""
    stale = [n for n in names if not (actual / n).is_file() or (expected / n).read_bytes() != (actual / n).read_bytes()]
    leftover = sorted(p.name for p in actual.glob(stale_glob) if p.name not in names) if stale_glob else []
    if stale:
        fail(f"{what} stale: {', '.join(stale)}; regenerate with:\n      {regenerate}")
    elif leftover:
        fail(f"{what}: {', '.join(leftover)} no longer rendered (the gateway module replaced the filters); delete")
    else:
        ok(f"{what} in sync with its registry")


def ecds_paths(bootstrap: object) -> set[str]:
    """The files under /etc/gateway/ecds/ an Envoy bootstrap's filters load."""
    found: set[str] = set()
    if isinstance(bootstrap, dict):
        source = bootstrap.get("path_config_source")
        path = source.get("path") if isinstance(source, dict) else None
        if isinstance(path, str) and path.startswith("/etc/gateway/ecds/"):
            found.add(path.removeprefix("/etc/gateway/ecds/"))
        for value in bootstrap.values():
            found |= ecds_paths(value)
    elif isinstance(bootstrap, list):
        for value in bootstrap:
            found |= ecds_paths(value)
    return found


def check_k8s_base_ecds(tmp: Path) -> None:
    """The base ships the module's ECDS file as the Secret gateway-ecds
    (its configuration holds the cache secret), rendered out of band: its
    registry must render, the Deployment must mount exactly the files
    envoy/gateway.yaml loads, and no rendered file is committed."""
    base = DEPLOY / "k8s/base"
    out = tmp / "k8s"
    run_python(str(ENVOY / "render-ecds.py"), "--registry", str(base / "config/registry.toml"),
               "--cache-secret-placeholder", "--out", str(out))
    rendered = sorted(p.name for p in out.glob("*.json"))
    wanted = sorted(ecds_paths(yaml.safe_load((ENVOY / "gateway.yaml").read_text())))
    docs = [d for d in yaml.safe_load_all((base / "gateway.yaml").read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "ecds")
    mounted = sorted(item["path"] for item in volume.get("secret", {}).get("items", []))
    before = len(failures)
    if rendered != wanted:
        fail(f"render-ecds.py renders {rendered} from the base registry; envoy/gateway.yaml loads {wanted}")
    if mounted != wanted or volume.get("secret", {}).get("secretName") != "gateway-ecds":
        fail(f"deploy/k8s/base/gateway.yaml: the ecds volume should be Secret gateway-ecds with {wanted}, is {volume}")
    committed = sorted(str(p.relative_to(base)) for p in (base / "config").rglob("*.json"))
    if committed:
        fail(f"deploy/k8s/base: {committed} committed; the module's ECDS file is the Secret gateway-ecds (delete them)")
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    if any(g.get("name") == "gateway-ecds" for g in kustomization.get("configMapGenerator", [])):
        fail("deploy/k8s/base/kustomization.yaml: a ConfigMap gateway-ecds; the ECDS file is the Secret gateway-ecds")
    if len(failures) == before:
        ok(f"deploy/k8s/base: the module's ECDS file ({', '.join(wanted)}) renders from its registry "
           f"and is mounted from the Secret gateway-ecds, as envoy/gateway.yaml loads it")


def check_generated() -> None:
    render = str(ENVOY / "render-ecds.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "envoy"
        run_python(render, "--registry", str(ENVOY / "registry.example.toml"), "--cache-secret-placeholder", "--out", str(out))
        same_dir_files(out, ENVOY / "ecds", ["llm-gateway.json"],
                       "envoy/ecds/*.json",
                       "envoy/render-ecds.py --registry envoy/registry.example.toml --cache-secret-placeholder --out envoy/ecds",
                       stale_glob="*.json")
        check_k8s_base_ecds(Path(tmp))
        base = DEPLOY / "k8s/base/config"
        istio = ISTIO
        out = Path(tmp) / "istio"
        out.mkdir()
        run_python(str(istio / "render-filters.py"), "--registry", str(base / "registry.toml"), "--out-dir", str(out))
        same_dir_files(out, istio, [ISTIO_FILTER_FILE, ISTIO_CONFIG_FILE],
                       "deploy/k8s/overlays/istio filter resources",
                       "deploy/k8s/overlays/istio/render-filters.py --registry deploy/k8s/base/config/registry.toml "
                       "--out-dir deploy/k8s/overlays/istio",
                       stale_glob="wasmplugin*.yaml")
        resources = yaml.safe_load((istio / "kustomization.yaml").read_text()).get("resources", [])
        if ISTIO_FILTER_FILE not in resources or ISTIO_CONFIG_FILE in resources:
            fail(f"deploy/k8s/overlays/istio/kustomization.yaml: resources must hold {ISTIO_FILTER_FILE} "
                 f"and not {ISTIO_CONFIG_FILE} (it carries the cache secret)")
        stale = sorted(p.name for p in istio.glob("envoyfilter-*.yaml")
                       if p.name not in (ISTIO_FILTER_FILE, ISTIO_CONFIG_FILE, "envoyfilter-ratelimit.yaml"))
        if stale:
            fail(f"deploy/k8s/overlays/istio: {stale} no longer rendered (the gateway module replaced the filters); delete")
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


# ---------------------------------------------------------------- Istio kinds

ISTIO_MODELS = ROOT / "tools/istio-models"


def relay(run: subprocess.CompletedProcess, what: str) -> None:
    """Passes on the report of a checker that speaks this script's `ok:` /
    `FAIL:` lines; a failure without a FAIL line is its own failure."""
    for line in run.stdout.splitlines():
        if line.startswith("FAIL: "):
            failures.append(line[len("FAIL: "):])
        print(line)
    if run.returncode != 0 and not failures:
        fail(f"{what} exited {run.returncode}: {run.stderr.strip()}")


def manifests() -> list[Path]:
    """Every Kubernetes manifest shipped under deploy/k8s, examples included."""
    return sorted(p for p in (DEPLOY / "k8s").rglob("*.yaml") if p.name != "kustomization.yaml")


def check_istio_kinds(paths: list[str]) -> None:
    """Runs tools/istio-models/validate.py on the files in the root
    tools/istio-models/install.sh built (Python 3.14 and Istio's models; this
    Python is older), in a chroot: as root, or as root of a user namespace."""
    root = Path(subprocess.run([str(ISTIO_MODELS / "install.sh"), "--print-root"], check=True,
                               capture_output=True, text=True).stdout.strip())
    rootfs = root / "rootfs"
    if not (root / ".llm-gateway-install-ok").exists():
        fail(f"no Istio models at {root}: run tools/istio-models/install.sh (make istio-models does)")
        return
    given = [Path(p).resolve() for p in paths] or manifests()
    with tempfile.TemporaryDirectory(dir=rootfs / "tmp") as tmp:
        inside = Path("/tmp") / Path(tmp).name
        (Path(tmp) / "validate.py").write_bytes((ISTIO_MODELS / "validate.py").read_bytes())
        args = []
        for i, path in enumerate(given):
            (Path(tmp) / f"{i}.yaml").write_bytes(path.read_bytes())
            args.append(f"{inside / f'{i}.yaml'}={rel(path) if path.is_relative_to(ROOT) else path}")
        chroot = ["chroot"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "chroot"]
        run = subprocess.run([*chroot, str(rootfs), "env", "-i", "PYTHONPATH=/opt/istio-models",
                              "python3", str(inside / "validate.py"), *args],
                             capture_output=True, text=True)
    relay(run, f"validate.py in {rootfs}")


def check_crd_kinds(paths: list[str]) -> None:
    """Runs tools/crd-check (built by its install.sh) on the files."""
    installer = str(ROOT / "tools/crd-check/install.sh")
    binary = subprocess.run([installer, "--print-bin"], check=True, capture_output=True, text=True).stdout.strip()
    if not Path(binary).exists():
        fail(f"no {binary}: run tools/crd-check/install.sh (make crd-check)")
        return
    given = [Path(p).resolve() for p in paths] or manifests()
    args = [f"{path}={rel(path) if path.is_relative_to(ROOT) else path}" for path in given]
    run = subprocess.run([binary, *args], capture_output=True, text=True)
    relay(run, binary)


# ---------------------------------------------------------------- Istio EnvoyFilters

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HEADER_MUTATION_TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
ROUTER = "envoy.filters.http.router"
TRACEPARENT = "x-gateway-traceparent"

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
        if value["name"] not in extensions:
            fail(f"the HTTP filter {value['name']} is configured by ECDS, and no EnvoyFilter "
                 f"(nor {ISTIO_CONFIG_FILE}) has its EXTENSION_CONFIG")
            return True
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


def handles_traceparent(filter: dict) -> bool:
    """A header_mutation that removes or sets x-gateway-traceparent."""
    typed = filter.get("typed_config", {})
    if typed.get("@type") != HEADER_MUTATION_TYPE:
        return False
    for mutation in typed.get("mutations", {}).get("request_mutations", []):
        if mutation.get("remove", "").lower() == TRACEPARENT:
            return True
        if mutation.get("append", {}).get("header", {}).get("key", "").lower() == TRACEPARENT:
            return True
    return False


def overlay_documents() -> list[dict]:
    """The overlay's own resources (in kustomization order), then the
    out-of-band configuration of the module: what the cluster holds once
    both are applied."""
    resources = yaml.safe_load((ISTIO / "kustomization.yaml").read_text()).get("resources", [])
    paths = [ISTIO / r for r in resources if (ISTIO / r).is_file()] + [ISTIO / ISTIO_CONFIG_FILE]
    return [d for path in paths for d in yaml.safe_load_all(path.read_text()) if d]


def check_istio_envoy(envoy: str, wasm_dir: Path) -> None:
    """The Istio overlay as the gateway's Envoy would get it: WasmPlugins
    (if any) placed as istiod places them, the EnvoyFilter patches applied
    as istiod applies them, the modules as istio-agent hands them over (the
    built ones). The chain must be the gateway module right before the
    router, with allow_on_headers_stop_iteration and a client-sent
    x-gateway-traceparent removed before it, and Envoy must accept the
    listener (validate mode starts every VM and configures every plugin, so
    the placeholder cache secret is swapped for a valid throwaway one)."""
    ecds = render_ecds()
    modules = {ecds.GATEWAY: ecds.GATEWAY_WASM}
    # What may be a gateway filter: the module.
    gateway_roles = set(modules) | {ROUTER}
    expected = [ecds.GATEWAY, ROUTER]
    docs = overlay_documents()
    plugins = [d for d in docs if d.get("kind") == "WasmPlugin"]
    patches = [p for d in docs if d.get("kind") == "EnvoyFilter" for p in d["spec"]["configPatches"]]
    needed = {modules[p["spec"]["pluginName"]] for p in plugins}
    needed |= {modules[p["patch"]["value"]["name"]] for p in patches if p["applyTo"] == "EXTENSION_CONFIG"}
    missing = sorted(m for m in needed if not (wasm_dir / m).is_file())
    if missing:
        fail(f"{wasm_dir}: modules {missing} not built (make wasm): the Istio chain cannot be checked")
        return
    clusters = [p["patch"]["value"] for p in patches if p["applyTo"] == "CLUSTER"]
    filters = istio_gateway_filters(plugins, wasm_dir, modules)
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
        for section in (inner, inner.get("policy")):
            if isinstance(section, dict) and "cache_secret" in section:
                section["cache_secret"] = secrets.token_hex(32)
        configuration["value"] = json.dumps(inner)
        extensions[name] = {"@type": typed["type_url"], **wasm}
    for patch in patches:
        if patch["applyTo"] == "HTTP_FILTER" and not apply_http_filter_patch(filters, patch, extensions):
            fail(f"istiod would skip the EnvoyFilter patch of {patch['patch']['value']['name']}: "
                 f"no filter {patch['match']['listener']['filterChain']['filter']['subFilter']['name']} in the chain")
    chain = [role(f) for f in filters if role(f) in gateway_roles]
    if chain != expected:
        fail(f"the Istio gateway's chain is {chain}, not {expected}")
    roles = [role(f) for f in filters]
    if ecds.GATEWAY in roles:
        at = roles.index(ecds.GATEWAY)
        module = filters[at]["typed_config"].get("config", {})
        if module.get("allow_on_headers_stop_iteration") is not True:
            fail(f"the {ecds.GATEWAY} filter lacks allow_on_headers_stop_iteration: true "
                 "(Envoy would never hand it the body: every inference request hangs)")
        if module.get("failure_policy") != "FAIL_RELOAD":
            fail(f"the {ecds.GATEWAY} filter's failure_policy is {module.get('failure_policy')}, not FAIL_RELOAD")
        if at + 1 < len(roles) and roles[at + 1] != ROUTER:
            fail(f"the {ecds.GATEWAY} filter is followed by {roles[at + 1]}, not the router")
        if at == 0 or not handles_traceparent(filters[at - 1]):
            fail(f"no header_mutation right before {ecds.GATEWAY} removes or sets a client-sent {TRACEPARENT} "
                 "(the module reads it before stripping the gateway's headers)")
    with tempfile.TemporaryDirectory() as tmp:
        bootstrap = {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "clusters": clusters,
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
    elif not failures:
        ok(f"the Istio gateway's chain as istiod builds it is {' -> '.join(chain)} "
           f"(allow_on_headers_stop_iteration, {TRACEPARENT} from clients removed before it); "
           f"envoy --mode validate accepts it with the built module and the ratelimit cluster")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "istio-kinds":
            check_istio_kinds(rest)
            return 1 if failures else 0
        if command == "crd-kinds":
            check_crd_kinds(rest)
            return 1 if failures else 0
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
