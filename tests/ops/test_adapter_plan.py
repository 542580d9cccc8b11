"""The adapters' launch plans for Hopper, without a GPU: how the weight-gradient reductions split
over M, the tiles of the output-stationary kernels, and the "wide" backward preset."""

import pytest
import torch

from fastpeft import env
from fastpeft.triton_path import adapter, launch

HOPPER = launch.HOPPER  # 132 SMs
BIG = 1 << 40  # streamed bytes that never cap the splits


def test_weight_gradients_split_only_to_cover_idle_sms():
    # 64 tiles (dW of a pair at H = 64) leave half the SMs idle: 2 splits keep 128 of 132 busy.
    rows, splits = adapter._splits_over_m(HOPPER, 8192, 32, 64, BIG, 1)
    assert splits == 2 and rows == 4096
    # 128 tiles on 132 SMs: no split (partials would buy occupancy alone).
    assert adapter._splits_over_m(HOPPER, 8192, 32, 128, BIG, 1) == (8192, 1)
    # Few tiles: enough splits to cover the SMs, the last round as full as can be.
    rows, splits = adapter._splits_over_m(HOPPER, 8192, 32, 8, BIG, 1)
    rounds = splits * 8 / 132
    assert splits * 8 >= 0.9 * 132 and rounds / -(-rounds // 1) >= 0.9
    # Partials that would cost more than half the streamed bytes cap the splits.
    assert adapter._splits_over_m(HOPPER, 8192, 32, 64, 8 * 1024, 1024)[1] == 2
    assert adapter._splits_over_m(HOPPER, 8192, 32, 64, 4 * 1024, 1024)[1] == 1
    # Never an empty split, every split a whole number of BLOCK_M rows.
    rows, splits = adapter._splits_over_m(HOPPER, 100, 32, 8, BIG, 1)
    assert rows % 32 == 0 and (splits - 1) * rows < 100 <= splits * rows


def test_the_interpreter_takes_two_splits_so_the_cpu_tests_sum_partials():
    assert adapter._splits_over_m(launch.INTERPRETER, 70, 32, 4, BIG, 1) == (64, 2)
    assert adapter._splits_over_m(launch.INTERPRETER, 20, 32, 4, BIG, 1) == (32, 1)


def _hopper_launches(run) -> dict[str, list[dict]]:
    """{kernel name: the constexprs of each launch} that `run` makes configured for Hopper (meta
    tensors: nothing runs)."""
    found: dict[str, list[dict]] = {}

    def keep(kernel, grid, args, kwargs):
        found.setdefault(kernel.fn.__name__, []).append(dict(kwargs, grid=tuple(grid)))

    with launch.recording(HOPPER, keep):
        run()
    return found


def test_output_stationary_kernels_take_128_row_tiles_where_they_do_not_spill():
    # The up and dz kernels read all of W once per row tile: 128 rows halve the L2 re-reads of
    # 64 (spill-free on sm_90 in the static suite); a pair's dz keeps 64 (it spills at 128).
    M, D, H = 8192, 4096, 256
    meta = dict(device="meta", dtype=torch.bfloat16)
    x, dy = torch.empty(M, D, **meta), torch.empty(M, D, **meta)
    wd, wu = torch.empty(H, D, **meta), torch.empty(D, H, **meta)
    pre, keep = torch.empty(M, H, **meta), torch.empty(0, dtype=torch.uint8, device="meta")

    def single_step():
        adapter.forward(x, wd, wu, None, None, 1.0, 0.0, "tanh")
        adapter.backward(dy, x, wd, wu, pre, keep, None, 1.0, 0.0, "tanh", True, True)

    single = _hopper_launches(single_step)
    assert single["adapter_up_kernel"][0]["BLOCK_M"] == 128
    assert single["adapter_up_kernel"][0]["grid"] == (M // 128 * D // 128,)
    assert single["adapter_dz_kernel"][0]["BLOCK_M"] == 128
    pair_pre = torch.empty(M, 2 * H, **meta)
    pair = _hopper_launches(lambda: adapter.backward_pair(
        dy, dy, x, wd, wu, wd, wu, pair_pre, keep, None, 1.0, 0.0, "tanh", True))  # fmt: skip
    assert pair["adapter_dz_kernel"][0]["BLOCK_M"] == 64


def test_the_wide_preset_doubles_the_backward_tiles_of_16_bit_weights():
    # dpre one 256-high H block (dy read once), dW_up and a single adapter's dW_down 128 x 256
    # tiles (a, g read once per 128 columns of D), split over M to fill the SMs; fp32 weights
    # and a pair's dW_down keep the narrow tiles.
    M, D, H = 8192, 4096, 256

    def backward(w_dtype, pair: bool):
        meta = dict(device="meta", dtype=torch.bfloat16)
        x, dy = torch.empty(M, D, **meta), torch.empty(M, D, **meta)
        wd = torch.empty(H, D, device="meta", dtype=w_dtype)
        wu = torch.empty(D, H, device="meta", dtype=w_dtype)
        keep = torch.empty(0, dtype=torch.uint8, device="meta")
        if pair:
            pre = torch.empty(M, 2 * H, device="meta", dtype=w_dtype)
            return lambda: adapter.backward_pair(dy, dy, x, wd, wu, wd, wu, pre, keep, None, 1.0,
                                                 0.0, "tanh", True)  # fmt: skip
        pre = torch.empty(M, H, device="meta", dtype=w_dtype)
        return lambda: adapter.backward(dy, x, wd, wu, pre, keep, None, 1.0, 0.0, "tanh", True,
                                        True)  # fmt: skip

    narrow = _hopper_launches(backward(torch.bfloat16, False))
    with adapter.tile_preset("wide"):
        wide = _hopper_launches(backward(torch.bfloat16, False))
        wide_fp32 = _hopper_launches(backward(torch.float32, False))
        wide_pair = _hopper_launches(backward(torch.bfloat16, True))
    assert narrow["adapter_dpre_kernel"][0]["BLOCK_H"] == 128
    assert wide["adapter_dpre_kernel"][0]["BLOCK_H"] == 256
    for kernel in ("adapter_dw_up_kernel", "adapter_dw_down_kernel"):
        assert (narrow[kernel][0]["BLOCK_D"], narrow[kernel][0]["BLOCK_H"]) == (64, 128)
        launched = wide[kernel][0]
        assert (launched["BLOCK_D"], launched["BLOCK_H"]) == (128, 256)
        tiles = (D // 128) * (H // 256)
        assert launched["grid"][-1] > 1 and tiles * launched["grid"][-1] >= 0.9 * 132
    assert wide_fp32["adapter_dpre_kernel"][0]["BLOCK_H"] == 128
    assert wide_pair["adapter_dw_down_kernel"][0]["BLOCK_D"] == 64


def test_tile_presets_are_checked_by_name(monkeypatch):
    monkeypatch.setenv("FASTPEFT_ADAPTER_TILES", "Wide")
    assert env.adapter_tiles() == "wide"
    monkeypatch.setenv("FASTPEFT_ADAPTER_TILES", "huge")
    with pytest.raises(ValueError, match="FASTPEFT_ADAPTER_TILES"):
        env.adapter_tiles()
    with pytest.raises(ValueError, match="name must be one of"):
        with adapter.tile_preset("huge"):
            pass
