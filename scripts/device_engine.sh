#!/usr/bin/env bash
# One call on an offline GPU host: the engine's GPU checks and benchmarks without the gateway.
# Kernel tests, the batch-1 suite (engine vs transformers eager vs torch.compile, TTFT), a
# profile of batch-1, mixed and saturated steps, saturated throughput per KV dtype, decode by
# context length, and teacher-forced logits against transformers at the 8B shape.
#
#   OUT=out/engine bash scripts/device_engine.sh      # needs .whl/ (scripts/prepare_device_wheels.sh)
#
# SATURATED_TOKENS and SATURATED_UTIL set the saturated run's step size and memory share.
# Each stage has its own timeout; its log lands in $OUT; summary.txt gets every table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/engine}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$SITE"
summary="$OUT/summary.txt"
: >"$summary"
stage() {  # name, timeout seconds, command...: run, log to $OUT/name.log, keep the log's tail
    local name=$1 limit=$2
    shift 2
    local t=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    printf '\n== %s: exit %s after %s s\n' "$name" "$rc" $((SECONDS - t)) >>"$summary"
}

. scripts/device_wheels.sh >"$OUT/pip.log" 2>&1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, triton, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__)"
} >>"$summary" 2>&1

# TESTS: the GPU tests to run first (space-separated paths; empty: none).
if [[ -n ${TESTS-tests/engine/kernels} ]]; then
    # shellcheck disable=SC2086
    stage kernels "${KERNELS_S:-150}" "$PY" -m pytest -q -p no:cacheprovider ${TESTS-tests/engine/kernels}
    tail -3 "$OUT/kernels.log" >>"$summary"; grep -h "fp8 vs" "$OUT/kernels.log" >>"$summary"
fi
if [[ ${MICRO:-0} == 1 ]]; then  # the GEMV against cuBLAS per layer, with the autotuner's picks
    TRITON_PRINT_AUTOTUNING=1 stage micro "${MICRO_S:-120}" "$PY" -m engine.bench_gpu_micro "${MICRO_BATCHES:-1}"
    grep "^ *[0-9]" "$OUT/micro.log" >>"$summary"
    grep "best config" "$OUT/micro.log" >>"$summary"
fi
stage suite "${SUITE_S:-170}" "$PY" -m engine.bench_gpu --model-config llama-3.1-8b --prompt-len 512 --new-tokens 128 \
    --long-prompt 1000 --concurrency 0 --no-gemv --no-paged --contexts 32768
sed -n '/^bench on\|^batch-1\|decoder/,$p' "$OUT/suite.log" | grep -v '^{' | head -40 >>"$summary"
stage saturated "${SATURATED_S:-240}" "$PY" -m engine.bench_gpu_saturated --kv-cache-dtypes "${KV_DTYPES:-fp8,auto}" \
    --deadline 75 --max-num-batched-tokens "${SATURATED_TOKENS:-2048}" \
    --gpu-memory-utilization "${SATURATED_UTIL:-0.90}" --out "$OUT/saturated.json"
sed -n '/^saturated on/,$p' "$OUT/saturated.log" >>"$summary"
[[ ${CONTEXT:-1} == 1 ]] && stage context "${CONTEXT_S:-120}" "$PY" -m engine.bench_gpu_context --contexts 1024,32768 --out "$OUT/context.json"
[[ ${CONTEXT:-1} == 1 ]] && sed -n '/^batch-1 decode by context/,$p' "$OUT/context.log" >>"$summary"
if [[ ${LOGITS:-1} == 1 ]]; then
    stage logits "${LOGITS_S:-120}" "$PY" -m engine.bench_logits --config llama-3.1-8b --device cuda --layers 32 \
    --inits fan-in,flat --variants engine --no-eager
    tail -25 "$OUT/logits.log" >>"$summary"
fi
if [[ ${PROFILE:-1} == 1 ]]; then
    stage profile "${PROFILE_S:-150}" "$PY" -m engine.bench_gpu_profile --out "$OUT/profile.json"
    grep -v '^USDT\|Warn\|warn' "$OUT/profile.log" >>"$summary"
fi
cat "$summary"
