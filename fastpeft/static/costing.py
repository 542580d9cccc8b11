"""One launch's static record: what the compile says (registers, spills, shared memory, tensor
cores, instructions), occupancy and waves, the analytic cost and the model's predicted time."""

import importlib
import json
import math

import torch

from . import model
from .archs import Arch
from .launches import named_args, tensor_bytes

DROPOUT_SWITCHES = ("HAS_DROPOUT", "STORE_BITS", "FROM_BITS")


def kernel_module_and_name(kernel) -> tuple:
    """The kernels/*.py module that defines `kernel` (a JITFunction), and its name."""
    module = importlib.import_module(kernel.fn.__module__ if hasattr(kernel, "fn") else "")
    name = kernel.__name__ if hasattr(kernel, "__name__") else kernel.fn.__name__
    return module, name


def kernel_costs(kernel) -> dict:
    """The COSTS table of the kernel's module (kernels/*.py): every launched kernel needs one."""
    module, name = kernel_module_and_name(kernel)
    costs = getattr(module, "COSTS", {})
    if name not in costs:
        raise KeyError(
            f"{module.__name__} has no COSTS entry for {name}: the static model needs its FLOPs "
            "(and its bytes where its tensor arguments do not say them)"
        )
    return costs[name]


def launch_record(arch: Arch, launch, compiled) -> dict:
    """The `launches` row of the static JSON for one recorded launch and its compile."""
    named = named_args(launch.kernel, launch.args, launch.kwargs)
    products, dram = kernel_costs(launch.kernel)(named, launch.grid)
    flops = sum(products.values()) if isinstance(products, dict) else products
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
        "operand_dtypes": operand_dtypes(named),
        "dropout_elements": dropout_elements(named),
        "step_elements": step_elements(launch.kernel, named),
        "l2_bytes": l2_bytes(launch.kernel, named, dram),
    }
    row.update(inspection(compiled, flops))
    if compiled.status != "ok":
        row.update(error=compiled.error, ctas_per_sm=None, waves=None, predicted_us=None)
        return row
    per_sm = model.ctas_per_sm(arch, compiled.registers, compiled.shared_bytes,
                               compiled.num_warps)  # fmt: skip
    busy = model.utilisation(arch, ctas, per_sm)
    work = work_by_rate(named, products, row)
    prediction = model.predict(arch, work, dram, busy, row["l2_bytes"] or 0)
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


def work_by_rate(named: dict, products, row: dict) -> dict[str, float]:
    """{rate: FLOPs} of a launch. COSTS gives either its FLOPs, run at the rate its code's
    instructions say, or {operand arguments: FLOPs} per product, each at the rate of those
    operands' dtypes (a bf16 base GEMM and an fp32 adapter's 3xTF32 product in one kernel):
    "a_ptr" for a product whose operands share a_ptr's dtype, "a_ptr*x_ptr" for one of a_ptr's
    tile and x_ptr's (a 16-bit x meeting fp32 adapters: two TF32 products, not three), and a
    "|NAME" suffix for a product whose fp32 dot precision is the constexpr NAME's, not PRECISION's
    (LoRA's rank-r term into a bf16 output: launch.rank_term_precision)."""
    types = set(row["tensor_core_types"])
    if not isinstance(products, dict):
        return {model.rate_of(types, row["fma"], products): products}
    work: dict[str, float] = {}
    for key, flops in products.items():
        args, _, precision_arg = key.partition("|")
        dtypes = [named[arg].dtype for arg in args.split("*")]
        precision = named.get(precision_arg or "PRECISION")
        rate = model.product_rate(dtypes, precision, types)
        work[rate] = work.get(rate, 0.0) + flops
    return work


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
        "loop_instructions": compiled.loop_instructions,
        "instruction_source": compiled.instruction_source,
    }


def operand_dtypes(named: dict) -> list[str]:
    """The dtypes of a launch's first two tensor arguments (its data: x and A, z and W, ...; the
    seeds, masks and placeholders come after them): launches of one kernel with the same tiles
    but other dtypes (16-bit or fp32 adapters) compile to other code."""
    tensors = [v for v in named.values() if isinstance(v, torch.Tensor)]
    return [str(t.dtype).replace("torch.", "") for t in tensors[:2]]


