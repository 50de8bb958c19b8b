"""The intra-op thread count of a computation: [`torch_threads`][] runs a block with n threads and restores
the count after; [`computation_threads`][] says which count the last computation ran with (for its JSON)."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["computation_threads", "torch_threads"]

_threads_state: dict[str, int] = {"depth": 0, "computed_with": 0}  # the outermost torch_threads count (0: none yet)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` intra-op threads and restore the previous count after: small problems are
    overhead-bound, and when another process holds the second core, a second thread mostly
    waits (tiny ops measured 60× slower). The outermost count is remembered for
    [`computation_threads`][] (a result's JSON is written after the computation's context ends)."""
    before = torch.get_num_threads()
    if _threads_state["depth"] == 0:
        _threads_state["computed_with"] = n
    _threads_state["depth"] += 1
    torch.set_num_threads(n)
    try:
        yield
    finally:
        _threads_state["depth"] -= 1
        torch.set_num_threads(before)


def computation_threads() -> int:
    """The intra-op threads of the last computation run under [`torch_threads`][] (its outermost count), or the
    current count if none was."""
    return _threads_state["computed_with"] or torch.get_num_threads()
