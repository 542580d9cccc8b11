"""One launch's static record: what the compile says (registers, spills, shared memory, tensor
cores, instructions), occupancy and waves, the analytic cost and the model's predicted time."""

import importlib
import json
import math

from . import model
from .archs import Arch
from .launches import named_args, tensor_bytes


def kernel_costs(kernel) -> dict:
    """The COSTS table of the kernel's module (kernels/*.py): every launched kernel needs one."""
    module = importlib.import_module(kernel.fn.__module__ if hasattr(kernel, "fn") else "")
    costs = getattr(module, "COSTS", {})
    name = kernel.__name__ if hasattr(kernel, "__name__") else kernel.fn.__name__
    if name not in costs:
        raise KeyError(
            f"{module.__name__} has no COSTS entry for {name}: the static model needs its FLOPs "
            "(and its bytes where its tensor arguments do not say them)"
        )
    return costs[name]


def launch_record(arch: Arch, launch, compiled) -> dict:
    """The `launches` row of the static JSON for one recorded launch and its compile."""
    named = named_args(launch.kernel, launch.args, launch.kwargs)
    flops, dram = kernel_costs(launch.kernel)(named, launch.grid)
    dram = tensor_bytes(named) if dram is None else dram
    ctas = math.prod(launch.grid)
    row = {
        "method": launch.method,
        "case": launch.case,
        "kernel": compiled.kernel,
        "arch": arch.name,
        "status": compiled.status,
        "grid": list(launch.grid),
        "ctas": ctas,
        "num_warps": compiled.num_warps,
        "num_stages": compiled.num_stages,
        "registers": compiled.registers,
        "spill_bytes": compiled.spill_bytes,
        "shared_bytes": compiled.shared_bytes,
        "config": compiled.config,
        "flops": flops,
        "dram_bytes": dram,
        "dropout_elements": dropout_elements(named),
    }
    row.update(inspection(compiled, flops))
    if compiled.status != "ok":
        row.update(error=compiled.error, ctas_per_sm=None, waves=None, predicted_us=None)
        return row
    per_sm = model.ctas_per_sm(arch, compiled.registers, compiled.shared_bytes,
                               compiled.num_warps)  # fmt: skip
    busy = model.utilisation(arch, ctas, per_sm)
    rate = model.rate_of(set(row["tensor_core_types"]), row["fma"], flops)
    prediction = model.predict(arch, flops, dram, rate, busy)
    row.update(
        ctas_per_sm=per_sm,
        waves=round(model.waves(arch, ctas, per_sm), 3),
        utilisation=round(busy, 3),
        rate=prediction.rate,
        compute_us=round(prediction.compute_us, 3),
        memory_us=round(prediction.memory_us, 3),
        predicted_us=round(prediction.predicted_us, 3),
    )
    return row


def inspection(compiled, flops: float) -> dict:
    """Tensor-core use (None where the kernel has no matrix product) and instruction counts."""
    types = sorted(compiled.tensor_core_types or [])
    uses = bool(compiled.tensor_core_ops)
    return {
        "tensor_cores": (uses if flops else None),
        "tensor_core_ops": compiled.tensor_core_ops,
        "tensor_core_types": types,
        "fma": compiled.fma_count,
        "instructions": compiled.instructions,
        "instruction_source": compiled.instruction_source,
    }


def dropout_elements(named: dict) -> int:
    """The [M, K] (or [M, D]) input positions a launch draws keep decisions for. A pair's kernel
    draws two masks per position, but its instructions per element are measured per position
    too (with against without HAS_DROPOUT), so positions are what they multiply."""
    if not named.get("HAS_DROPOUT"):
        return 0
    return named["M"] * (named["K"] if "K" in named else named["D"])


def add_dropout_issue_time(arch: Arch, rows: list[dict], dropout: list[dict]) -> None:
    """Add to each launch with dropout the time to issue its Philox instructions: measured per
    element from its own compile (with against without HAS_DROPOUT), over the arch's instruction
    issue rate. Added, not overlapped: the integer work shares the SM's issue slots with the
    kernel's own (an assumption that errs on the slow side)."""
    per_element = {(d["kernel"], json.dumps(d["config"], sort_keys=True), d["num_warps"]):
                   d["instructions_per_element"] for d in dropout}  # fmt: skip
    for row in rows:
        if not row["dropout_elements"] or row["predicted_us"] is None:
            continue
        config = {k: v for k, v in row["config"].items() if k != "HAS_DROPOUT"}
        ipe = per_element.get((row["kernel"], json.dumps(config, sort_keys=True), row["num_warps"]))
        if ipe is None:
            continue
        busy = max(row["utilisation"], 1e-9)
        issue_us = max(ipe, 0) * row["dropout_elements"] / (arch.ceilings["issue"].value * 1e12
                                                            * busy) * 1e6  # fmt: skip
        row["dropout_issue_us"] = round(issue_us, 3)
        row["predicted_us"] = round(row["predicted_us"] + issue_us, 3)
