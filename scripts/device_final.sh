#!/usr/bin/env bash
# One call on an offline GPU host (CPython 3.12 with torch, triton, transformers): the GPU suite,
# then the load test of the whole stack with the hf and torch backends, inside a wall-time budget.
# Every stage runs under its own `timeout`; a later stage is skipped or shortened when the budget
# is nearly spent. Needs .whl/ from scripts/prepare_device_wheels.sh next to the checkout.
#
#   OUT=out/final scripts/device_final.sh          # on the GPU host
#   DRY=1 OUT=/tmp/final scripts/device_final.sh   # the same on the CPU: small config, short stages
#
# $OUT gets 8 files: final.txt (progress and the final table), bench.log, loadtest.log,
# compare.txt, compare.json, hf-summary.json, torch-summary.json, loadtest-reports.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."

BUDGET=${BUDGET:-470}  # seconds of wall time for everything
OUT=${OUT:-out/final}
export PYTHON=${PYTHON:-python3} SITE=${SITE:-/tmp/site} PYTHONUNBUFFERED=1
PY=$PYTHON
DRY=${DRY:-0}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d -t llmq-final-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }
say() { printf '[%4ds] %s\n' $((SECONDS - START)) "$*" | tee -a "$OUT/final.txt"; }
declare -A STATUS SPENT
stage_done() {  # name, exit code, seconds
    case $2 in 0) STATUS[$1]=ok ;; 124 | 137) STATUS[$1]="timed out" ;; *) STATUS[$1]="failed ($2)" ;; esac
    SPENT[$1]=$3
    say "$1: ${STATUS[$1]} after $3 s"
}
: >"$OUT/final.txt"

if [[ $DRY == 1 ]]; then
    # The CPU stand-in: SmolLM2's shapes, tiny lengths, a few seconds per stage.
    MODEL_CONFIG=smollm2-135m
    BENCH_ARGS="--device cpu --prompt-len 32 --new-tokens 8 --long-prompt 64 --concurrency 4 --concurrent-out 8
        --concurrent-out-fallback 4"
    DEVICE=cpu USERS=4 STAGE_S=${STAGE_S:-3} WARMUP=1 PROMPT_TOKENS=16 OUTPUT_TOKENS=8 STARTUP_S=30
    TEMPERATURE=${TEMPERATURE:-0.0}
else
    MODEL_CONFIG=llama-3.1-8b
    # 256 x (1,000 in + 1,000 out) needs ~68 GB of KV beside 16 GB of weights: on an 80 GB card
    # the output is cut to 256 tokens; a run past 90 s stops there (the table says either).
    BENCH_ARGS="--prompt-len 512 --new-tokens 128 --long-prompt 1000 --concurrency 256 --concurrent-out 1000
        --concurrent-out-fallback 256 --concurrent-deadline 90"
    DEVICE=cuda USERS=32 STAGE_S=${STAGE_S:-10} WARMUP=5 PROMPT_TOKENS=128 OUTPUT_TOKENS=64 STARTUP_S=70
    # Greedy: random tokens sampled from random weights are mostly partial UTF-8 pieces whose text
    # is held back, so content chunks would come ~1 per 3 tokens and time nothing the engine does.
    TEMPERATURE=${TEMPERATURE:-0.0}
fi
BENCH_MAX=${BENCH_MAX:-200}

say "llmq final run: budget $BUDGET s, dry=$DRY, out $OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  "$PY" -c "import sys, torch, triton, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__)" 2>&1
} | tee -a "$OUT/final.txt"

# 0. The wheels the host lacks (its torch stack stays as it is).
t=$SECONDS
wheels_log=$(mktemp)
. scripts/device_wheels.sh >"$wheels_log" 2>&1  # sourced, not piped: its exports must reach this shell
tee -a "$OUT/final.txt" <"$wheels_log"
say "installed $MISSING_WHEELS wheels into $SITE"
rc=$WHEELS_RC
stage_done install $rc $((SECONDS - t))

# a. The GPU suite: engine vs transformers eager vs torch.compile at batch 1, TTFT, saturated
#    throughput, split-K at 32k. Each part's numbers reach bench.log as it ends.
if [[ ${SKIP_BENCH:-0} == 1 ]]; then  # the engine's numbers come from scripts/device_engine.sh
    STATUS[bench]="skipped"
    SPENT[bench]=0
