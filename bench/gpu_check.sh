#!/usr/bin/env bash
# One prepared check of the GPU path for a lent GPU machine (an H200 image: Python 3.12, torch 2.11, Triton 3.6,
# CuPy, no faiss, nothing installable). Runs in <= 8 minutes and writes $OUT/gpu_check.json (+ logs):
#   - the C++ extension built in place (in the background: the GPU path does not need it; its log says if
#     the image can build it: pybind11 may be missing there);
#   - bench/gpu_check.py: every kernel in fp16 and bf16 against its reference at the MiniLM / MPNet / Qwen3
#     shapes, do_bench vs PyTorch eager and SDPA, the encoder end to end (batch 1 eager + CUDA graphs, 64)
#     vs the roofline bound and vs PyTorch eager + SDPA.
#
#   OUT=/some/dir bash bench/gpu_check.sh            # on the GPU machine
#   bash bench/gpu_check.sh --dry-run                # CPU, Triton interpreter, tiny sizes (make test runs it)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # hlm_engine from this tree, installed or not

if [[ "${1:-}" == "--dry-run" || "${HLM_GPU_CHECK_DRY:-0}" == 1 ]]; then
    # The interpreter is chosen when triton is first imported: set before Python starts.
    TRITON_INTERPRET=1 HLM_BUILD_EXT=0 exec "$PY" bench/gpu_check.py --dry-run --out "$OUT"
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia_smi.csv" 2>&1 || true
# In place, so the import path above finds the extensions; -j: setuptools compiles the sources in parallel.
( timeout 240 "$PY" setup.py build_ext --inplace -j "$(nproc)" > "$OUT/build_ext.log" 2>&1
  echo "build_ext exit $?" >> "$OUT/build_ext.log" ) &
build=$!
unset TRITON_INTERPRET
timeout 450 "$PY" bench/gpu_check.py --out "$OUT" --budget-s 400 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
wait "$build"
tail -n 1 "$OUT/build_ext.log"
exit "$rc"
