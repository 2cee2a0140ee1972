// Placeholder until the dynamic batching scheduler lands: proves the pybind11 build works.
#include <pybind11/pybind11.h>

PYBIND11_MODULE(_scheduler, m) {
    m.doc() = "hlm-engine C++ scheduler (placeholder)";
    m.attr("__placeholder__") = true;
}
