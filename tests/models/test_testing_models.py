"""Tests of fastpeft.testing: the tiny HF models, their batches, target selection, LoRA wrapping and
the tolerance helpers."""

import pytest
import torch

from fastpeft import testing as T

# PEFT 0.21 calls a transformers 5.x method that transformers marks deprecated; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

PROJ = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
]

BUILDERS = {
    "llama": (T.tiny_llama, T.causal_lm_batch, "model.layers"),
    "llava": (T.tiny_llava, T.llava_batch, "model.language_model.layers"),
    "qwen2_vl": (T.tiny_qwen2_vl, T.qwen2_vl_batch, "model.language_model.layers"),
}


def _expected_names(prefix: str, num_layers: int) -> set[str]:
    return {f"{prefix}.{i}.{p}" for i in range(num_layers) for p in PROJ}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_tiny_model_forward_backward(kind):
    build, make_batch, _ = BUILDERS[kind]
    model = build()
    assert model.training  # returned as constructed
    batch = make_batch(model, batch_size=2, seq_len=16)
    out = model(**batch)
    assert out.logits.shape == (2, 16, 128)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    lm_grads = [p.grad for n, p in model.named_parameters() if "layers.0.self_attn.q_proj" in n]
    assert lm_grads and all(g is not None and torch.isfinite(g).all() for g in lm_grads)


def test_seeded_build_is_deterministic_and_leaves_rng_alone():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a, b = T.tiny_llama(seed=3), T.tiny_llama(seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = T.tiny_llama(seed=4)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_low_precision_build_matches_fp32_weights():
    a = T.tiny_llava(dtype=torch.float32)
    b = T.tiny_llava(dtype=torch.bfloat16)
    assert b.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(a.lm_head.weight.to(torch.bfloat16), b.lm_head.weight)
    batch = T.llava_batch(b)
    assert batch["pixel_values"].dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(b(**batch).loss)


def test_llava_batch_layout():
    model = T.tiny_llava()
    n_img = T.llava_image_tokens(model.config)
    assert n_img == (28 // 14) ** 2 == 4
    batch = T.llava_batch(model, batch_size=3, seq_len=10, seed=1)
    is_img = batch["input_ids"] == model.config.image_token_id
    assert is_img.sum(1).tolist() == [n_img] * 3
    assert batch["pixel_values"].shape == (3, 3, 28, 28)
    assert (batch["labels"][is_img] == -100).all()
    assert torch.equal(batch["labels"][~is_img], batch["input_ids"][~is_img])
    with pytest.raises(ValueError):
        T.llava_batch(model, seq_len=5)


def test_qwen2_vl_batch_layout_and_mixed_grids():
    model = T.tiny_qwen2_vl()
    batch = T.qwen2_vl_batch(model, batch_size=2, seq_len=12, grid_hw=[(4, 4), (2, 6)])
    is_img = batch["input_ids"] == model.config.image_token_id
    assert is_img.sum(1).tolist() == [4, 3]  # h*w / merge**2
    assert batch["pixel_values"].shape == (16 + 12, 3 * 2 * 14 * 14)
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 2, 6]]
    assert torch.equal(batch["mm_token_type_ids"].bool(), is_img)
    assert (batch["labels"][is_img] == -100).all()
    model.eval()
    with torch.no_grad():
        base = model(**batch).logits
        shifted = model(**{**batch, "pixel_values": batch["pixel_values"] + 1}).logits
    # The image really feeds the language model: positions after the image change.
    assert (base[:, -1] - shifted[:, -1]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["llava", "qwen2_vl", "llama"])
def test_targets_are_exactly_the_language_model_linears(kind):
    build, _, prefix = BUILDERS[kind]
    model = build(num_layers=2)
    names = T.language_model_lora_targets(model)
    assert len(names) == len(set(names)) == 14
    assert set(names) == _expected_names(prefix, 2)
    for n in names:
        assert not any(s in n for s in ("vision_tower", "visual", "projector", "merger", "lm_head"))
        assert isinstance(model.get_submodule(n), torch.nn.Linear)
    attn = T.language_model_lora_targets(model, part="attn")
    mlp = T.language_model_lora_targets(model, part="mlp")
    assert set(attn) == {n for n in names if ".self_attn." in n} and len(attn) == 8
    assert set(mlp) == {n for n in names if ".mlp." in n} and len(mlp) == 6


