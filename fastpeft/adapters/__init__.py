"""fastpeft's bottleneck adapters (Paper A's best PEFT method; PEFT has none)."""

from .config import AdapterConfig
from .io import load_adapters, save_adapters
from .modules import BottleneckAdapter
from .placement import add_adapters, remove_adapters

__all__ = [
    "AdapterConfig",
    "BottleneckAdapter",
    "add_adapters",
    "load_adapters",
    "remove_adapters",
    "save_adapters",
]
