"""Test tolerances (docs/methods.md#numerics), shared by tests and benchmarks.

Two kinds of check:

- error budgets against a higher-precision reference (FlashAttention's rule): fastpeft may be at
  most a small multiple further from an fp64 reference than stock PyTorch / PEFT in the same
  dtype is (`assert_within_reference_budget`, and `assert_within_dtype_budget` for bf16/fp16
  against fp32). These hold on any machine: a machine whose kernels round differently moves the
  baseline's error and the budget with it.
- fixed relative tolerances (`assert_close_fp32`) for results with no rounding-sensitive chain
  (elementwise ops, a single small GEMM against its reference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

#: Absolute floors of the same-dtype error budget (SPEC §7); fp32 has a small one for convenience.
DTYPE_FLOORS: dict[torch.dtype, float] = {
    torch.float16: 1e-3,
    torch.bfloat16: 1e-2,
    torch.float32: 1e-5,
}


#: FlashAttention's rule uses 2x for one kernel; a whole model chains dozens of GEMMs and
#: reductions whose orders differ between fastpeft and PEFT, so the error of one is not a
#: bound on the other element by element, only in size. NOTE: measured on a 2-core AMD EPYC VM
#: over the whole suite's 2093 budget checks (model and op tests), under the default kernels,
#: ATEN_CPU_CAPABILITY=avx2 and OMP_NUM_THREADS=1: fastpeft/PEFT error ratio median 1.0, 99th
#: percentile 1.58; the tightest check used 0.82 of its budget (SPIDER's 30-step loss curve,
#: ratio 2.45). A 1e-5 relative error planted in LoRA's scaling fails every LoRA model test.
REFERENCE_ERROR_FACTOR = 3.0
#: The budget's floor in units of the dtype's epsilon times the reference's largest magnitude:
#: where stock PyTorch happens to round exactly (a zero error), a few ulps are still allowed.
REFERENCE_FLOOR_ULPS = 8


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """Run the block with TF32 matmuls/convolutions off (for fp32 references on Ampere+ GPUs)."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def _label(name: str) -> str:
    return f"{name}: " if name else ""


def _check_shapes(name: str, *tensors: torch.Tensor) -> None:
    shapes = [tuple(t.shape) for t in tensors]
    if len(set(shapes)) != 1:
        raise AssertionError(f"{_label(name)}shape mismatch {shapes}")


