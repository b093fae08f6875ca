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
