#!/usr/bin/env bash
# On an offline GPU host (CPython 3.12 with torch): install the wheels in .whl/ that the host
# lacks (scripts/prepare_device_wheels.sh fetched them), then run `llmq loadtest compare`:
# the same load against a local stack with each backend in turn, Llama-3.1-8B's shapes with
# random weights. Results go to $OUT (compare.json, the table, each backend's summary, and
# every report folder in one archive).
#
#   scripts/device_loadtest.sh
#   BACKENDS=hf,torch USERS=8 DURATION=45 PROMPT_TOKENS=256 OUTPUT_TOKENS=128 scripts/device_loadtest.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-out/device}
if [[ -z "${WORK:-}" ]]; then
    WORK=$(mktemp -d -t llmq-loadtest-XXXXXX)
    trap 'rm -rf "$WORK"' EXIT  # everything in it ends up in $OUT's archive
fi
BACKENDS=${BACKENDS:-hf,torch}
MODEL_DIR=${MODEL_DIR:-.whl/models/Llama-3.1-8B}
UP_ARGS=${UP_ARGS:-"--model $MODEL_DIR"}
# The workers `llmq up` starts read these: random weights of the model's shapes, on the GPU.
export LLMQ_DUMMY_WEIGHTS=${LLMQ_DUMMY_WEIGHTS:-1} LLMQ_DEVICE=${LLMQ_DEVICE:-cuda}
USERS=${USERS:-8}
DURATION=${DURATION:-45}
PROMPT_TOKENS=${PROMPT_TOKENS:-256}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-128}
DRAIN=${DRAIN:-60}
WARMUP=${WARMUP:-10}  # first requests compile kernels and capture graphs: left out of the numbers
READY_TIMEOUT=${READY_TIMEOUT:-300}
LOADTEST_ARGS=${LOADTEST_ARGS:-}  # more `llmq loadtest compare` options, e.g. "--shape sweep --stage-duration 10"
mkdir -p "$OUT" "$SITE"

. scripts/device_wheels.sh >&2
echo "installed $MISSING_WHEELS wheels the host lacks into $SITE" >&2
export PYTHONUNBUFFERED=1
# `llmq` as a command, for anything that starts a subcommand by name.
mkdir -p "$SITE/bin"
printf '#!/bin/sh\nexec %s -m llmq "$@"\n' "$(command -v "$PY")" >"$SITE/bin/llmq"
chmod +x "$SITE/bin/llmq"
export PATH="$SITE/bin:$PATH"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
up_flags=()
for word in $UP_ARGS; do up_flags+=("--up-arg=$word"); done
extra_flags=()
for word in $LOADTEST_ARGS; do extra_flags+=("$word"); done

# COMPARE_TIMEOUT (seconds): the compare gets SIGINT then, so each stack it started is stopped.
limit=()
[[ -n "${COMPARE_TIMEOUT:-}" ]] && limit=(timeout --signal=INT --kill-after=25 "$COMPARE_TIMEOUT")
status=0
${limit[@]+"${limit[@]}"} "$PY" -m llmq loadtest compare --backends "$BACKENDS" --out "$WORK" \
    --users "$USERS" --duration "$DURATION" --prompt-tokens "$PROMPT_TOKENS" --output-tokens "$OUTPUT_TOKENS" \
    --tokenizer "$MODEL_DIR" --drain "$DRAIN" --warmup "$WARMUP" --ready-timeout "$READY_TIMEOUT" "${up_flags[@]}" ${extra_flags[@]+"${extra_flags[@]}"} | tee "$OUT/compare.txt" || status=$?

# A compare cut short printed no table: the one it rewrote after each backend instead.
if ((status != 0)) && [[ -f "$WORK/compare.txt" ]]; then
    { echo "(cut short: the table as of the last backend that ended)"; cat "$WORK/compare.txt"; } >>"$OUT/compare.txt"
fi
# At most a few files come back: the table, compare.json, each summary, and one archive of the rest.
cp "$WORK/compare.json" "$OUT/" 2>/dev/null || true
for backend in ${BACKENDS//,/ }; do
    cp "$WORK/$backend/summary.json" "$OUT/$backend-summary.json" 2>/dev/null || true
done
tar -czf "$OUT/loadtest-reports.tgz" -C "$WORK" .
exit $status
