"""The blocks a module's symmetry is made of: per-unit rescaling, GL, translation; each acts on named parameters.

A block acts on *legs*: a leg is one parameter's entries arranged as a (C, K) table, one row per unit (a hidden
neuron, a channel, an attention head's coordinate), the K entries of a row aligned across units (column k of
every row sits at the same place: the same input feature, filter tap or spatial position). With θ_u the row of
unit u on one leg and e the leg's exponent:

- :class:`ScalingBlock`: θ_u ↦ g_c^e θ_u, one g_c > 0 per class c of tied units (Example 3 with biases: e = +1 on
  the incoming weights and bias, −α on the outgoing ones). Noether: Q_c = −Σ_legs e Σ_{u∈c} ‖θ_u‖², i.e.
  α‖O‖² − ‖I‖² (Eq. 25, "outer minus inner"); a degree-0 block (BatchNorm, LayerNorm behind a layer) has no
  outgoing leg and conserves ‖I‖² (Kunin et al.'s scale law, as −‖I‖²).
- :class:`LinearBlock`: I ↦ G I on the legs with e = +1, O ↦ G⁻ᵀ O on those with e = −1, G ∈ GL(C) (Eq. 17;
  per attention head Marcotte et al. Cor. 3.9 with O the paired key rows). Noether: Q = O Oᵀ − I Iᵀ (C × C).
- :class:`TranslationBlock`: θ[:, k] ↦ θ[:, k] + t_k on every leg (the same shift for every unit; softmax and
  centring are blind to it). Laws: the column sums h_k = Σ_u θ_u,k (Marcotte et al. Prop. 3.11).

Quadratic laws change by exactly η²B(d, d) under a step θ − ηd with B(θ, d) = 0; linear laws change by
−η⟨1, d_k⟩ = 0 when d is a gradient, since the gradient has no component along a translation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch

Tensor = torch.Tensor

__all__ = ["Leg", "Block", "ScalingBlock", "LinearBlock", "TranslationBlock"]


@dataclass(frozen=True)
class Leg:
    """One parameter's entries seen by a block: ``index`` (C, K) holds flat positions in ``param``."""

    param: str
    index: Tensor
    exponent: float
    units: Tensor | None = None  # which of the block's units the rows are (None: all, in order)

    def rows(self, n: int) -> Tensor:
        return torch.arange(n) if self.units is None else self.units

    def values(self, p: Mapping[str, Tensor]) -> Tensor:
        """θ on this leg, (C, K)."""
        t = p[self.param]
        return t.reshape(-1)[self.index.to(t.device)]

    def write(self, p: dict[str, Tensor], values: Tensor) -> None:
        t = p[self.param]
        flat = t.reshape(-1).index_put((self.index.to(t.device).reshape(-1),), values.reshape(-1))
        p[self.param] = flat.reshape(t.shape)


