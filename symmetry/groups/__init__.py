"""The one symmetry abstraction: a group acting on named parameters, its Lie algebra and its conserved quantities.

Every symmetry in the library that acts on a user's module (and the product of them that
[`symmetry.module_symmetries`][] returns) follows [`Symmetry`][]. Its instances, one file per family:

- [`symmetry.groups.blocks`][]: per-unit rescaling (``ScalingBlock``, Example 3 with biases; SwiGLU's up/down
  pair, RoPE's frequency pairs, BatchNorm's and LayerNorm's scale invariance as degree-0 rescalings), GL between
  linear maps and per attention head (``LinearBlock``, Eq. 17 and Marcotte et al. Cor. 3.9), and translations
  (``TranslationBlock``: the softmax head, the MoE gate, LayerNorm's centring, BatchNorm's bias).

Group elements and algebra coordinates are dicts keyed by the block's name. Conserved quantities are quadratic
(rescaling, GL) or linear (translation), so one GD step changes them by exactly η²·B(∇L, ∇L) with B the bilinear
form of ``balance`` (zero for translations).
"""
from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import torch

Tensor = torch.Tensor

__all__ = ["NotSupportedError", "Symmetry"]


class NotSupportedError(TypeError, ValueError):
    """What the library cannot treat exactly, refused by name (a layer, an operation, a model structure).

    A ``TypeError`` and a ``ValueError`` at once, so code written against either keeps catching it."""


@runtime_checkable
class Symmetry(Protocol):
    """A group G acting on a dict of named parameters, with G's algebra and the quantities its action conserves."""

    def keys(self) -> list[str]: ...

    def algebra_zero(self, requires_grad: bool = False) -> dict[str, Tensor]: ...

    def exp(self, xi: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

    def random_element(self, scale: float, generator: torch.Generator | None = None) -> dict[str, Tensor]: ...

    def act_params(self, params, element: Mapping[str, Tensor], check: bool = True) -> dict[str, Tensor]: ...

    def act(self, model, element: Mapping[str, Tensor]): ...

    def quantities(self, model) -> dict[str, Tensor]: ...

    def balance(self, a, b=None) -> dict[str, Tensor]: ...

    def describe(self) -> str: ...
