"""Counts of kernel-path executions, so tests (and curious users) can prove which path ran.

Incremented inside the custom-op implementations, which run eagerly even under torch.compile.
"""

from collections import Counter

launches: Counter[str] = Counter()


def record(op: str, backend: str) -> None:
    launches[f"{op}:{backend}"] += 1


def reset() -> None:
    launches.clear()
