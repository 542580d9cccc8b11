"""The static model's arithmetic: occupancy, waves, roofline time, and the sequences it compares
fused launches with."""

import importlib
import json
import pkgutil

import pytest
import torch

import fastpeft.kernels
from fastpeft import registry
from fastpeft.bench.cases.layer_case import LayerCase
from fastpeft.static import archs, model, sequences

H200 = archs.get("sm_90")


def test_occupancy_is_limited_by_the_scarcest_resource():
    # 8 warps x 128 registers = 32K registers: two CTAs fit in 64K.
    assert model.ctas_per_sm(H200, 128, 0, 8) == 2
    # 255 registers round up to 256 per thread: one CTA of 8 warps.
    assert model.ctas_per_sm(H200, 255, 0, 8) == 1
    # 150 KiB of shared memory (+1 KiB reserved) leaves no room for a second CTA in 228 KiB.
    assert model.ctas_per_sm(H200, 32, 150 * 1024, 4) == 1
    # Threads: 4 warps of 128 threads; 2048 / 128 = 16 CTAs.
    assert model.ctas_per_sm(H200, 16, 0, 4) == 16


def test_waves_and_utilisation():
    assert model.waves(H200, 264, 1) == 2.0
    assert model.utilisation(H200, 264, 1) == 1.0
    assert model.utilisation(H200, 66, 1) == 0.5  # half the SMs idle
    assert model.utilisation(H200, 133, 1) == pytest.approx((133 / 132) / 2)  # a second wave


