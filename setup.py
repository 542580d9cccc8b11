"""Builds the fastpeft._C extension. All package metadata lives in pyproject.toml.

Build with `pip install -e . --no-build-isolation` so the installed torch is used; nothing is
downloaded. The CUDA kernels are added only when torch is a CUDA build and a CUDA toolkit is
found; FASTPEFT_NO_CUDA=1 forces a CPU-only build.
"""

import os
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def _want_cuda() -> bool:
    if os.environ.get("FASTPEFT_NO_CUDA", "") not in ("", "0"):
        return False
    # CUDA_HOME is None whenever torch itself is a CPU build, even if nvcc is installed.
    return torch.version.cuda is not None and CUDA_HOME is not None


def _extension():
    sources = [
        "csrc/bindings.cpp",
        "csrc/cpu/abs_moments.cpp",
        "csrc/cpu/dropout.cpp",
        "csrc/cpu/masked_adamw.cpp",
        "csrc/cpu/spider.cpp",
        "csrc/cpu/spider_adamw.cpp",
    ]
    # torch picks the C++ standard (c++20 for recent torch); passing our own -std would clash.
    # -fno-math-errno: sqrt and friends need not set errno (nothing reads it), so GCC can
    # vectorise them (SpiderAdamW's fused pass on the CPU: 41 -> 23 ms); no result changes.
    cxx = ["-O3", "-fno-math-errno"]
    ldflags = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is an inline `#pragma omp parallel` in torch's headers: without
        # -fopenmp it silently runs single-threaded.
        cxx.append("-fopenmp")
        ldflags.append("-fopenmp")
    if _want_cuda():
        return CUDAExtension(
            "fastpeft._C",
            sources
            + ["csrc/cuda/abs_moments.cu", "csrc/cuda/torch_glue.cpp"]
            + ["csrc/cuda/spider.cu", "csrc/cuda/spider_adamw.cu", "csrc/cuda/spider_glue.cpp"],
            define_macros=[("FASTPEFT_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=ldflags,
        )
    return CppExtension(
        "fastpeft._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=ldflags
    )


setup(ext_modules=[_extension()], cmdclass={"build_ext": BuildExtension})
