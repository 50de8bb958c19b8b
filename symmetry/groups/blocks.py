"""The blocks a module's symmetry is made of: per-unit rescaling, GL, translation; each acts on named parameters.

A block acts on *legs*: a leg is one parameter's entries arranged as a (C, K) table, one row per unit (a hidden
neuron, a channel, an attention head's coordinate), the K entries of a row aligned across units (column k of
every row sits at the same place: the same input feature, filter tap or spatial position). With θ_u the row of
unit u on one leg and e the leg's exponent:

- [`ScalingBlock`][]: θ_u ↦ g_c^e θ_u, one g_c > 0 per class c of tied units (Example 3 with biases: e = +1 on
  the incoming weights and bias, −α on the outgoing ones). Noether: Q_c = −Σ_legs e Σ_{u∈c} ‖θ_u‖², i.e.
  α‖O‖² − ‖I‖² (Eq. 25, "outer minus inner"); a degree-0 block (BatchNorm, LayerNorm behind a layer) has no
  outgoing leg and conserves ‖I‖² (Kunin et al.'s scale law, as −‖I‖²).
- [`LinearBlock`][]: I ↦ G I on the legs with e = +1, O ↦ G⁻ᵀ O on those with e = −1, G ∈ GL(C) (Eq. 17;
  per attention head Marcotte et al. Cor. 3.9 with O the paired key rows). Noether: Q = O Oᵀ − I Iᵀ (C × C).
- [`RotationBlock`][]: one angle per pair of units (RoPE's rotated query–key pairs), the same rotation on the
  incoming and outgoing rows; its quantity is identically 0 (it counts in the group's dimension, not in the laws).
- [`TranslationBlock`][]: θ[:, k] ↦ θ[:, k] + t_k on every leg (the same shift for every unit; softmax and
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

__all__ = ["Leg", "Block", "ScalingBlock", "LinearBlock", "TranslationBlock", "RotationBlock"]


@dataclass(frozen=True)
class Leg:
    """One parameter's entries seen by a block: ``index`` (C, K) holds flat positions in ``param``."""

    param: str
    index: Tensor
    exponent: float
    units: Tensor | None = None  # which of the block's units the rows are (None: all, in order)

    def rows(self, n: int) -> Tensor:
        return torch.arange(n) if self.units is None else self.units

    def _view(self, t: Tensor) -> Tensor | None:
        """The leg's entries of ``t`` as a strided view, rows first ((C, K) after a reshape), or None where the
        table is no strided pattern. Every leg the walker builds is one (rows of a weight, a convolution's input
        channels, a head's rows); the pattern is found once per leg (frozen dataclass: stored through object)."""
        if "_plan" not in self.__dict__:
            object.__setattr__(self, "_plan", _strided_plan(self.index))
        plan = self.__dict__["_plan"]
        if plan is None:
            return None
        offset, sizes, strides, _ = plan
        flat = t.reshape(-1)
        return flat.as_strided(sizes, strides, flat.storage_offset() + offset)

    def values(self, p: Mapping[str, Tensor]) -> Tensor:
        """θ on this leg, (C, K)."""
        t = p[self.param]
        view = self._view(t)
        return view.reshape(self.index.shape) if view is not None else t.reshape(-1)[self.index.to(t.device)]

    def row_dot(self, pa: Mapping[str, Tensor], pb: Mapping[str, Tensor]) -> Tensor:
        """Σ_k θa_uk θb_uk per row, (C,): reduced on the strided views, without copying the leg out (the monitor's
        cost per step is a pass over the weights, no more)."""
        ta, tb = pa[self.param], pb[self.param]
        va = self._view(ta)
        if va is None or va.ndim == 0:
            return (self.values(pa) * self.values(pb)).sum(1)
        dims = tuple(range(self.__dict__["_plan"][3], va.ndim))
        vb = va if ta is tb else self._view(tb)
        assert vb is not None  # the same plan reads both
        if not dims:
            out = va * vb
        elif ta is tb:
            out = va.square().sum(dims)  # not vector_norm(...)²: the square root costs the last digits
        else:
            out = (va * vb).sum(dims)
        return out.reshape(self.index.shape[0])

    def _copy_and_view(self, t: Tensor) -> tuple[Tensor, Tensor] | None:
        """A flat copy of ``t`` and the leg's strided view into that copy (to write through), or None where the leg
        has no strided pattern."""
        if self._view(t) is None:
            return None
        out = t.reshape(-1).clone()
        view = self._view(out)
        assert view is not None  # the same plan on a tensor of the same shape
        return out, view

    def scale_rows(self, p: dict[str, Tensor], factor: Tensor) -> None:
        """``p[param]`` replaced by a new tensor whose leg row u is multiplied by ``factor[u]`` (differentiable):
        in place on a copy's strided view, without gathering the leg out and writing it back."""
        t = p[self.param]
        copied = self._copy_and_view(t)
        if copied is None:
            self.write(p, self.values(p) * factor[:, None])
            return
        out, view = copied
        rows = self.__dict__["_plan"][3]
        view.mul_(factor.to(out.dtype).reshape(tuple(view.shape[:rows]) + (1,) * (view.ndim - rows)))
        p[self.param] = out.reshape(t.shape)

    def write(self, p: dict[str, Tensor], values: Tensor) -> None:
        """A new tensor for ``p[param]`` with the leg's entries replaced by ``values`` (differentiable in both):
        a copy into the strided view where the leg has one (an index_put over a gathered index costs ~10× more
        on a convolution's weight), else an index_put."""
        t = p[self.param]
        copied = self._copy_and_view(t)
        if copied is not None:
            out, view = copied
            view.copy_(values.reshape(view.shape))
        else:
            out = t.reshape(-1).index_put((self.index.to(t.device).reshape(-1),), values.reshape(-1))
        p[self.param] = out.reshape(t.shape)