def _check_finite(name: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    fa, fe = torch.isfinite(actual), torch.isfinite(expected)
    if not torch.equal(fa, fe):
        bad = int((fa != fe).sum())
        raise AssertionError(
            f"{_label(name)}{bad} element(s) differ in finiteness "
            f"(actual non-finite: {int((~fa).sum())}, expected non-finite: {int((~fe).sum())})"
        )
    nf = ~fe
    an, en = actual[nf], expected[nf]
    if not bool(((an == en) | (an.isnan() & en.isnan())).all()):
        raise AssertionError(f"{_label(name)}non-finite values differ (inf sign or nan vs inf)")


def assert_close_fp32(
    actual: torch.Tensor,
    expected: torch.Tensor,
    rtol: float = 1e-5,
    atol: float | None = None,
    name: str = "",
) -> None:
    """Assert ``|actual - expected| <= atol + rtol·|expected|`` elementwise (computed in fp64).

    ``atol`` defaults to ``rtol · max|expected|``, i.e. errors are judged relative to the tensor's
    scale, so near-zero elements of a GEMM output do not fail on rounding noise. Use rtol 1e-5 for
    elementwise results and 1e-4 for GEMM-like outputs and reductions (SPEC §7). Shapes must match;
    non-finite values must sit at the same places. The message gives max abs/rel errors and where.
    """
    _check_shapes(name, actual, expected)
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    _check_finite(name, a, e)
    fin = torch.isfinite(e)
    a, e = a[fin], e[fin]
    if e.numel() == 0:
        return
    scale = float(e.abs().max())
    tol_abs = rtol * scale if atol is None else atol
    err = (a - e).abs()
    allowed = tol_abs + rtol * e.abs()
    if bool((err <= allowed).all()):
        return
    worst = int(torch.argmax(err - allowed))
    n_bad = int((err > allowed).sum())
    rel = err / e.abs().clamp_min(1e-30)
    raise AssertionError(
        f"{_label(name)}{n_bad}/{e.numel()} elements out of tolerance "
        f"(rtol={rtol:g}, atol={tol_abs:.3g}); max abs err {float(err.max()):.3e}, "
        f"max rel err {float(rel.max()):.3e}, max abs err / max|expected| "
        f"{float(err.max()) / max(scale, 1e-30):.3e}; worst at flat index {worst}: "
        f"actual {float(a[worst]):.8g} vs expected {float(e[worst]):.8g} "
        f"(shape {tuple(actual.shape)}, dtypes {actual.dtype}/{expected.dtype})"
    )


def assert_within_dtype_budget(
    out: torch.Tensor,
    ref_fp32: torch.Tensor,
    ref_same_dtype: torch.Tensor,
    floor: float | None = None,
    name: str = "",
) -> None:
    """Assert ``max|out − ref_fp32| ≤ 2·max|ref_same_dtype − ref_fp32| + floor`` (SPEC §7).

    ``out`` is the low-precision result under test, ``ref_fp32`` the reference computed in fp32
    (from the same inputs upcast), ``ref_same_dtype`` PyTorch's own result in ``out``'s dtype.
    ``floor`` defaults to ``DTYPE_FLOORS[out.dtype]`` (fp16 1e-3, bf16 1e-2, fp32 1e-5). The
    message gives both max errors, the budget and where the worst element is.
    """
    _check_shapes(name, out, ref_fp32, ref_same_dtype)
    if floor is None:
        if out.dtype not in DTYPE_FLOORS:
            raise ValueError(f"no default floor for {out.dtype}; pass floor=")
        floor = DTYPE_FLOORS[out.dtype]
    o = out.detach().to("cpu", torch.float64)
    r32 = ref_fp32.detach().to("cpu", torch.float64)
    rsd = ref_same_dtype.detach().to("cpu", torch.float64)
    _check_finite(name, o, r32)
    if o.numel() == 0:
        return
    fin = torch.isfinite(r32)
    err = (o - r32).abs().masked_fill(~fin, 0)
    torch_err = (rsd - r32).abs().masked_fill(~fin, 0)
    if not bool(torch.isfinite(torch_err).all()):
        raise AssertionError(f"{_label(name)}ref_same_dtype is non-finite where ref_fp32 is finite")
    max_err, max_torch = float(err.max()), float(torch_err.max())
    budget = 2.0 * max_torch + floor
    if max_err <= budget:
        return
    worst = int(torch.argmax(err))
    raise AssertionError(
        f"{_label(name)}max|out - ref_fp32| = {max_err:.3e} exceeds budget {budget:.3e} "
        f"(= 2 x max|ref_{out.dtype} - ref_fp32| {max_torch:.3e} + floor {floor:g}); "
        f"worst at flat index {worst}: out {float(o.flatten()[worst]):.6g} vs ref_fp32 "
        f"{float(r32.flatten()[worst]):.6g} (shape {tuple(out.shape)})"
    )


#: How the error over a tensor is summarised: its largest element ("max": single results such
#: as logits, gradients, losses), or its root mean square ("rms": parameters after many optimizer
#: steps, where Adam's lr·g/(√v + eps) turns last-bit differences of gradients near eps into
#: element errors up to lr in any two runs, so the largest element is a heavy-tailed draw while
#: the RMS over the tensor is stable, and still moves with any systematic error).
NORMS = ("max", "rms")


def _error_norm(
    tensor: torch.Tensor, reference: torch.Tensor, finite: torch.Tensor, norm: str
) -> float:
    err = (tensor.detach().to("cpu", torch.float64) - reference).abs().masked_fill(~finite, 0)
    if norm == "max":
        return float(err.max())
    return float(err.square().sum().div(max(int(finite.sum()), 1)).sqrt())


def _budget_terms(
    baseline: torch.Tensor, ref: torch.Tensor, finite: torch.Tensor, norm: str
) -> tuple[float, float]:
    """(baseline's error against ref, the floor's scale max|ref|)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    scale = float(ref.abs().masked_fill(~finite, 0).max()) if ref.numel() else 0.0
    return _error_norm(baseline, ref, finite, norm), scale


def reference_budget(
    baseline: torch.Tensor,
    reference: torch.Tensor,
    factor: float = REFERENCE_ERROR_FACTOR,
    floor_ulps: float = REFERENCE_FLOOR_ULPS,
    norm: str = "max",
) -> float:
    """The largest error against `reference` (fp64) that a result in `baseline`'s dtype may have:
    ``factor · ‖baseline − reference‖ + floor_ulps · eps(dtype) · max|reference|``, with ‖·‖ the
    `norm` ("max" or "rms") over the tensor."""
    ref = reference.detach().to("cpu", torch.float64)
    finite = torch.isfinite(ref)
    baseline_err, scale = _budget_terms(baseline, ref, finite, norm)
    return factor * baseline_err + floor_ulps * torch.finfo(baseline.dtype).eps * scale


def assert_within_reference_budget(
    actual: torch.Tensor,
    baseline: torch.Tensor,
    reference: torch.Tensor,
    factor: float = REFERENCE_ERROR_FACTOR,
    floor_ulps: float = REFERENCE_FLOOR_ULPS,
    name: str = "",
    norm: str = "max",
) -> None:
    """Assert ``‖actual − reference‖ ≤ reference_budget(baseline, reference)``.

    `reference` is the computation in fp64 (stock PyTorch / unpatched PEFT), `baseline` the same
    stock computation in `actual`'s dtype, `actual` fastpeft's result; `norm` is "max" (the
    largest element error) or "rms" (see NORMS). The message gives both errors and their ratio.
    """
    _check_shapes(name, actual, baseline, reference)
    if actual.dtype != baseline.dtype:
        raise ValueError(f"{_label(name)}actual is {actual.dtype} but baseline {baseline.dtype}")
    ref = reference.detach().to("cpu", torch.float64)
    _check_finite(name, actual.detach().to("cpu", torch.float64), ref)
    if ref.numel() == 0:
        return
    finite = torch.isfinite(ref)
    baseline_err, scale = _budget_terms(baseline, ref, finite, norm)
    budget = factor * baseline_err + floor_ulps * torch.finfo(baseline.dtype).eps * scale
    err = _error_norm(actual, ref, finite, norm)
    if err <= budget:
        return
    raise AssertionError(
        f"{_label(name)}{norm}|actual - ref_fp64| = {err:.3e} exceeds budget {budget:.3e} "
        f"(= {factor:g} x {norm}|baseline - ref_fp64| {baseline_err:.3e} + {floor_ulps:g} ulps "
        f"of max|ref| {scale:.3e}); error ratio {err / max(baseline_err, 1e-300):.2f} "
        f"(shape {tuple(actual.shape)}, {actual.dtype})"
    )


def assert_all_within_reference_budget(
    actual: dict[str, torch.Tensor],
    baseline: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    factor: float = REFERENCE_ERROR_FACTOR,
    what: str = "",
    norm: str = "max",
) -> None:
    """`assert_within_reference_budget` for every name of three name → tensor maps (gradients,
    parameters), which must hold the same names."""
    if not (actual.keys() == baseline.keys() == reference.keys()):
        raise AssertionError(
            f"{what} names differ: only in actual {sorted(actual.keys() - reference.keys())}, "
            f"only in reference {sorted(reference.keys() - actual.keys())}, "
            f"only in baseline {sorted(baseline.keys() ^ reference.keys())}"
        )
    for name in reference:
        label = f"{what} {name}".strip()
        assert_within_reference_budget(
            actual[name], baseline[name], reference[name], factor, name=label, norm=norm
        )


def assert_matches_reference(
    got: Sequence[torch.Tensor | None],
    reference_at: Callable[..., Sequence[torch.Tensor | None]],
    names: Sequence[str],
    label: str = "",
) -> None:
    """An op's outputs and gradients `got` against a plain-PyTorch reference run twice:
    ``reference_at(dtype=None)`` on the inputs as they are (the baseline: stock PyTorch in the
    op's dtype) and ``reference_at(dtype=torch.float64)`` (the reference), each output within
    `assert_within_reference_budget`. None marks an output that must not exist (no gradient)."""
    baseline, exact = reference_at(dtype=None), reference_at(dtype=torch.float64)
    for name, g, b, e in zip(names, got, baseline, exact, strict=True):
        what = f"{label} {name}".strip()
        if b is None:
            assert g is None, f"{what}: expected no gradient, got one"
            continue
        assert g is not None, f"{what}: expected a gradient, got none"
        assert g.dtype == b.dtype, f"{what}: dtype {g.dtype} != the reference's {b.dtype}"
        assert_within_reference_budget(g, b, e, name=what)
