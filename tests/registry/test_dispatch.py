"""The one dispatcher: one vocabulary for every op, argument > FASTPEFT_BACKEND > auto, cached
auto decisions, and limits that belong to implementations."""

import pytest
import torch
import torch.nn as nn

import fastpeft
from fastpeft import dispatch, registry
from fastpeft.ops import _counters

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _lora_args(rank: int = 4):
    torch.manual_seed(0)
    return (
        torch.randn(6, 8), torch.randn(5, 8), torch.randn(5),
        torch.randn(rank, 8, requires_grad=True), torch.randn(5, rank, requires_grad=True), 0.5,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "ia3", "adapter", "adapter_pair", "spider"])
def test_every_method_rejects_an_unknown_backend_with_the_same_vocabulary(method):
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'triton'"):
        dispatch.resolve(method, "fast", CPU)


def test_an_op_asked_for_a_backend_it_lacks_says_which_it_has():
    with pytest.raises(ValueError, match=r"backend='cuda': fastpeft LoRA has no cuda impl.*torch"):
        fastpeft.lora_linear(*_lora_args(), backend="cuda")


def test_fastpeft_backend_cuda_pins_spider_and_leaves_lora_on_auto(monkeypatch):
    # "cuda" is a SPIDER backend only: every LoRA call must keep working under it.
    monkeypatch.setenv("FASTPEFT_BACKEND", "cuda")
    _counters.reset()
    y = fastpeft.lora_linear(*_lora_args())
    y.sum().backward()
    assert _counters.launches["lora_fwd:torch"] == 1 and _counters.launches["lora_bwd:torch"] == 1
    with pytest.raises(RuntimeError, match="FASTPEFT_BACKEND='cuda': it runs on cuda tensors"):
        fastpeft.Spider([nn.Parameter(torch.ones(3))])


def test_fastpeft_backend_torch_pins_every_method(monkeypatch):
    monkeypatch.setenv("FASTPEFT_BACKEND", "torch")
    for method in ("lora", "ia3", "adapter", "adapter_pair", "spider"):
        assert dispatch.resolve(method, "auto", CPU) == "torch"
    assert fastpeft.Spider([nn.Parameter(torch.ones(3))]).backends == ["torch"]


def test_an_argument_beats_the_environment(monkeypatch):
    monkeypatch.setenv("FASTPEFT_BACKEND", "torch")
    assert dispatch.resolve("spider", "cpp", CPU) == "cpp"


def test_a_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("FASTPEFT_BACKEND", "fast")
    with pytest.raises(ValueError, match="environment variable FASTPEFT_BACKEND must be one of"):
        fastpeft.lora_linear(*_lora_args())


def test_auto_decisions_are_cached_per_method_device_dtype_and_sizes(monkeypatch):
    monkeypatch.delenv("FASTPEFT_BACKEND", raising=False)
    dispatch.clear_decisions()
    assert dispatch.resolve("lora", "auto", CPU, torch.float32, {"rank": 8}) == "torch"
    assert dispatch.resolve("lora", "auto", CPU, torch.float32, {"rank": 8}) == "torch"
    key = ("lora", "cpu", torch.float32, (("rank", 8),), (), ())
    assert dispatch.decisions() == {key: "torch"}
    # The problem size keys the decision by its power-of-two bucket (a batch's tokens vary).
    for tokens in (3000, 4096, 2049):
        dispatch.resolve("lora", "auto", CPU, torch.float32, {"rank": 8}, shape=(tokens, 64, 64))
    assert (
        "lora",
        "cpu",
        torch.float32,
        (("rank", 8),),
        (),
        (4096, 64, 64),
    ) in dispatch.decisions()
    assert len(dispatch.decisions()) == 2
    dispatch.clear_decisions()
    assert dispatch.decisions() == {}


def test_auto_on_cuda_takes_triton_within_its_rank_limit_and_torch_beyond(monkeypatch):
    # Decided from the registry's capabilities alone: no GPU is needed to ask.
    monkeypatch.delenv("FASTPEFT_BACKEND", raising=False)
    assert dispatch.resolve("lora", "auto", CUDA, torch.bfloat16, {"rank": 256}) == "triton"
    assert dispatch.resolve("lora", "auto", CUDA, torch.bfloat16, {"rank": 300}) == "torch"
    assert dispatch.resolve("adapter", "auto", CUDA, sizes={"bottleneck": 2048}) == "torch"


def test_auto_never_picks_the_triton_interpreter_on_a_cpu(monkeypatch):
    monkeypatch.delenv("FASTPEFT_BACKEND", raising=False)
    for method in ("lora", "ia3", "adapter", "adapter_pair"):
        assert dispatch.resolve(method, "auto", CPU) == "torch"


def test_explicit_limits_and_dtypes_are_argument_errors():
    with pytest.raises(ValueError, match="backend='triton': it supports rank <= 256, got 300"):
        dispatch.resolve("lora", "triton", CPU, sizes={"rank": 300})
    with pytest.raises(ValueError, match="triton.*does not support torch.float64"):
        fastpeft.Spider([nn.Parameter(torch.ones(3, dtype=torch.float64))], backend="triton")


def test_the_cpu_path_runs_ranks_the_triton_kernels_cannot():
    args = _lora_args(rank=300)
    y = fastpeft.lora_linear(*args, backend="torch")
    want = args[0] @ args[1].t() + args[2] + 0.5 * (args[0] @ args[3].t()) @ args[4].t()
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-4)


def test_a_race_times_each_contender_on_the_shape_and_keeps_the_fastest():
    # The race "auto" runs on a GPU for LoRA (fused "triton" against "hybrid"), run here for real
    # on CPU tensors (Triton interpreted): both paths are timed, the faster is returned, and the
    # timings are kept beside the decision.
    dispatch.clear_decisions()
    spec = registry.get("lora")
    assert spec.raced == ("triton", "hybrid")
    key = ("lora", "cpu", torch.float32, (("rank", 8),), (torch.float32, True), (64, 32, 32))
    chosen = dispatch.race(
        spec, ["triton", "hybrid"], CPU, torch.float32, {"rank": 8}, (40, 24, 32),
        (torch.float32, True), key,
    )  # fmt: skip
    seconds = dispatch.races()[key]
    assert set(seconds) == {"triton", "hybrid"} and all(s > 0 for s in seconds.values())
    assert chosen == min(seconds, key=seconds.get)
    # The patch report shows the choice and its timings.
    (shown,) = fastpeft.PatchReport.choices()
    assert shown["chosen"] == chosen and shown["shape"] == [64, 32, 32]
    assert shown["seconds"] == seconds and shown["sizes"] == {"rank": 8}
    dispatch.clear_decisions()
    assert dispatch.races() == {}


@pytest.mark.parametrize("feedforward", [False, True], ids=["out", "ff"])
def test_ia3_races_its_fused_and_hybrid_paths(feedforward):
    # IA3's race, as LoRA's: both paths really run (interpreted here) and the faster is kept.
    dispatch.clear_decisions()
    spec = registry.get("ia3")
    assert spec.raced == ("triton", "hybrid")
    variant = (torch.float32, feedforward)
    key = ("ia3", "cpu", torch.float32, (), variant, (64, 32, 32))
    chosen = dispatch.race(
        spec, ["triton", "hybrid"], CPU, torch.float32, {}, (40, 24, 32), variant, key
    )
    seconds = dispatch.races()[key]
    assert set(seconds) == {"triton", "hybrid"} and all(s > 0 for s in seconds.values())
    assert chosen == min(seconds, key=seconds.get)
    dispatch.clear_decisions()
