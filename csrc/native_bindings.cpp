// pybind11 bindings of NativeEncoder (native_encoder.h), part of the `_cpu_kernels` module. Arrays cross
// as numpy (pybind11/numpy.h: no torch headers). The encoder borrows the state dict's embedding tables, so
// it holds a reference to the dict of arrays for its lifetime. forward() releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "native_encoder.h"

namespace py = pybind11;

namespace {

using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

template <typename T>
T need(const py::dict& d, const char* key) {
  if (!d.contains(key)) throw std::invalid_argument(std::string("NativeEncoder: config has no '") + key + "'");
  return d[key].cast<T>();
}

template <typename T>
T get_or(const py::dict& d, const char* key, T fallback) {
  return d.contains(key) && !d[key].is_none() ? d[key].cast<T>() : fallback;
}

// EncoderConfig.to_dict() -> EncoderSpec.
hlm::EncoderSpec parse_spec(const py::dict& d) {
  hlm::EncoderSpec s;
  s.arch = need<std::string>(d, "arch");
  s.vocab_size = need<int64_t>(d, "vocab_size");
  s.hidden_size = need<int64_t>(d, "hidden_size");
  s.num_heads = need<int64_t>(d, "num_heads");
  s.num_kv_heads = need<int64_t>(d, "num_kv_heads");
  s.head_dim = need<int64_t>(d, "head_dim");
  s.intermediate_sizes = need<std::vector<int64_t>>(d, "intermediate_sizes");
  s.max_position_embeddings = need<int64_t>(d, "max_position_embeddings");
  s.norm_eps = need<float>(d, "norm_eps");
  s.type_vocab_size = get_or<int64_t>(d, "type_vocab_size", 0);
  s.position_offset = get_or<int64_t>(d, "position_offset", 0);
  s.relative_attention_num_buckets = get_or<int64_t>(d, "relative_attention_num_buckets", 0);
  s.relative_attention_max_distance = get_or<int64_t>(d, "relative_attention_max_distance", 128);
  s.rope_theta = get_or<double>(d, "rope_theta", 1e6);
  s.qk_norm = get_or<bool>(d, "qk_norm", false);
  s.attention_bias = get_or<bool>(d, "attention_bias", true);
  s.pooling = get_or<std::string>(d, "pooling", "mean");
  s.output_dim = get_or<int64_t>(d, "output_dim", 0);
  return s;
}

std::unique_ptr<hlm::NativeEncoder> build(const py::dict& config, const py::dict& weights, const std::string& format,
                                          int threads) {
  const hlm::WeightFormat fmt = hlm::parse_weight_format(format);
  std::map<std::string, hlm::TensorView> views;
  for (auto item : weights) {
    const std::string name = item.first.cast<std::string>();
    auto arr = py::reinterpret_borrow<py::object>(item.second);
    if (!py::isinstance<py::array_t<float>>(arr) ||
        !(arr.cast<py::array>().flags() & py::array::c_style)) {
      throw std::invalid_argument("NativeEncoder: tensor '" + name + "' must be a C-contiguous float32 numpy array");
    }
    auto a = arr.cast<py::array_t<float>>();
    hlm::TensorView v{a.data(), std::vector<int64_t>(a.shape(), a.shape() + a.ndim())};
    views.emplace(name, std::move(v));
  }
  // The dict keeps every array (and the memory the embedding tables are borrowed from) alive; dropped with
  // the GIL held, whichever thread destroys the encoder.
  std::shared_ptr<void> keep(new py::object(weights), [](void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
  return std::make_unique<hlm::NativeEncoder>(parse_spec(config), views, fmt, threads, std::move(keep));
}

py::array_t<float> run(const hlm::NativeEncoder& e, const I64Array& ids, const py::object& positions,
                       const I64Array& cu, const py::object& dim, bool normalize) {
  if (ids.ndim() != 1) throw std::invalid_argument("NativeEncoder.forward: input_ids must be 1-D [tokens]");
  if (cu.ndim() != 1 || cu.shape(0) < 2) {
    throw std::invalid_argument("NativeEncoder.forward: cu_seqlens must be 1-D [batch + 1] with batch >= 1");
  }
  I64Array pos;
  if (!positions.is_none()) {
    pos = positions.cast<I64Array>();
    if (pos.ndim() != 1 || pos.shape(0) != ids.shape(0)) {
      throw std::invalid_argument("NativeEncoder.forward: positions must be 1-D with one entry per token");
    }
  }
  const int64_t d = dim.is_none() ? e.embed_dim() : dim.cast<int64_t>();
  const int64_t batch = cu.shape(0) - 1;
  if (d < 1 || d > e.embed_dim()) {
    throw std::invalid_argument("NativeEncoder.forward: dim must be in [1, " + std::to_string(e.embed_dim()) + "]");
  }
  py::array_t<float> out({batch, d});
  float* o = out.mutable_data();
  const int64_t* p = positions.is_none() ? nullptr : pos.data();
  {
    py::gil_scoped_release nogil;
    e.forward(ids.data(), p, ids.shape(0), cu.data(), batch, o, d, normalize);
  }
  return out;
}

}  // namespace

void bind_native(py::module_& m) {
  m.def("relative_position_buckets",
        [](int64_t num_buckets, int64_t max_distance, int64_t max_len) {
          std::vector<int32_t> b;
          for (int64_t d = -max_len; d <= max_len; ++d) b.push_back(hlm::relative_bucket(d, num_buckets, max_distance));
          return b;
        },
        py::arg("num_buckets"), py::arg("max_distance"), py::arg("max_len"),
        "MPNet buckets of the relative distances -max_len..max_len as the native forward computes them (tests).");
  py::class_<hlm::NativeEncoder>(m, "NativeEncoder",
                                 "One-call CPU encoder forward over packed weights (csrc/native_encoder.h).")
      .def(py::init(&build), py::arg("config"), py::arg("weights"), py::arg("format") = "fp32",
           py::arg("threads") = 1,
           "config: EncoderConfig.to_dict(); weights: {name: C-contiguous float32 array} (the model's state dict); "
           "format: fp32 | bf16 | int8; threads: cores one forward uses.")
      .def("forward", &run, py::arg("input_ids"), py::arg("positions"), py::arg("cu_seqlens"),
           py::arg("dim") = py::none(), py::arg("normalize") = true,
           "input_ids [T] int, positions [T] int or None, cu_seqlens [B+1] int -> float32 [B, dim].")
      .def(
          "encode_ids",
          [](const hlm::NativeEncoder& e, const std::vector<std::vector<int64_t>>& ids_list, const py::object& dim,
             bool normalize) {
            // Token id lists -> one packed batch, flattened here (no numpy round trip per query).
            std::vector<int64_t> cu(1, 0);
            size_t total = 0;
            for (const auto& ids : ids_list) total += ids.size();
            I64Array flat(static_cast<py::ssize_t>(total));
            int64_t* f = flat.mutable_data();
            for (const auto& ids : ids_list) {
              f = std::copy(ids.begin(), ids.end(), f);
              cu.push_back(cu.back() + static_cast<int64_t>(ids.size()));
            }
            I64Array cua(static_cast<py::ssize_t>(cu.size()), cu.data());
            return run(e, flat, py::none(), cua, dim, normalize);
          },
          py::arg("ids_list"), py::arg("dim") = py::none(), py::arg("normalize") = true,
          "list of token id lists -> float32 [B, dim] (positions restart at 0 in every text).")
      .def_property("threads", &hlm::NativeEncoder::threads, &hlm::NativeEncoder::set_threads)
      .def_property_readonly("format", [](const hlm::NativeEncoder& e) { return hlm::weight_format_name(e.format()); })
      .def_property_readonly("weight_bytes", &hlm::NativeEncoder::weight_bytes,
                             "bytes of packed linear weights one forward streams")
      .def_property_readonly("embed_dim", &hlm::NativeEncoder::embed_dim);
}
