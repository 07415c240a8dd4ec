#!/usr/bin/env python3
"""Runs envoy/gateway.yaml for real, against the built binaries, on loopback.

Where `envoy --mode validate` only checks that the bootstrap parses, this
starts the reference configuration with the built gateway module, the real
ratelimit-service and four mock-vllm replicas (two per pool), and checks
what a deployment relies on:

  - the module's ECDS file loads (no config_fail) and the listeners serve;
  - 401 without / with a wrong key, 403 for a model the tenant may not use;
  - a valid key is admitted (x-ratelimit-* headers) and lands on the pool
    its tier allows, with a cache_salt added, even when it asks for another
    pool with x-llm-pool;
  - the mTLS listener refuses a client without a certificate and maps a
    client certificate's SPIFFE URI SAN to its tenant;
  - the ops listener serves /ready and /stats/prometheus and nothing else;
  - rewriting an ECDS file (atomic rename) revokes a key without a restart.

Only the listen addresses, the file paths under /etc/gateway/ and the
upstream addresses are rewritten; everything else is gateway.yaml as
shipped. Exit code 0 = passed, 1 = failed, 77 = skipped (a binary is not
built). Needs Python 3.11+, PyYAML and openssl.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "llama-3.1-8b-instruct"
PARTNER_SPIFFE = "spiffe://example.org/ns/partner/sa/client"
SKIP = 77


class SmokeFailure(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)
    print(f"  ok  {what}")


# ---------------------------------------------------------------- processes


class Processes:
    """Every process started here; all stopped on exit, by pid."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = (self.logs / f"{name}.out").open("w")
        err = (self.logs / f"{name}.err").open("w")
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.running.append((name, proc))
        return proc

    def listening(self, name: str, proc: subprocess.Popen, timeout: float = 60) -> dict[str, str]:
        """The `LISTENING key=addr ...` line the binary prints when ready."""
        deadline = time.monotonic() + timeout
        path = self.logs / f"{name}.out"
        while time.monotonic() < deadline:
            for line in path.read_text().splitlines():
                if line.startswith("LISTENING "):
                    return dict(item.split("=", 1) for item in line.split()[1:])
            if proc.poll() is not None:
                raise SmokeFailure(f"{name} exited ({proc.returncode}): {self.tail(name)}")
            time.sleep(0.05)
        raise SmokeFailure(f"{name} never printed LISTENING: {self.tail(name)}")

    def tail(self, name: str) -> str:
        err = self.logs / f"{name}.err"
        return "\n".join(err.read_text().splitlines()[-20:]) if err.exists() else ""

    def stop_all(self) -> None:
        for _, proc in reversed(self.running):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.running):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------- HTTP


def request(url: str, body=None, headers=None, method=None, timeout=30):
    """(status, headers, parsed body) without raising on 4xx/5xx."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    if data:
        req.add_header("content-type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, decode(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, decode(e.read())


def decode(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def chat(model: str = MODEL) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}


def error_code(body) -> str | None:
    return body.get("error", {}).get("code") if isinstance(body, dict) else None


# ---------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(tls: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for localhost and a client
    certificate whose URI SAN is the partner tenant's SPIFFE ID."""
    tls.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tls)

    def issue(stem: str, subject: str, extensions: str) -> None:
        (tls / f"{stem}.ext").write_text(extensions)
        run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", subject)
        run("x509", "-req", "-in", f"{stem}.csr", "-CA", "client-ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-out", f"{stem}.crt", "-extfile", f"{stem}.ext")

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "client-ca.crt", "-days", "1", "-subj", "/CN=smoke-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    issue("tls", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    issue("client", "/CN=partner", f"subjectAltName=URI:{PARTNER_SPIFFE}\nextendedKeyUsage=clientAuth\n")
    return {"ca": tls / "client-ca.crt", "client_cert": tls / "client.crt", "client_key": tls / "client.key"}


