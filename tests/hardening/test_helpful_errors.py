"""Mistakes a user makes get a message naming the argument or file and saying how to fix it:
patch() on a model it cannot patch, Spider on something that is not a model, load_adapters on a
missing or damaged checkpoint (the model left untouched), spider.step() without gradients."""

import warnings

import pytest
import torch

import fastpeft
from fastpeft import testing
from fastpeft.spider import MagnitudeMask, Spider

H = 8  # bottleneck size for the adapter checkpoints (hidden 64)


def _patch_warnings(model) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastpeft.patch(model, backend="torch")
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _patched_nothing(messages: list[str]) -> list[str]:
    return [m for m in messages if "fastpeft.patch patched nothing" in m]


# --- patch() that patches nothing ------------------------------------------------------------


def test_patch_warns_when_the_model_has_nothing_to_patch():
    with pytest.warns(UserWarning, match="patched nothing") as record:
        report = fastpeft.patch(testing.tiny_llama(num_layers=1), backend="torch")
    assert report.patched == [] and report.skipped == {}
    (message,) = _patched_nothing([str(w.message) for w in record])
    for looked_for in ("PEFT LoRA and IA3 Linear layers", "fastpeft.add_adapters", "prefix tuning"):
        assert looked_for in message, message
    assert "after get_peft_model" in message


def test_patch_warns_with_the_reasons_when_every_layer_is_skipped():
    model = testing.make_lora_model(testing.tiny_llama(num_layers=1), use_dora=True)
    (message,) = _patched_nothing(_patch_warnings(model))
    assert "all 7 layers it found keep their own forward" in message
    assert "DoraLinearVariant" in message and "report.skipped" in message


def test_patch_does_not_warn_when_it_patches_something():
    model = testing.make_lora_model(testing.tiny_llama(num_layers=1))
    assert _patched_nothing(_patch_warnings(model)) == []
    # add_adapters(fused=True) patches through patch_adapters, which never warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = fastpeft.AdapterConfig(bottleneck_size=H, dropout=0.0)
        fastpeft.add_adapters(testing.tiny_llama(num_layers=1), config)


# --- Spider / MagnitudeMask arguments ---------------------------------------------------------


@pytest.mark.parametrize("owner", [Spider, MagnitudeMask], ids=["Spider", "MagnitudeMask"])
@pytest.mark.parametrize(
    "argument, pattern",
    [
        ("model", r"model_or_params is the string 'model', not a model: .*torch.nn.Module"),
        (torch.ones(3, requires_grad=True), r"single tensor: .*\[tensor\]"),
        ({"w": torch.ones(3, requires_grad=True)}, r"is a mapping \(dict\): .*\.items\(\)"),
        (42, r"model_or_params has type int: .*torch.nn.Module"),
        ([("w", torch.ones(3), 1)], r"model_or_params\[0\] is a tuple of 3"),
        ([torch.ones(3), "w"], r"parameter '1' has type str, not a tensor"),
    ],
    ids=["str", "tensor", "dict", "int", "triple", "str-item"],
)
def test_spider_names_its_argument_and_what_it_accepts(owner, argument, pattern):
    with pytest.raises(TypeError, match=pattern) as info:
        owner(argument)
    assert str(info.value).startswith(f"{owner.__name__}: ")


def test_spider_still_takes_modules_tensors_and_pairs():
    model = testing.tiny_llama(num_layers=1)
    named = list(model.named_parameters())
    assert Spider(model).names == Spider(iter(named)).names == [n for n, _ in named]
    assert len(Spider([p for _, p in named]).params) == len(named)
    assert MagnitudeMask(dict(named).items()).names == [n for n, _ in named]


# --- load_adapters on a missing or damaged checkpoint -----------------------------------------


def _saved_adapters(directory):
    model = testing.tiny_llama(num_layers=2)
    fastpeft.add_adapters(model, fastpeft.AdapterConfig(bottleneck_size=H, dropout=0.0))
    fastpeft.save_adapters(model, directory)
    return directory


