"""The synthetic caption set as chats: TRL's vision-language format, built locally.

Rows are ``{"messages": [user turn with an image and a question, assistant turn with the
caption], "images": [PIL image]}``, the conversational format TRL's ``SFTTrainer`` takes for
vision-language models (its collator renders the chat with the processor and feeds the images to
it). The scenes are those of ``fastpeft.bench.captions`` (one coloured square in one quadrant, in
noise), so a model can learn the captions.
"""

from __future__ import annotations

from typing import Any

COLOUR_WORDS = ("red", "green", "blue", "yellow")  # in the order of bench.captions.COLOURS
QUADRANT_WORDS = ("top-left", "top-right", "bottom-left", "bottom-right")
QUESTION = "what colour and where ?"


def caption_chats(n: int, image_size: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` rows of seeded scenes of ``image_size`` pixels a side (see the module docstring);
    every word is in ``vlm_processors.CAPTION_WORDS``."""
    import torch
    from PIL import Image

    from ..bench.captions import caption_scenes

    if n < 1:
        raise ValueError(f"caption_chats: n must be >= 1, got {n}")
    colour, quadrant, pixels = caption_scenes(n, image_size, seed)
    # [-1, 1] scene values to 8-bit RGB; the tiny processors normalise with mean = std = 0.5.
    rgb = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    rows = []
    for i in range(n):
        image = Image.fromarray(rgb[i].permute(1, 2, 0).contiguous().numpy())
        caption = f"{COLOUR_WORDS[colour[i]]} {QUADRANT_WORDS[quadrant[i]]}"
        rows.append(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": QUESTION}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": caption}]},
                ],
                "images": [image],
            }
        )
    return rows
