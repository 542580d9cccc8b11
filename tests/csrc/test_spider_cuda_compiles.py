"""csrc/cuda/spider.cu and spider_adamw.cu (without register spills) must compile with plain nvcc,
and csrc/cuda/spider_glue.cpp must parse against torch's CUDA headers, even on a machine without
a GPU (the real build skips them there). Every pass that walks parameter-sized tensors (spider.cu's
accumulate, select and blend, SpiderAdamW's fused pass) must use 16-byte loads.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_cuda_compiles import ROOT, TORCH_NVCC_DEFINES, find_nvcc


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("name", ["spider", "spider_adamw"])
def test_spider_cu_compiles(tmp_path, name):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, CUDA_PATH, /usr/local/cuda)")
    obj = tmp_path / f"{name}.o"
    source = ROOT / "csrc" / "cuda" / f"{name}.cu"
    proc = subprocess.run(
        [nvcc, "-c", "-O3", "-std=c++17", "-arch=sm_90", "-Xptxas", "-v", *TORCH_NVCC_DEFINES,
         str(source), "-o", str(obj)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert obj.stat().st_size > 0
    spills = [line for line in proc.stderr.splitlines() if "spill stores" in line]
    assert spills and all(" 0 bytes spill stores, 0 bytes spill loads" in x for x in spills)


# Kernel -> (loads 16-byte words, stores 16-byte words) on its aligned path.
VECTOR_ACCESS = {
    "spider": {
        "accumulate_kernel": (True, True),  # reads G and g, writes G
        "select_kernel": (True, False),  # reads θ₀ and G
        "blend_kernel": (True, True),  # reads w, θ₀ and G, writes w
    },
    "spider_adamw": {"adamw_blend_kernel": (True, True)},  # w, g, m, v, θ₀, G; writes w, m, v
}


def _ptx_entries(text: str) -> dict[str, str]:
    """Each .entry of a PTX file, keyed by the kernel's name as it appears in the mangled one."""
    bodies = re.split(r"\.entry\s+", text)[1:]
    return {body.split("(", 1)[0]: body for body in bodies}


@pytest.mark.parametrize("name", sorted(VECTOR_ACCESS))
def test_passes_use_16_byte_loads(tmp_path, name):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, CUDA_PATH, /usr/local/cuda)")
    ptx = tmp_path / f"{name}.ptx"
    source = ROOT / "csrc" / "cuda" / f"{name}.cu"
    _run([nvcc, "-ptx", "-O3", "-std=c++17", "-arch=sm_90", *TORCH_NVCC_DEFINES, str(source),
          "-o", str(ptx)])  # fmt: skip
    entries = _ptx_entries(ptx.read_text())
    for kernel, (loads, stores) in VECTOR_ACCESS[name].items():
        [body] = [b for mangled, b in entries.items() if kernel in mangled]
        assert bool(re.search(r"ld\.global(\.nc)?\.v4\.u32", body)) == loads, kernel
        assert ("st.global.v4.u32" in body) == stores, kernel


def _cuda_include(nvcc: str) -> Path | None:
    # nvcc may be a wrapper script; ask it where the toolkit lives.
    proc = subprocess.run([nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True)
    for token in (proc.stdout + proc.stderr).replace('"', " ").split():
        if token.startswith("-I") and (Path(token[2:]) / "cuda_runtime.h").is_file():
            return Path(token[2:])
    return None


def test_spider_glue_parses(tmp_path):
    nvcc = find_nvcc()
    include = _cuda_include(nvcc) if nvcc else None
    if include is None:
        pytest.skip("CUDA toolkit headers not found")
    import torch.utils.cpp_extension as ext

    torch_includes = ext.include_paths()
    # A CPU build of torch ships c10/cuda headers but not this generated one (it only defines
    # export macros), so an empty stand-in lets the glue be type-checked here.
    shim = tmp_path / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cxx = "c++" if sys.platform != "win32" else "cl"
    cmd = [cxx, "-fsyntax-only", "-std=c++20", "-DFASTPEFT_WITH_CUDA=1", f"-I{tmp_path}"]
    cmd += [f"-I{p}" for p in torch_includes] + [f"-I{include}"]
    _run([*cmd, str(ROOT / "csrc" / "cuda" / "spider_glue.cpp")])