def test_roofline_takes_the_slower_side_and_the_right_ceiling():
    # The measured bf16 ceiling was timed on an 8192^3 GEMM, whose last wave is 15.5 / 16 full
    # at 128 x 256 tiles: the model's full-GPU peak takes that quantisation out.
    quantised = (8192 // 128) * (8192 // 256) / 132 / 16
    assert model.gemm_utilisation(H200, 8192, 8192) == pytest.approx(quantised)
    assert model.peak(H200, "tc16") == pytest.approx(751.4 / quantised)
    gemm = model.predict(H200, {"tc16": 2 * 4096**3}, 3 * 2 * 4096**2, 1.0)
    assert gemm.predicted_us == gemm.compute_us
    assert gemm.compute_us == pytest.approx(2 * 4096**3 / (751.4e12 / quantised) * 1e6)
    copy = model.predict(H200, {}, 4132e9 * 1e-6, 1.0)
    assert copy.predicted_us == pytest.approx(1.0) and copy.rate == "none"
    slow = model.predict(H200, {"fp32": 2 * 4096**3}, 0, 1.0)
    assert slow.compute_us / gemm.compute_us == pytest.approx(751.4 / quantised / 66.9)
    # 3xTF32 is three TF32 products; a launch with two kinds of product adds their times.
    split = model.predict(H200, {"tf32x3": 2 * 4096**3}, 0, 1.0)
    assert split.compute_us == pytest.approx(3 * 2 * 4096**3 / 494.7e12 * 1e6)
    mixed = model.predict(H200, {"tc16": 2 * 4096**3, "tf32x3": 2 * 4096**3}, 0, 1.0)
    assert mixed.compute_us == pytest.approx(gemm.compute_us + split.compute_us)
    assert mixed.rate == "tc16+tf32x3"


def test_reference_gemms_are_quantised_like_the_launches():
    # The base GEMM at M=8192, 4096 -> 4096: 1024 tiles of 128 x 256 on 132 SMs, 7.76 waves.
    op = sequences.gemm("base", 8192, 4096, 4096, torch.bfloat16)
    busy = (1024 / 132) / 8
    assert model.gemm_utilisation(H200, 8192, 4096) == pytest.approx(busy)
    want = op.flops / (model.peak(H200, "tc16") * 1e12 * busy) * 1e6
    assert op.predicted_us(H200) == pytest.approx(want)
    # Under one wave cuBLAS picks other tiles: no quantisation is modelled.
    assert model.gemm_utilisation(H200, 8192, 16) == 1.0


def test_rate_follows_the_instructions():
    assert model.rate_of({"bf16"}, 0, 1.0) == "tc16"
    assert model.rate_of({"tf32"}, 0, 1.0) == "tf32"
    assert model.rate_of(set(), 512, 1.0) == "fp32"
    assert model.rate_of(set(), 0, 0) == "none"
    # Per operand: fp32 products follow the dot precision when the code has TF32 instructions.
    assert model.operand_rate(torch.float32, "tf32x3", {"bf16", "tf32"}) == "tf32x3"
    assert model.operand_rate(torch.float32, "ieee", {"bf16"}) == "fp32"
    assert model.operand_rate(torch.bfloat16, "tf32x3", {"bf16", "tf32"}) == "tc16"
    assert model.operand_rate(torch.bfloat16, "ieee", set()) == "fp32"
    # A 16-bit tile widened to meet an fp32 one: two TF32 products under 3xTF32, at half TF32.
    bf16, fp32, tc = torch.bfloat16, torch.float32, {"bf16", "tf32"}
    assert model.product_rate([fp32, bf16], "tf32x3", tc) == "tf32x2"
    assert model.product_rate([fp32, fp32], "tf32x3", tc) == "tf32x3"
    assert model.product_rate([fp32, bf16], "tf32", tc) == "tf32"
    assert model.product_rate([bf16, bf16], "tf32x3", tc) == "tc16"
    arch = archs.get("sm_90")
    assert model.peak(arch, "tf32x2") == pytest.approx(model.peak(arch, "tf32") / 2)


def test_every_ceiling_names_its_source():
    for arch in archs.ARCHS.values():
        # "l2" joins where a GPU run has measured it (none yet).
        assert set(arch.ceilings) == {"tc16", "tf32", "fp32", "dram", "issue"}
        assert all(c.source and c.value > 0 for c in arch.ceilings.values())
    with pytest.raises(ValueError, match="--arch must be one of"):
        archs.get("sm_70")


def test_a_measured_l2_ceiling_bounds_the_memory_time_by_the_l2_traffic():
    import dataclasses

    with_l2 = dataclasses.replace(
        H200, ceilings={**H200.ceilings, "l2": archs.Ceiling(8000.0, "a test's")}
    )
    # 1 GB from DRAM (242 us at 4132 GB/s), 40 GB through L2 (5000 us at 8000 GB/s).
    assert model.predict(with_l2, {}, 1e9, 1.0, 4e10).memory_us == pytest.approx(5000.0)
    assert model.predict(with_l2, {}, 1e9, 1.0, 1e9).memory_us == pytest.approx(1e3 / 4.132)
    # Without the ceiling the L2 traffic is only reported.
    assert model.predict(H200, {}, 1e9, 1.0, 4e10).memory_us == pytest.approx(1e3 / 4.132)
    # A reference GEMM's walk is costed alike: 8192 x 4096 x 4096 bf16 reads x 16 times and W
    # 64 times (3.3 GB through L2), over 400 us at 8 TB/s on the 97% of the GPU its last wave
    # leaves busy: longer than its products.
    gemm = sequences.gemm("x Wt", 8192, 4096, 4096, torch.bfloat16)
    assert gemm.l2 == 2 * (8192 * 4096 * 16 + 4096 * 4096 * 64 + 8192 * 4096)
    busy = model.gemm_utilisation(with_l2, 8192, 4096)
    assert gemm.predicted_us(with_l2) == pytest.approx(gemm.l2 / (8000e9 * busy) * 1e6)
    assert gemm.predicted_us(H200) < gemm.predicted_us(with_l2)


def test_l2_needed_is_the_least_bandwidth_that_fits_the_budget():
    from fastpeft.static import l2_bound

    launches = [(10.0, 100e6), (10.0, 0.0)]  # 10 us each; 100 MB through L2 in the first
    # 25 us leave the first 15 us: 100 MB / 15 us = 6.67 TB/s.
    assert l2_bound.needed(launches, l2_bound.fixed(25.0)) == pytest.approx(6.67, abs=0.01)
    assert l2_bound.time_at(launches, 6.67) == pytest.approx(25.0, rel=1e-3)
    assert l2_bound.time_at(launches, 100.0) == 20.0  # fast L2: the predictions alone
    assert l2_bound.needed(launches, l2_bound.fixed(19.0)) is None  # over even with L2 free
    # A reference of one 50 us launch moving 300 MB, at "max 0.5 of it": from 6 TB/s up (300 MB
    # / 50 us) the budget is 25 us, met from 6.67 TB/s up as above; below 6 TB/s the budget is
    # 150 / B us against the launches' 10 + 100 / B, met again at B <= 5 (the slow L2 hurts the
    # reference more). The answer is the bound from which on it holds: 6.67.
    reference = [(50.0, 300e6)]
    limits = l2_bound.bounds([("predicted_fused_over_base", 0.5, "max")], {"base": reference})
    assert limits == [(reference, 0.5)]
    assert l2_bound.needed(launches, limits) == pytest.approx(6.67, abs=0.01)
    assert not l2_bound.fits(launches, limits, 6.0) and l2_bound.fits(launches, limits, 4.9)
    # Two bounds: both must hold ("min" 2 of 38 us allows 19 us: out of reach).
    both = limits + l2_bound.bounds([("predicted_speedup_vs_eager", 2.0, "min")],
                                    {"eager": [(38.0, 0.0)]})  # fmt: skip
    assert l2_bound.needed(launches, both) is None
    assert l2_bound.bounds([("predicted_over_adamw", 1.5, "max")], {"base": reference}) == []
    assert l2_bound.profile([{"predicted_us": 3.0, "dram_bytes": 5, "l2_bytes": None}]) == [
        (3.0, 5)
    ]


def test_every_kernel_has_an_analytic_cost():
    for info in pkgutil.iter_modules(fastpeft.kernels.__path__):
        module = importlib.import_module(f"fastpeft.kernels.{info.name}")
        kernels = [n for n in vars(module) if n.endswith("_kernel")]
        missing = [n for n in kernels if n not in getattr(module, "COSTS", {})]
        assert not missing, f"fastpeft.kernels.{info.name} lacks COSTS for {missing}"


def test_peft_lora_sequence_costs_more_than_the_base_and_counts_its_products():
    case = LayerCase("lora", "q/o", 8192, 4096, 4096, 16)
    lora = registry.load("fastpeft.static.methods.lora")
    refs = lora.references(case, "float32", 0.05)
    base_flops = sum(op.flops for op in refs["base"])
    peft_flops = sum(op.flops for op in refs["peft"])
    assert base_flops == 2 * 2 * 8192 * 4096 * 4096
    # The rank-16 products: forward 2 (x·A, t·B), backward 4 (dB, dt, dA, dx branch).
    assert peft_flops - base_flops == 6 * 2 * 8192 * 4096 * 16
    assert {op.rate for op in refs["peft"] if op.name.startswith("lora")} == {"fp32"}
    assert sum(op.dram_bytes for op in refs["peft"]) > 2 * sum(op.dram_bytes for op in refs["base"])


def test_gemm_bytes():
    op = sequences.gemm("g", 2, 3, 4, torch.bfloat16, torch.float32)
    assert (op.flops, op.dram_bytes, op.rate) == (48, 2 * (8 + 12) + 4 * 6, "tc16")


def test_every_kernel_method_has_a_static_model():
    for method in registry.METHODS.values():
        if method.implementation("triton") is not None:
            static = registry.load(method.static)
            assert static.VARIANTS and callable(static.launches) and callable(static.references)


def test_measured_rows_of_the_same_case_are_put_beside_the_model(tmp_path):
    from fastpeft.static.calibration import beside_measurements

    case = {"method": "lora", "case": "lora q/o", "M": 8192, "K": 4096, "N": 4096, "r": 16,
            "adapter_dtype": "bfloat16", "dropout": 0.05, "predicted_fused_us": 900.0,
            "predicted_base_us": 730.0, "predicted_peft_us": 1100.0}  # fmt: skip
    row = {"suite": "layers", "kind": "lora", "mode": "full", "M": 8192, "K": 4096, "N": 4096,
           "r": 16, "weights": "bfloat16", "dropout": 0.05}  # fmt: skip
    rows = [{**row, "provider": p, "median_ms": ms} for p, ms in
            (("fastpeft", 1.0), ("base", 0.8), ("peft-bf16", 1.1), ("peft", 2.0))]  # fmt: skip
    rows.append({**row, "provider": "fastpeft", "mode": "fwd", "median_ms": 0.3})  # other mode
    rows.append({**row, "provider": "fastpeft", "dropout": 0.0, "median_ms": 0.9})  # other case
    proof = {"device": "NVIDIA H200", "settings": {"dtype": "bfloat16"},
             "parts": {"layers": {"rows": rows}}}  # fmt: skip
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "smoke.json").write_text(json.dumps({**proof, "smoke": True}))
    (tmp_path / "cpu.json").write_text(json.dumps({**proof, "device": "cpu"}))
    found = {m["what"]: m for m in beside_measurements([case], "sm_90", tmp_path)}
    # PEFT's bf16-adapter provider is this case's (its fp32 default is another case).
    assert set(found) == {"fastpeft", "base", "peft-bf16"}
    assert found["fastpeft"]["measured_us"] == 1000.0
    assert found["fastpeft"]["model_error"] == pytest.approx(-0.1)
    assert found["peft-bf16"]["model_us"] == 1100.0
    assert beside_measurements([case], "sm_80", tmp_path) == []


