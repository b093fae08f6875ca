"""Write the generated source of each representative GEMM config (test/test_kernel_compile.py's CASES and
BF16_CASES) and of every FP8 cast kernel to DIR.

Used by CMakeLists.txt to compile-check every kernel family: python tools/emit_kernels.py DIR
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "test"))

from test_kernel_compile import BF16_CASES, CASES  # noqa: E402

from deepgemm_ops import _codegen  # noqa: E402

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for name, (cfg, n, k) in CASES.items():
    source, _ = _codegen.fp8_gemm_source(cfg, n, k)
    (out / f"{name}.cu").write_text(source)
for name, (cfg, n, k) in BF16_CASES.items():
    source, _ = _codegen.bf16_gemm_source(cfg, n, k)
    (out / f"bf16_{name}.cu").write_text(source)
for kind in _codegen.CAST_KINDS:
    for dtype in _codegen.CAST_DTYPES:
        source, symbol = _codegen.fp8_cast_source(kind, dtype)
        (out / f"{symbol}.cu").write_text(source)
