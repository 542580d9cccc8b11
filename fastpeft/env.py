"""The one place fastpeft reads environment variables.

- ``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors through Triton's interpreter (slow;
  meant for tests on machines without a GPU).
- ``FASTPEFT_BACKEND``: overrides ``backend="auto"`` for every method that has the named backend
  (``torch``, ``triton``, ``cpp``, ``cuda``; fastpeft/dispatch.py applies it), e.g. to compare
  paths without editing code.
- ``FASTPEFT_DROPOUT_MASK``: how the Triton LoRA and adapter kernels carry the dropout mask from
  the forward to the backward: ``bits`` (the default: the forward stores 1 bit per input element)
  or ``regenerate`` (nothing stored; the backward kernels redraw it from the seed).
- ``FASTPEFT_CPU_RULE``: ``on`` (the default) lets a patched LoRA or IA3 layer on the CPU, with
  ``backend="auto"``, run PEFT's own forward at shapes where that is faster (timed once per
  shape: fastpeft/patching/cpu_rule.py); ``off`` keeps the fused PyTorch path everywhere (the
  test suite sets it, so its fused-path checks do not depend on timings).
- ``FASTPEFT_SHARED_INPUT``: ``on`` (the default) lets sibling LoRA layers on one input (q/k/v,
  gate/up) share one down-projection launch on the Triton path
  (fastpeft/patching/lora_shared.py); ``off`` runs each layer on its own.
- ``FASTPEFT_RANK_TERM_TF32``: ``on`` (the default) lets the Triton LoRA kernels, where torch keeps
  TF32 off, run the fp32 adapters' rank-r term that lands in a bf16 output (s · t Bᵀ in y, u A in
  dx) as one TF32 product instead of 3xTF32: its error then stays below PEFT's own, which rounds
  the base product and the rank term to bf16 apart (measured: tests/kernels/test_tf32x3.py;
  fastpeft/triton_path/launch.py says why). ``off`` keeps 3xTF32 for every fp32 product.
- ``FASTPEFT_ADAPTER_TILES``: the Triton adapter backward's tiles for 16-bit weights: ``narrow``
  (the default) or ``wide`` (dpre's H blocks and the weight gradients' tiles doubled: half the
  operand re-reads from L2, partial sums to fill the GPU; fastpeft/triton_path/adapter.py says
  why both exist until a GPU run picks one).
- ``XDG_CACHE_HOME``: where ``fastpeft bench --suite static`` keeps its compiles
  (``$XDG_CACHE_HOME/fastpeft/static``, else ``~/.cache/fastpeft/static``).
- ``OUT``: where ``fastpeft bench`` writes when ``--out`` is not given (the device machines that
  run the GPU proof kit collect what lands there).
"""

import os
from pathlib import Path


def triton_interpret() -> bool:
    """True when Triton kernels run under the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def backend_override() -> str | None:
    """The backend forced by FASTPEFT_BACKEND, or None."""
    value = os.environ.get("FASTPEFT_BACKEND", "").strip().lower()
    return value or None


def dropout_mask_mode() -> str:
    """FASTPEFT_DROPOUT_MASK ("bits" when unset); any other value raises naming it."""
    value = os.environ.get("FASTPEFT_DROPOUT_MASK", "").strip().lower() or "bits"
    if value not in ("bits", "regenerate"):
        raise ValueError(f"FASTPEFT_DROPOUT_MASK must be 'bits' or 'regenerate', got {value!r}")
    return value


ADAPTER_TILE_PRESETS = ("narrow", "wide")


def adapter_tiles() -> str:
    """FASTPEFT_ADAPTER_TILES ("narrow" when unset); any other value raises naming it."""
    value = os.environ.get("FASTPEFT_ADAPTER_TILES", "").strip().lower() or "narrow"
    if value not in ADAPTER_TILE_PRESETS:
        raise ValueError(
            f"FASTPEFT_ADAPTER_TILES must be one of {ADAPTER_TILE_PRESETS}, got {value!r}"
        )
    return value


def cpu_rule() -> bool:
    """FASTPEFT_CPU_RULE ("on" when unset); any other value than on/off raises naming it."""
    return _on_off("FASTPEFT_CPU_RULE")


def shared_input() -> bool:
    """FASTPEFT_SHARED_INPUT ("on" when unset); any other value than on/off raises naming it."""
    return _on_off("FASTPEFT_SHARED_INPUT")


def rank_term_tf32() -> bool:
    """FASTPEFT_RANK_TERM_TF32 ("on" when unset); any other value than on/off raises naming it."""
    return _on_off("FASTPEFT_RANK_TERM_TF32")


def _on_off(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower() or "on"
    if value not in ("on", "off"):
        raise ValueError(f"{name} must be 'on' or 'off', got {value!r}")
    return value == "on"


def bench_out_dir() -> str | None:
    """The folder named by OUT (bench's default output folder when set), or None."""
    value = os.environ.get("OUT", "").strip()
    return value or None


def static_cache_dir() -> Path:
    """Where the static suite caches its compiles and their inspection records."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "fastpeft" / "static"