def test_profiled_kernels_go_beside_their_launches_in_the_same_case(tmp_path):
    from fastpeft.static.calibration import kernels_beside_measurements

    case = {"method": "adapter", "case": "adapter post", "M": 8192, "K": 4096, "N": 4096,
            "H": 256, "adapter_dtype": "bfloat16", "dropout": 0.05,
            "predicted_fused_us": 170.0}  # fmt: skip
    label = "adapter post bfloat16 p=0.05"
    launches = [
        {"method": "adapter", "case": label, "kernel": "adapter_up_kernel", "predicted_us": 30.0,
         "l2_bytes": 400e6},
        {"method": "adapter", "case": label, "kernel": "adapter_up_kernel", "predicted_us": 10.0,
         "l2_bytes": 100e6},
        {"method": "adapter", "case": label, "kernel": "adapter_dz_kernel", "predicted_us": 20.0},
        {"method": "adapter", "case": "adapter post bfloat16 p=0", "kernel": "adapter_dz_kernel",
         "predicted_us": 99.0},
    ]  # fmt: skip
    row = {"suite": "layers", "kind": "adapter", "mode": "full", "M": 8192, "K": 4096,
           "N": 4096, "r": 256, "weights": "bfloat16", "dropout": 0.05,
           "median_ms": 0.2}  # fmt: skip
    kernels = [{"kernel": "adapter_up_kernel", "ms": 0.05},
               {"kernel": "adapter_dz_kernel", "ms": 0.025},
               {"kernel": "sm90_xmma_gemm_bf16", "ms": 0.1}]  # fmt: skip
    rows = [
        {**row, "provider": "fastpeft", "kernels": kernels},
        {**row, "provider": "eager", "kernels": kernels},  # not fastpeft's kernels
        {**row, "provider": "fastpeft", "dropout": 0.0, "kernels": kernels},  # other case
    ]
    proof = {"device": "NVIDIA H200", "settings": {"dtype": "bfloat16"},
             "parts": {"layers": {"rows": rows}}}  # fmt: skip
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    found = {m["kernel"]: m for m in kernels_beside_measurements([case], launches, "sm_90",
                                                                 tmp_path)}  # fmt: skip
    # Both up launches' predictions against the profiled time of the kernel; cuBLAS's kernel has
    # no launch of the model's; the other case's dz is not this one's.
    assert set(found) == {"adapter_up_kernel", "adapter_dz_kernel"}
    up = found["adapter_up_kernel"]
    assert (up["model_us"], up["measured_us"]) == (40.0, 50.0)
    assert up["model_error"] == pytest.approx(-0.2)
    assert up["l2_tbps_at_measured"] == pytest.approx(500e6 / 50 / 1e6)
    assert found["adapter_dz_kernel"]["model_error"] == pytest.approx(-0.2)
    assert "l2_tbps_at_measured" not in found["adapter_dz_kernel"]
    assert kernels_beside_measurements([case], launches, "sm_80", tmp_path) == []


