"""The README's three training recipes (plain loop, HF Trainer, TRL SFTTrainer) run as written.

The README's ``<!-- recipe: NAME -->`` blocks are executed: ``common`` then each recipe, in a
fresh namespace holding what the README says they start from (``model``, ``processor``,
``dataset``), here a tiny random-weight LLaVA in bf16 (as the README loads its model), its
locally built processor and the synthetic caption chats. The TRL recipe runs under TRL's default
bf16 autocast. Each run must train on the fused path: every patched layer's calls fused, none
handed back to PEFT.
"""

import re
from pathlib import Path

import pytest
import torch

import fastpeft
from fastpeft import testing

from ..hardening.test_trainer import _fallbacks
from ..mllm.helpers import fused_calls

README = Path(__file__).resolve().parents[2] / "README.md"
datasets = pytest.importorskip("datasets")


def _recipes() -> dict[str, str]:
    blocks = re.findall(r"<!-- recipe: (\w+) -->\s*```python\n(.*?)```", README.read_text(), re.S)
    return dict(blocks)


def test_readme_has_the_recipes():
    assert sorted(_recipes()) == ["common", "loop", "trainer", "trl"]


@pytest.mark.parametrize("recipe", ["loop", "trainer", "trl"])
def test_recipe_trains_on_the_fused_path(recipe, tmp_path, monkeypatch, capsys):
    if recipe == "trl":
        pytest.importorskip("trl")
    monkeypatch.chdir(tmp_path)  # the recipes write their output directories here
    model = testing.tiny_llava(dtype=torch.bfloat16)  # loaded in bf16, as in the README
    rows = testing.caption_chats(8, testing.processor_image_size(model.config), seed=0)
    namespace = {
        "model": model,
        "processor": testing.tiny_processor(model),
        "dataset": datasets.Dataset.from_list(rows),
    }
    blocks = _recipes()
    exec(compile(blocks["common"], "README.md:common", "exec"), namespace)
    exec(compile(blocks[recipe], f"README.md:{recipe}", "exec"), namespace)

    trained = namespace["trainer"].model if "trainer" in namespace else namespace["model"]
    # Every LoRA layer of the language model (7 linears in each of the 2 layers) was patched,
    # and all of their calls took the fused path.
    assert len([m for m in trained.modules() if fastpeft.is_patched(m)]) == 14
    assert _fallbacks(trained) == {} and fused_calls(trained) > 0
    if recipe == "loop":
        assert "fastpeft: patched 14 LoRA modules" in capsys.readouterr().out
    else:
        (summary,) = [r for r in namespace["trainer"].state.log_history if "train_loss" in r]
        assert torch.isfinite(torch.tensor(summary["train_loss"]))
