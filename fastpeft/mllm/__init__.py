"""Multimodal LLMs: their parts found by structure, and Paper A's configuration space (SPEC §4–§5).

- `language_model`, `vision_tower`, `connector`: the parts of an HF MLLM;
- `target_modules`, `ia3_feedforward_modules`: PEFT targets inside the language model only;
- `set_connector_trainable`, `param_groups`: connector tuning at its own learning rate;
- `paper_config`, `paper_setup`: Paper A's configurations by name, patched with fastpeft.
"""

from .paper import (
    PAPER_A_CONNECTOR_LR,
    PAPER_A_LEARNING_RATES,
    PAPER_METHODS,
    PaperSetup,
    paper_config,
    paper_setup,
)
from .parts import (
    LOCATIONS,
    METHODS,
    connector,
    ia3_feedforward_modules,
    language_model,
    param_groups,
    set_connector_trainable,
    target_modules,
    vision_tower,
)

__all__ = [
    "LOCATIONS",
    "METHODS",
    "PAPER_A_CONNECTOR_LR",
    "PAPER_A_LEARNING_RATES",
    "PAPER_METHODS",
    "PaperSetup",
    "connector",
    "ia3_feedforward_modules",
    "language_model",
    "paper_config",
    "paper_setup",
    "param_groups",
    "set_connector_trainable",
    "target_modules",
    "vision_tower",
]
