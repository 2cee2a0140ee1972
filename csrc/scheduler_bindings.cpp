// Thin pybind11 bindings of the scheduler core. Status codes go to Python as ints; the wrapper in
// hlm_engine/scheduler.py raises QueueFull etc. The GIL is released while next_batch waits.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>

#include "scheduler.h"

namespace py = pybind11;

namespace {

py::tuple to_py(const hlm::Batch& b) {
  return py::make_tuple(py::cast(b.ids), py::cast(b.expired));
}

}  // namespace

PYBIND11_MODULE(_scheduler, m) {
  m.doc() = "hlm-engine dynamic batching scheduler (C++17 core; see csrc/scheduler.h for the rule)";
  m.def("now_us", &hlm::now_us, "Microseconds on the monotonic clock (same clock as time.monotonic).");
  m.def("length_bucket", &hlm::length_bucket, py::arg("n_tokens"));
  m.attr("OK") = static_cast<int>(hlm::kOk);
  m.attr("QUEUE_FULL") = static_cast<int>(hlm::kQueueFull);
  m.attr("DUPLICATE") = static_cast<int>(hlm::kDuplicate);
  m.attr("BAD_TOKENS") = static_cast<int>(hlm::kBadTokens);
  m.attr("CLOSED") = static_cast<int>(hlm::kClosed);

  py::class_<hlm::Scheduler>(m, "Scheduler")
      .def(py::init([](int64_t max_batch_tokens, int64_t max_batch_size, int64_t max_delay_us,
                       int64_t max_queued_requests, int64_t max_queued_tokens) {
             return new hlm::Scheduler(hlm::SchedulerConfig{max_batch_tokens, max_batch_size, max_delay_us,
                                                            max_queued_requests, max_queued_tokens});
           }),
           py::arg("max_batch_tokens"), py::arg("max_batch_size"), py::arg("max_delay_us"),
           py::arg("max_queued_requests"), py::arg("max_queued_tokens"))
      // submit/cancel hold the lock for well under a microsecond: keeping the GIL is cheaper than
      // releasing and re-taking it.
      .def("submit", &hlm::Scheduler::submit, py::arg("req_id"), py::arg("n_tokens"),
           py::arg("deadline_us") = -1, py::arg("now_us") = -1)
      .def("cancel", &hlm::Scheduler::cancel, py::arg("req_id"))
      .def("poll",
           [](hlm::Scheduler& s, int64_t now) {
             hlm::Batch b;
             s.poll(now, &b);
             return to_py(b);
           },
           py::arg("now_us") = -1)
      .def("next_batch",
           [](hlm::Scheduler& s, int64_t timeout_us) -> py::object {
             hlm::Batch b;
             bool open;
             {
               py::gil_scoped_release release;
               open = s.next_batch(timeout_us, &b);
             }
             if (!open) return py::none();
             return to_py(b);
           },
           py::arg("timeout_us") = -1)
      .def("close", &hlm::Scheduler::close)
      .def("drain", &hlm::Scheduler::drain)
      .def("stats", [](const hlm::Scheduler& s) {
        const hlm::SchedulerStats st = s.stats();
        py::dict d;
        d["queued"] = st.queued;
        d["queued_tokens"] = st.queued_tokens;
        d["submitted"] = st.submitted;
        d["rejected"] = st.rejected;
        d["dispatched"] = st.dispatched;
        d["batches"] = st.batches;
        d["expired"] = st.expired;
        d["cancelled"] = st.cancelled;
        d["drained"] = st.drained;
        d["closed"] = st.closed;
        return d;
      });
}
