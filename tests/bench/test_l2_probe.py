"""The L2 read-bandwidth probe (fastpeft/bench/l2_probe.py): every round reads the whole buffer
exactly once (under Triton's interpreter), and on sm_90 its loads are 16-byte loads that bypass L1
(ld.global.cg.v4 in the PTX), so the figure it gives on a GPU is the L2's."""

import json

import pytest
import torch

from fastpeft.bench import l2_probe

from ..kernels.hopper_launches import run_uninterpreted

# Compiles the probe for sm_90 as a GPU run launches it and prints its global loads (exit 77
# where Triton cannot compile for sm_90 here).
PTX_SCRIPT = """
import collections, json, re, sys
import torch, triton
from triton.compiler import ASTSource
from fastpeft.bench import l2_probe
from fastpeft.static import compile as compiler
problem = compiler.backend_problem(90)
if problem:
    print(json.dumps({"skip": problem})); sys.exit(77)
buf = torch.empty(1 << 21, device="meta")
out = torch.empty(528, device="meta")
launch = compiler.Launch("probe", "", l2_probe.l2_read_kernel, (528,), (buf, out, buf.numel(), 128),
                         {"BLOCK": l2_probe._BLOCK, "num_warps": 4})
(job,) = compiler.distinct([launch], 90)
source = ASTSource(job.kernel, job.signature, job.constexprs, job.attrs)
kernel = triton.compile(source, target=compiler.arch_target(90), options=job.options)
print(json.dumps(collections.Counter(re.findall(r"\\bld\\.global[.a-z0-9]*", kernel.asm["ptx"]))))
"""


@pytest.mark.parametrize(("numel", "rounds", "programs"), [(1000, 3, None), (64 * 5, 2, 7),
                                                           (65, 1, 2)])  # fmt: skip
def test_every_round_reads_the_whole_buffer_once(numel, rounds, programs):
    buf = torch.rand(numel, dtype=torch.float64).float()
    sums = l2_probe.l2_read(buf, rounds, programs)
    want = rounds * buf.double().sum()
    assert sums.double().sum() == pytest.approx(want, rel=1e-5)
    # Not the same tile every round: with a shift per round, each program's sum changes.
    if rounds > 1 and programs and programs > 1:
        once = l2_probe.l2_read(buf, 1, programs)
        assert not torch.allclose(sums, rounds * once)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="buf"):
        l2_probe.l2_read(torch.rand(10, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="rounds"):
        l2_probe.l2_read(torch.rand(10), 0)


def test_the_probe_loads_16_bytes_at_a_time_past_l1_on_sm90():
    proc = run_uninterpreted(["-c", PTX_SCRIPT], timeout=300)
    if proc.returncode == 77:
        pytest.skip(f"Triton cannot compile for sm_90 here: {proc.stdout[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    loads = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loads.get("ld.global.cg.v4.b32", 0) >= 1, loads
    assert not [op for op in loads if ".cg" not in op], loads  # every load bypasses L1
