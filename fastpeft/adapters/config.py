"""`AdapterConfig`: what bottleneck adapters to insert and where (Paper A's defaults)."""

import math
from dataclasses import asdict, dataclass, field

ACTIVATION_NAMES = ("tanh", "relu", "gelu", "silu")
INIT_SCHEMES = ("bert", "lora")
_DTYPES = ("float32", "float16", "bfloat16", None)


def _as_names(value, argument: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    names = tuple(value)
    if not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"{argument} must be a sequence of module names, got {value!r}")
    return names


@dataclass
class AdapterConfig:
    """Bottleneck adapters A(z) = scaling · W_up · act(W_down · drop(z)) (SPEC §3).

    - ``bottleneck_size`` H, ``non_linearity`` (tanh, relu, gelu, silu), ``dropout`` on the adapter
      input, ``scaling``; ``init``: "bert" (both weights N(0, 0.02²): not the identity at init) or
      "lora" (W_down N(0, 0.02²), W_up = 0: the identity at init).
    - Placement, by module name inside each decoder layer of the language model (a name matches a
      layer's submodule whose dotted path ends with it): ``pre_modules`` see z + A(z) instead of
      their input z (one independent adapter per module), ``post_modules`` output y + A(y),
      ``parallel_modules`` output W x + A(x). Defaults reproduce Paper A's LLaVA placement: two
      pre-adapters on the gate/up inputs, one post-adapter on down_proj's output.
    - ``layers``: decoder-layer indices to adapt (None: all).
    - ``dtype``: adapter weight dtype ("float32" by default, like PEFT's fp32 adapters on a bf16
      base; None: the adapted module's dtype).
    """

    bottleneck_size: int = 256
    non_linearity: str = "tanh"
    dropout: float = 0.05
    scaling: float = 1.0
    init: str = "bert"
    pre_modules: tuple[str, ...] = ("gate_proj", "up_proj")
    post_modules: tuple[str, ...] = ("down_proj",)
    parallel_modules: tuple[str, ...] = ()
    layers: tuple[int, ...] | None = None
    dtype: str | None = "float32"
    placements: tuple[str, ...] = field(default=(), repr=False)  # filled by add_adapters

    def __post_init__(self) -> None:
        size = self.bottleneck_size
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"bottleneck_size must be a positive int, got {size!r}")
        if self.non_linearity not in ACTIVATION_NAMES:
            raise ValueError(
                f"non_linearity must be one of {ACTIVATION_NAMES}, got {self.non_linearity!r}"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.scaling, (int, float)) or not math.isfinite(self.scaling):
            raise ValueError(f"scaling must be a finite number, got {self.scaling!r}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {self.init!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        self.pre_modules = _as_names(self.pre_modules, "pre_modules")
        self.post_modules = _as_names(self.post_modules, "post_modules")
        self.parallel_modules = _as_names(self.parallel_modules, "parallel_modules")
        if not (self.pre_modules or self.post_modules or self.parallel_modules):
            raise ValueError("pre_modules, post_modules and parallel_modules are all empty")
        if self.layers is not None:
            layers = tuple(self.layers)
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
                raise TypeError(f"layers must be a sequence of ints or None, got {self.layers!r}")
            self.layers = layers
        self.placements = tuple(self.placements)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"adapter config has unknown fields {unknown}")
        return cls(**data)