def registry_text(example: str, replicas: dict[str, list[str]], digests: dict[str, str], revoke: bool) -> str:
    """The example registry with the mocks' addresses and keys we know.

    Text edits (the standard library reads TOML but does not write it); each
    one must apply, so a change to the example breaks this test loudly.
    """
    text = example
    for pool, addrs in replicas.items():
        pattern = re.compile(rf'^replicas = \["vllm-{pool}-0:8000", "vllm-{pool}-1:8000"\]$', re.M)
        text, n = pattern.subn("replicas = " + json.dumps(addrs), text)
        if n != 1:
            raise SmokeFailure(f"registry.example.toml: pools.{pool}.replicas not found as expected")
    for old, new in digests.items():
        if text.count(old) != 1:
            raise SmokeFailure(f"registry.example.toml: key digest {old[:12]}... not found once")
        text = text.replace(old, new)
        if revoke:
            text = text.replace(f'sha256 = "{new}"', f'sha256 = "{new}", revoked = true')
    return text


def example_digest(example: str, tenant: str) -> str:
    block = example.split(f'id = "{tenant}"', 1)[1]
    match = re.search(r'sha256 = "([0-9a-f]{64})"', block)
    if not match:
        raise SmokeFailure(f"registry.example.toml: no key digest for {tenant}")
    return match.group(1)


def render_ecds(registry: Path, out: Path, wasm_dir: Path, cache_secret: Path) -> None:
    subprocess.run(
        [sys.executable, str(HERE / "render-ecds.py"), "--registry", str(registry), "--out", str(out),
         "--cache-secret-file", str(cache_secret), "--wasm-dir", str(wasm_dir)],
        check=True, capture_output=True,
    )


def local_bootstrap(gateway_yaml: Path, root: Path, admin_port: int, pools: dict[str, list[str]], ratelimit: str) -> dict:
    """gateway.yaml with paths under `root`, loopback listeners and the
    upstreams of this run. Fails if the shape it expects is not there."""
    config = yaml.safe_load(gateway_yaml.read_text())

    def repath(node):
        if isinstance(node, dict):
            return {k: repath(v) for k, v in node.items()}
        if isinstance(node, list):
            return [repath(v) for v in node]
        if isinstance(node, str) and node.startswith("/etc/gateway/"):
            return str(root / node.removeprefix("/etc/gateway/"))
        return node

    config = repath(config)
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin_port}
    listeners = {l["name"]: l for l in config["static_resources"]["listeners"]}
    for name in ("gateway", "gateway_mtls", "ops"):
        if name not in listeners:
            raise SmokeFailure(f"gateway.yaml has no listener {name!r}")
        listeners[name]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}

    def endpoints(cluster: str, addrs: list[str]) -> None:
        if cluster not in clusters:
            raise SmokeFailure(f"gateway.yaml has no cluster {cluster!r}")
        lb = []
        for addr in addrs:
            host, port = addr.rsplit(":", 1)
            lb.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}})
        clusters[cluster]["load_assignment"]["endpoints"] = [{"lb_endpoints": lb}]

    for pool, addrs in pools.items():
        endpoints(f"pool-{pool}", addrs)
    endpoints("ratelimit", [ratelimit])
    endpoints("envoy_admin", [f"127.0.0.1:{admin_port}"])
    return config


def admin_get(admin: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=5) as resp:
        return resp.read().decode()


def stat(admin: str, name: str) -> int:
    """Largest value of the counters whose name ends with `name`."""
    values = [
        int(value)
        for line in admin_get(admin, f"/stats?filter={re.escape(name)}").splitlines()
        for key, _, value in [line.partition(": ")]
        if key.endswith(name) and value.strip().isdigit()
    ]
    return max(values, default=0)


def pool_hosts_healthy(admin: str) -> int:
    return sum(
        1
        for line in admin_get(admin, "/clusters").splitlines()
        if line.startswith("pool-") and line.endswith("::health_flags::healthy")
    )


def listener_ports(admin: str) -> dict[str, int]:
    statuses = json.loads(admin_get(admin, "/listeners?format=json"))["listener_statuses"]
    return {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses}


def wait_until(what: str, predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.1)
    raise SmokeFailure(f"timed out waiting for {what}")


# ---------------------------------------------------------------- the run