def test_vision_tower_has_look_alike_linears():
    # Why suffix targets like "q_proj" are a bug: the CLIP vision tower has q_proj too.
    model = T.tiny_llava()
    all_q = [n for n, _ in model.named_modules() if n.endswith("q_proj")]
    targets = T.language_model_lora_targets(model)
    assert any("vision_tower" in n for n in all_q)
    assert set(all_q) - set(targets) == {n for n in all_q if "vision_tower" in n}


# 21 targets (3 layers) exercise PEFT's shortening of long target lists (>= 20 names).
@pytest.mark.parametrize("kind,num_layers", [("llava", 2), ("qwen2_vl", 2), ("llava", 3)])
def test_make_lora_model_wraps_exactly_the_targets(kind, num_layers):
    from peft.tuners.lora import LoraLayer

    build, make_batch, prefix = BUILDERS[kind]
    model = build(num_layers=num_layers)
    peft_model = T.make_lora_model(model, r=4, alpha=8, seed=5)
    wrapped = {
        n.removeprefix("base_model.model.")
        for n, m in peft_model.named_modules()
        if isinstance(m, LoraLayer)
    }
    assert wrapped == _expected_names(prefix, num_layers)
    # On the wrapped model the tuner layers stand in for the linears they replaced.
    assert set(T.language_model_lora_targets(peft_model)) == wrapped
    assert set(T.language_model_linear_names(peft_model)) == {
        f"base_model.model.{n}" for n in wrapped
    }
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    lora_b = [p for n, p in peft_model.named_parameters() if ".lora_B." in n]
    assert len(lora_b) == len(wrapped)
    assert all(p.abs().max() > 0 for p in lora_b)
    batch = make_batch(peft_model)
    peft_model.eval()
    with torch.no_grad():
        with_lora = peft_model(**batch).logits
        with peft_model.disable_adapter():
            without = peft_model(**batch).logits
    assert (with_lora - without).abs().max() > 1e-3


def test_make_lora_model_is_seeded():
    a = T.make_lora_model(T.tiny_llama(), seed=7)
    b = T.make_lora_model(T.tiny_llama(), seed=7)
    pa = {n: p for n, p in a.named_parameters() if "lora_" in n}
    pb = {n: p for n, p in b.named_parameters() if "lora_" in n}
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def test_make_lora_model_zero_init_when_asked():
    pm = T.make_lora_model(T.tiny_llama(), init_nonzero=False)
    assert all((p == 0).all() for n, p in pm.named_parameters() if ".lora_B." in n)


# ------------------------------------------------------------------------------ tolerances


def test_assert_close_fp32():
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    T.assert_close_fp32(x, x.clone())
    T.assert_close_fp32(x * (1 + 5e-6), x)
    with pytest.raises(AssertionError, match="max abs err"):
        T.assert_close_fp32(x * (1 + 1e-3), x, name="y")
    y = x.clone()
    y[3, 4] += 1e-3
    with pytest.raises(AssertionError, match="y: 1/2048 elements"):
        T.assert_close_fp32(y, x, name="y")
    with pytest.raises(AssertionError, match="shape"):
        T.assert_close_fp32(x, x[:10])
    z = x.clone()
    z[0, 0] = float("nan")
    with pytest.raises(AssertionError, match="finiteness"):
        T.assert_close_fp32(z, x)
    T.assert_close_fp32(z, z.clone())  # NaN in the same place is fine


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_assert_within_dtype_budget(dtype):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(48, 40, generator=g), torch.randn(40, 24, generator=g)
    ref32 = a @ b
    ref_lp = (a.to(dtype) @ b.to(dtype)).float()
    T.assert_within_dtype_budget(ref_lp.to(dtype), ref32, ref_lp)
    # Twice PyTorch's own error is allowed; far more is not.
    torch_err = (ref_lp - ref32).abs().max()
    bad = ref32 + 4 * torch_err + 4 * T.DTYPE_FLOORS[dtype]
    with pytest.raises(AssertionError, match="exceeds budget"):
        T.assert_within_dtype_budget(bad.to(dtype), ref32, ref_lp, name="gemm")
    # The floor alone covers an exact same-dtype reference.
    floor = T.DTYPE_FLOORS[dtype]
    T.assert_within_dtype_budget(ref32 + 0.5 * floor, ref32, ref32, floor=floor)
    with pytest.raises(AssertionError, match="floor"):
        T.assert_within_dtype_budget(ref32 + 2 * floor, ref32, ref32, floor=floor)
    with pytest.raises(AssertionError, match="shape"):
        T.assert_within_dtype_budget(ref_lp, ref32, ref_lp[:4])
