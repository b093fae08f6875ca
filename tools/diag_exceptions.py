"""Device diagnostic (one-off): which C++ exception paths survive in a load_inline module on this machine?

Each case runs in its own subprocess so a crash is reported, not fatal. Usage: python3 tools/diag_exceptions.py [CXX]
"""
import os
import subprocess
import sys

SRC = r'''
#include <torch/extension.h>
#include <stdexcept>
std::string std_caught() { try { throw std::runtime_error("std"); } catch (const std::exception& e) { return e.what(); } }
std::string c10_caught_std() { try { TORCH_CHECK(false, "c10"); } catch (const std::exception& e) { return "caught"; } return ""; }
std::string c10_caught_c10() { try { TORCH_CHECK(false, "c10"); } catch (const c10::Error& e) { return "caught"; } return ""; }
void std_to_pybind() { throw std::runtime_error("std to pybind"); }
void c10_to_pybind() { TORCH_CHECK(false, "c10 to pybind"); }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("std_caught", &std_caught); m.def("c10_caught_std", &c10_caught_std); m.def("c10_caught_c10", &c10_caught_c10);
  m.def("std_to_pybind", &std_to_pybind); m.def("c10_to_pybind", &c10_to_pybind);
}
'''

CASE = r'''
import sys, torch
from torch.utils.cpp_extension import load_inline
m = load_inline(name="diag_exc_" + sys.argv[2], cpp_sources=[open(sys.argv[1]).read()], verbose=False)
try:
    print(sys.argv[3], "->", getattr(m, sys.argv[3])())
except Exception as e:
    print(sys.argv[3], "-> raised", type(e).__name__, e)
'''

if __name__ == "__main__":
    tag = "default"
    if len(sys.argv) > 1:
        os.environ["CXX"] = sys.argv[1]
        tag = "cxx" + str(abs(hash(sys.argv[1])) % 1000)
    with open("/tmp/diag_exc.cpp", "w") as f:
        f.write(SRC)
    with open("/tmp/diag_case.py", "w") as f:
        f.write(CASE)
    for case in ("std_caught", "c10_caught_std", "c10_caught_c10", "std_to_pybind", "c10_to_pybind"):
        r = subprocess.run([sys.executable, "/tmp/diag_case.py", "/tmp/diag_exc.cpp", tag, case], capture_output=True,
                           text=True)
        print(f"[{tag}] {case}: rc={r.returncode} {r.stdout.strip()[-200:]} {r.stderr.strip()[-300:] if r.returncode else ''}")