@dataclass
class Block:
    """Common part: a name (the key of elements, algebra coordinates and quantities), units, legs, provenance."""

    name: str
    units: int
    legs: tuple[Leg, ...]
    where: str  # what in the model the block is, for describe()
    approximate: str | None = field(default=None)  # why the symmetry is only approximate (normalization's ε)
    kind: str = "?"

    def parameters(self) -> set[str]:
        return {leg.param for leg in self.legs}

    def element_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def laws(self) -> int:
        """Number of functionally independent conserved quantities at a generic point."""
        raise NotImplementedError

    def algebra_zero(self, dtype, device, requires_grad=False) -> Tensor:
        return torch.zeros(self.element_shape(), dtype=dtype, device=device, requires_grad=requires_grad)

    def random_algebra(self, scale: float, generator, dtype, device, params: Mapping[str, Tensor]) -> Tensor:
        draw = torch.randn(self.element_shape(), generator=generator, dtype=torch.float64)
        return (scale * draw).to(dtype=dtype, device=device)

    def identity(self, dtype, device) -> Tensor:
        return self.exp(self.algebra_zero(dtype, device))

    # implemented per kind
    def exp(self, xi: Tensor) -> Tensor:
        raise NotImplementedError

    def act(self, p: dict[str, Tensor], element: Tensor) -> None:
        raise NotImplementedError

    def quantity(self, p: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def magnitude(self, p: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def balance(self, pa: Mapping[str, Tensor], pb: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def check_element(self, argument: str, t: Tensor) -> None:
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{argument} contains NaN or infinity")


@dataclass
class ScalingBlock(Block):
    """Per-class positive rescaling; ``classes`` (C,) gives each unit's class (tied units share one g)."""

    classes: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    kind: str = "scaling"

    @property
    def n_classes(self) -> int:
        return int(self.classes.max()) + 1 if self.classes.numel() else 0

    def element_shape(self):
        return (self.n_classes,)

    def laws(self) -> int:
        return self.n_classes

    def exp(self, xi):
        return torch.exp(xi)

    def act(self, p, element):
        for leg in self.legs:
            g = element[self.classes[leg.rows(self.units)].to(element.device)]  # one factor per row
            leg.write(p, leg.values(p) * (g ** leg.exponent)[:, None])

    def _per_class(self, per_row: list[tuple[Leg, Tensor]], like: Tensor) -> Tensor:
        out = like.new_zeros(self.n_classes)
        for leg, value in per_row:
            out = out.index_add(0, self.classes[leg.rows(self.units)].to(value.device), value)
        return out

    def balance(self, pa, pb):
        rows = [(leg, -leg.exponent * (leg.values(pa) * leg.values(pb)).sum(1)) for leg in self.legs]
        return self._per_class(rows, rows[0][1])

    def quantity(self, p):
        return self.balance(p, p)

    def magnitude(self, p):
        rows = [(leg, abs(leg.exponent) * (leg.values(p) ** 2).sum(1)) for leg in self.legs]
        return self._per_class(rows, rows[0][1])

    def check_element(self, argument, t):
        super().check_element(argument, t)
        if not bool((t > 0).all()):
            raise ValueError(f"{argument} must be positive (a rescaling by g > 0 per class); got min {float(t.min()):.3g}")


@dataclass
class LinearBlock(Block):
    """GL(C) on the units: legs with exponent +1 are multiplied by G, legs with −1 by G⁻ᵀ."""

    kind: str = "GL"

    def element_shape(self):
        return (self.units, self.units)

    def laws(self) -> int:
        return self.units * (self.units + 1) // 2

    def random_algebra(self, scale, generator, dtype, device, params):
        return super().random_algebra(scale, generator, dtype, device, params) / math.sqrt(self.units)

    def exp(self, xi):
        return torch.linalg.matrix_exp(xi)

    def act(self, p, element):
        for leg in self.legs:
            M = leg.values(p)
            leg.write(p, element @ M if leg.exponent > 0 else torch.linalg.solve(element.mT, M))

    def _stack(self, p, sign: int) -> Tensor:
        parts = [leg.values(p) for leg in self.legs if (leg.exponent > 0) == (sign > 0)]
        if not parts:
            t = p[self.legs[0].param]
            return t.new_zeros(self.units, 0)
        return torch.cat(parts, dim=1)

    def balance(self, pa, pb):
        return self._stack(pa, -1) @ self._stack(pb, -1).mT - self._stack(pa, 1) @ self._stack(pb, 1).mT

    def quantity(self, p):
        return self.balance(p, p)

    def magnitude(self, p):
        O, I = self._stack(p, -1), self._stack(p, 1)
        return torch.linalg.matrix_norm(O @ O.mT) + torch.linalg.matrix_norm(I @ I.mT)

    def check_element(self, argument, t):
        super().check_element(argument, t)
        s = torch.linalg.svdvals(t.detach())
        if float(s[-1]) <= float(s[0]) * torch.finfo(t.dtype).eps * self.units:
            cond = float(s[0] / s[-1]) if float(s[-1]) > 0 else math.inf
            raise ValueError(f"{argument} is singular (condition number {cond:.3g}): GL({self.units}) needs an "
                             "invertible matrix")


@dataclass
class TranslationBlock(Block):
    """θ_u,k ↦ θ_u,k + t_k for every unit u; t is (K,) over the legs' columns, concatenated."""

    kind: str = "translation"

    def element_shape(self):
        return (sum(leg.index.shape[1] for leg in self.legs),)

    def laws(self) -> int:
        return self.element_shape()[0]

    def random_algebra(self, scale, generator, dtype, device, params):
        # a shift of the size of the entries it moves
        size = torch.cat([leg.values(params).detach().reshape(-1) for leg in self.legs]).abs().mean()
        return super().random_algebra(scale, generator, dtype, device, params) * float(size)

    def exp(self, xi):
        return xi  # the group is additive: its algebra is itself

    def identity(self, dtype, device):
        return self.algebra_zero(dtype, device)

    def act(self, p, element):
        start = 0
        for leg in self.legs:
            K = leg.index.shape[1]
            leg.write(p, leg.values(p) + element[start:start + K])
            start += K

    def quantity(self, p):
        return torch.cat([leg.values(p).sum(0) for leg in self.legs])

    def magnitude(self, p):
        return torch.cat([leg.values(p).abs().sum(0) for leg in self.legs])

    def balance(self, pa, pb):
        return torch.cat([leg.values(pa).new_zeros(leg.index.shape[1]) for leg in self.legs])
