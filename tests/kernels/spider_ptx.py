"""Prints, as one JSON line per kernel and dtype, the global loads and stores in the PTX of
SPIDER's Triton passes (kernels/importance.py) and SpiderAdamW's fused pass
(kernels/spider_adamw.py) compiled for sm_90 as the host code configures them
(fastpeft/triton_path/samples.py's spider driver, 16-byte aligned tensors). Run with Triton's
interpreter off (tests/kernels/test_spider_vector_loads.py does); exits 77 where Triton cannot
compile for sm_90 here."""

import collections
import json
import re
import sys

import triton
from triton.compiler import ASTSource

from fastpeft.static import compile as compiler

ARCH = 90
SKIP_EXIT = 77
# The kernels that stream the parameters' elements (the per-tensor finalize sums do not).
STREAMING = (
    "spider_accumulate_kernel",
    "spider_select_kernel",
    "spider_blend_kernel",
    "spider_adamw_blend_kernel",
    "masked_adamw_kernel",
)


def main() -> int:
    problem = compiler.backend_problem(ARCH)
    if problem is not None:
        print(json.dumps({"skip": problem}))
        return SKIP_EXIT
    method = next(m for m in compiler.checked_methods() if m.name == "spider")
    launches = [
        launch
        for launch in compiler.record(method)
        if compiler.kernel_key(launch.kernel)[1] in STREAMING
    ]
    for job in compiler.distinct(launches, ARCH):
        source = ASTSource(job.kernel, job.signature, job.constexprs, job.attrs)
        kernel = triton.compile(source, target=compiler.arch_target(ARCH), options=job.options)
        ops = re.findall(r"\b(ld\.global[.a-z0-9]*|st\.global[.a-z0-9]*)", kernel.asm["ptx"])
        # The group's dtype: the base of its parameter-dtype operand (g, θ₀ or w).
        dtype = next(
            job.signature[k] for k in ("g_base", "t0_base", "w_base") if k in job.signature
        )
        print(json.dumps({"kernel": job.kernel.__name__, "dtype": dtype,
                          "ops": collections.Counter(ops)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
