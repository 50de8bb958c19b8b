"""The problem a teleport solves: the symmetry bound to the model and batch, the loss on it, the tolerances.

[`teleport_to`][symmetry.teleport.teleport_to] and [`teleport_random`][symmetry.teleport.teleport_random] both
start from ``_problem``: a tuple model's loss or an ``nn.Module``'s (frozen parameters held fixed), the group
(a paper group by name or instance, bound to the model and batch, or any
[`Symmetry`][symmetry.groups.Symmetry]), and the check that a random element keeps the loss.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .._tools import math_attention, without_frozen
from ..errors import NotSupportedError
from ..groups.paper import PAPER_GROUPS, Group, make_group
from ..types import Element, Params
from ..validation import check_finite, check_tensors
from .element import _norm, condition_number, shift_and_rotation_keys

Tensor = torch.Tensor
Leaves = tuple[Tensor, ...]  # Lie-algebra coordinates ξ as a tuple, in the order of the symmetry's keys
#: the paper's groups by name (symmetry.groups.paper)
GROUPS = PAPER_GROUPS
#: what teleport calls on a symmetry (the rest of the protocol it does not need)
TELEPORT_NEEDS = ("algebra_zero", "exp", "act_params", "describe")

__all__ = ["GROUPS", "TELEPORT_NEEDS"]


def _default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    return (1e-9, 1e-12) if dtype == torch.float64 else (1e-4, 1e-6)


def _module_problem(model, params, loss_fn):
    """(trainable parameters, loss, their names, the frozen ones): a frozen parameter (requires_grad=False) is
    held fixed, neither moved nor differentiated (symmetry._tools.without_frozen)."""
    named = list(model.named_parameters())
    everything = [n for n, _ in named]
    names = [n for n, p in named if p.requires_grad]
    if not names:
        raise ValueError("the model has no trainable parameters (requires_grad=True): nothing to teleport")
    if params is None:
        given = dict(named)
    elif isinstance(params, Mapping):
        given = {n: params[n] for n in everything}
    else:
        params = tuple(params)
        if len(params) not in (len(everything), len(names)):
            raise ValueError(f"params has {len(params)} tensors; the model has {len(everything)} parameters "
                             f"({len(names)} trainable): pass them in named_parameters() order, or a dict")
        given = dict(zip(everything if len(params) == len(everything) else names, params))
    fixed = {n: given.get(n, p).detach() for n, p in named if not p.requires_grad}
    if loss_fn is None:
        raise ValueError("an nn.Module needs loss_fn(output, target), e.g. torch.nn.functional.mse_loss")

    def loss_on(p, X, Y):
        return loss_fn(torch.func.functional_call(model, {**fixed, **dict(zip(names, p))}, (X,)), Y)

    return tuple(given[n] for n in names), loss_on, names, fixed


def _symmetry(model, params: Params, group, X, approximate: bool):
    """The symmetry teleport moves along: a paper group (by name or instance) bound to the tuple model and
    batch, or any [`Symmetry`][symmetry.groups.Symmetry] as given (a module's: ``module_symmetries(model)``)."""
    module = isinstance(model, torch.nn.Module)
    if isinstance(group, (str, Group)):
        if module:
            raise NotSupportedError(f"group={group!r}: the paper's groups act on tuple models (TwoLayerNet, MLP, radial "
                                    "nets); for an nn.Module pass its symmetries, symmetry.module_symmetries(model)")
        return make_group(group).bind(model, params, X, approximate=approximate)
    missing = [m for m in TELEPORT_NEEDS if not callable(getattr(group, m, None))]
    if missing:
        raise TypeError(f"group must be a name in {sorted(GROUPS)} or a Symmetry (symmetry.groups.Symmetry: "
                        f"{', '.join(TELEPORT_NEEDS)}, ...); {type(group).__name__} lacks {missing}")
    bind = getattr(group, "bind", None)
    return bind(model, params, X, approximate=approximate) if callable(bind) and not module else group


def _with_grad(function):
    """Run with autograd on, even when called inside a ``torch.no_grad`` training loop, and attention on its math
    backend (``symmetry._tools.math_attention``): the objectives differentiate a gradient, which torch's fused
    attention kernels cannot."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with torch.enable_grad(), math_attention():
            return function(*args, **kwargs)

    return wrapped


@dataclass
class _Problem:
    """What both teleports need: the symmetry (bound to the model), the loss on the batch and on other data."""

    sym: Any  # a Symmetry
    keys: list[str]  # the order of ξ's tensors
    loss_on: Callable[[Params, Any, Any], Tensor]
    X: Any
    Y: Any
    base: Params
    params: Params  # the caller's tensors (a module's live parameters)
    names: list[str] | None  # a module's trainable parameters, in its order
    loss0: float
    rtol: float
    atol: float
    approximate: bool
    additive: tuple[str, ...] = ()  # translation factors: shifts, left out of the condition number
    fixed: dict[str, Tensor] = field(default_factory=dict)  # a module's frozen parameters, held as they are
    order: list[str] = field(default_factory=list)  # all of a module's parameters, in its order
    notes: list[str] = field(default_factory=list)

    def condition(self, element: Element) -> float:
        return condition_number(element, self.additive)

    def loss(self, p: Params) -> Tensor:
        return self.loss_on(p, self.X, self.Y)

    @property
    def name(self) -> str:
        name = getattr(self.sym, "name", None)
        return name if isinstance(name, str) else self.sym.describe()

    def zero(self) -> Leaves:
        return tuple(self.sym.algebra_zero().values())

    def element(self, xi: Leaves) -> Element:
        return self.sym.exp(dict(zip(self.keys, xi)))

    def apply(self, element: Element, params: Params) -> Params:
        """g·θ through the symmetry's act_params: a tuple, or a module's named dict in ``names`` order."""
        if self.names is None:
            return tuple(self.sym.act_params(params, element, check=False))
        out = self.sym.act_params({**self.fixed, **dict(zip(self.names, params))}, element, check=False)
        return tuple(out[n] for n in self.names)

    def act(self, xi: Leaves) -> Params:
        return self.apply(self.element(xi), self.base)

    def keeps(self, value: float) -> bool:
        return self.approximate or abs(value - self.loss0) <= self.atol + self.rtol * abs(self.loss0)


def _problem(model, params, data, group, loss_fn, loss_rtol, loss_atol, approximate, check_symmetry,
             seed) -> _Problem:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(f"data must be a pair (X, Y); got {type(data).__name__}")
    if not isinstance(approximate, bool):
        raise ValueError(f"approximate={approximate!r} must be True or False")
    X, Y = data
    names, fixed = None, {}
    if isinstance(model, torch.nn.Module):
        params, loss_on, names, fixed = _module_problem(model, params, loss_fn)
    else:
        params = check_tensors("params", tuple(params))  # a group acts on floating-point parameters

        def loss_on(p, X, Y):
            value = model.loss(p, X, Y) if loss_fn is None else loss_fn(model, p, X, Y)
            if value.ndim != 0:
                raise ValueError(f"the loss must be a scalar (one configuration), got shape {tuple(value.shape)}")
            return value
    check_finite("params", params)
    sym = _symmetry(model, tuple(params), group, X, approximate)
    frozen_note = None
    if isinstance(model, torch.nn.Module):
        sym, frozen_note = without_frozen(sym, model)
    rtol, atol = _default_tolerances(params[0].dtype)
    rtol = rtol if loss_rtol is None else loss_rtol
    atol = atol if loss_atol is None else loss_atol
    base = tuple(p.detach() for p in params)
    with torch.no_grad():
        loss0 = float(loss_on(base, X, Y))
    if not math.isfinite(loss0):
        raise ValueError(f"the loss at params is {loss0}: teleport needs a finite loss")
    additive = shift_and_rotation_keys(sym)
    notes = [f"the condition number is taken over the scaling and GL factors only: the translation and rotation "
             f"block(s) {list(additive)} act by a shift or an orthogonal map (never singular or ill-conditioned)"
             ] if additive else []
    if frozen_note:
        notes.append(frozen_note + "; the objective differentiates the trainable parameters only")
    pb = _Problem(sym, list(sym.algebra_zero()), loss_on, X, Y, base, tuple(params), names, loss0, rtol, atol,
                  approximate and bool(getattr(sym, "data_dependent", False)), additive, fixed,
                  [n for n, _ in model.named_parameters()] if names is not None else [], notes)
    if check_symmetry and not pb.approximate:
        gen = torch.Generator().manual_seed(seed + 7919)
        probe = tuple(1e-2 * torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
                      for z in pb.zero())
        try:
            with torch.no_grad():
                moved = float(pb.loss(pb.act(probe)))
        except KeyError as error:  # a ModuleSymmetries found in another model
            raise ValueError(f"group does not act on this model's parameters: {error}") from None
        if not pb.keeps(moved):
            raise ValueError(f"group={pb.name!r} is not a symmetry of {model!r} here: a random element "
                             f"exp(ξ) with ‖ξ‖ ≈ {_norm(probe):.2g} changed "
                             f"the loss from {loss0:.6g} to {moved:.6g} (relative {abs(moved - loss0) / max(abs(loss0), atol):.2g}, "
                             f"tolerance {rtol:g}). Pick the group of this model's activation (GROUPS: {sorted(GROUPS)})")
    return pb


def _check_positive(name: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}={value!r} must be a positive number{' or None' if allow_none else ''}")
    return float(value)