def test_spider_measurements_go_beside_the_step_they_timed(tmp_path):
    from fastpeft.static.calibration import beside_measurements

    base = {"method": "spider", "adapter_dtype": "bfloat16", "dropout": 0.0, "elements": 10,
            "predicted_fused_us": 5.0, "predicted_adamw_us": 2.0}  # fmt: skip
    spider = {**base, "case": "spider", "step": "Spider after AdamW"}
    fused = {**base, "case": "SpiderAdamW step", "step": "SpiderAdamW"}
    rows = [{"suite": "spider", "elements": 10, "dtype": "bfloat16", "provider": p,
             "median_ms": ms} for p, ms in (("fastpeft", 0.004), ("spider_adamw", 0.006),
                                            ("adamw", 0.002))]  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps({"device": "NVIDIA H200", "rows": rows}))
    found = {(m["case"], m["what"]): m["measured_us"]
             for m in beside_measurements([spider, fused], "sm_90", tmp_path)}  # fmt: skip
    # Spider's step is beside Spider's case only, SpiderAdamW's beside SpiderAdamW's.
    assert found == {("spider", "fastpeft"): 4.0, ("spider", "adamw"): 2.0,
                     ("SpiderAdamW step", "spider_adamw"): 6.0,
                     ("SpiderAdamW step", "adamw"): 2.0}  # fmt: skip


