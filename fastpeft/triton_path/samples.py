"""Representative Triton launches of each registered method, for the GPU-less sm_90 compile check.

Each public function here is one method's `compile_check` (fastpeft/registry.py). Called inside
`launch.recording(target, record)`, it drives that method's real Triton host code with meta
tensors at realistic LLaMA-7B-like shapes (8192 tokens, 4096-wide projections, the 11008-wide
FFN, 256-wide adapter bottlenecks), so `record` sees exactly the launches a GPU of that target
would get, while nothing is allocated or run.

Every function has the signature `method(tag, full=False)`:
- `tag(case)` is a context manager supplied by the caller; the launches made inside it belong to
  `case`, a short description such as "bf16/fp32 r=16 bwd need_dx=True p=0.1";
- `full=False` drives a representative subset (every branch once at 16-bit dtypes, then each
  kernel with everything on at the other dtypes); `full=True` drives every dtype combination,
  LoRA rank and adapter activation, with fp32 dots both in IEEE and in TF32.

Only the registry loads this module (it imports the Triton host modules, hence Triton).
"""

import itertools
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from . import adapter as adapter_host
from . import dropout as dropout_host
from . import ia3 as ia3_host
from . import ia3_hybrid
from . import importance as importance_host
from . import lora as lora_host
from .launch import allow_tf32

Tag = Callable[[str], AbstractContextManager]  # tag(case): the launches inside belong to case

BF16, FP16, FP32, I64 = torch.bfloat16, torch.float16, torch.float32, torch.int64
_NAMES = {BF16: "bf16", FP16: "fp16", FP32: "fp32"}

M_TOKENS, HIDDEN, FFN, BOTTLENECK = 8192, 4096, 11008, 256

# (base weights and activations, adapter weights): the full sweep's dtype combinations, and those
# whose fp32 dots it also compiles under TF32 (torch.backends.cuda.matmul.allow_tf32).
DTYPES = ((BF16, BF16), (BF16, FP32), (FP16, FP16), (FP32, FP32))
TF32_DTYPES = ((BF16, FP32), (FP32, FP32))
LORA_RANKS = (16, 128, 256)  # 256: the Triton LoRA's rank limit
ACTIVATIONS = ("tanh", "relu", "gelu", "silu")

# A run's mode: "all" walks every branch the host code can take (bias, dropout, residual, which
# gradients are needed); "heavy" makes one launch of each kernel with everything on, dropout
# included; "light" the same without dropout (the Philox code is the slow part to compile).
_PS = {"all": (0.0, 0.1), "heavy": (0.1,), "light": (0.0,)}


def _runs(full: bool) -> list[tuple[torch.dtype, torch.dtype, str, bool]]:
    """(base dtype, adapter dtype, mode, tf32) for the runs every GEMM method makes. The subset
    walks every branch on bf16 with bf16 adapters, then each kernel with everything on for bf16
    with fp32 adapters (PEFT's default dtypes) and for fp32 (without dropout)."""
    if full:
        ieee = [(b, a, "all", False) for b, a in DTYPES]
        return ieee + [(b, a, "all", True) for b, a in TF32_DTYPES]
    return [(BF16, BF16, "all", False), (BF16, FP32, "heavy", False), (FP32, FP32, "light", False)]


def _label(base: torch.dtype, adapter: torch.dtype, tf32: bool) -> str:
    return f"{_NAMES[base]}/{_NAMES[adapter]}" + (" tf32" if tf32 else "")


def _empty(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=dtype)


def _seed(count: int, p: float) -> torch.Tensor | None:
    return _empty(count, dtype=I64) if p > 0 else None  # as the ops draw it


def _either(every: bool, both: tuple, one: tuple) -> tuple:
    return both if every else one


# ------------------------------------------------------------------------------------------------
# LoRA
# ------------------------------------------------------------------------------------------------


