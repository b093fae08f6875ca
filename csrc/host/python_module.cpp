// The host module's Python entry point: runs every binder registered by the other host sources.
#include "python_bindings.hpp"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  for (deepgemm_ops::PythonBinder bind : deepgemm_ops::python_binders()) bind(m);
}