def step_elements(kernel, named: dict) -> int:
    """The [M, K] (or [M, D]) input positions a kernel that can draw dropout for them walks, with
    or without it on (what its instructions per element multiply), else 0. A kernel whose
    programs re-walk the same positions (one z walk per H block of the adapters' down and dW_down
    kernels) declares how many it walks in its module's WALKS table."""
    if "HAS_DROPOUT" not in named:
        return 0
    module, name = kernel_module_and_name(kernel)
    walks = getattr(module, "WALKS", {}).get(name)
    if walks is not None:
        return walks(named)
    return named["M"] * (named["K"] if "K" in named else named["D"])


def l2_bytes(kernel, named: dict, dram: int) -> int | None:
    """The bytes a launch moves between L2 and the SMs: its DRAM bytes plus the operand tiles its
    programs load again (each walks its whole reduction, so an operand is read once per output
    block along the other dimension), from its module's REREADS table; None where the table has
    no entry (not modelled). The prediction takes this traffic as free: no L2 ceiling has been
    measured (`assumed_l2_rates`)."""
    module, name = kernel_module_and_name(kernel)
    rereads = getattr(module, "REREADS", {}).get(name)
    return None if rereads is None else dram + rereads(named)


def assumed_l2_rates(rows: list[dict]) -> None:
    """`l2_tbps_assumed` for every launch with modelled L2 traffic and a time: the L2 bandwidth
    (TB/s) its predicted time needs, which the model does not check (no measured ceiling yet)."""
    for row in rows:
        if row.get("l2_bytes") and row.get("predicted_us"):
            row["l2_tbps_assumed"] = round(row["l2_bytes"] / row["predicted_us"] / 1e6, 2)


def dropout_elements(named: dict) -> int:
    """The [M, K] (or [M, D]) input positions a launch draws keep decisions for (a pair's kernel
    or a shared-input LoRA launch draws one mask per member at each: `dropout_cost` measures per
    mask element and says how many masks a position has)."""
    if not named.get("HAS_DROPOUT"):
        return 0
    return named["M"] * (named["K"] if "K" in named else named["D"])


def add_dropout_issue_time(arch: Arch, rows: list[dict], dropout: list[dict]) -> None:
    """Instruction issue as a third roofline ceiling beside memory and the products, for every
    launch of a kernel compiled with and without dropout (the ones whose instructions per element
    are measured: `dropout_cost`).

    Per input element, such a launch issues its own instructions (those of the kernel compiled
    without dropout: its loop body once a step, the rest once a program, see
    `_base_instructions_per_element`) plus, with dropout, the Philox rounds and the mask's bits
    (with against without HAS_DROPOUT). The prediction is the longest of the memory, product
    and issue times: warps waiting on memory or on the asynchronous tensor cores leave the issue
    slots to the integer work. `predicted_us_serial` keeps the pessimistic bound of a launch
    with dropout: the dropout's issue time added to the time without it."""
    costs = {_twin_key(d, d["config"]): d for d in dropout}
    by_mode = {(*_twin_key(d, d["config"]), d["mask"]): d for d in dropout}
    for row in rows:
        if row["predicted_us"] is None:
            continue
        config = row["config"] or {}
        key = _twin_key(row, config)
        cost = by_mode.get((*key, mask_mode(config))) or costs.get(key)
        if cost is None:
            continue
        rate = model.peak(arch, "issue") * 1e12 * max(row["utilisation"], 1e-9)
        elements = row["step_elements"]
        per_mask = max(cost["instructions_per_element"], 0) if row["dropout_elements"] else 0.0
        extra = per_mask * cost.get("masks_per_element", 1)
        base = _base_instructions_per_element(row, cost)
        issue_us = (base + extra) * elements / rate * 1e6
        row["issue_us"] = round(issue_us, 3)
        if extra:
            extra_us = extra * elements / rate * 1e6
            row["dropout_issue_us"] = round(extra_us, 3)
            row["predicted_us_serial"] = round(row["predicted_us"] + extra_us, 3)
        row["predicted_us"] = round(max(row["predicted_us"], issue_us), 3)


def _steps(row: dict, per_thread: float) -> float:
    """Main-loop steps per program of `row`'s launch: the positions it walks over its programs'
    tiles (per_thread positions a thread a step)."""
    tile_positions = per_thread * 32 * row["num_warps"]
    return max(1.0, row["step_elements"] / max(row["ctas"] * tile_positions, 1))


