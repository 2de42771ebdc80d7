#!/usr/bin/env bash
# On a CUDA host: the GPU kernel tests, then the GPU suite; logs go to $OUT (default: ./gpu-out).
set -o pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$OUT/env.txt"
$PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$OUT/env.txt"
timeout "${TEST_TIMEOUT:-240}" $PY -m pytest -q -p no:cacheprovider tests/engine/kernels 2>&1 | tee "$OUT/tests.log"
timeout "${BENCH_TIMEOUT:-330}" $PY -m engine.bench_gpu "$@" 2>&1 | tee "$OUT/bench.log"