def test_issue_time_counts_the_loop_body_per_step_and_the_rest_per_program():
    from fastpeft.static.costing import _base_instructions_per_element

    # 4 programs of 8 warps, 16 elements a thread a step (4096 positions a step): 65536 input
    # positions are 4 steps each. 100 instructions in the loop, 900 around it (an epilogue).
    cost = {"elements_per_thread": 16, "base_instructions_per_element": 1000 / 16,
            "base_loop_instructions": 100, "base_instructions": 1000}  # fmt: skip
    row = {"num_warps": 8, "ctas": 4, "step_elements": 65536}
    assert _base_instructions_per_element(row, cost) == pytest.approx((100 + 900 / 4) / 16)
    # One step a program: everything once, as without a loop count.
    assert _base_instructions_per_element({**row, "step_elements": 16384}, cost) == 1000 / 16
    assert _base_instructions_per_element(row, {**cost, "base_loop_instructions": None}) == (
        1000 / 16
    )


def _dropout_row(has_dropout: bool, instructions: int, loop: int, **config) -> dict:
    # A launch row of a made-up kernel: 8 warps, 64 x 128 tiles (32 positions a thread a step),
    # 16 programs walking 2**20 positions: 8 steps of 8192 each.
    config = {"BLOCK_M": 64, "BLOCK_D": 128, "HAS_DROPOUT": has_dropout, **config}
    return {"kernel": "k", "config": config, "num_warps": 8, "operand_dtypes": ["bfloat16"] * 2,
            "instructions": instructions, "loop_instructions": loop,
            "instruction_source": "sass", "ctas": 16, "step_elements": 2**20}  # fmt: skip


