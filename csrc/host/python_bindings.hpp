// Each host source adds its Python bindings with a static PythonBindings object; python_module.cpp, the one
// PYBIND11_MODULE of the host module, runs them all. Sources therefore stay independent of each other.
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

namespace deepgemm_ops {

using PythonBinder = void (*)(pybind11::module_&);

inline std::vector<PythonBinder>& python_binders() {
  static auto* binders = new std::vector<PythonBinder>();  // filled during static initialisation, never freed
  return *binders;
}

struct PythonBindings {
  explicit PythonBindings(PythonBinder binder) { python_binders().push_back(binder); }
};

}  // namespace deepgemm_ops

#include <stdexcept>
#include <string>

namespace deepgemm_ops {

// Runs `body` and returns "" or the error as "ValueError: ..." / "RuntimeError: ...", which
// deepgemm_ops._runtime.check raises in Python. No exception may leave the host module: on the GPU image (host module
// built by its gcc 13 against torch 2.11) a c10::Error thrown by TORCH_CHECK crashed the process even when caught
// here, so host code throws std::runtime_error / std::invalid_argument only (require / check_cu in driver.hpp).
template <typename Body>
std::string no_throw(Body&& body) {
  try {
    body();
    return {};
  } catch (const std::invalid_argument& e) {
    return std::string("ValueError: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("RuntimeError: ") + e.what();
  } catch (...) {
    return "RuntimeError: unknown C++ exception in the deepgemm_ops host module";
  }
}

}  // namespace deepgemm_ops
