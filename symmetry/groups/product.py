"""[`ModuleSymmetries`][]: the product of the blocks found in a user's module ([`symmetry.groups.blocks`][]),
its algebra, its action on named parameters and its conserved quantities (one per block, Eq. 25 and Eq. 17's
O Oᵀ − I Iᵀ, translations' column sums); it follows [`symmetry.groups.Symmetry`][].
[`symmetry.modules.module_symmetries`][] builds it from the graph and checks it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ..validation import cast_exactly
from .blocks import Block, LinearBlock, RotationBlock, ScalingBlock, TranslationBlock

Tensor = torch.Tensor

__all__ = ["ModuleSymmetries"]


@dataclass
class ModuleSymmetries:
    """The symmetry blocks of a module, their product group, its algebra and its conserved quantities.

    Elements and algebra coordinates are dicts keyed by block name: (classes,) positive scales for a rescaling,
    (C, C) invertible matrices for GL, (K,) shifts for a translation.
    """

    blocks: tuple[Block, ...]
    parameter_names: tuple[str, ...]
    dtype: torch.dtype
    device: torch.device
    model_name: str = "model"
    coverage: dict[str, list[str]] = field(default_factory=dict)  # parameter → block names, or ["none: why"]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # parameter → its shape in the model read
    tolerance: float | None = None  # the relative change of the output the check allowed (by dtype)
    training: bool | None = None  # the mode the model was read in (dropout, BatchNorm's statistics)
    unchecked: str | None = None  # why the blocks could not be checked (an output identically 0)

    # --- names and summary ----------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return [b.name for b in self.blocks]

    @property
    def groups(self) -> tuple[Block, ...]:
        return self.blocks

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no block {name!r}; blocks: {self.keys()}")

    def dimension(self) -> int:
        """Dimension of the group: classes per rescaling, C² per GL, K per translation."""
        return sum(math.prod(b.element_shape()) for b in self.blocks)

    def law_count(self) -> int:
        """Independent quantities the blocks report (rescaling: one per class; GL: C(C+1)/2; translation: K)."""
        return sum(b.laws() for b in self.blocks)

    def describe(self) -> str:
        lines = [f"{self.model_name}: {len(self.blocks)} symmetry block(s), group dimension {self.dimension()}, "
                 f"{self.law_count()} conserved quantities"]
        if self.unchecked is not None:
            lines.append(f"  NOT CHECKED: {self.unchecked}")
        if self.tolerance is not None:
            lines.append(f"  each block checked on the example input: output kept to a relative {self.tolerance:g} "
                         f"(the tolerance for {str(self.dtype).replace('torch.', '')})")
        if self.training is not None:
            lines.append(f"  read in {'train' if self.training else 'eval'} mode: the blocks are symmetries of the model "
                         "in that mode (BatchNorm's batch statistics or running ones, dropout on or off)")
        for b in self.blocks:
            lines.append(f"  [{b.name!r}] {_group_text(b)}; {_quantity_text(b)}")
            lines.append(f"      {b.where}" + (f"; APPROXIMATE: {b.approximate}" if b.approximate else ""))
        lines.append("  parameters:")
        for name in self.parameter_names:
            lines.append(f"    {name}: {', '.join(self.coverage.get(name, ['none']))}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ModuleSymmetries({', '.join(f'{b.name}: {b.kind}({b.units})' for b in self.blocks)})"

    # --- parameters -------------------------------------------------------------------------------------------
    def _params(self, model_or_params, argument: str = "model") -> Mapping[str, Tensor]:
        if isinstance(model_or_params, nn.Module):
            params: Mapping[str, Tensor] = dict(model_or_params.named_parameters())
        elif isinstance(model_or_params, Mapping):
            params = model_or_params
        else:
            raise TypeError(f"{argument} must be an nn.Module or a dict of named parameters "
                            f"(dict(model.named_parameters())), got {type(model_or_params).__name__}")
        needed = {p for b in self.blocks for p in b.parameters()}
        missing = sorted(needed - set(params))
        if missing:
            raise KeyError(f"{argument} lacks the parameters {missing} of the model these symmetries were found in")
        order = {n: i for i, n in enumerate(self.parameter_names)}
        for n in sorted(needed, key=lambda n: (order.get(n, len(order)), n)):  # the model's order: the same error each run
            t = params[n]
            if not isinstance(t, Tensor) or not t.is_floating_point():
                kind = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(f"{argument}[{n!r}] must be a floating-point tensor, got {kind}")
            if n in self.shapes and tuple(t.shape) != self.shapes[n]:
                raise ValueError(f"{argument}[{n!r}] has shape {tuple(t.shape)} but is {self.shapes[n]} in the "
                                 f"{self.model_name} these symmetries were found in: read them from this model")
        return params

    # --- conserved quantities ---------------------------------------------------------------------------------
    def quantities(self, model) -> dict[str, Tensor]:
        """Per block: α‖O‖² − ‖I‖² per class (rescaling), O Oᵀ − I Iᵀ (GL), column sums (translation).

        ``model``: the module, or a dict of its named parameters. Conserved by gradient flow."""
        p = self._params(model)
        return {b.name: b.quantity(p) for b in self.blocks}

    def magnitudes(self, model) -> dict[str, Tensor]:
        """The size of each quantity's terms (the scale its drift is measured against)."""
        p = self._params(model)
        return {b.name: b.magnitude(p) for b in self.blocks}

    def balance(self, a, b=None) -> dict[str, Tensor]:
        """The bilinear form B(a, b) with B(θ, θ) = [`quantities`][] (zero for translations); a step θ − ηd with
        B(θ, d) = 0 (d a gradient) changes each quadratic quantity by exactly η²B(d, d)."""
        pa = self._params(a, "a")
        pb = pa if b is None else self._params(b, "b")
        return {blk.name: blk.balance(pa, pb) for blk in self.blocks}

    # --- elements and algebra ---------------------------------------------------------------------------------
    def _check_keys(self, argument: str, element) -> None:
        if not isinstance(element, Mapping):
            raise TypeError(f"{argument} must be a dict {{block name: tensor}} with keys {self.keys()}, "
                            f"got {type(element).__name__}")
        if set(element) != set(self.keys()):
            raise ValueError(f"{argument} has keys {sorted(element)}, but this model's groups are {self.keys()}")
        for b in self.blocks:
            t = element[b.name]
            shape = b.element_shape()
            if not isinstance(t, Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{argument}[{b.name!r}] must have shape {shape} ({b.kind} block), got {got}")
            if not t.is_floating_point():
                raise TypeError(f"{argument}[{b.name!r}] must be a floating-point tensor, got dtype {t.dtype}")

    def check_element(self, element: Mapping[str, Tensor]) -> None:
        """Raise a clear error unless ``element`` belongs to the group (keys, shapes, g > 0, G invertible)."""
        self._check_keys("element", element)
        with torch.no_grad():
            for b in self.blocks:
                b.check_element(f"element[{b.name!r}]", element[b.name])

    def algebra_zero(self, requires_grad: bool = False) -> dict[str, Tensor]:
        return {b.name: b.algebra_zero(self.dtype, self.device, requires_grad) for b in self.blocks}

    def exp(self, xi: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Algebra → group, differentiable: exp per class, matrix_exp per GL block, identity for translations."""
        self._check_keys("xi", xi)
        return {b.name: b.exp(xi[b.name]) for b in self.blocks}

    def identity(self) -> dict[str, Tensor]:
        return {b.name: b.identity(self.dtype, self.device) for b in self.blocks}

    def random_element(self, scale: float, generator: torch.Generator | None = None,
                       params=None) -> dict[str, Tensor]:
        """exp(scale·ξ), ξ standard normal (A/√C for GL; translations sized by the entries they shift, which
        needs ``params``: the module or its parameter dict); the identity at scale 0."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scale={scale!r} must be a finite number >= 0")
        p = self._params(params, "params") if params is not None else None
        out = {}
        for b in self.blocks:
            if isinstance(b, TranslationBlock) and p is None:
                xi = b.random_algebra(scale, generator, self.dtype, self.device, _ones_like_legs(b, self.dtype))
            else:
                xi = b.random_algebra(scale, generator, self.dtype, self.device, p or {})
            out[b.name] = b.exp(xi)
        return out

    # --- the action -------------------------------------------------------------------------------------------
    def act_params(self, params, element: Mapping[str, Tensor], check: bool = True) -> dict[str, Tensor]:
        """The action on a dict of named parameters (or a module's): a new dict, differentiable in both."""
        p = dict(self._params(params, "params"))
        if check:
            self.check_element(element)
        for b in self.blocks:
            b.act(p, _in_dtype_of(element[b.name], p[b.legs[0].param], b.name))
        return p

    def act(self, model: nn.Module, element: Mapping[str, Tensor]) -> nn.Module:
        """Apply ``element`` to ``model`` in place; returns ``model`` (nothing is written if the element is invalid)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (use act_params for a parameter dict), got {type(model).__name__}")
        params = dict(model.named_parameters())
        with torch.no_grad():
            moved = self.act_params(params, element)
            for name, t in moved.items():
                if t is not params[name]:
                    params[name].copy_(t)
        return model


def _in_dtype_of(element: Tensor, param: Tensor, name: str) -> Tensor:
    """An element in its parameters' dtype (and device): promoted where that is exact (a float32 element on a model
    turned to float64 after its symmetries were found), refused naming both where it would round."""
    return cast_exactly(f"element[{name!r}]", element, param.dtype, "the parameters it acts on",
                        f"draw it in {param.dtype}, or find the symmetries again on the model as it is now"
                        ).to(param.device)


def _ones_like_legs(b: Block, dtype) -> dict[str, Tensor]:
    size = max(int(leg.index.max()) + 1 for leg in b.legs)
    return {leg.param: torch.ones(size, dtype=dtype) for leg in b.legs}


def _group_text(b: Block) -> str:
    if isinstance(b, ScalingBlock):
        degrees = sorted({-leg.exponent for leg in b.legs if leg.exponent < 0})
        deg = ", outgoing degree " + "/".join(f"{d:g}" for d in degrees) if degrees else ", no outgoing weights (scale-invariant)"
        tied = f" ({b.units} units tied into {b.n_classes} scales)" if b.n_classes != b.units else ""
        return f"positive rescaling (R_>0)^{b.n_classes}{tied}{deg}"
    if isinstance(b, LinearBlock):
        return f"GL({b.units})"
    if isinstance(b, RotationBlock):
        return f"rotations SO(2)^{b.element_shape()[0]} of unit pairs"
    return f"translation R^{b.element_shape()[0]}"


def _quantity_text(b: Block) -> str:
    legs_in = ", ".join(sorted({leg.param for leg in b.legs if leg.exponent > 0}))
    legs_out = ", ".join(sorted({leg.param for leg in b.legs if leg.exponent < 0}))
    if isinstance(b, RotationBlock):
        return "quantities identically 0 (no law): Σ_legs e (θ_aᵀθ_b − θ_bᵀθ_a) per pair"
    if isinstance(b, ScalingBlock):
        if not legs_out:
            return f"Q_c = −‖I_c‖² (I: {legs_in})"
        return f"Q_c = Σ α‖O_c‖² − ‖I_c‖² (I: {legs_in}; O: {legs_out})"
    if isinstance(b, LinearBlock):
        return f"Q = O Oᵀ − I Iᵀ (I: {legs_in}; O: {legs_out})"
    return f"h_k = Σ_units θ_k (column sums of {legs_in})"
