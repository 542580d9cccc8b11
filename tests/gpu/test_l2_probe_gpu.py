"""GPU tier: the L2 read-bandwidth probe on the real device (skipped without CUDA): every round
reads the whole buffer, and the figure it gives is above the DRAM copy bandwidth (an L2 figure
at or below it would mean the probe streamed from DRAM, or stalled)."""

import pytest
import torch

from fastpeft.bench import timing
from fastpeft.bench.l2_probe import l2_read

pytestmark = pytest.mark.gpu


def test_every_round_reads_the_buffer_once_on_the_gpu():
    buf = torch.rand(3 * 2048 + 5, device="cuda")
    sums = l2_read(buf, 5)
    assert sums.double().sum().item() == pytest.approx(5 * buf.double().sum().item(), rel=1e-5)


def test_l2_read_bandwidth_is_above_the_dram_copy_bandwidth():
    peaks = timing.measured_peaks(torch.device("cuda"), quick=True)
    assert "l2_read_error" not in peaks, peaks.get("l2_read_error")
    assert peaks["l2_read_gbps"] > peaks["copy_gbps"], peaks