def _base_instructions_per_element(row: dict, cost: dict) -> float:
    """The no-dropout kernel's instructions per input element of `row`'s launch: its main loop's
    body once per step, the code around the loop (prologue, epilogue: an activation, a mask, the
    stores) once per program, spread over the program's steps. Without a loop count (PTX only)
    every instruction counts once a step, an overestimate."""
    loop = cost.get("base_loop_instructions")
    per_thread = cost["elements_per_thread"]
    if not loop or per_thread <= 0:
        return cost["base_instructions_per_element"]
    around = cost["base_instructions"] - loop
    return (loop + around / _steps(row, per_thread)) / per_thread


def _per_thread(config: dict, num_warps: int) -> float:
    # Input positions a thread handles a main-loop step: one [BLOCK_M, BLOCK_K or BLOCK_D] tile.
    tile = config.get("BLOCK_M", 1) * config.get("BLOCK_K", config.get("BLOCK_D", 1))
    return tile / (32 * num_warps)


def dropout_cost(rows: list[dict]) -> list[dict]:
    """Per kernel with a dropout variant: the extra SASS instructions per generated mask element,
    from the same kernel and tiles compiled with and without HAS_DROPOUT. The extra in the main
    loop counts once a step, the extra around it (a mask applied in an epilogue, the seeds'
    loads) once a program, spread over its steps (the fewest among the config's launches: the
    dearest). A pair or a shared-input launch draws one mask per member: per mask element."""
    by_key, steps_of = {}, {}
    for r in rows:
        config = dict(r["config"] or {})
        if "HAS_DROPOUT" not in config or not r["instructions"]:
            continue
        flag = config.pop("HAS_DROPOUT")
        key = (*_twin_key(r, config), mask_mode(r["config"]))
        by_key.setdefault(key, {})[bool(flag)] = r
        if flag and r["step_elements"]:
            steps = _steps(r, _per_thread(config, r["num_warps"]))
            steps_of[key] = min(steps_of.get(key, steps), steps)
    out = []
    for key, pair in sorted(by_key.items()):
        kernel, config, warps, dtypes, mode = key
        if True not in pair:
            continue
        if False not in pair:  # a mask-mode variant: compare with the no-dropout launch
            pair[False] = next(
                (
                    p[False]
                    for (*twin, _), p in by_key.items()
                    if tuple(twin) == (kernel, config, warps, dtypes) and False in p
                ),
                None,
            )
            if pair[False] is None:
                continue
        cfg = json.loads(config)
        per_thread = _per_thread(cfg, warps)
        masks = cfg.get("MEMBERS", 2 if cfg.get("PAIR") else 1)
        with_, without = pair[True], pair[False]
        extra = with_["instructions"] - without["instructions"]
        loop_extra = extra  # without loop counts (PTX only), all of it once a step
        if with_.get("loop_instructions") and without.get("loop_instructions"):
            loop_extra = with_["loop_instructions"] - without["loop_instructions"]
        steps = steps_of.get(key, 1.0)
        per_step = loop_extra + (extra - loop_extra) / steps
        out.append(
            {
                "kernel": kernel,
                "mask": mode,
                "operand_dtypes": list(dtypes),
                "config": cfg,
                "num_warps": warps,
                "extra_instructions": extra,
                "extra_loop_instructions": loop_extra,
                "steps_per_program": round(steps, 1),
                "elements_per_thread": per_thread,
                "masks_per_element": masks,
                "base_instructions_per_element": round(without["instructions"] / per_thread, 1),
                "base_loop_instructions": without.get("loop_instructions"),
                "base_instructions": without["instructions"],
                "instructions_per_element": round(per_step / per_thread / masks, 1),
                "source": with_["instruction_source"],
            }
        )
    return out


def _twin_key(row: dict, config: dict) -> tuple:
    """What a launch with dropout and its no-dropout twin share: kernel, tiles, warps, dtypes."""
    dtypes = tuple(row.get("operand_dtypes", ()))
    return (row["kernel"], dropout_key(config), row["num_warps"], dtypes)


def dropout_key(config: dict) -> str:
    """A launch's configuration without the dropout switches, as a key: the same kernel and
    tiles with and without dropout share it."""
    return json.dumps({k: v for k, v in config.items() if k not in DROPOUT_SWITCHES},
                      sort_keys=True)  # fmt: skip


def mask_mode(config: dict | None) -> str:
    """How a launch gets its dropout mask: "draw" (Philox), "store" (draws and stores its bits),
    "bits" (reads them) or "none"."""
    config = config or {}
    if not config.get("HAS_DROPOUT"):
        return "none"
    if config.get("STORE_BITS"):
        return "store"
    return "bits" if config.get("FROM_BITS") else "draw"
