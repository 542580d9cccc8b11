"""SPIDER's Triton passes and the fused optimizers' passes must stream full chunks of
16-byte-aligned tensors with 16-byte loads and stores on sm_90 (ld/st.global.v4 in the PTX), for
fp32, bf16 and fp16: the typed base pointers and hinted element offsets are what make that
possible (addresses read from a table carry no alignment, and the passes loaded element by element
through them)."""

import json
from pathlib import Path

import pytest

from .hopper_launches import run_uninterpreted

SCRIPT = Path(__file__).with_name("spider_ptx.py")
# Per kernel: (operands loaded, operands stored) per element, each at least one 16-byte access.
STREAMS = {
    "spider_accumulate_kernel": (2, 1),  # G, g; G
    "spider_select_kernel": (2, 0),  # θ₀, G
    "spider_blend_kernel": (3, 1),  # w, θ₀, G; w
    "spider_adamw_blend_kernel": (6, 3),  # w, g, m, v, θ₀, G; w, m, v
    "masked_adamw_kernel": (5, 3),  # w, g, m, v, θ₀ (the 1-byte mask: 8-byte loads); w, m, v
}


def test_spider_passes_use_16_byte_loads_and_stores():
    proc = run_uninterpreted([str(SCRIPT)], timeout=600)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 77:
        pytest.skip(f"Triton cannot compile for sm_90 here: {rows[0]['skip'] if rows else '?'}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = {(r["kernel"], r["dtype"]) for r in rows}
    assert found == {(k, d) for k in STREAMS for d in ("*fp32", "*bf16", "*fp16")}, found
    for r in rows:
        loads, stores = STREAMS[r["kernel"]]
        assert r["ops"].get("ld.global.v4.b32", 0) >= loads, r
        assert r["ops"].get("st.global.v4.b32", 0) >= stores, r
