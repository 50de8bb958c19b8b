"""The type aliases every module shares, defined once (a leaf module: it imports only torch)."""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["Algebra", "Element", "LossFn", "Params", "Tensor"]

Tensor = torch.Tensor
#: a tuple model's parameters (W_1, …, W_L), or (U, V)
Params = tuple[Tensor, ...]
#: a loss as a function of the parameter tuple alone (data bound in)
LossFn = Callable[[Params], Tensor]
#: Lie-algebra coordinates ξ, one tensor per factor of the group
Algebra = dict[str, Tensor]
#: a group element g = exp(ξ), one tensor per factor
Element = dict[str, Tensor]
