"""The adapters' launch plans for Hopper, without a GPU: how the weight-gradient reductions split
over M, and the H blocks of the down kernel."""

import torch

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