def test_dropout_cost_counts_the_loop_per_step_and_the_rest_per_program_per_mask():
    from fastpeft.static.costing import dropout_cost

    # 320 more instructions in the loop (10 an element a step), 80 more around it (once a
    # program, spread over its 8 steps).
    rows = [_dropout_row(False, 1000, 200), _dropout_row(True, 1400, 520)]
    (cost,) = dropout_cost(rows)
    assert cost["steps_per_program"] == 8
    assert cost["instructions_per_element"] == pytest.approx((320 + 80 / 8) / 32, abs=0.05)
    # A pair draws two masks a position: per mask element, half.
    rows = [_dropout_row(False, 1000, 200, PAIR=True), _dropout_row(True, 1400, 520, PAIR=True)]
    (cost,) = dropout_cost(rows)
    assert cost["masks_per_element"] == 2
    assert cost["instructions_per_element"] == pytest.approx((320 + 80 / 8) / 32 / 2, abs=0.05)


def test_re_walked_positions_count_once_per_walk():
    from fastpeft.kernels import adapter
    from fastpeft.static.costing import step_elements

    # The down kernel walks all of z once per H block: 256 / 128 = 2 walks.
    named = {"M": 64, "D": 32, "H": 256, "BLOCK_H": 128, "HAS_DROPOUT": True}
    assert step_elements(adapter.adapter_down_kernel, named) == 2 * 64 * 32
    assert step_elements(adapter.adapter_dz_kernel, named) == 64 * 32


def test_the_adapter_layer_set_adds_both_adapters_to_the_layers_frozen_linears():
    from fastpeft.static import layer_set

    def single(method, label, base):
        return {"method": method, "case": f"{method} {label} M=64 8->8", "predicted_base_us": base}

    def adapter(method, us):
        return {"method": method, "case": f"{method} x M=64", "M": 64, "H": 16,
                "adapter_dtype": "bfloat16", "dropout": 0.05, "predicted_fused_us": us}  # fmt: skip

    linears = [single("ia3", "q/o", 10.0), single("lora", "k/v gqa", 2.0),
               single("lora", "gate/up", 20.0), single("ia3", "down", 20.0),
               # a shared-input group is not one linear: left out
               single("lora_shared", "gate/up", 40.0)]  # fmt: skip
    frozen = 2 * 10 + 2 * 2 + 2 * 20 + 20
    (row,) = layer_set.rows([*linears, adapter("adapter", 3.0), adapter("adapter_pair", 4.0)])
    assert row["predicted_frozen_linears_us"] == frozen
    assert row["predicted_step_over_frozen"] == pytest.approx((frozen + 7.0) / frozen, abs=1e-3)
    assert row["predicted_verdict"] == "meets" and row["model"]
    # A missing part (the pair, or a linear's shape): no row.
    assert layer_set.rows([*linears, adapter("adapter", 3.0)]) == []
    assert (
        layer_set.rows([*linears[1:], adapter("adapter", 3.0), adapter("adapter_pair", 4.0)]) == []
    )


def test_the_l2_rate_the_measured_matmul_implies_follows_the_cublas_walk():
    from fastpeft.static import l2_bound

    # 8192^3 bf16 at 128 x 256 tiles: x and W read once, x again 31 times (32 column tiles), W
    # 63 times (64 row tiles), y written once: 2 B x 8192^2 x 97 in 2 x 8192^3 / 751.4 TFLOP/s.
    seconds = 2 * 8192**3 / 751.4e12
    want = 2 * 8192**2 * 97 / seconds / 1e12
    assert l2_bound.implied_by_matmul(H200) == pytest.approx(want, abs=0.01)
    assert l2_bound.implied_by_matmul(archs.get("sm_80")) is None  # a datasheet ceiling
