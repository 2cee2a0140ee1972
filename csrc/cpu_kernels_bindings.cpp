// Thin pybind11 bindings of the CPU inference kernels: the small-M GEMM (small_gemm.h), packed attention
// (cpu_attention.h), fused add + LayerNorm (cpu_layernorm.h) and the one-call forward (native_bindings.cpp).
// Tensors cross as raw addresses (uintptr_t) plus strides in floats: the Python wrappers
// (hlm_engine/ops/cpu/linear.py, attention.py, norm.py) validate dtype/device/layout and keep the tensors
// alive for the call, so this module stays free of torch headers (fast to build, no ABI coupling to a torch
// version). Every kernel releases the GIL: two engine workers compute in parallel. Invalid arguments raise
// ValueError naming the problem.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu_attention.h"
#include "cpu_layernorm.h"
#include "packed_gemm.h"
#include "small_gemm.h"
#include "weight_heap.h"

namespace py = pybind11;

void bind_native(py::module_& m);  // native_bindings.cpp

namespace {

template <typename T>
T* ptr(uintptr_t addr) {
  return reinterpret_cast<T*>(addr);
}

template <typename T>
T* ptr_or_null(uintptr_t addr) {
  return addr != 0 ? reinterpret_cast<T*>(addr) : nullptr;
}

}  // namespace