def run(args, procs: Processes, tmp: Path) -> None:
    example = (HERE / "registry.example.toml").read_text()

    print("starting 4 mock-vllm replicas and ratelimit-service")
    pools: dict[str, list[str]] = {"latency": [], "throughput": []}
    replica_pool: dict[str, str] = {}
    for pool in pools:
        for i in range(2):
            name = f"{pool}-{i}"
            proc = procs.start(name, [str(args.mock_vllm), "--listen", "127.0.0.1:0", "--replica-name", name, "--model", MODEL])
            addr = procs.listening(name, proc)["http"]
            pools[pool].append(addr)
            replica_pool[addr] = pool

    keys = {tenant: "sk-" + secrets.token_hex(24) for tenant in ("team-chat", "analytics")}
    digests = {example_digest(example, t): hashlib.sha256(k.encode()).hexdigest() for t, k in keys.items()}
    registry = tmp / "registry.toml"
    registry.write_text(registry_text(example, pools, digests, revoke=False))
    rl = procs.start("ratelimit-service", [
        str(args.ratelimit_service), "--registry", str(registry), "--grpc-listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--admin-token", secrets.token_hex(16), "--data-dir", str(tmp / "ledger"),
    ])
    ratelimit = procs.listening("ratelimit-service", rl)["grpc"]

    root = tmp / "etc-gateway"
    cache_secret = tmp / "cache_secret"
    cache_secret.write_text(secrets.token_hex(32))
    render_ecds(registry, root / "ecds", args.wasm_dir, cache_secret)
    certs = make_certs(root / "tls")

    admin_port = free_port()
    bootstrap = tmp / "envoy.json"
    bootstrap.write_text(json.dumps(local_bootstrap(args.gateway_yaml, root, admin_port, pools, ratelimit), indent=2))
    print(f"starting Envoy with {args.gateway_yaml} (rewritten: {bootstrap})")
    envoy = procs.start("envoy", [
        str(args.envoy), "-c", str(bootstrap), "--disable-hot-restart", "--concurrency", "2",
        "--log-level", "warn", "--component-log-level", "wasm:info",
    ])
    admin = f"127.0.0.1:{admin_port}"

    def ready() -> bool:
        if envoy.poll() is not None:
            raise SmokeFailure(f"Envoy exited ({envoy.returncode}): {procs.tail('envoy')}")
        return admin_get(admin, "/ready").strip() == "LIVE"

    wait_until("Envoy /ready", ready, timeout=60)
    for name in ("llm-gateway",):
        check(stat(admin, f"{name}.config_reload") >= 1 and stat(admin, f"{name}.config_fail") == 0,
              f"ECDS config of {name} loaded")
    ports = listener_ports(admin)
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    wait_until("pool replicas healthy", lambda: pool_hosts_healthy(admin) == 4)

    print("plain listener")
    status, headers, body = request(f"{gateway}/v1/chat/completions", chat())
    check(status == 401 and error_code(body) == "missing_credentials", f"no key -> 401 missing_credentials ({status} {error_code(body)})")
    check("bearer" in (headers.get("www-authenticate") or "").lower(), "401 carries www-authenticate")
    status, _, body = request(f"{gateway}/v1/chat/completions", chat(), {"authorization": "Bearer sk-" + "0" * 48})
    check(status == 401 and error_code(body) == "invalid_api_key", f"unknown key -> 401 invalid_api_key ({status} {error_code(body)})")
    team = {"authorization": f"Bearer {keys['team-chat']}"}
    status, _, body = request(f"{gateway}/v1/chat/completions", chat("some-other-model"), team)
    check(status == 403 and error_code(body) == "model_not_allowed", f"other model -> 403 model_not_allowed ({status} {error_code(body)})")

    for r in pools["latency"] + pools["throughput"]:
        request(f"http://{r}/debug/reset", method="POST")
    status, headers, body = request(f"{gateway}/v1/chat/completions", chat(), team)
    check(status == 200 and isinstance(body, dict) and body.get("choices"), f"team-chat -> 200 with choices ({status} {body if status != 200 else ''})")
    check(headers.get("x-ratelimit-limit-requests") == "120", "x-ratelimit-limit-requests from the tier (120)")
    batch = {"authorization": f"Bearer {keys['analytics']}", "x-llm-pool": "latency"}
    status, _, body = request(f"{gateway}/v1/chat/completions", chat(), batch)
    check(status == 200, f"analytics -> 200 ({status} {error_code(body)})")

    seen: dict[str, list[dict]] = {"latency": [], "throughput": []}
    for addr, pool in replica_pool.items():
        _, _, records = request(f"http://{addr}/debug/requests")
        seen[pool].extend(r for r in records if r.get("path") == "/v1/chat/completions")
    check(len(seen["latency"]) == 1 and len(seen["throughput"]) == 1,
          "interactive team-chat on the latency pool; batch-tier analytics on throughput despite x-llm-pool: latency")
    salts = [r["body"].get("cache_salt") for r in seen["latency"] + seen["throughput"]]
    check(all(salts) and salts[0] != salts[1], "each tenant's request carries its own cache_salt (strict profile)")

    print("mTLS listener")
    tls_port = ports["gateway_mtls"]
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    try:
        refused = mtls_request(context, tls_port)[0] >= 400
    except (ssl.SSLError, ConnectionError, OSError):
        refused = True
    check(refused, "no client certificate -> refused")
    context.load_cert_chain(str(certs["client_cert"]), str(certs["client_key"]))
    status, body = mtls_request(context, tls_port)
    check(status == 200, f"client certificate {PARTNER_SPIFFE} -> 200 as tenant partner ({status} {error_code(body)})")

    print("ops listener")
    ops = f"http://127.0.0.1:{ports['ops']}"
    check(request(f"{ops}/ready")[0] == 200, "ops /ready -> 200")
    status, _, text = request(f"{ops}/stats/prometheus")
    check(status == 200 and "envoy_" in str(text), "ops /stats/prometheus -> 200")
    check(request(f"{ops}/config_dump")[0] == 404, "ops /config_dump -> 404 (admin API not exposed)")

    print("registry change through ECDS (atomic rename), no restart")
    before = stat(admin, "llm-gateway.config_reload")
    registry.write_text(registry_text(example, pools, digests, revoke=True))
    render_ecds(registry, root / "ecds", args.wasm_dir, cache_secret)
    wait_until("llm-gateway to reload", lambda: stat(admin, "llm-gateway.config_reload") > before)
    status, _, body = request(f"{gateway}/v1/chat/completions", chat(), team)
    check(status == 401 and error_code(body) == "revoked_api_key", f"revoked key -> 401 revoked_api_key ({status} {error_code(body)})")
    check(envoy.poll() is None, "Envoy kept running")


