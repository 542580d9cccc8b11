"""Paper A's configurations by name: `paper_config`, `paper_setup` and the learning rates it used.

SPEC §1–§5. Each method is applied to the language model only, as in the study:
- LoRA r=128, alpha=256, dropout 0.05 on the chosen linears (all seven per layer for "both");
- IA3 on k_proj, v_proj (output scaling) and down_proj (input scaling: PEFT feed-forward);
- bottleneck adapters of size 256, tanh, dropout 0.05, "bert" init: pre-adapters on the gate/up
  inputs and a post-adapter on down_proj (the MLP placement), a post-adapter on o_proj (attention);
- prefix tuning with 20 virtual tokens and the prefix projection (hidden = the LLM's hidden size).
The vision tower stays frozen; the connector is trained in full when `connector=True`, at its own
learning rate.
"""

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..adapters import AdapterConfig, add_adapters
from ..adapters.placement import has_adapters
from ..patch import PatchReport, patch
from . import parts

PAPER_METHODS = ("lora", "ia3", "adapter", "prefix")
PAPER_A_LEARNING_RATES = {"lora": 2e-4, "ia3": 2e-4, "adapter": 5e-5, "prefix": 1e-5}
PAPER_A_CONNECTOR_LR = 2e-5
PREFIX_TOKENS = 20


@dataclass
class PaperSetup:
    """A model prepared like Paper A, with the learning rates the study used for it.

    `model` is a PeftModel (lora, ia3, prefix) or the base model carrying fastpeft adapters."""

    model: nn.Module
    method: str
    location: str
    connector: bool
    lr: float
    connector_lr: float
    patch_report: PatchReport

    def param_groups(self) -> list[dict]:
        """Optimizer groups: the method's parameters at `lr`, the connector at `connector_lr`."""
        return parts.param_groups(self.model, lr=self.lr, connector_lr=self.connector_lr)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def optimizer(self, **adamw_kwargs) -> torch.optim.AdamW:
        """AdamW over `param_groups()` (weight decay 0 unless given, as in LLaVA's recipe)."""
        adamw_kwargs.setdefault("weight_decay", 0.0)
        return torch.optim.AdamW(self.param_groups(), **adamw_kwargs)


def _check_method_location(method: str, location: str) -> None:
    if method not in PAPER_METHODS:
        raise ValueError(f"method must be one of {PAPER_METHODS}, got {method!r}")
    if location not in parts.LOCATIONS:
        raise ValueError(f"location must be one of {parts.LOCATIONS}, got {location!r}")
    if method == "prefix" and location != "both":
        raise ValueError(
            f"location={location!r} does not apply to prefix tuning, which prepends keys and "
            "values to every attention layer; use location='both'"
        )


def _has_connector(model: nn.Module) -> bool:
    try:
        parts.connector(model)
    except ValueError:
        return False
    return True


def _adapter_config(location: str) -> AdapterConfig:
    leaves = parts.leaf_names("adapter", location)
    pre = tuple(n for n in leaves if n in ("gate_proj", "up_proj"))
    post = tuple(n for n in leaves if n not in pre)
    return AdapterConfig(
        bottleneck_size=256,
        non_linearity="tanh",
        dropout=0.05,
        scaling=1.0,
        init="bert",
        pre_modules=pre,
        post_modules=post,
    )


def paper_config(model: nn.Module, method: str, location: str = "both"):
    """Paper A's configuration of `method` at `location` for `model`: a PEFT `LoraConfig`,
    `IA3Config` or `PrefixTuningConfig`, or a fastpeft `AdapterConfig` for "adapter"."""
    _check_method_location(method, location)
    from peft import IA3Config, LoraConfig, PrefixTuningConfig

    if method == "lora":
        return LoraConfig(
            task_type="CAUSAL_LM",
            r=128,
            lora_alpha=256,
            lora_dropout=0.05,
            target_modules=parts.target_modules(model, "lora", location),
        )
    if method == "ia3":
        return IA3Config(
            task_type="CAUSAL_LM",
            target_modules=parts.target_modules(model, "ia3", location),
            feedforward_modules=parts.ia3_feedforward_modules(model, location),
        )
    if method == "adapter":
        return _adapter_config(location)
    text_config = model.config.get_text_config()
    return PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=PREFIX_TOKENS,
        prefix_projection=True,
        encoder_hidden_size=text_config.hidden_size,
    )


def paper_setup(
    model: nn.Module,
    method: str,
    *,
    connector: bool = True,
    location: str = "both",
    backend: str = "auto",
    autocast_adapter_dtype: bool = True,
) -> PaperSetup:
    """Prepare `model` (an unwrapped HF MLLM) like Paper A for `method` ("lora", "ia3",
    "adapter", "prefix") at `location` ("attention", "mlp", "both"), make the connector trainable
    (`connector=True`, Paper A's default) or frozen, and patch it with fastpeft (`backend`). A
    text-only LLM works with `connector=False`. `autocast_adapter_dtype` is PEFT's: True keeps
    the trained weights in fp32 on a 16-bit base (PEFT's default, also for fastpeft adapters);
    False keeps them in the base dtype.

    Returns a `PaperSetup` holding the prepared model (a PeftModel, or `model` itself with fastpeft
    adapters), the patch report, and the study's learning rates for the method and the connector.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if hasattr(model, "peft_config") or has_adapters(model):
        raise ValueError(
            "model already carries PEFT or fastpeft adapters; paper_setup takes the base model"
        )
    if not isinstance(connector, bool):
        raise TypeError(f"connector must be a bool, got {type(connector).__name__}")
    config = paper_config(model, method, location)
    if connector:
        parts.connector(model)  # fail before changing anything when there is no connector
    if method == "adapter":
        config.dtype = "float32" if autocast_adapter_dtype else None
        prepared = add_adapters(model, config, fused=False)
    else:
        from peft import get_peft_model

        prepared = get_peft_model(model, config, autocast_adapter_dtype=autocast_adapter_dtype)
    if connector or _has_connector(prepared):
        parts.set_connector_trainable(prepared, connector)
    with warnings.catch_warnings():
        # Prefix tuning on a model without M-RoPE has nothing to patch by design (PEFT's own
        # path is right there); the returned patch_report says what was patched either way.
        if method == "prefix":
            warnings.filterwarnings("ignore", message="fastpeft.patch patched nothing")
        report = patch(prepared, backend=backend)
    return PaperSetup(
        model=prepared,
        method=method,
        location=location,
        connector=connector,
        lr=PAPER_A_LEARNING_RATES[method],
        connector_lr=PAPER_A_CONNECTOR_LR,
        patch_report=report,
    )
