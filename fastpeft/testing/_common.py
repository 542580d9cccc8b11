"""What every tiny-model factory shares: special token ids, seeding, dtype casting, the Llama-style
text config and the arguments that set it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

# Special token ids used by the tiny models (the text vocabularies are tiny too).
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
_FIRST_TEXT_ID = 3


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for the block without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build(model_class, config, seed: int, dtype: torch.dtype, attn_implementation: str):
    """`model_class` from `config` with weights drawn under `seed`, then cast to `dtype`."""
    # Built in fp32 and then cast, so the same seed gives the same weights (up to rounding) in every
    # dtype: an fp32 and a bf16 copy of one tiny model can serve as reference and subject.
    with _seeded(seed):
        model = model_class._from_config(config, attn_implementation=attn_implementation)
    return model.to(dtype)


def _text_and_build(
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The text-model and build arguments every tiny factory takes (keyword only), with their one
    set of defaults: a Llama-style text model (GQA, intermediate 3·hidden unless given, ids 0/1/2
    pad/bos/eos) built in fp32 under ``seed`` and cast to ``dtype``.

    Returns ``(text, build)``: the text-config kwargs (:func:`_llama_text_kwargs`) and the keyword
    arguments of :func:`_build`.
    """
    text = _llama_text_kwargs(
        hidden_size, num_layers, vocab_size, num_heads, num_kv_heads, intermediate_size
    )
    return text, dict(seed=seed, dtype=dtype, attn_implementation=attn_implementation)


def _llama_text_kwargs(
    hidden_size: int,
    num_layers: int,
    vocab_size: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int | None,
) -> dict[str, Any]:
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size={hidden_size} must divide by num_heads={num_heads}, "
            f"which must divide by num_kv_heads={num_kv_heads}"
        )
    return dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        vocab_size=vocab_size,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size or 3 * hidden_size,
        max_position_embeddings=2048,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=False,
    )