def lora(tag: Tag, full: bool = False) -> None:
    """LoRA on a 4096 -> 4096 projection. The subset adds rank 128 with dropout, and the launches
    that once overflowed shared memory: 4-byte and rank-wide tiles under TF32. The keep-mask
    kernel (shared with the adapters) is driven here."""
    ranks = LORA_RANKS if full else (16,)
    runs = [(*run, rank) for run in _runs(full) for rank in ranks]
    if not full:
        runs += [
            (BF16, BF16, "heavy", False, 128),
            (FP32, FP32, "light", True, 16),
            (BF16, FP32, "light", True, 256),
        ]
    for base, adapter, mode, tf32, rank in runs:
        with allow_tf32(tf32):
            where = f"{_label(base, adapter, tf32)} r={rank}"
            _drive_lora(tag, where, mode, base, adapter, rank)
    with tag("keep_mask"):
        dropout_host.keep_mask(_empty(1, dtype=I64), M_TOKENS, HIDDEN, 0.1)


def _drive_lora(tag: Tag, where: str, mode: str, base, adapter, rank: int) -> None:
    M, K, N = M_TOKENS, HIDDEN, HIDDEN
    x, w, b = _empty(M, K, dtype=base), _empty(N, K, dtype=base), _empty(N, dtype=base)
    lora_a, lora_b = _empty(rank, K, dtype=adapter), _empty(N, rank, dtype=adapter)
    dy = _empty(M, N, dtype=base)
    every = mode == "all"
    for p in _PS[mode]:
        seed = _seed(1, p)
        t = keep = None
        for bias in _either(every, (None, b), (b,)):
            with tag(f"{where} fwd bias={bias is not None} p={p}"):
                _, t, keep = lora_host.forward(x, w, bias, lora_a, lora_b, seed, 2.0, p)
        for need_dx in _either(every, (True, False), (True,)):
            with tag(f"{where} bwd need_dx={need_dx} p={p}"):
                lora_host.backward(dy, x, w, lora_a, lora_b, t, keep, seed, 2.0, p, need_dx)


def lora_shared(tag: Tag, full: bool = False) -> None:
    """Shared-input LoRA: q/k/v (three adapters) and gate/up (two) on one 4096-wide input, their
    down-projections from one launch, each then its own up-projection and backward."""
    ranks = LORA_RANKS if full else (16, 128)
    for (base, adapter, mode, tf32), rank in itertools.product(_runs(full), ranks):
        with allow_tf32(tf32):
            for members in (2, 3):
                where = f"{_label(base, adapter, tf32)} r={rank} members={members}"
                _drive_lora_shared(tag, where, mode, base, adapter, rank, members)


def _drive_lora_shared(tag: Tag, where, mode: str, base, adapter, rank: int, members: int) -> None:
    M, K, N = M_TOKENS, HIDDEN, HIDDEN
    x, w = _empty(M, K, dtype=base), _empty(N, K, dtype=base)
    lora_as = [_empty(rank, K, dtype=adapter) for _ in range(members)]
    lora_b, dy = _empty(N, rank, dtype=adapter), _empty(M, N, dtype=base)
    for p in _PS[mode]:
        seeds = [_seed(1, p) for _ in range(members)] if p > 0 else []
        with tag(f"{where} shared down p={p}"):
            t, keep = lora_host.shared_down(x, lora_as, seeds, p)
        mask = keep[1] if keep.dim() == 3 else keep
        with tag(f"{where} up p={p}"):
            lora_host.forward_up(x, w, None, lora_b, t[:, 1], 2.0)
        with tag(f"{where} bwd p={p}"):
            seed = seeds[1] if seeds else None
            lora_host.backward(dy, x, w, lora_as[1], lora_b, t[:, 1], mask, seed, 2.0, p, True)


# ------------------------------------------------------------------------------------------------
# IA3
# ------------------------------------------------------------------------------------------------


def ia3(tag: Tag, full: bool = False) -> None:
    """IA3 in both scaling cases (output: k/v_proj; input: the feed-forward down_proj)."""
    for base, vec, mode, tf32 in _runs(full):
        with allow_tf32(tf32):
            _drive_ia3(tag, _label(base, vec, tf32), mode, base, vec)


