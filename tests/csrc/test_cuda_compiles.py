"""The pure-CUDA launcher must compile with plain nvcc, even on a machine without a GPU.

This keeps csrc/cuda/abs_moments.cu honest on CPU-only CI, where the extension itself is built
without it.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "csrc" / "cuda" / "abs_moments.cu"

# torch's CUDAExtension compiles with these; without them a hidden implicit half/bf16 conversion
# could compile here and then fail in the real build.
TORCH_NVCC_DEFINES = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
]


def find_nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


def test_abs_moments_cu_compiles(tmp_path):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, CUDA_PATH, /usr/local/cuda)")
    obj = tmp_path / "abs_moments.o"
    # A single architecture keeps this to a few seconds.
    cmd = [nvcc, "-c", "-O3", "-std=c++17", "-arch=sm_90", *TORCH_NVCC_DEFINES, str(SOURCE)]
    proc = subprocess.run(
        [*cmd, "-o", str(obj)], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert obj.stat().st_size > 0
