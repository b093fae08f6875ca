// Python surface of the kernel registry: load a JIT-compiled cubin, inspect what is loaded.
#include "kernel_loader.hpp"

#include <pybind11/stl.h>

#include "python_bindings.hpp"

namespace py = pybind11;

namespace deepgemm_ops {
namespace {

KernelImage image_from_python(const py::handle& result, const std::string& key) {
  py::tuple fields(py::reinterpret_borrow<py::object>(result));  // any sequence; raises TypeError otherwise
  require(fields.size() == 3, "load of kernel '", key, "' needs (cubin, function_name, dynamic_smem_bytes), got a "
          "tuple of ", fields.size());
  KernelImage image;
  if (py::isinstance<py::bytes>(fields[0])) {
    image.cubin_bytes = fields[0].cast<std::string>();
  } else {
    image.cubin_path = py::str(fields[0]).cast<std::string>();  // str or os.PathLike
  }
  image.function_name = fields[1].cast<std::string>();
  image.dynamic_smem_bytes = fields[2].cast<int>();
  return image;
}

void bind_kernel_loader(py::module_& m) {
  m.def(
      "load_kernel",
      [](const std::string& key, int device, const py::object& cubin, const std::string& function_name,
         int dynamic_smem_bytes) {
        return no_throw([&] {
          KernelImage image = image_from_python(py::make_tuple(cubin, function_name, dynamic_smem_bytes), key);
          py::gil_scoped_release no_gil;
          KernelRegistry::instance().load(key, device, image);
        });
      },
      py::arg("key"), py::arg("device"), py::arg("cubin"), py::arg("function_name"), py::arg("dynamic_smem_bytes"),
      "Load a cubin (bytes or path) as kernel `key` on `device` unless already loaded there; returns \"\" or the "
      "error (deepgemm_ops._runtime.check raises it).");
  m.def(
      "has_kernel",
      [](const std::string& key, int device) { return KernelRegistry::instance().find(key, device) != nullptr; },
      py::arg("key"), py::arg("device"));
  m.def("loaded_kernels", [] { return KernelRegistry::instance().loaded(); },
        "(key, device) of every loaded kernel.");
  m.def("set_pdl", [](bool enabled) { pdl_enabled().store(enabled); }, py::arg("enabled"),
        "Launch every later kernel with programmatic dependent launch (deepgemm_ops.set_pdl).");
}

const PythonBindings kRegister(bind_kernel_loader);

}  // namespace
}  // namespace deepgemm_ops
