"""SpiderAdamW's Triton fused pass must stream full chunks of 16-byte-aligned tensors with
16-byte loads and stores on sm_90 (ld/st.global.v4 in the PTX), for fp32, bf16 and fp16: the
typed base pointers and hinted element offsets are what make that possible (addresses read from
a table carry no alignment, and the SPIDER passes that use them load element by element)."""

import json
from pathlib import Path

import pytest

from .hopper_launches import run_uninterpreted

SCRIPT = Path(__file__).with_name("spider_adamw_ptx.py")


def test_fused_pass_uses_16_byte_loads_and_stores():
    proc = run_uninterpreted([str(SCRIPT)], timeout=600)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 77:
        pytest.skip(f"Triton cannot compile for sm_90 here: {rows[0]['skip'] if rows else '?'}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert {r["w_base"] for r in rows} == {"*fp32", "*bf16", "*fp16"}, rows
    for r in rows:
        # w, g, m, v, θ₀ and G loaded, w, m and v stored, in 16-byte words.
        assert r["ops"].get("ld.global.v4.b32", 0) >= 6, r
        assert r["ops"].get("st.global.v4.b32", 0) >= 3, r
