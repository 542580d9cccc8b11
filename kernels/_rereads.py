"""Helpers for the kernel modules' REREADS tables (the static model's L2 traffic, see
fastpeft/static/costing.py's l2_bytes): a tensor argument's bytes and a launch's block counts,
from the launch's named arguments."""

import triton


def nbytes(t) -> int:
    """The bytes of one read of tensor argument `t` (a view's own elements)."""
    return t.numel() * t.element_size()


def blocks(a: dict, size: str, block: str) -> int:
    """How many `block`-sized blocks cover the launch argument `size` (M and BLOCK_M, ...)."""
    return triton.cdiv(a[size], a[block])


def each_extra(a: dict, name: str, reads: int) -> int:
    """The bytes of tensor argument `name` read `reads` times in all, beyond its first read."""
    return nbytes(a[name]) * (reads - 1)
