"""Does a c10::Error thrown inside a C++ extension built on this machine reach Python as an exception, or crash the
process? (The host module avoids c10::Error because it once crashed the process on the GPU image; see
csrc/host/python_bindings.hpp.) Builds a tiny load_inline module and calls it in child processes, with and without the
system libstdc++ preloaded; prints what each call did and the toolchain versions.

    python tools/c10_error_probe.py [--device cuda|cpu]
"""

import argparse
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(r'''
    import sys, torch
    from torch.utils.cpp_extension import load_inline
    device = sys.argv[1]
    key = "CUDA" if device == "cuda" else "CPU"
    src = """
    #include <torch/extension.h>
    #include <stdexcept>
    std::string catch_c10() {
      try { TORCH_CHECK(false, "inner"); } catch (const c10::Error& e) { return "caught"; }
      return "not thrown";
    }
    void throw_std() { throw std::invalid_argument("std error"); }
    void throw_c10() { TORCH_CHECK(false, "c10 error"); }
    at::Tensor op_throw(const at::Tensor& x) { TORCH_CHECK(x.numel() < 0, "c10 error from a kernel"); return x; }
    TORCH_LIBRARY(dgprobe, m) { m.def("op_throw(Tensor x) -> Tensor"); }
    TORCH_LIBRARY_IMPL(dgprobe, KEY, m) { m.impl("op_throw", &op_throw); }
    """.replace("KEY", key)
    m = load_inline("dg_c10_probe_" + key, cpp_sources=[src], functions=["catch_c10", "throw_std", "throw_c10"])
    calls = [(name, getattr(m, name)) for name in ("catch_c10", "throw_std", "throw_c10")]
    calls.append(("TORCH_LIBRARY kernel", lambda: torch.ops.dgprobe.op_throw(torch.zeros(2, device=device))))
    for name, fn in calls:
        try:
            print(name, "->", fn(), flush=True)
        except Exception as e:
            print(name, "raised", type(e).__name__, flush=True)
    print("process survived", flush=True)
''')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    device = parser.parse_args().device
    libstdcxx = subprocess.run(["gcc", "-print-file-name=libstdc++.so.6"], capture_output=True, text=True).stdout
    for env in ({}, {"LD_PRELOAD": libstdcxx.strip()}):
        done = subprocess.run([sys.executable, "-c", CHILD, device], env={**os.environ, **env}, capture_output=True,
                              text=True)
        print(f"--- {env or 'no preload'}: exit code {done.returncode}")
        print(done.stdout.strip() or done.stderr.strip()[-2000:])
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    import torch

    print(f"gcc: {gcc}; torch {torch.__version__}, CXX11 ABI {torch._C._GLIBCXX_USE_CXX11_ABI}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