def _drive_ia3(tag: Tag, where: str, mode: str, base, vec) -> None:
    M = M_TOKENS
    every = mode == "all"
    # (N, K): k/v_proj 4096 x 4096 and down_proj 11008 -> 4096, each in both scaling cases.
    for N, K in _either(every, ((HIDDEN, HIDDEN), (HIDDEN, FFN)), ((HIDDEN, FFN),)):
        x, w, b = _empty(M, K, dtype=base), _empty(N, K, dtype=base), _empty(N, dtype=base)
        dy = _empty(M, N, dtype=base)
        for feedforward in (False, True):
            case = f"{where} {K}->{N} {'input' if feedforward else 'output'}"
            ia3_l = _empty(K if feedforward else N, dtype=vec)
            z = None
            save_zs = (False,) if feedforward else _either(every, (False, True), (True,))
            for bias in _either(every, (None, b), (b,)):
                for save_z in save_zs:
                    with tag(f"{case} fwd bias={bias is not None} z={save_z}"):
                        _, z_out = ia3_host.forward(x, w, bias, ia3_l, feedforward, save_z)
                    z = z_out if z_out is not None else z
            saved = x if feedforward else z
            # dx alone is a branch only of the output case's dl-free kernels
            needs = _either(every, ((True, True), (True, False), (False, True)),
                            ((True, True), (False, True)))  # fmt: skip
            for need_dx, need_dl in needs:
                with tag(f"{case} bwd dx={need_dx} dl={need_dl}"):
                    ia3_host.backward(dy, saved, w, ia3_l, feedforward, need_dx, need_dl)
            # The hybrid path's side kernel, in each of its four uses (dx alone: its STORE_OUT).
            with tag(f"{case} hybrid"):
                _, z = ia3_hybrid.forward(x, w, b, ia3_l, feedforward, True)
                saved = x if feedforward else z
                for need_dx, need_dl in ((True, True), (False, True), (True, False)):
                    ia3_hybrid.backward(dy, saved, w, ia3_l, feedforward, need_dx, need_dl)


# ------------------------------------------------------------------------------------------------
# Bottleneck adapters: one adapter, and the gate/up pair
# ------------------------------------------------------------------------------------------------


def _activations(mode: str) -> tuple[str, ...]:
    # Every activation where every branch is walked; GELU (the default) elsewhere.
    return ACTIVATIONS if mode == "all" else ("gelu",)


def adapter(tag: Tag, full: bool = False) -> None:
    """One adapter on a 4096-wide stream, bottleneck 256; and the activation test kernel."""
    for act_dtype, w_dtype, mode, tf32 in _runs(full):
        with allow_tf32(tf32):
            _drive_adapter(tag, _label(act_dtype, w_dtype, tf32), mode, act_dtype, w_dtype)
    for act in ACTIVATIONS:
        with tag(f"activation {act}"):
            adapter_host.activation_and_grad(_empty(1 << 20, dtype=FP32), act)


def _drive_adapter(tag: Tag, label: str, mode: str, act_dtype, w_dtype) -> None:
    M, D, H = M_TOKENS, HIDDEN, BOTTLENECK
    z, res, dy = (_empty(M, D, dtype=act_dtype) for _ in range(3))
    wd, wu = _empty(H, D, dtype=w_dtype), _empty(D, H, dtype=w_dtype)
    every = mode == "all"
    for p, act in itertools.product(_PS[mode], _activations(mode)):
        seed = _seed(1, p)
        where = f"{label} {act} p={p}"
        pre = keep = None
        for residual in _either(every, (None, res), (res,)):
            with tag(f"{where} fwd residual={residual is not None}"):
                _, pre, keep = adapter_host.forward(z, wd, wu, residual, seed, 1.0, p, act)
        both = _either(every, (True, False), (True,))
        for residual_is_z, need_dz in itertools.product(both, both):
            with tag(f"{where} bwd residual_is_z={residual_is_z} need_dz={need_dz}"):
                adapter_host.backward(
                    dy, z, wd, wu, pre, keep, seed, 1.0, p, act, residual_is_z, need_dz
                )


def adapter_pair(tag: Tag, full: bool = False) -> None:
    """The gate/up adapter pair on one 4096-wide input, bottleneck 256 each."""
    for act_dtype, w_dtype, mode, tf32 in _runs(full):
        with allow_tf32(tf32):
            _drive_pair(tag, _label(act_dtype, w_dtype, tf32), mode, act_dtype, w_dtype)


