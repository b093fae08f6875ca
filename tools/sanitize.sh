#!/usr/bin/env bash
# compute-sanitizer over tools/sanitize_small.py (every GEMM path and the fused casts), one tool after the other;
# prints each tool's summary line. Usage on the device (carry .whl): bash tools/sanitize.sh OUT_DIR
set -uo pipefail
out=${1:?usage: sanitize.sh OUT_DIR}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD DG_JIT_CACHE_DIR=${DG_JIT_CACHE_DIR:-/tmp/dg} TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/ext}
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
python3 tools/sanitize_small.py > "$out/sanitize_plain.log" 2>&1  # compile + load outside the sanitizer
for tool in memcheck racecheck synccheck; do
  timeout 300 "$sanitizer" --tool "$tool" --target-processes all python3 tools/sanitize_small.py > "$out/sanitize_$tool.log" 2>&1
  echo "$tool: $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard" "$out/sanitize_$tool.log" | tail -1)"
done