else
    bench_timeout=$(( $(left) - 20 < BENCH_MAX ? $(left) - 20 : BENCH_MAX ))
    say "bench: engine.bench_gpu on $MODEL_CONFIG, timeout $bench_timeout s"
    t=$SECONDS
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    timeout --signal=INT --kill-after=15 "$bench_timeout" "$PY" -m engine.bench_gpu --model-config "$MODEL_CONFIG" \
        --no-gemv --no-paged --contexts 32768 $BENCH_ARGS >"$OUT/bench.log" 2>&1
    stage_done bench $? $((SECONDS - t))
    grep -E '^# .* (\.\.\.|done in)' "$OUT/bench.log" | cut -c1-160 | tee -a "$OUT/final.txt" >/dev/null
fi

# b. The load test: the whole stack on the GPU (Redis, one worker, the gateway), hf then torch,
#    a concurrency sweep 1, 2, 4, 8, 16, 32 users (the table shows 1, 8 and 32).
MODEL_DIR=.whl/models/Llama-3.1-8B
if [[ $DRY == 1 ]]; then
    MODEL_DIR=$("$PY" -c 'import sys; from pathlib import Path; from engine.models.dummy import write_dummy_model
print(write_dummy_model("smollm2-135m", Path(sys.argv[1]), tokenizer_from=Path(sys.argv[2])))' \
        "$WORK/models/SmolLM2-135M" .whl/models/Llama-3.1-8B)
fi
stages=$(( USERS == 4 ? 3 : 6 ))
# Two stacks to start, drain and stop, then the stages; shorten the stages to what is left.
room=$(( ($(left) - 25 - 2 * (STARTUP_S + 15)) / (2 * stages) ))
((room < STAGE_S)) && STAGE_S=$room
if ((STAGE_S < 3)); then
    STATUS[loadtest]="skipped: $(left) s left"
    SPENT[loadtest]=0
    say "loadtest: ${STATUS[loadtest]}"
else
    lt_timeout=$(( $(left) - 15 ))
    say "loadtest: hf,torch on $DEVICE, sweep to $USERS users, $STAGE_S s a stage, timeout $lt_timeout s"
    t=$SECONDS
    OUT="$OUT" WORK="$WORK/loadtest" BACKENDS=hf,torch MODEL_DIR="$MODEL_DIR" USERS=$USERS DURATION=$STAGE_S \
        PROMPT_TOKENS=$PROMPT_TOKENS OUTPUT_TOKENS=$OUTPUT_TOKENS DRAIN=10 WARMUP=$WARMUP READY_TIMEOUT=$((STARTUP_S + 60)) \
        COMPARE_TIMEOUT=$((lt_timeout - 35)) LLMQ_DEVICE=$DEVICE LLMQ_DUMMY_WEIGHTS=1 \
        UP_ARGS="--model $MODEL_DIR --device $DEVICE --dummy-weights --dtype bfloat16" \
        LOADTEST_ARGS="--shape sweep --stage-duration $STAGE_S --temperature $TEMPERATURE" \
        timeout --kill-after=15 "$lt_timeout" bash scripts/device_loadtest.sh >"$OUT/loadtest.log" 2>&1
    stage_done loadtest $? $((SECONDS - t))
fi

# The final table, from bench.log's JSON line (or its per-part lines) and compare.json.
STATUS_LINES=$(for s in install bench loadtest; do printf '%s\t%s\t%s\n' "$s" "${STATUS[$s]:-not run}" "${SPENT[$s]:-0}"; done)
"$PY" - "$OUT" "$((SECONDS - START))" "$STATUS_LINES" <<'PY' 2>&1 | tee -a "$OUT/final.txt"
import json, re, sys
from pathlib import Path

out, wall, status = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"\n==== final table (wall {wall} s) ====")
for line in status.splitlines():
    stage, state, spent = line.split("\t")
    print(f"{stage:10} {state:22} {spent:>5} s")

log = (out / "bench.log").read_text(errors="replace") if (out / "bench.log").exists() else ""
results = {}
for line in log.splitlines():
    if line.startswith("{"):
        results = json.loads(line)
