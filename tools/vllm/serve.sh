#!/usr/bin/env bash
# Run a real vLLM (CPU build) OpenAI-compatible server in the foreground.
#
#   tools/vllm/serve.sh MODEL_DIR PORT [extra vllm args...]
#
# env:
#   SERVED_MODEL_NAME          --served-model-name (default: tiny-llama)
#   KV_CACHE_BYTES             --kv-cache-memory-bytes (default: 16777216 = 16 MiB = 32768
#                              tokens of bf16 KV for the tiny model). NB: vLLM's CPU platform
#                              lets a set VLLM_CPU_KVCACHE_SPACE (GiB) override this flag, so
#                              serve.sh unsets it unless KEEP_VLLM_CPU_KVCACHE_SPACE=1.
#   VLLM_CPU_OMP_THREADS_BIND  CPU threads binding (default: "nobind"; see vLLM CPU docs)
#   LLM_GATEWAY_VLLM_VENV      use this venv instead of the cached one from install.sh
#   SERVE_LEAN=1               2 processes instead of 3: engine core runs the model itself
#                              (VLLM_ENABLE_V1_MULTIPROCESSING=0 + --distributed-executor-backend uni).
#                              Same API, ~25-40% faster start, ~700 MB less RSS; not vLLM's
#                              default topology, so leave it off when comparing against real deployments.
#
# Defaults can be overridden by later extra args, e.g. --no-enable-prompt-tokens-details.
# Offline by construction: HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE=1, usage stats off,
# eager mode (no torch.compile / no CPU graph capture).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ $# -lt 2 ]; then
  echo "usage: $0 MODEL_DIR PORT [extra vllm args...]" >&2
  exit 2
fi
model_dir="$1"; port="$2"; shift 2
[ -f "$model_dir/config.json" ] || { echo "serve.sh: $model_dir/config.json not found" >&2; exit 2; }

venv="${LLM_GATEWAY_VLLM_VENV:-$("$here/install.sh" --print-venv)}"
[ -x "$venv/bin/python" ] || { echo "serve.sh: no venv at $venv (run tools/vllm/install.sh)" >&2; exit 2; }

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_DO_NOT_TRACK=1
export TOKENIZERS_PARALLELISM=false
export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-nobind}"
[ "${KEEP_VLLM_CPU_KVCACHE_SPACE:-0}" = 1 ] || unset VLLM_CPU_KVCACHE_SPACE
# a private, empty HF cache: nothing is read from or written to ~/.cache/huggingface
export HF_HOME="${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-gateway/hf-home}"

lean_args=()
if [ "${SERVE_LEAN:-0}" = 1 ]; then
  export VLLM_ENABLE_V1_MULTIPROCESSING=0
  lean_args=(--distributed-executor-backend uni)
fi

exec "$venv/bin/python" -m vllm.entrypoints.openai.api_server \
  --model "$model_dir" \
  --served-model-name "${SERVED_MODEL_NAME:-tiny-llama}" \
  --host 127.0.0.1 --port "$port" \
  --max-model-len 2048 \
  --enforce-eager \
  --kv-cache-memory-bytes "${KV_CACHE_BYTES:-16777216}" \
  --enable-prefix-caching \
  --enable-prompt-tokens-details \
  ${lean_args[@]+"${lean_args[@]}"} \
  "$@"
