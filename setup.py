"""Package layout and the C++ extension.

`kernels/`, `train/` and `report/` sit at the top of the repository (their own layers) but install as
`hlm_engine.kernels`, `hlm_engine.train` and `hlm_engine.report`: the bare names belong to other PyPI
packages. The runtime (`hlm_engine` minus train/report) never imports train or report.
Two C++ extensions, both torch-free: `hlm_engine._scheduler` (the dynamic batching scheduler) and
`hlm_engine._cpu_kernels` (fp32 CPU inference kernels: the small-M GEMM, packed attention, add + LayerNorm).
HLM_BUILD_EXT=0 skips both (the pure-Python scheduler twin, oneDNN/MKL GEMMs and the PyTorch references
serve instead).
"""
import os

from setuptools import setup

packages = ["hlm_engine", "hlm_engine.models", "hlm_engine.ops", "hlm_engine.ops.cpu", "hlm_engine.serving",
            "hlm_engine.retrieval", "hlm_engine.retrieval.index", "hlm_engine.cli",
            "hlm_engine.kernels", "hlm_engine.train", "hlm_engine.train.losses", "hlm_engine.report"]
package_dir = {"hlm_engine.kernels": "kernels", "hlm_engine.train": "train",
               "hlm_engine.train.losses": "train/losses", "hlm_engine.report": "report"}
packages = [p for p in packages if os.path.isdir(package_dir.get(p, p.replace(".", "/")))]

ext_modules = []
cmdclass = {}
if os.environ.get("HLM_BUILD_EXT", "1") != "0":
    from pybind11.setup_helpers import Pybind11Extension, build_ext

    def ext(name, sources):
        return Pybind11Extension(f"hlm_engine.{name}", [f"csrc/{s}" for s in sources], include_dirs=["csrc"],
                                 cxx_std=17, extra_compile_args=["-O3"])

    # The CPU kernels are compiled for the baseline ISA: their AVX2/FMA code is selected per function
    # (target attributes, csrc/avx2_math.h) and only called where the running CPU has them.
    ext_modules = [ext("_scheduler", ["scheduler.cpp", "scheduler_bindings.cpp"]),
                   ext("_cpu_kernels", ["packed_gemm.cpp", "int8_gemm.cpp", "small_gemm.cpp", "cpu_attention.cpp",
                                        "cpu_layernorm.cpp", "thread_pool.cpp", "weight_heap.cpp", "native_encoder.cpp",
                                        "native_forward.cpp", "cpu_kernels_bindings.cpp", "native_bindings.cpp"])]
    cmdclass = {"build_ext": build_ext}

setup(packages=packages, package_dir=package_dir,
      package_data={"hlm_engine": ["sample_data/*.tsv"]},
      ext_modules=ext_modules, cmdclass=cmdclass)
