"""Where e2e providers live while interleaved: a process each on a CPU (its own resident peak),
clones sharing one model's frozen weights on a GPU (the same code runs here on a CPU)."""

import torch

from fastpeft.bench import e2e
from fastpeft.bench.e2e_runners import InProcessRun, ProcessRun, SharedModel
from fastpeft.mllm import parts


def _tiny_args(method="lora"):
    args = e2e.settings(torch.device("cpu"), "float32", "smoke")
    args.method = method
    return args


def test_clones_share_frozen_weights_but_not_the_connector():
    args = _tiny_args()
    shared = SharedModel(args, batches=2)
    a, b = shared.clone(), shared.clone()
    assert a.lm_head.weight is b.lm_head.weight is shared.model.lm_head.weight
    connector_a = list(parts.connector(a).parameters())
    connector_b = list(parts.connector(b).parameters())
    assert all(x is not y for x, y in zip(connector_a, connector_b, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(connector_a, connector_b, strict=True))


def test_in_process_providers_agree_and_train_their_own_connector():
    args = _tiny_args()
    shared = SharedModel(args, batches=2)
    runs = {name: InProcessRun(shared, args, name) for name in ("frozen", "peft", "fastpeft")}
    infos = {name: run.ready() for name, run in runs.items()}
    assert infos["peft"]["check_loss"] == infos["fastpeft"]["check_loss"]
    assert infos["frozen"]["trainable"] == 0 < infos["peft"]["trainable"]
    samples = e2e.interleave(runs, reps=2, warmup=1)
    assert all(len(times) == 2 and min(times) > 0 for times in samples.values())
    lm_head = shared.model.lm_head.weight.clone()
    finished = {name: run.finish() for name, run in runs.items()}
    assert torch.equal(shared.model.lm_head.weight, lm_head)  # frozen weights untouched
    assert all(f["peak_mib"] is None and len(f["losses"]) == 3 for f in finished.values())


def test_a_provider_process_steps_on_command_and_reports_its_own_peak():
    # The parent holds 2 GiB while the provider's process starts: a spawned process inherits
    # its parent's ru_maxrss, so a peak read from it would be the parent's 2 GiB, not its own.
    parent = torch.ones(1 << 29)
    args = _tiny_args()
    run = ProcessRun(args, "peft", batches=2)
    try:
        info = run.ready()
        assert info["trainable"] > 0 and info["report"] == "unpatched"
        assert all(run.step(i) > 0 for i in range(3))
        finished = run.finish()
    finally:
        run.close()
    del parent
    assert 0 < finished["peak_mib"] < 768 and len(finished["losses"]) == 3


def test_adapter_baseline_is_labelled_eager():
    assert e2e.label("adapter", "peft") == "eager"
    assert e2e.label("adapter", "peft+compile") == "eager+compile"
    assert e2e.label("adapter", "fastpeft") == "fastpeft"
    assert e2e.label("lora", "peft") == "peft"