def test_load_adapters_from_a_missing_directory(tmp_path):
    missing = tmp_path / "nonexistent"
    with pytest.raises(FileNotFoundError, match="does not exist: pass the directory save_adapters"):
        fastpeft.load_adapters(testing.tiny_llama(num_layers=2), missing)


def test_load_adapters_from_a_file(tmp_path):
    directory = _saved_adapters(tmp_path / "ckpt")
    weights = directory / "adapter_model.safetensors"
    with pytest.raises(NotADirectoryError, match="is a file, not an adapter directory") as info:
        fastpeft.load_adapters(testing.tiny_llama(num_layers=2), weights)
    assert f"pass its folder, {str(directory)!r}" in str(info.value)
    other = tmp_path / "notes.txt"
    other.write_text("not adapters")
    with pytest.raises(NotADirectoryError, match="pass the directory that holds"):
        fastpeft.load_adapters(testing.tiny_llama(num_layers=2), other)


def test_load_adapters_from_an_unrelated_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no adapter_model.safetensors"):
        fastpeft.load_adapters(testing.tiny_llama(num_layers=2), tmp_path)


def _snapshot(model) -> dict:
    """Everything a load could leave behind: values, names, module types, hooks, flags, attrs."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "hooks": [
            (n, len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules()
        ],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "attrs": [(n, sorted(m.__dict__)) for n, m in model.named_modules()],
    }


def _assert_untouched(model, before: dict) -> None:
    after = _snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    for part in ("modules", "hooks", "requires_grad", "attrs"):
        assert after[part] == before[part], part


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overwrite_header(path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")  # a header length past the end of the file
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _overwrite_header], ids=["truncated", "header"])
def test_damaged_weights_name_the_file_and_leave_the_model_untouched(tmp_path, damage):
    directory = _saved_adapters(tmp_path / "ckpt")
    weights = directory / "adapter_model.safetensors"
    damage(weights)
    model = testing.tiny_llama(num_layers=2)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="cannot read the adapter weights in") as info:
        fastpeft.load_adapters(model, directory)
    message = str(info.value)
    assert str(weights) in message and "save the adapters again with save_adapters" in message
    assert type(info.value.__cause__).__name__ == "SafetensorError"
    _assert_untouched(model, before)


def test_damaged_config_names_the_file(tmp_path):
    directory = _saved_adapters(tmp_path / "ckpt")
    config = directory / "adapter_config.json"
    config.write_text(config.read_text()[:40])
    model = testing.tiny_llama(num_layers=2)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="is not valid JSON") as info:
        fastpeft.load_adapters(model, directory)
    assert str(config) in str(info.value)
    _assert_untouched(model, before)


def test_weights_for_another_model_leave_the_model_untouched(tmp_path):
    # This failure comes after the adapters were added: they must be taken out again completely.
    directory = _saved_adapters(tmp_path / "ckpt")
    model = testing.tiny_llama(num_layers=2, hidden_size=32)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="saved shape"):
        fastpeft.load_adapters(model, directory)
    _assert_untouched(model, before)


# --- spider.step() without gradients ----------------------------------------------------------


def _state_tensors(spider) -> list[torch.Tensor]:
    state = spider.state_dict()
    return [t.clone() for key in ("theta0", "G", "masks") for t in state.get(key, [])]


@pytest.mark.parametrize("owner", [Spider, MagnitudeMask], ids=["Spider", "MagnitudeMask"])
def test_step_without_gradients_warns_and_changes_nothing(owner):
    model = testing.tiny_llama(num_layers=1)
    spider = owner(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # an update a step would partly undo, if it did anything
    before = [p.detach().clone() for p in model.parameters()]
    state = _state_tensors(spider)

    with pytest.warns(UserWarning, match=rf"{owner.__name__}\.step\(\): none of the \d+ tracked"):
        spider.step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(_state_tensors(spider), state, strict=True))
    assert spider.steps == 0

    # With gradients it steps, silently, and moves the parameters.
    model(**testing.causal_lm_batch(model)).loss.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spider.step()
    assert spider.steps == 1
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
