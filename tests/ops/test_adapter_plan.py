"""The adapters' launch plans for Hopper, without a GPU: how the weight-gradient reductions split
over M, and the H blocks of the down kernel."""

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
