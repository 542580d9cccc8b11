"""LLaVA-1.5-shaped models with random weights, built from local configs (no downloads).

"7b" is LLaVA-1.5-7B's shape: CLIP ViT-L/14 at 336 px (576 image tokens, features from the
second-to-last layer), a 2-layer GELU projector 1024→4096→4096, and a Llama-2-7B language model
(hidden 4096, 32 layers, 32 heads, MLP 11008, vocab 32000). "small" and "tiny" keep the layout at
CPU-friendly sizes. Weights are drawn directly on the target device in the target dtype.
"""

import torch
import torch.nn as nn

# name: (text hidden, layers, heads, kv heads, MLP, vocab, image px, patch, vision hidden,
#        vision layers, vision heads, vision MLP)
LLAVA_SIZES = {
    "tiny": (128, 2, 4, 4, 384, 512, 56, 14, 64, 2, 2, 128),
    "small": (512, 4, 8, 8, 1536, 2048, 112, 14, 128, 2, 4, 512),
    "7b": (4096, 32, 32, 32, 11008, 32000, 336, 14, 1024, 24, 16, 4096),
}


def llava_config(size: str):
    """A transformers `LlavaConfig` of the named size (see LLAVA_SIZES)."""
    from ..testing._common import _llama_text_kwargs
    from ..testing.llama_models import llava_config as make_config

    # "7b:8": the 7b shape cut to 8 decoder layers (what a time budget allows of a full step).
    name, _, cut = size.partition(":")
    if name not in LLAVA_SIZES or (cut and not (cut.isdigit() and int(cut) > 0)):
        raise ValueError(
            f"size must be one of {tuple(LLAVA_SIZES)} (or 'NAME:LAYERS'), got {size!r}"
        )
    d, layers, heads, kv, mlp, vocab, px, patch, vd, vlayers, vheads, vmlp = LLAVA_SIZES[name]
    layers = int(cut) if cut else layers
    text = _llama_text_kwargs(d, layers, vocab, heads, kv, mlp)
    text["max_position_embeddings"] = 4096
    return make_config(text, vd, vlayers, vheads, vmlp, image=px, patch=patch)


def build_llava(
    size: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> nn.Module:
    """A randomly initialised `LlavaForConditionalGeneration` of `size`, on `device` in `dtype`."""
    from transformers import LlavaForConditionalGeneration

    config = llava_config(size)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        if torch.device(device).type == "cuda":
            torch.cuda.manual_seed(seed)
        model = LlavaForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=attn_implementation
        )
    return model
