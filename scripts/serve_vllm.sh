#!/usr/bin/env bash
# Start a vLLM OpenAI-compatible server for real pipeline / eval runs.
# usage: scripts/serve_vllm.sh MODEL [PORT] [extra vllm serve flags...]
#   scripts/serve_vllm.sh Qwen/Qwen2.5-72B-Instruct 8000 --tensor-parallel-size 4
# Then: trace-build run --config configs/vllm.yaml --base-url http://127.0.0.1:PORT/v1 --model MODEL
set -euo pipefail
model=${1:?usage: scripts/serve_vllm.sh MODEL [PORT] [vllm flags...]}
port=${2:-8000}
shift $(( $# >= 2 ? 2 : 1 ))
command -v vllm >/dev/null || { echo "vllm is not installed: pip install 'trace-build[vllm]'" >&2; exit 1; }
# Structured steps send response_format json_schema: vLLM enforces it with its guided decoding (xgrammar by default).
exec vllm serve "$model" --host 127.0.0.1 --port "$port" \
  --max-num-seqs 256 --enable-prefix-caching "$@"
