// Thin pybind11 bindings of the small-M GEMM. Tensors cross as raw addresses (uintptr_t): the caller,
// hlm_engine/cpu_linear.py, validates dtype/device/contiguity/shape and keeps the tensors alive for the
// call, and the module stays free of torch headers (fast to build, no ABI coupling to a torch version).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "small_gemm.h"

namespace py = pybind11;

namespace {

template <typename T>
T* ptr(uintptr_t addr) {
  return reinterpret_cast<T*>(addr);
}

}  // namespace

PYBIND11_MODULE(_cpu_gemm, m) {
  m.doc() = "hlm-engine small-M fp32 CPU GEMM over 16-column packed weights (csrc/small_gemm.h)";
  m.attr("PANEL") = hlm::kPanel;
  m.def("supported", &hlm::small_gemm_supported, "True when this CPU has AVX2 + FMA.");
  m.def("packed_size", &hlm::packed_size, py::arg("n"), py::arg("k"));
  m.def(
      "pack",
      [](uintptr_t w, int64_t n, int64_t k, uintptr_t out) { hlm::pack_weight(ptr<const float>(w), n, k, ptr<float>(out)); },
      py::arg("w"), py::arg("n"), py::arg("k"), py::arg("out"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "gelu_", [](uintptr_t x, int64_t n) { hlm::gelu_inplace(ptr<float>(x), n); }, py::arg("x"), py::arg("n"),
      "Exact (erf) GELU in place on n contiguous floats.", py::call_guard<py::gil_scoped_release>());
  m.def(
      "gemm",
      [](uintptr_t x, int64_t rows, int64_t k, int64_t ldx, uintptr_t packed, int64_t n, uintptr_t bias,
         uintptr_t y, int64_t ldy, bool gelu) {
        hlm::small_gemm(ptr<const float>(x), rows, k, ldx, ptr<const float>(packed), n,
                        bias != 0 ? ptr<const float>(bias) : nullptr, ptr<float>(y), ldy, gelu);
      },
      py::arg("x"), py::arg("rows"), py::arg("k"), py::arg("ldx"), py::arg("packed"), py::arg("n"),
      py::arg("bias"), py::arg("y"), py::arg("ldy"), py::arg("gelu"),
      // Released so two engine workers' GEMMs (and the scheduler thread) run in parallel.
      py::call_guard<py::gil_scoped_release>());
}
