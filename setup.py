"""Package layout and the C++ extension.

`kernels/` and `train/` sit at the top of the repository (their own layers) but install as
`hlm_engine.kernels` and `hlm_engine.train`: the bare names belong to other PyPI packages.
HLM_BUILD_EXT=0 skips the C++ scheduler build (the pure-Python twin serves instead).
"""
import glob
import os

from setuptools import setup

packages = ["hlm_engine", "hlm_engine.modeling", "hlm_engine.cli", "hlm_engine.index",
            "hlm_engine.kernels", "hlm_engine.train", "hlm_engine.train.losses"]
package_dir = {"hlm_engine.kernels": "kernels", "hlm_engine.train": "train",
               "hlm_engine.train.losses": "train/losses"}
packages = [p for p in packages if os.path.isdir(package_dir.get(p, p.replace(".", "/")))]

ext_modules = []
cmdclass = {}
if os.environ.get("HLM_BUILD_EXT", "1") != "0":
    from pybind11.setup_helpers import Pybind11Extension, build_ext

    ext_modules = [Pybind11Extension("hlm_engine._scheduler", sorted(glob.glob("csrc/*.cpp")),
                                     include_dirs=["csrc"], cxx_std=17, extra_compile_args=["-O3"])]
    cmdclass = {"build_ext": build_ext}

setup(packages=packages, package_dir=package_dir,
      package_data={"hlm_engine": ["sample_data/*.tsv"]},
      ext_modules=ext_modules, cmdclass=cmdclass)
