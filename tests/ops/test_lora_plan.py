"""The Triton LoRA launch plan: reductions split so every launch fills a wave, dB's reduction
chosen by bytes, tiles that fit Hopper's shared memory, and the numbers of the wide-rank path."""

import math
from functools import partial

import pytest
import torch
import triton

from fastpeft.tolerance import assert_matches_reference
from fastpeft.triton_path import launch, lora_plan, waves

from .lora_cases import keep_mask, make_inputs, run_op, run_reference

HOPPER = launch.Target("cuda", 90, 132)


SKINNY = dict(num_warps=8, num_stages=3)


def _fill(ctas: int, wave: int) -> float:
    return (ctas / wave) / math.ceil(ctas / wave)


@pytest.mark.parametrize("blocks, programs", [(64, 64), (64, 128), (128, 16), (3, 1000)])
def test_splits_fill_a_wave_and_the_fullest_last_wave(blocks, programs):
    per, splits = waves.split(HOPPER, blocks, programs, SKINNY, 0)
    assert per * splits >= blocks and per * (splits - 1) < blocks  # no empty split
    assert splits == triton.cdiv(blocks, per)
    wave = waves.wave_ctas(HOPPER, 8)
    assert wave == 132 * 8  # by threads: 2048 / 256 CTAs an SM
    if blocks * programs < wave:  # even one block per split cannot fill a wave
        assert splits == blocks
        return
    assert programs * splits >= wave
    # No other balanced split count that fills a wave (up to twice as many) leaves a fuller
    # last wave.
    fill = _fill(programs * splits, wave)
    for other_per in range(1, blocks + 1):
        other = triton.cdiv(blocks, other_per)
        if wave <= programs * other and other <= splits:
            assert _fill(programs * other, wave) <= fill + 1e-9, (other, splits)


def test_shared_memory_bounds_the_wave():
    # 3 stages of 32 KiB: two CTAs an SM hold, so 264 CTAs fill a wave, and fewer splits do.
    assert waves.wave_ctas(HOPPER, 8, 3 * 32 * 1024) == 132 * 2
    per, splits = waves.split(HOPPER, 64, 64, SKINNY, 32 * 1024)
    assert 64 * splits >= 264 and waves.split(HOPPER, 64, 64, SKINNY, 0)[1] > splits


def test_the_interpreter_always_takes_the_partial_sum_path():
    assert waves.split(launch.INTERPRETER, 10, 1, {}, 0) == (5, 2)
    assert waves.split(launch.INTERPRETER, 3, 1, {}, 0) == (2, 2)
    assert waves.split(launch.INTERPRETER, 1, 1, {}, 0) == (1, 1)