PYBIND11_MODULE(_cpu_kernels, m) {
  m.doc() = "hlm-engine fp32 CPU inference kernels (csrc/small_gemm.h, cpu_attention.h, cpu_layernorm.h)";
  m.attr("PANEL") = hlm::kPanel;
  m.def("weight_heap_bytes", &hlm::weight_heap_chunk_bytes,
        "Bytes of packed weight blocks now on huge-page-advised chunks (weight_heap.h; 0 off Linux).");
  m.def("supported", &hlm::small_gemm_supported, "True when this CPU has AVX2 + FMA (all kernels need them).");

  // ---------------------------------------------------------------- small-M GEMM
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
        hlm::small_gemm(ptr<const float>(x), rows, k, ldx, ptr<const float>(packed), n, ptr_or_null<const float>(bias),
                        ptr<float>(y), ldy, gelu);
      },
      py::arg("x"), py::arg("rows"), py::arg("k"), py::arg("ldx"), py::arg("packed"), py::arg("n"),
      py::arg("bias"), py::arg("y"), py::arg("ldy"), py::arg("gelu"), py::call_guard<py::gil_scoped_release>());

  // ---------------------------------------------------------------- one packed linear (tests, benchmarks)
  py::class_<hlm::PackedLinear>(m, "PackedLinear",
                                "One linear packed in fp32 | bf16 | int8 (packed_gemm.h), as the native forward "
                                "runs it: tests and benchmarks of the formats' kernels.")
      .def(py::init([](uintptr_t w, int64_t n, int64_t k, uintptr_t bias, const std::string& fmt) {
             return hlm::PackedLinear(ptr<const float>(w), n, k, ptr_or_null<const float>(bias),
                                      hlm::parse_weight_format(fmt));
           }),
           py::arg("w"), py::arg("n"), py::arg("k"), py::arg("bias"), py::arg("format"))
      .def_property_readonly("panels", &hlm::PackedLinear::panels)
      .def("integer_path", &hlm::PackedLinear::integer_path, py::arg("m"),
           "True where run() on m rows takes the int8 integer path (int8_gemm.h).")
      .def(
          "run",
          [](const hlm::PackedLinear& self, uintptr_t x, int64_t m, int64_t ldx, uintptr_t y, int64_t ldy, bool gelu,
             int64_t p0, int64_t p1) {
            std::vector<float> scratch(hlm::dequant_scratch_floats(self.k()));
            self.run(ptr<const float>(x), m, ldx, ptr<float>(y), ldy, gelu ? hlm::Act::kGelu : hlm::Act::kNone, p0,
                     p1, scratch.data());
          },
          "y[0:m, columns of panels [p0, p1)] = act(x @ W^T + b) on the calling thread.", py::arg("x"), py::arg("m"),
          py::arg("ldx"), py::arg("y"), py::arg("ldy"), py::arg("gelu"), py::arg("p0"), py::arg("p1"),
          py::call_guard<py::gil_scoped_release>())
      .def(
          "run_packed_in_parts",
          [](const hlm::PackedLinear& self, uintptr_t x, int64_t m, int64_t ldx, uintptr_t y, int64_t ldy,
             const std::vector<int64_t>& cuts) {
            // As the native forward's threads do: x packed into strips one row range at a time (ranges may cut
            // a strip), then all panels run on the strips. fp32 / bf16 weights.
            std::vector<float> strips(static_cast<size_t>(m * self.k()));
            for (size_t i = 0; i + 1 < cuts.size(); ++i) {
              hlm::pack_rows(ptr<const float>(x), m, self.k(), ldx, strips.data(), cuts[i], cuts[i + 1]);
            }
            std::vector<float> scratch(hlm::dequant_scratch_floats(self.k()));
            self.run_packed(strips.data(), m, ptr<float>(y), ldy, hlm::Act::kNone, 0, self.panels(), scratch.data());
          },
          "y = x @ W^T + b through pack_rows over the row ranges [cuts[i], cuts[i + 1]) and run_packed.",
          py::arg("x"), py::arg("m"), py::arg("ldx"), py::arg("y"), py::arg("ldy"), py::arg("cuts"),
          py::call_guard<py::gil_scoped_release>());

  // ---------------------------------------------------------------- packed attention
  m.def(
      "attention",
      [](uintptr_t q, int64_t q_st, int64_t q_sh, uintptr_t k, int64_t k_st, int64_t k_sh, uintptr_t v,
         int64_t v_st, int64_t v_sh, uintptr_t out, int64_t o_st, int64_t o_sh, uintptr_t cu, int64_t batch,
         int64_t tokens, int64_t hq, int64_t hkv, int64_t head_dim, float scale, bool causal, uintptr_t bias,
         int64_t b_sh, int64_t b_si, int64_t bias_len) {
        const hlm::AttnArgs a{ptr<const float>(q), ptr<const float>(k), ptr<const float>(v), ptr<float>(out),
                              q_st, q_sh, k_st, k_sh, v_st, v_sh, o_st, o_sh, ptr<const int32_t>(cu), batch, tokens,
                              hq, hkv, head_dim, scale, causal, ptr_or_null<const float>(bias), b_sh, b_si, bias_len};
        hlm::varlen_attention(a);
      },
      py::arg("q"), py::arg("q_st"), py::arg("q_sh"), py::arg("k"), py::arg("k_st"), py::arg("k_sh"),
      py::arg("v"), py::arg("v_st"), py::arg("v_sh"), py::arg("out"), py::arg("o_st"), py::arg("o_sh"),
      py::arg("cu_seqlens"), py::arg("batch"), py::arg("tokens"), py::arg("hq"), py::arg("hkv"),
      py::arg("head_dim"), py::arg("scale"), py::arg("causal"), py::arg("bias"), py::arg("b_sh"),
      py::arg("b_si"), py::arg("bias_len"), py::call_guard<py::gil_scoped_release>());

  // ---------------------------------------------------------------- add + LayerNorm
  m.def(
      "add_layernorm",
      [](uintptr_t x, int64_t ldx, uintptr_t res, int64_t ldres, uintptr_t w, uintptr_t b, float eps, int64_t rows,
         int64_t h, uintptr_t out, int64_t ldout, uintptr_t r_out, int64_t ldr) {
        hlm::add_layernorm(ptr<const float>(x), ldx, ptr_or_null<const float>(res), ldres, ptr<const float>(w),
                           ptr_or_null<const float>(b), eps, rows, h, ptr<float>(out), ldout, ptr_or_null<float>(r_out),
                           ldr);
      },
      py::arg("x"), py::arg("ldx"), py::arg("residual"), py::arg("ldres"), py::arg("weight"), py::arg("bias"),
      py::arg("eps"), py::arg("rows"), py::arg("h"), py::arg("out"), py::arg("ldout"), py::arg("r_out"),
      py::arg("ldr"), py::call_guard<py::gil_scoped_release>());

  // ---------------------------------------------------------------- the one-call native forward
  bind_native(m);
}
