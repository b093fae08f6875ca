#!/usr/bin/env bash
# One device call: GPU tests (parallel groups sharing the JIT disk cache, which is multi-process safe), then the
# dense and grouped benchmarks. Usage on the device (carry .whl): bash tools/device_check.sh OUT_DIR [tests|bench|all]
set -uo pipefail
out=${1:?usage: device_check.sh OUT_DIR [tests|bench|all]}
what=${2:-all}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD DG_JIT_CACHE_DIR=/tmp/dg TORCH_EXTENSIONS_DIR=/tmp/ext PYTHONUNBUFFERED=1
python3 -c "from deepgemm_ops import _runtime; _runtime.host_module()" || exit 1
if [ "$what" != bench ]; then
  # The out-of-memory and 64-bit-offset tests take (nearly) all of the GPU's memory: they run alone, afterwards.
  alone="out_of_memory or offsets_beyond"
  groups=("test_seed_shapes" "test_edges or fp32_out" "grouped" "not seed_shapes and not edges and not fp32_out and not grouped and not ($alone)")
  for i in "${!groups[@]}"; do
    timeout 330 python3 -m pytest test/test_gpu.py -q -rfE -k "${groups[$i]}" > "$out/gpu_$i.log" 2>&1 &
  done
  timeout 330 python3 -m pytest test/test_runtime.py test/test_gpu_cast.py test/test_gpu_nn.py test/test_gpu_pdl.py test/test_multi_gpu.py -q -rfE > "$out/gpu_runtime_cast_nn.log" 2>&1 &
  timeout 330 python3 -m pytest test/test_gpu_bf16.py -q -rfE > "$out/gpu_bf16.log" 2>&1 &
  timeout 330 python3 -m pytest test/test_gpu_kgrouped.py -q -rfE > "$out/gpu_kgrouped.log" 2>&1 &
  wait
  timeout 300 python3 -m pytest test/test_gpu.py -q -rfE -k "$alone" > "$out/gpu_alone.log" 2>&1
  tail -n 3 "$out"/gpu_*.log
fi
if [ "$what" != tests ]; then
  timeout 150 python3 -m deepgemm_ops bench --overhead --json "$out/bench.json" 2>&1 | tee "$out/bench.log"
  timeout 120 python3 -m deepgemm_ops bench --grouped --json "$out/bench_grouped.json" 2>&1 | tee "$out/bench_grouped.log"
  timeout 120 python3 -m deepgemm_ops bench --casts --json "$out/bench_casts.json" 2>&1 | tee "$out/bench_casts.log"
fi
