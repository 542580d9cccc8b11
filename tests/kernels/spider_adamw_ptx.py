"""Prints, as one JSON line per dtype, the global loads and stores in the PTX of SpiderAdamW's
Triton fused pass (kernels/spider_adamw.py) compiled for sm_90 as the host code configures it
(fastpeft/triton_path/samples.py's spider driver, 16-byte aligned tensors). Run with Triton's
interpreter off (tests/kernels/test_spider_adamw_vector_loads.py does); exits 77 where Triton
cannot compile for sm_90 here."""

import collections
import json
import re
import sys

import triton
from triton.compiler import ASTSource

from fastpeft.static import compile as compiler

ARCH = 90
SKIP_EXIT = 77


def main() -> int:
    problem = compiler.backend_problem(ARCH)
    if problem is not None:
        print(json.dumps({"skip": problem}))
        return SKIP_EXIT
    method = next(m for m in compiler.checked_methods() if m.name == "spider")
    launches = [
        launch
        for launch in compiler.record(method)
        if compiler.kernel_key(launch.kernel)[1] == "spider_adamw_blend_kernel"
    ]
    for job in compiler.distinct(launches, ARCH):
        source = ASTSource(job.kernel, job.signature, job.constexprs, job.attrs)
        kernel = triton.compile(source, target=compiler.arch_target(ARCH), options=job.options)
        ops = re.findall(r"\b(ld\.global[.a-z0-9]*|st\.global[.a-z0-9]*)", kernel.asm["ptx"])
        w_type = job.signature.get("w_base", "?")
        print(json.dumps({"w_base": w_type, "ops": collections.Counter(ops)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
