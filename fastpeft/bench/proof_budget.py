"""The proof suite's time budget: its parts run in order, each given a share of what is left,
and a part whose share is below what it needs to say anything is skipped with the reason.

A part's limit is the time left times its share over the shares of the parts still to run, so
time a part did not use rolls over to the later ones, and one slow part cannot starve every
later one. Parts check their `Deadline` between units of work (a test, a layer case, an e2e
method) and stop cleanly; a unit already started is finished, so a part can overrun a little.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Setting:
    """What every part is run with."""

    device: torch.device
    dtype: str
    smoke: bool
    out: Path


@dataclass(frozen=True)
class Part:
    name: str
    share: float  # of the time left, against the shares of the parts still to run
    minimum_s: float  # below this the part could not measure anything worth reporting


class Deadline:
    """Seconds left of a limit, on a clock the tests can replace."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock = seconds, clock
        self.started = clock()

    def used(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.seconds - self.used()


PartFn = Callable[[Setting, Deadline], dict]


def run_parts(
    parts: list[tuple[Part, PartFn]],
    setting: Setting,
    budget: Deadline,
    record: Callable[[dict], None],
) -> list[dict]:
    """Run the parts in order under `budget`; each gets an entry (status "done", "partial",
    "skipped" or "failed", its limit, seconds and reason) passed to `record` when it ends.

    A part returns a dict of results, with "status" "partial" and a "reason" when its deadline
    stopped it early. A part that raises is recorded as failed: one broken part must not cost
    the measurements of the others."""
    entries = []
    for i, (part, fn) in enumerate(parts):
        later = sum(p.share for p, _ in parts[i + 1 :])
        left = max(0.0, budget.left())
        limit = left * part.share / (part.share + later)
        entry: dict = {"part": part.name, "limit_s": round(limit, 1)}
        if limit < part.minimum_s:
            entry["status"] = "skipped"
            entry["reason"] = (
                f"out of budget: {limit:.0f} s allotted ({left:.0f} s left of "
                f"{budget.seconds:.0f}), the part needs at least {part.minimum_s:.0f} s"
            )
        else:
            deadline = Deadline(limit, budget.clock)
            try:
                result = fn(setting, deadline)
                entry["status"] = result.pop("status", "done")
                entry.update(result)
            except Exception as exc:  # noqa: BLE001 (recorded, and the next part runs)
                entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
            entry["seconds"] = round(deadline.used(), 1)
        entries.append(entry)
        record(entry)
    return entries
