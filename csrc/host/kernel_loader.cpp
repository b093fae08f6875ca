// Python surface of the kernel registry: install the JIT provider, load a cubin explicitly (warmup), inspect.
#include "kernel_loader.hpp"

#include <pybind11/stl.h>

#include "python_bindings.hpp"

namespace py = pybind11;

namespace deepgemm_ops {
namespace {

KernelImage image_from_python(const py::handle& result, const std::string& key) {
  py::tuple fields(py::reinterpret_borrow<py::object>(result));  // any sequence; raises TypeError otherwise
  TORCH_CHECK(fields.size() == 3, "deepgemm_ops: the kernel provider must return (cubin, function_name, "
              "dynamic_smem_bytes) for kernel '", key, "', got a tuple of ", fields.size());
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
      "set_kernel_provider",
      [](py::function provider) {
        // Leaked on purpose: the registry outlives the interpreter, and a py::function must not be released after
        // Python has shut down.
        auto* held = new py::function(std::move(provider));
        KernelRegistry::instance().set_provider([held](const std::string& key) {
          py::gil_scoped_acquire gil;
          return image_from_python((*held)(key), key);
        });
      },
      py::arg("provider"),
      "Install provider(key) -> (cubin bytes | path, function_name, dynamic_smem_bytes), called on a registry miss.");
  m.def(
      "load_kernel",
      [](const std::string& key, int device, const py::object& cubin, const std::string& function_name,
         int dynamic_smem_bytes) {
        KernelImage image = image_from_python(py::make_tuple(cubin, function_name, dynamic_smem_bytes), key);
        py::gil_scoped_release no_gil;
        KernelRegistry::instance().load(key, device, image);
      },
      py::arg("key"), py::arg("device"), py::arg("cubin"), py::arg("function_name"), py::arg("dynamic_smem_bytes"),
      "Load a cubin (bytes or path) as kernel `key` on `device` unless already loaded there.");
  m.def(
      "ensure_kernel",
      [](const std::string& key, int device) {
        py::gil_scoped_release no_gil;  // the provider takes the GIL back itself
        KernelRegistry::instance().get(key, device);
      },
      py::arg("key"), py::arg("device"), "Load kernel `key` on `device` through the provider unless already loaded.");
  m.def(
      "has_kernel",
      [](const std::string& key, int device) { return KernelRegistry::instance().find(key, device) != nullptr; },
      py::arg("key"), py::arg("device"));
  m.def("loaded_kernels", [] { return KernelRegistry::instance().loaded(); },
        "(key, device) of every loaded kernel.");
}

const PythonBindings kRegister(bind_kernel_loader);

}  // namespace
}  // namespace deepgemm_ops
