"""The one symmetry abstraction: a group acting on parameters, its Lie algebra and its conserved quantities.

Every symmetry in the library follows [`Symmetry`][]; [`symmetry.teleport.teleport_to`][],
[`symmetry.monitor.ConservationMonitor`][], [`symmetry.hessian.hessian_top_k`][] and
[`symmetry.laws.count_conservation_laws`][] take any of them. Its instances, one file per family:

- [`symmetry.groups.paper`][]: the paper's groups on a tuple model's parameter tuple: GL on linear layers
  (Example 2, Eq. 17), positive scaling of homogeneous activations (Example 3), the data-dependent GL of
  Prop. 8, O(h) and the per-neuron scaling of the radial nets (Example 5, Prop. 14).
- [`symmetry.groups.blocks`][]: the blocks found in a user's module ([`symmetry.module_symmetries`][] returns
  their product, a [`symmetry.groups.product.ModuleSymmetries`][]): per-unit rescaling (``ScalingBlock``, Example 3
  with biases; SwiGLU's up/down pair, RoPE's frequency pairs, BatchNorm's and LayerNorm's scale invariance as
  degree-0 rescalings), GL between linear maps and per attention head (``LinearBlock``, Eq. 17 and Marcotte et
  al. Cor. 3.9), and translations (``TranslationBlock``: the softmax head, the MoE gate, LayerNorm's centring,
  BatchNorm's bias).

Group elements and algebra coordinates are dicts keyed by a name per factor (a block's name, ``"hidden i"``
for the paper's groups). Parameters are what the model keeps: a dict of named tensors for a module, a tuple
for a tuple model. Conserved quantities are quadratic (rescaling, GL) or linear (translation), so one GD step
changes them by exactly η²·B(∇L, ∇L) with B the bilinear form of ``balance`` (zero for translations); a
group without such quantities refuses by name ([`NotSupportedError`][]).
"""
from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import torch

from ..errors import NotSupportedError
from ..types import Algebra, Element, Params, Tensor

__all__ = ["Algebra", "Element", "NotSupportedError", "Params", "Symmetry"]


@runtime_checkable
class Symmetry(Protocol):
    """A group G acting on a model's parameters, with G's algebra and the quantities its action conserves.

    ``keys()``: the factors' names; ``algebra_zero()``: ξ = 0; ``exp(ξ)``: the element (differentiable);
    ``random_element(scale)``: exp of a random ξ of that size; ``act_params(params, g)``: g·θ as new parameters
    (differentiable; ``check`` validates g first); ``act(model, g)``: g applied to what holds the parameters
    (a module in place; a tuple model holds none, so its groups return g·θ); ``quantities(params)``: the
    conserved Q per factor; ``balance(a, b)``: the bilinear form with B(θ, θ) = Q; ``describe()``: one text.
    """

    def keys(self) -> list[str]: ...

    def algebra_zero(self, requires_grad: bool = False) -> dict[str, Tensor]: ...

    def exp(self, xi: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

    def random_element(self, scale: float, generator: torch.Generator | None = None) -> dict[str, Tensor]: ...

    def act_params(self, params, element: Mapping[str, Tensor], check: bool = True): ...

    def act(self, model, element: Mapping[str, Tensor]): ...

    def quantities(self, model) -> dict[str, Tensor]: ...

    def balance(self, a, b=None) -> dict[str, Tensor]: ...

    def describe(self) -> str: ...


from . import blocks, paper  # noqa: E402  (the instances, re-exported as the package's submodules)
