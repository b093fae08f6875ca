#!/usr/bin/env bash
# Timing sweep: the same bench cases compiled under several variants (extra nvcc flags, e.g. -I<dir> with a modified
# copy of csrc/kernels).
# Usage: perf.sh OUT_DIR 'M,N,K[,BM,BN];...' 'name=flags' ['name=flags' ...]   (flags may be empty: 'base=')
# Prints one line per (variant, case) and a table of TFLOPS last.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?out dir}; spec=${2:?cases}; shift 2
nvcc=${NVCC:-nvcc}
mkdir -p "$out"
jobs=()
for v in "$@"; do
  name=${v%%=*}; flags=${v#*=}
  python3 "$root/tools/kernel_check/gen.py" "$out/$name" --perf "$spec" >/dev/null || exit 1
  echo "$flags" > "$out/$name/flags"
done
cutlass=$(cd "$root" && python3 -c "from deepgemm_ops import _toolchain; print(_toolchain.cutlass_include_dir())")
export nvcc root cutlass
ls "$out"/*/*.cu | xargs -P "$(nproc)" -I{} sh -c '
  f={}; d=$(dirname "$f"); "$nvcc" -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr $(cat "$d/flags") \
    -I"$root/csrc/kernels" -I"$cutlass" -Xptxas -v -cubin -o "${f%.cu}.cubin" "$f" > "${f%.cu}.log" 2>&1 || { tail -5 "${f%.cu}.log"; exit 1; }'
[ -x "$out/check" ] || "$nvcc" -std=c++17 -O2 -gencode=arch=compute_90,code=sm_90 -I"$root/csrc/host" -o "$out/check" \
  "$root/tools/kernel_check/check.cu" || exit 1
for v in "$@"; do
  name=${v%%=*}
  for log in "$out/$name"/*.log; do
    echo "$name $(basename "$log" .log): $(grep -o 'Used [0-9]* registers' "$log"), $(grep -o '[0-9]* bytes spill stores' "$log")"
  done
  timeout 300 "$out/check" "$out/$name" | sed "s/^/$name /" | tee "$out/$name/result.txt"
done
echo "== TFLOPS (variant x case) =="
for v in "$@"; do
  name=${v%%=*}
  printf '%-14s' "$name"; grep -o '[0-9]* TFLOPS' "$out/$name/result.txt" | awk '{printf " %5s", $1}'; echo
done