if not results:  # cut short: the parts that ended
    match = re.search(r"^# suite (\{.*\})$", log, re.M)
    results = json.loads(match.group(1)) if match else {}
    for name, text in re.findall(r"^# (\w+) done in [\d.]+ s: (\{.*\}|\[.*\])$", log, re.M):
        results[name] = json.loads(text)
    match = re.search(r"^# engine batch 1: (\{.*\})$", log, re.M)
    if match and "engine" not in results:
        results["engine"] = json.loads(match.group(1))


def num(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def ms(seconds):
    return "-" if seconds is None else format(1000 * seconds, ".1f")


options = results.get("options", {})
print(f"\nbench on {results.get('device', '?')}: batch 1, {options.get('prompt_len', '?')}-token prompt,"
      f" {options.get('new_tokens', '?')} new tokens")
engine = results.get("engine", {})
rows = [("ENGINE (scheduler+runner, CUDA graphs)", engine.get("decode_tok_s"), engine.get("ttft_prompt_s"), engine.get("error")),
        ("transformers eager", *(results.get("decode_hf", {}).get(k) for k in ("decode_tok_s", "ttft_s", "error"))),
        ("torch.compile + CUDA graph", *(results.get("decode_compiled", {}).get(k) for k in ("decode_tok_s", "ttft_s", "error")))]
print(f"  {'decoder':40} {'tok/s':>8} {'TTFT ms':>8}")
for label, rate, ttft, error in rows:
    print(f"  {label:40} {num(rate):>8} {num(ttft and ttft * 1e3):>8}" + (f"  ERROR {error[:80]}" if error else ""))
if "ttft_long_s" in engine:
    print(f"  ENGINE TTFT, {engine['long_prompt']}-token prompt: {num(engine['ttft_long_s'] * 1e3)} ms")
if "throughput_tok_s" in engine:
    wanted = results.get("engine_requested_out", engine["concurrent_out_tokens"])
    cut = f" (cut from {wanted}: KV does not fit)" if engine["concurrent_out_tokens"] != wanted else ""
    if engine.get("concurrent_stopped_at_s"):
        cut += f" (stopped at {engine['concurrent_stopped_at_s']:.0f} s after {engine['concurrent_generated']} tokens)"
    print(f"  ENGINE saturated, {engine['concurrency']} x {engine['long_prompt']} in / {engine['concurrent_out_tokens']} out{cut}:"
          f" {num(engine['throughput_tok_s'])} tok/s in {num(engine['concurrent_elapsed_s'])} s")
for row in results.get("attention") if isinstance(results.get("attention"), list) else []:
    print(f"  split-K @ {row['context']}: {row['split_k_us']:.1f} us vs single block {row['single_block_us']:.1f} us"
          f" ({row['speedup']:.2f}x, {row['splits']} splits)")

compare = out / "compare.json"
if compare.exists():
    data = json.loads(compare.read_text())
    print(f"\nloadtest (compare.json): per stage, measured after the warm-up")
    print(f"  {'users':>5} {'backend':8} {'tok/s':>8} {'tok/s/req':>9} {'TTFT s':>7} {'latency s':>9} {'ok':>4} {'failed':>6}"
          f" {'TTFT p50 ms':>11} {'ITL p50 ms':>10}")
    for backend in data.get("backends", list(data["summaries"])):
        summary = data["summaries"].get(backend)
        if summary is None:
            print(f"  {backend}: not run (the compare was cut short)")
            continue
        if "error" in summary:
            print(f"  {backend}: ERROR {summary['error'][:120]}")
            continue
        for stage in summary.get("stages", []):
            if stage["users"] in (1, 8, 32) or len(summary["stages"]) <= 3:
                print(f"  {stage['users']:>5} {backend:8} {num(stage['throughput_tok_s']):>8}"
                      f" {num(stage['tokens_per_s_per_request'].get('mean')):>9} {num(stage['ttft_s'].get('mean'), '.3f'):>7}"
                      f" {num(stage['latency_s'].get('mean'), '.2f'):>9} {stage['succeeded']:>4} {stage['failed']:>6}"
                      f" {ms(stage['ttft_s'].get('p50')):>11} {ms(stage.get('itl_s', {}).get('p50')):>10}")
else:
    print("\nloadtest: no compare.json")
PY
exit 0
