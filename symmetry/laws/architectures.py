"""The reference's random architectures (its check of ALGO 2 against the known counts)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .factorisations import Factorization, linear_net, relu_net
from .rank import known_law_count

# ---------------------------------------------------------------------------------------------
# Random architectures (the reference's check)
# ---------------------------------------------------------------------------------------------

@dataclass
class Architecture:
    kind: str  # "linear" or "relu"
    widths: tuple[int, ...]
    bias: bool = False

    def factorization(self) -> Factorization:
        return linear_net(self.widths) if self.kind == "linear" else relu_net(self.widths, self.bias)

    def known_count(self) -> int:
        """Linear: rank of the gradients of the known laws; ReLU: the number of hidden neurons."""
        if self.kind == "relu":
            return sum(self.widths[1:-1])
        return known_law_count(self.factorization())


def random_architectures(kind: str, count: int, seed: int = 0) -> list[Architecture]:
    """The reference's random set: depth q ∈ {2, 3, 4}; widths 2–5 (linear) or 2–9 (ReLU,
    biases on every other architecture)."""
    if kind not in ("linear", "relu"):
        raise ValueError(f"kind={kind!r} is not allowed; choose one of linear, relu")
    gen = torch.Generator().manual_seed(seed)
    top = 5 if kind == "linear" else 9
    archs = []
    for i in range(count):
        q = int(torch.randint(2, 5, (1,), generator=gen))
        widths = tuple(int(w) for w in torch.randint(2, top + 1, (q + 1,), generator=gen))
        archs.append(Architecture(kind, widths, bias=(kind == "relu" and i % 2 == 1)))
    return archs
