#!/usr/bin/env bash
# Builds every kernel_check case (generated kernels -> cubins, in parallel), the check binary, and runs it.
# Usage: tools/kernel_check/run.sh OUT_DIR [--only check|bench] [--num-sms N]; needs nvcc, python3 and, to run,
# an SM90 GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: run.sh OUT_DIR [--only check|bench] [--num-sms N]}
shift
nvcc=${NVCC:-nvcc}
python3 "$root/tools/kernel_check/gen.py" "$out" "$@"
cutlass=$(cd "$root" && python3 -c "from deepgemm_ops import _toolchain; print(_toolchain.cutlass_include_dir())")
export nvcc root cutlass
ls "$out"/*.cu | xargs -P "$(nproc)" -I{} sh -c '
  f={}; "$nvcc" -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -I"$root/csrc/kernels" -I"$cutlass" \
    -Xptxas -v -cubin -o "${f%.cu}.cubin" "$f" > "${f%.cu}.log" 2>&1 || { cat "${f%.cu}.log"; exit 1; }'
for log in "$out"/*.log; do  # registers and spills of every kernel
  echo "$(basename "$log" .log): $(grep -o 'Used [0-9]* registers' "$log"), $(grep -o '[0-9]* bytes stack frame, [0-9]* bytes spill stores' "$log")"
done
"$nvcc" -std=c++17 -O2 -gencode=arch=compute_90,code=sm_90 -I"$root/csrc/host" -o "$out/check" \
  "$root/tools/kernel_check/check.cu"
"$out/check" "$out"
