"""The reader: one pass over the recorded graph that tags every value with the units it carries
([`Walker`][symmetry.graph.walk.Walker]) and the translation shifts it carries
([`symmetry.graph.shifts`][]). It sits above both so that neither imports the other's
user (the shift rules read the walker's tags; the walker knows nothing of shifts)."""
from __future__ import annotations

import torch.fx as fx

from .shifts import follow_shifts
from .walk import Walker

__all__ = ["Reader"]


class Reader(Walker):
    """A [`Walker`][symmetry.graph.walk.Walker] that also follows translations (softmax heads, centring, biases)."""

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        self.shift[n] = follow_shifts(self, n, result)
        return result