def test_db_reduction_is_chosen_by_bytes_at_the_bench_shapes():
    M, N = 8192, 4096
    fused_parts = M // 128  # one dB partial per row block of lora_dy_b_kernel
    db_parts = waves.split(HOPPER, fused_parts, N // 64, SKINNY, 0)[1]
    assert not lora_plan.separate_db(M, N, 16, 2, fused_parts, db_parts)
    assert lora_plan.separate_db(M, N, 128, 2, fused_parts, db_parts)


@pytest.mark.parametrize("base, adapter", [(torch.bfloat16, torch.bfloat16),
                                           (torch.bfloat16, torch.float32),
                                           (torch.float32, torch.float32)])  # fmt: skip
@pytest.mark.parametrize("rank", [16, 64, 128, 256])
def test_hopper_gemm_tiles_fit_shared_memory(base, adapter, rank):
    cfg = lora_plan.launch_configs(HOPPER, base, adapter, rank)
    block_r = cfg["shared"]["BLOCK_R"]
    for gemm, step, out in ((cfg["fwd"], "BLOCK_K", "BLOCK_N"), (cfg["dx"], "BLOCK_N", "BLOCK_K")):
        stages = gemm["num_stages"] * (gemm["BLOCK_M"] + gemm[out]) * gemm[step] * base.itemsize
        rank_tiles = (gemm["BLOCK_M"] + gemm[out]) * block_r * adapter.itemsize
        assert stages + rank_tiles <= 200 * 1024
        assert gemm["num_stages"] >= 2 and gemm["BLOCK_M"] >= 64
    if base == torch.bfloat16 and adapter == torch.bfloat16 and rank <= 64:
        assert (cfg["fwd"]["BLOCK_M"], cfg["fwd"]["BLOCK_N"]) == (128, 256)
        # dx is as wide, except where dA's partial rides along (rank <= 32: registers).
        want = 128 if lora_plan.fuse_da(rank, adapter) else 256
        assert (cfg["dx"]["BLOCK_M"], cfg["dx"]["BLOCK_K"]) == (128, want)


def test_wide_rank_takes_the_separate_db_reduction_and_matches_the_reference(device):
    shape, p = (130, 45, 38, 48), 0.25  # rank 48 > M / 4: dB is its own reduction
    M, K, N, R = shape
    target = launch.target_for(device)
    skinny = lora_plan.launch_configs(target, torch.float32, torch.float32, R)["skinny"]
    m_blocks = triton.cdiv(M, skinny["BLOCK_M"])
    n_blocks = triton.cdiv(N, skinny["BLOCK_INNER"])
    db_parts = waves.split(target, m_blocks, n_blocks, skinny, 0)[1]
    assert lora_plan.separate_db(M, N, R, 4, m_blocks, db_parts)
    inputs = make_inputs(*shape, torch.float32, torch.float32, device)
    seed = torch.tensor([31], device=device)
    got = run_op(inputs, 0.5, p, "triton", seed)
    keep = keep_mask("triton", seed, (M, K), p)
    reference = partial(run_reference, inputs, 0.5, keep, p)
    assert_matches_reference(got, reference, ("y", "dx", "dA", "dB"), "triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_partial_sums_add_in_split_order_scale_once_and_cast(dtype, device):
    from fastpeft.triton_path.partials import sum_partials

    g = torch.Generator().manual_seed(11)
    parts = torch.randn(5, 37, 19, generator=g).to(device)
    want = parts[0].clone()
    for s in range(1, 5):  # the fixed order, in fp32
        want += parts[s]
    got = sum_partials(parts, dtype, 0.75)
    assert got.dtype == dtype and got.shape == (37, 19)
    assert torch.equal(got, (want * 0.75).to(dtype))


def test_partials_never_cost_more_than_half_the_streamed_bytes():
    # Three rank-16 adapters' t on an [8192, 4096] bf16 x (shared-input LoRA): a wave by threads
    # would take 17 or more splits of 1.5 MiB fp32 partials each; the cap keeps it to 10.
    streamed, partial = 8192 * 4096 * 2, 4 * 8192 * 3 * 16
    uncapped = waves.split(HOPPER, 128, 128, SKINNY, 0)[1]
    per, splits = waves.split(HOPPER, 128, 128, SKINNY, 0, (streamed, partial))
    assert uncapped > 10 >= splits and 4 * partial * splits <= streamed
    assert per * splits >= 128 and per * (splits - 1) < 128


def _split_asking(resident_per_sm, blocks, programs, traffic=None):
    """waves.split with a probe, inside a recording whose compile oracle answers
    `resident_per_sm` CTAs per SM (as the static suite's does, or a GPU's compile)."""
    asked = []

    def oracle(kernel, args, kwargs):
        asked.append((kernel, args, kwargs))
        return resident_per_sm

    probe = ("kernel", ("key",), lambda: (("args",), {"BLOCK": 64}))
    with launch.recording(HOPPER, lambda *a: None, oracle):
        result = waves.split(HOPPER, blocks, programs, SKINNY, 0, traffic, probe)
    assert asked == [("kernel", ("args",), {"BLOCK": 64})]
    return result


@pytest.mark.parametrize("per_sm", [1, 2, 3])
def test_the_compiles_occupancy_sizes_the_wave(per_sm):
    # dy B at rank 128 in fp32 (128 row blocks, 128 column blocks): ptxas's 157 registers hold
    # one CTA an SM, so two splits fill a wave; the thread estimate (8 an SM) asks for many more.
    per, splits = _split_asking(per_sm, blocks=128, programs=128)
    wave = 132 * per_sm
    assert wave <= 128 * splits <= 2 * wave  # at least one wave, at most two
    assert splits < waves.split(HOPPER, 128, 128, SKINNY, 0)[1]
    assert per * splits >= 128 and per * (splits - 1) < 128


def test_the_traffic_cap_never_takes_an_exact_wave_under_one():
    # GQA's k/v: dy is [8192, 1024] bf16 and u's partial [8192, 64] fp32: the cap alone would
    # allow 2 splits of 64 row blocks, under a wave of 3 CTAs an SM.
    streamed, partial = 8192 * 1024 * 2, 4 * 8192 * 64
    per, splits = _split_asking(3, blocks=32, programs=64, traffic=(streamed, partial))
    assert 64 * splits >= 3 * 132


def test_no_answer_falls_back_to_the_estimate():
    assert _split_asking(None, 128, 128) == waves.split(HOPPER, 128, 128, SKINNY, 0)


@pytest.mark.parametrize(
    "registers, shared, warps, per_sm",
    # sm_90 compiles of the rank-128 fp32 reductions (benchmarks/results/static_sm90.json):
    # dy B under 3xTF32 (157 registers) and TF32 (74), dA (176, 128 KiB of shared memory).
    [(157, 77824, 8, 1), (74, 57344, 8, 3), (176, 131072, 8, 1), (32, 0, 4, 16), (16, 0, 1, 32)],
)
def test_resident_ctas_by_registers_shared_memory_and_threads(registers, shared, warps, per_sm):
    assert waves.resident(registers, shared, warps) == per_sm


@pytest.mark.parametrize("adapter", [torch.bfloat16, torch.float32])
def test_shared_input_down_tiles_hold_every_members_accumulator(adapter):
    one = lora_plan.launch_configs(HOPPER, torch.bfloat16, adapter, 16)["down"]
    for members in (2, 3):
        down = lora_plan.launch_configs(HOPPER, torch.bfloat16, adapter, 16, members)["down"]
        # Each member's accumulator and masked x copy: shorter row blocks than one adapter's,
        # and the stages (x tile plus every member's rank tile) within the shared budget.
        assert down["BLOCK_M"] < one["BLOCK_M"] or adapter == torch.float32
        rank_tiles = members * max(down["BLOCK_M"], down["BLOCK_INNER"]) * 16 * adapter.itemsize
        stage = down["BLOCK_M"] * down["BLOCK_INNER"] * 2 + rank_tiles
        assert down["num_stages"] * stage <= 200 * 1024


def test_wide_fp32_ranks_take_a_wider_step_where_the_rank_tile_is_reloaded():
    for rank in (64, 128):
        cfg = lora_plan.launch_configs(HOPPER, torch.bfloat16, torch.float32, rank)
        assert cfg["da"]["BLOCK_INNER"] == 128 > cfg["skinny"]["BLOCK_INNER"]
        assert cfg["down"]["BLOCK_INNER"] == 64 > cfg["skinny"]["BLOCK_INNER"]
    narrow = lora_plan.launch_configs(HOPPER, torch.bfloat16, torch.float32, 16)
    assert narrow["da"] == narrow["skinny"] == narrow["down"]