def mtls_request(context: ssl.SSLContext, port: int):
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(chat()), {"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, decode(resp.read())
    finally:
        conn.close()


def main() -> int:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    profile = os.environ.get("PROFILE", "debug")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway-yaml", type=Path, default=HERE / "gateway.yaml")
    parser.add_argument("--envoy", type=Path, default=Path(os.environ.get("ENVOY", ROOT / ".venv/bin/envoy")))
    parser.add_argument("--wasm-dir", type=Path, default=target / "wasm32-wasip1/wasm")
    parser.add_argument("--ratelimit-service", type=Path, default=target / profile / "ratelimit-service")
    parser.add_argument("--mock-vllm", type=Path, default=target / profile / "mock-vllm")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, rendered config)")
    args = parser.parse_args()

    needed = [args.envoy, args.ratelimit_service, args.mock_vllm] + [
        args.wasm_dir / w for w in ("llm_gateway.wasm",)
    ]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print("smoke test SKIPPED, not built: " + ", ".join(missing) + " (run `make build`)")
        return SKIP

    tmp = Path(tempfile.mkdtemp(prefix="gateway-smoke-"))
    procs = Processes(tmp)
    try:
        run(args, procs, tmp)
        print("smoke test PASSED")
        return 0
    except (SmokeFailure, subprocess.CalledProcessError, OSError, ValueError, KeyError) as e:
        print(f"smoke test FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        if isinstance(e, subprocess.CalledProcessError):
            print(e.stderr.decode(errors="replace") if e.stderr else "", file=sys.stderr)
        print(f"logs in {tmp}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        procs.stop_all()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