def _progression(r: list[int]) -> tuple[list[int], list[int]] | None:
    """``r`` (starting at 0) as nested arithmetic progressions: sizes and strides, outermost first, or None."""
    n = len(r)
    if n == 1:
        return [], []
    stride = r[1] - r[0]
    run = 1
    while run < n and r[run] == run * stride:
        run += 1
    if n % run:
        return None
    outer = r[::run]
    for j, start in enumerate(outer):
        if r[j * run:(j + 1) * run] != [start + i * stride for i in range(run)]:
            return None
    rest = _progression([v - outer[0] for v in outer])
    if rest is None:
        return None
    return rest[0] + [run], rest[1] + [stride]


def _strided_plan(index: Tensor) -> tuple[int, list[int], list[int], int] | None:
    """(offset, sizes, strides, row dims) with flat.as_strided(sizes, strides, offset) == flat[index] (verified), or None."""
    if index.ndim != 2 or not index.numel():
        return None
    table = index.cpu()
    offset = int(table[0, 0])
    rows = _progression((table[:, 0] - offset).tolist())
    cols = _progression((table[0] - offset).tolist())
    if rows is None or cols is None:
        return None
    sizes, strides = rows[0] + cols[0], rows[1] + cols[1]
    if any(st < 0 for st in strides):
        return None
    # rows and columns are verified progressions: the view is flat[offset + r_i + c_k], which is the table iff
    # table[i, k] = table[i, 0] + table[0, k] − offset everywhere (one pass, no arange of the parameter's size)
    rebuilt = table[:, :1] + (table[:1] - offset)
    return (offset, sizes, strides, len(rows[0])) if torch.equal(rebuilt, table) else None


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
            leg.scale_rows(p, g ** leg.exponent)

    def _per_class(self, per_row: list[tuple[Leg, Tensor]], like: Tensor) -> Tensor:
        out = like.new_zeros(self.n_classes)
        for leg, value in per_row:
            out = out.index_add(0, self.classes[leg.rows(self.units)].to(value.device), value)
        return out

    def balance(self, pa, pb):
        rows = [(leg, -leg.exponent * leg.row_dot(pa, pb)) for leg in self.legs]
        return self._per_class(rows, rows[0][1])

    def quantity(self, p):
        return self.balance(p, p)

    def magnitude(self, p):
        rows = [(leg, abs(leg.exponent) * leg.row_dot(p, p)) for leg in self.legs]
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


@dataclass
class RotationBlock(Block):
    """SO(2) on pairs of units: rows (θ_a, θ_b) ↦ (cos φ θ_a − sin φ θ_b, sin φ θ_a + cos φ θ_b), one angle per
    pair, on the incoming (e = +1) and outgoing (e = −1) legs alike (R⁻ᵀ = R). RoPE's rotated query–key pairs
    (Su et al. 2021): a rotation of a pair commutes with the position's rotation, so the scores are kept. The
    Noether quantity of an antisymmetric generator, Σ_legs e (θ_aᵀθ_b − θ_bᵀθ_a), is identically 0: the block adds
    to the group's dimension and to no law."""

    pairs: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))  # (P, 2) unit pairs
    kind: str = "rotation"

    def element_shape(self):
        return (int(self.pairs.shape[0]),)

    def laws(self) -> int:
        return 0

    def exp(self, xi):
        return xi  # the angles

    def identity(self, dtype, device):
        return self.algebra_zero(dtype, device)

    def _rows(self, leg: Leg) -> tuple[Tensor, Tensor, Tensor]:
        """Rows of the leg holding each pair's two units, and which pairs the leg has."""
        where = {int(u): i for i, u in enumerate(leg.rows(self.units).tolist())}
        have = [i for i, (a, b) in enumerate(self.pairs.tolist()) if a in where and b in where]
        a = torch.tensor([where[int(self.pairs[i, 0])] for i in have], dtype=torch.long)
        b = torch.tensor([where[int(self.pairs[i, 1])] for i in have], dtype=torch.long)
        return a, b, torch.tensor(have, dtype=torch.long)

    def act(self, p, element):
        for leg in self.legs:
            a, b, have = self._rows(leg)
            values = leg.values(p)
            phi = element[have.to(element.device)][:, None]
            ra, rb = values[a], values[b]
            moved = values.index_copy(0, a.to(values.device), torch.cos(phi) * ra - torch.sin(phi) * rb)
            moved = moved.index_copy(0, b.to(values.device), torch.sin(phi) * ra + torch.cos(phi) * rb)
            leg.write(p, moved)

    def balance(self, pa, pb):
        out = None
        for leg in self.legs:
            a, b, have = self._rows(leg)
            va, vb = leg.values(pa), leg.values(pb)
            term = -leg.exponent * ((va[a] * vb[b]).sum(1) - (va[b] * vb[a]).sum(1))
            part = term.new_zeros(self.element_shape()).index_add(0, have.to(term.device), term)
            out = part if out is None else out + part
        assert out is not None
        return out

    def quantity(self, p):
        return self.balance(p, p)  # identically 0

    def magnitude(self, p):
        out = None
        for leg in self.legs:
            a, b, have = self._rows(leg)
            v = leg.values(p)
            term = (v[a] ** 2).sum(1) + (v[b] ** 2).sum(1)
            part = term.new_zeros(self.element_shape()).index_add(0, have.to(term.device), term)
            out = part if out is None else out + part
        assert out is not None
        return out