def _drive_pair(tag: Tag, label: str, mode: str, act_dtype, w_dtype) -> None:
    M, D, H = M_TOKENS, HIDDEN, BOTTLENECK
    x, du, dv = (_empty(M, D, dtype=act_dtype) for _ in range(3))
    wd1, wu1, wd2, wu2 = (_empty(*shape, dtype=w_dtype) for shape in ((H, D), (D, H)) * 2)
    for p, act in itertools.product(_PS[mode], _activations(mode)):
        seeds = _seed(2, p)  # one per adapter
        where = f"{label} {act} p={p}"
        with tag(f"{where} fwd"):
            _, _, pre, keep = adapter_host.forward_pair(x, wd1, wu1, wd2, wu2, seeds, 1.0, p, act)
        for need_dx in _either(mode == "all", (True, False), (True,)):
            with tag(f"{where} bwd need_dx={need_dx}"):
                adapter_host.backward_pair(
                    du, dv, x, wd1, wu1, wd2, wu2, pre, keep, seeds, 1.0, p, act, need_dx
                )


# ------------------------------------------------------------------------------------------------
# SPIDER importance
# ------------------------------------------------------------------------------------------------

# A few LLaMA-7B-sized trainable tensors, the last smaller than one chunk.
_SPIDER_SHAPES = (
    (16, HIDDEN), (HIDDEN, 16),  # a rank-16 LoRA's A and B on a 4096 -> 4096 projection
    (16, HIDDEN), (FFN, 16),  # the same on the 4096 -> 11008 up_proj
    (BOTTLENECK, HIDDEN), (HIDDEN, BOTTLENECK),  # an adapter's W_down and W_up
    (FFN,),  # an IA3 vector on down_proj's input
)  # fmt: skip


def spider(tag: Tag, full: bool = False) -> None:
    """The SPIDER passes (accumulate, select_sums, blend, and their finalize reductions),
    SpiderAdamW's fused pass and MagnitudeMaskAdamW's for fp32, bf16 and fp16 parameters. The
    kernels take only pointers and constexprs, so the tensor list changes the grids, never the
    compiles: the subset and the full sweep are the same.

    `Plan` records on meta tensors as it is: its chunk tables reach the device through a plain
    `.to` (only a CUDA device pins memory first), and its address tables hold `data_ptr()`s,
    which are 0 for meta tensors: int64 placeholders of the right length, all a recorder needs."""
    for dtype in (FP32, BF16, FP16):
        theta0 = [_empty(*s, dtype=dtype) for s in _SPIDER_SHAPES]
        G = [_empty(*s, dtype=FP32) for s in _SPIDER_SHAPES]
        grads = [_empty(*s, dtype=dtype) for s in _SPIDER_SHAPES]
        params = [_empty(*s, dtype=dtype) for s in _SPIDER_SHAPES]
        plan = importance_host.Plan(theta0, G)
        name = _NAMES[dtype]
        with tag(f"{name} accumulate"):
            moments_ft = plan.accumulate(grads)
        moments_pre = torch.empty_like(moments_ft)
        with tag(f"{name} select_sums"):
            sel = plan.select_sums(moments_pre, moments_ft)
        with tag(f"{name} blend"):
            plan.blend(params, moments_pre, moments_ft, sel)
        moments = [_empty(*s, dtype=dtype) for s in _SPIDER_SHAPES for _ in range(2)]
        hyper = torch.empty((len(G), 6), dtype=torch.float64, device=moments_pre.device)
        with tag(f"{name} SpiderAdamW fused pass"):
            plan.adamw_blend(params, grads, moments[0::2], moments[1::2], hyper, moments_pre,
                             moments_ft, sel)  # fmt: skip
        masks = [_empty(*s, dtype=torch.bool) for s in _SPIDER_SHAPES]
        with tag(f"{name} MagnitudeMaskAdamW pass"):
            importance_host.Plan(theta0, None).masked_adamw(
                params, grads, moments[0::2], moments[1::2], masks, hyper
            )
