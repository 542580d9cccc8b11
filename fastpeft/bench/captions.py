"""A synthetic image-caption dataset that a model can actually learn (no downloads).

Each image is noise with one bright square of one of 4 colours in one of 4 quadrants; its caption
names the colour and the quadrant with dedicated tokens, after a fixed random prompt. Samples are
`[bos, <image> × n_img, prompt..., colour, quadrant, eos]`; only the caption (colour, quadrant,
eos) carries labels, as in LLaVA's instruction tuning.
"""

import torch

COLOURS = ((1.0, -1.0, -1.0), (-1.0, 1.0, -1.0), (-1.0, -1.0, 1.0), (1.0, 1.0, -1.0))
_COLOUR_TOKEN, _QUADRANT_TOKEN, _PROMPT_TOKEN = 10, 20, 30


def caption_scenes(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`n` seeded scenes: colour index [n] (into COLOURS), quadrant index [n] (0 top-left,
    1 top-right, 2 bottom-left, 3 bottom-right) and fp32 pixels [n, 3, size, size] (noise of
    std 0.3 around 0, the square's channels shifted by ±1)."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.randint(0, len(COLOURS), (n,), generator=g)
    quadrant = torch.randint(0, 4, (n,), generator=g)
    pixels = 0.3 * torch.randn(n, 3, size, size, generator=g)
    half = size // 2
    for b in range(n):
        top, left = (quadrant[b] // 2) * half, (quadrant[b] % 2) * half
        rgb = torch.tensor(COLOURS[colour[b]]).view(3, 1, 1)
        pixels[b, :, top : top + half, left : left + half] += rgb
    return colour, quadrant, pixels


def caption_batch(config, batch_size: int, prompt_len: int, seed: int) -> dict[str, torch.Tensor]:
    """One batch for a LLaVA `config`: input_ids, attention_mask, labels, pixel_values (fp32)."""
    vision = config.vision_config
    size, n_img = vision.image_size, (vision.image_size // vision.patch_size) ** 2
    vocab = config.text_config.vocab_size
    if vocab <= _PROMPT_TOKEN + 2:
        raise ValueError(f"vocab_size={vocab} too small for the caption tokens")
    colour, quadrant, pixels = caption_scenes(batch_size, size, seed)
    # One fixed prompt for the whole dataset (seed-independent), like an instruction template.
    prompt = torch.randint(_PROMPT_TOKEN, vocab - 1, (prompt_len,), generator=torch.Generator())
    caption = torch.stack([_COLOUR_TOKEN + colour, _QUADRANT_TOKEN + quadrant], dim=1)
    ids = torch.cat(
        [
            torch.full((batch_size, 1), config.text_config.bos_token_id),
            torch.full((batch_size, n_img), config.image_token_id),
            prompt.expand(batch_size, -1),
            caption,
            torch.full((batch_size, 1), config.text_config.eos_token_id),
        ],
        dim=1,
    )
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values": pixels,
    }
