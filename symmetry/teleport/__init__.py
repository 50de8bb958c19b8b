"""Symmetry teleportation: move the parameters along a group orbit, where the loss does not change,
to the point that is best for what comes next (Zhao, Dehmamy, Walters & Yu, NeurIPS 2022;
Zhao, Gower, Walters & Yu, ICLR 2024).

The paper's conserved quantities are coordinates along the orbit (Figs. 6, 7, 9; App. G.1):
gradient flow cannot change them, a group element can. [`teleport_to`][] (also ``symmetry.teleport_to``;
this module is ``symmetry.teleport``) optimises one group element

    g = exp(ξ),  ξ ∈ Lie algebra  (matrix_exp for GL / O, entrywise exp for positive scalings),

by gradient ascent on an objective J(g·θ) and applies it. Why this parametrisation: ξ = 0 is the
identity, every ξ gives a group element of the identity component (no step can leave the group or
reach a singular matrix, which g = I + T of the reference code can), and the action is exactly
loss-preserving for every ξ, so ΔL measures only round-off (the reference code's first-order
inverse (I + T)⁻¹ ≈ I − T changes the loss at O(‖T‖²)).

Groups: any [`symmetry.groups.Symmetry`][] (teleport uses its ``algebra_zero``, ``exp``, ``act_params`` and
``describe``): a user's ``nn.Module`` with its symmetries, ``module_symmetries(model)``, passed directly; or a
tuple model with one of the paper's groups of [`symmetry.groups.paper`][], by name in ``GROUPS`` or as an
instance, bound to the model and the teleport batch by teleport (re-exported here:
[`GeneralLinear`][symmetry.groups.paper.GeneralLinear], [`PositiveScaling`][symmetry.groups.paper.PositiveScaling],
[`NonlinearGL`][symmetry.groups.paper.NonlinearGL] (Prop. 8 in the form whose identity is the identity; exact
on a batch no larger than every hidden width, ``approximate=True`` for larger ones),
[`Orthogonal`][symmetry.groups.paper.Orthogonal], [`NeuronScaling`][symmetry.groups.paper.NeuronScaling]).

Objectives: [`grad_norm`][] (maximise ‖∇L‖², NeurIPS 2022), [`sharpness`][] (minimise the top
Hessian eigenvalue, its eigenvector by [`symmetry.hessian.top_hessian_eigenvalues`][], or Hutchinson's
trace estimate, ICLR 2024), [`conserved_target`][] (reach a target value of a conserved quantity), or any
callable. [`teleport_random`][] applies a random element of a given size: the control of a teleport.

Inside training: [`TeleportingStepper`][] wraps any stepper of the engine's protocol and teleports at
the steps of a [`TeleportSchedule`][]; [`symmetry.dynamics.run`][] is the one loop that runs it.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Collection, Mapping, Sequence

import torch

from .._tools import math_attention, without_frozen
from ..groups import Element, NotSupportedError, Params, Symmetry
from ..groups.paper import (PAPER_GROUPS, GeneralLinear, Group, NeuronScaling, NonlinearGL, Orthogonal,
                           PositiveScaling, make_group)
from ..types import LossFn
from ..validation import check_choice, check_finite, check_tensors

Tensor = torch.Tensor
Leaves = tuple[Tensor, ...]  # Lie-algebra coordinates ξ as a tuple, in the order of the symmetry's keys
#: the paper's groups by name (symmetry.groups.paper)
GROUPS = PAPER_GROUPS

__all__ = ["GROUPS", "GeneralLinear", "Group", "NeuronScaling", "NonlinearGL", "Objective", "Orthogonal",
           "PositiveScaling", "TeleportReport", "TeleportSchedule", "TeleportWarning", "TeleportingStepper",
           "condition_number", "conserved_target", "curvature_along", "grad_norm", "gradient_norm_squared",
           "lambda_max", "make_group", "make_objective", "sharpness", "teleport_random", "teleport_to", "shift_and_rotation_keys"]


class TeleportWarning(UserWarning):
    """A teleport changed the loss by more than the tolerance (``on_loss_change="warn"``)."""


# ---------------------------------------------------------------------------------------
# Groups: any Symmetry of symmetry.groups; the paper's by name
# ---------------------------------------------------------------------------------------

def condition_number(element: Mapping[str, Tensor] | Sequence[Tensor], skip: Collection[str] = ()) -> float:
    """Largest condition number over the element's factors: ‖g‖‖g⁻¹‖ (2-norm) for a matrix,
    max|c|/min|c| for a diagonal given as a vector. inf for a singular (or non-finite) element.

    ``skip``: keys of factors that are no scaling, left out: a translation's element is the shift t it adds
    (θ ↦ θ + t, its identity t = 0), a rotation's its angles (an orthogonal map); neither can be singular or
    ill-conditioned ([`shift_and_rotation_keys`][])."""
    parts = [g for k, g in element.items() if k not in skip] if isinstance(element, Mapping) else element
    worst = 1.0
    for g in parts:
        g = g.detach()
        if not bool(torch.isfinite(g).all()):
            return math.inf
        if g.ndim >= 2:
            s = torch.linalg.svdvals(g.to(torch.float64))
            c = float(s[..., 0].max() / s[..., -1].min()) if float(s[..., -1].min()) > 0 else math.inf
        else:
            a = g.abs().to(torch.float64)
            c = float(a.max() / a.min()) if float(a.min()) > 0 else math.inf
        worst = max(worst, c)
    return worst


def shift_and_rotation_keys(symmetry) -> tuple[str, ...]:
    """The keys of a symmetry's factors that are no scaling: translations (a shift, identity t = 0) and RoPE's
    pair rotations (angles of an orthogonal map, identity 0). Neither can be singular or ill-conditioned, so
    [`condition_number`][] leaves them out."""
    kinds = ("translation", "rotation")
    return tuple(b.name for b in getattr(symmetry, "blocks", ()) or () if getattr(b, "kind", None) in kinds)


#: what teleport calls on a symmetry (the rest of the protocol it does not need)
TELEPORT_NEEDS = ("algebra_zero", "exp", "act_params", "describe")


# ---------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------

@dataclass
class Objective:
    """J(θ) = ``fn(loss_fn, params)``, a differentiable scalar; teleport maximises it (or minimises)."""

    name: str
    fn: Callable[[LossFn, Params], Tensor]
    maximize: bool = True


def _grad(loss_fn: LossFn, params: Params, create_graph: bool = True) -> Params:
    loss = loss_fn(params)
    return torch.autograd.grad(loss, params, create_graph=create_graph)


def _detached_leaves(params: Params) -> Params:
    return tuple(p.detach().requires_grad_(True) for p in params)


def gradient_norm_squared(loss_fn: LossFn, params: Params) -> Tensor:
    """‖∇L(θ)‖² summed over all parameter tensors (= −dL/dt under gradient flow at η = 1)."""
    return torch.stack([(g * g).sum() for g in _grad(loss_fn, params)]).sum()


def grad_norm() -> Objective:
    """Maximise ‖∇L‖² on the orbit: the NeurIPS 2022 objective (Algorithm 1)."""
    return Objective("squared gradient norm", gradient_norm_squared, True)


def _inner(a: Params, b: Params) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


def curvature_along(loss_fn: LossFn, params: Params, directions: Sequence[Params]) -> Tensor:
    """Σ_v vᵀH(θ)v over ``directions`` (tuples shaped like ``params``), differentiable in θ.

    [`symmetry.hessian.hessian_vector_product`][] gives values of Hv at a fixed point; an objective needs
    vᵀH(g·θ)v as a differentiable function of the group element, hence this double backward pass."""
    grads = _grad(loss_fn, params, create_graph=True)
    total = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
    for v in directions:
        hv = torch.autograd.grad(_inner(grads, v), params, create_graph=True, allow_unused=True)
        total = total + _inner(tuple(torch.zeros_like(p) if h is None else h for h, p in zip(hv, params)), v)
    return total


def _top_eigenvector(loss_fn: LossFn, params: Params, seed: int = 0) -> Params:
    """The unit eigenvector of the Hessian's largest (algebraic) eigenvalue, shaped like ``params``
    ([`symmetry.hessian.top_hessian_eigenvalues`][]: Lanczos on Hessian-vector products)."""
    from ..hessian import top_hessian_eigenvalues
    from ..models import unflatten

    params = tuple(p.detach() for p in params)
    pairs = top_hessian_eigenvalues(loss_fn, params, k=1, seed=seed, return_eigenvectors=True)
    return unflatten(pairs.vectors[:, 0], params)


def lambda_max(loss_fn: LossFn, params: Params) -> float:
    """The Hessian's largest eigenvalue at ``params`` ([`symmetry.hessian.top_hessian_eigenvalues`][])."""
    from ..hessian import top_hessian_eigenvalues

    return float(top_hessian_eigenvalues(loss_fn, tuple(p.detach() for p in params), k=1)[0])


def sharpness(method: str = "lanczos", samples: int = 10, seed: int = 0) -> Objective:
    """Minimise sharpness (ICLR 2024): ``lanczos`` = the top Hessian eigenvalue λ_max, as vᵀH(θ)v with v
    the top eigenvector found by Lanczos at the current iterate and held fixed (Hellmann–Feynman: this has
    the gradient of λ_max); ``hutchinson`` = the trace estimate mean zᵀHz over ``samples`` Rademacher
    vectors z, fixed across steps so that the objective is one smooth function of ξ."""
    check_choice("method", method, ("lanczos", "hutchinson"))
    state: dict[str, Any] = {}

    def top(loss_fn, params):
        v = _top_eigenvector(loss_fn, params, seed)
        return curvature_along(loss_fn, params, [v])

    def hutchinson(loss_fn, params):
        if "z" not in state:
            gen = torch.Generator().manual_seed(seed)
            state["z"] = [tuple((torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params)
                          for _ in range(samples)]
        return curvature_along(loss_fn, params, state["z"]) / samples

    name = "top Hessian eigenvalue (Lanczos)" if method == "lanczos" else "Hessian trace (Hutchinson)"
    return Objective(name, top if method == "lanczos" else hutchinson, False)


def conserved_target(quantity: Callable[[Params], Tensor], target: float | Tensor, name: str = "Q") -> Objective:
    """Reach ``quantity(θ) = target`` on the orbit: minimise ‖quantity(θ) − target‖²."""
    def fn(loss_fn, params):
        q = quantity(tuple(params))
        return ((q - torch.as_tensor(target, dtype=q.dtype, device=q.device)) ** 2).sum()

    return Objective(f"‖{name} − target‖²", fn, False)


OBJECTIVES = {"grad_norm": grad_norm, "sharpness": sharpness, "trace": lambda: sharpness("hutchinson")}


def make_objective(objective: str | Objective | Callable[[Params], Tensor], maximize: bool = True) -> Objective:
    """An [`Objective`][] by name (``grad_norm``, ``sharpness``, ``trace``), as given, or from a
    callable θ ↦ scalar (maximised unless ``maximize=False``)."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        check_choice("objective", objective, OBJECTIVES)
        return OBJECTIVES[objective]()
    if callable(objective):
        name = getattr(objective, "__name__", "callable")
        return Objective(name, lambda loss_fn, params: objective(tuple(params)), maximize)
    raise TypeError(f"objective must be one of {sorted(OBJECTIVES)}, an Objective or a callable; got {objective!r}")


# ---------------------------------------------------------------------------------------
# teleport
# ---------------------------------------------------------------------------------------

@dataclass
class TeleportReport:
    """What one teleport did. ``relative_loss_change`` = |L(g·θ) − L(θ)| / |L(θ)| on the teleport batch;
    ``holdout_*``: the same on held-out data (``holdout=`` of [`teleport_to`][]; None without it).
    ``objective_before`` is J at the given parameters, before any group element acts."""

    group: str
    objective: str
    maximize: bool
    objective_before: float
    objective_after: float
    loss_before: float
    loss_after: float
    relative_loss_change: float
    condition_number: float
    xi_norm: float
    ascent_steps: int
    best_step: int
    seconds: float
    history: list[float] = field(default_factory=list)  # objective at each ascent iterate
    stopped: str | None = None  # why the ascent stopped early, if it did
    halvings: int = 0  # backtracking halvings of the step
    approximate: bool = False  # a data-dependent action on a batch larger than a hidden width
    holdout_loss_before: float | None = None
    holdout_loss_after: float | None = None
    holdout_relative_loss_change: float | None = None
    kind: str = "ascent"  # "ascent" (teleport_to) or "random" (teleport_random)
    notes: list[str] = field(default_factory=list)  # what the teleport left out and why (translations, frozen)

    @property
    def improved(self) -> bool:
        d = self.objective_after - self.objective_before
        return d > 0 if self.maximize else d < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "improved": self.improved}


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


def _norm(tensors: Sequence[Tensor]) -> float:
    """Euclidean norm of a tuple of tensors taken as one vector."""
    return float(torch.sqrt(torch.stack([(t * t).sum() for t in tensors]).sum())) if len(tensors) else 0.0


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


def _finish(pb: _Problem, xi: Leaves, identity: bool, on_loss_change: str, max_condition: float,
            holdout, fields: dict) -> tuple[Any, TeleportReport]:
    """Apply exp(ξ) (the parameters unchanged when ``identity``), check it, report, write a module."""
    if identity:
        element_cond, new = 1.0, pb.base
    else:
        element = pb.element(xi)
        element_cond = pb.condition(element)
        if not element_cond <= max_condition:
            raise ValueError(f"the teleport's group element is singular or ill-conditioned (condition number "
                             f"{element_cond:.3g} > max_condition={max_condition:g}); lower lr or steps, set "
                             f"trust_region, or use on_loss_change='stop'; params were left unchanged")
        with torch.no_grad():
            new = tuple(t.detach() for t in pb.apply(element, pb.base))
        check_finite("teleported params", new)
    with torch.no_grad():
        loss1 = float(pb.loss(new))
    rel = abs(loss1 - pb.loss0) / max(abs(pb.loss0), pb.atol)
    if not pb.keeps(loss1):
        msg = (f"the teleport changed the loss from {pb.loss0:.10g} to {loss1:.10g} (relative {rel:.3g} > "
               f"loss_rtol={pb.rtol:g}); the group does not keep this loss")
        if on_loss_change == "warn":
            warnings.warn(msg, TeleportWarning, stacklevel=3)
        else:
            raise ValueError(msg + "; params were left unchanged")
    held: dict[str, Any] = {}
    if holdout is not None:
        if not (isinstance(holdout, (tuple, list)) and len(holdout) == 2):
            raise ValueError(f"holdout must be a pair (X, Y) of held-out data; got {type(holdout).__name__}")
        with torch.no_grad():
            before, after = float(pb.loss_on(pb.base, *holdout)), float(pb.loss_on(new, *holdout))
        held = {"holdout_loss_before": before, "holdout_loss_after": after,
                "holdout_relative_loss_change": abs(after - before) / max(abs(before), pb.atol)}
    report = TeleportReport(pb.name, loss_before=pb.loss0, loss_after=loss1, relative_loss_change=rel,
                            condition_number=element_cond, xi_norm=0.0 if identity else _norm(xi),
                            approximate=pb.approximate, notes=list(pb.notes), **held, **fields)
    if pb.names is not None:
        with torch.no_grad():
            for p, q in zip(pb.params, new):
                p.copy_(q)
        moved = {**pb.fixed, **dict(zip(pb.names, new))}
        return {n: moved[n] for n in pb.order}, report
    return new, report


def _check_positive(name: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}={value!r} must be a positive number{' or None' if allow_none else ''}")
    return float(value)


@_with_grad
def teleport_to(model, params, data: tuple, group: str | Group | Symmetry, objective: str | Objective | Callable = "grad_norm", *,
                lr: float = 0.1, steps: int = 10, max_step: float | None = None, trust_region: float | None = None,
                loss_fn: Callable | None = None, loss_rtol: float | None = None, loss_atol: float | None = None,
                on_loss_change: str = "stop", check_symmetry: bool = True, max_condition: float = 1e8,
                max_halvings: int = 30, backtrack: bool = True, objective_limit: float | None = None,
                max_ratio: float | None = None, approximate: bool = False, holdout: tuple | None = None,
                seed: int = 0) -> tuple[Any, TeleportReport]:
    """Teleport θ to g*·θ, g* = exp(ξ*) ≈ argmax_g J(g·θ) (or argmin), found by ``steps`` gradient steps
    on ξ from ξ = 0 (the identity) with step size ``lr`` (each step's norm capped at ``max_step``).

    ``model``: a tuple model (``TwoLayerNet``, ``MLP``, radial nets) with ``params`` a tuple, or an
    ``nn.Module`` with ``loss_fn(output, target)`` (``params=None``: its current parameters; the result
    is also written into the module). ``data`` = (X, Y): the batch the loss (and a data-dependent
    action) uses. ``group``: for a tuple model a paper group (a name in ``GROUPS`` or a
    [`Group`][symmetry.groups.paper.Group]) or any other [`Symmetry`][symmetry.groups.Symmetry] acting on its
    tuple; for a module a Symmetry acting on its named parameters, e.g. ``module_symmetries(model)``. The best iterate (largest J, or smallest) is applied; if that is ξ = 0 (for
    instance ``steps=0``, the null teleport) the parameters come back unchanged.

    Step size: on a non-compact group (GL, scalings) ‖∇L‖² has no maximum on the orbit, and the effect of
    ``lr`` depends on the model's scale. ``trust_region`` makes a step mean the same on every model: an
    ascent step may change the parameters by at most this fraction of their norm,
    ‖g_{k+1}·θ − g_k·θ‖ ≤ ``trust_region`` · ‖g_k·θ‖: the step on ξ (dimensionless) is capped at
    ‖Δξ‖ ≤ ``trust_region``, which moves θ by about that fraction, and halved until the exact change fits.
    ``objective_limit``: steps past this value of J are refused (the ICLR 2024 code stops the ascent at
    ‖∇L‖² > 100); ``max_ratio``: likewise for |J| above ``max_ratio`` × |J(θ)| (a scale-free cap).

    ``approximate``: a data-dependent group ([`NonlinearGL`][symmetry.groups.paper.NonlinearGL]) keeps the batch loss exactly only on a
    batch no larger than every hidden width; a larger batch is refused unless ``approximate=True``, the
    least-squares action the ICLR 2024 code uses: its iterates are then not refused for their loss
    change, and the report gives the change on the batch and, with ``holdout=(X, Y)``, on held-out data.

    Checks, each a ValueError naming the argument: non-finite parameters; ``check_symmetry``: a random
    element exp(ξ), ‖ξ‖ ~ 1e-2, must keep the loss within ``loss_atol + loss_rtol·|L|`` (defaults 1e-12 +
    1e-9 in float64, 1e-6 + 1e-4 otherwise), else the group is not a symmetry of this model; a NaN
    objective; an element with condition number above ``max_condition`` (singular); and the applied
    teleport's loss change. ``on_loss_change``: ``stop`` (default) refuses every ascent iterate whose
    loss change or condition number is above tolerance: the step is halved (backtracking; with
    ``backtrack=True``, also every step that does not improve J), up to ``max_halvings`` times in all,
    then the ascent stops at the last valid iterate (``report.stopped`` says why; ``report.halvings``
    counts them); ``raise`` raises a ValueError if the chosen point breaks them; ``warn`` applies it with
    a [`TeleportWarning`][]. The input is never modified when a check fails. Returns (new parameters,
    [`TeleportReport`][]).

    The whole teleport runs with ``scaled_dot_product_attention`` on its math backend
    (``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``): the objective's gradient in ξ differentiates a gradient,
    and torch's fused attention kernels (CPU flash, CUDA flash / memory-efficient) have no second derivative.
    """
    start = time.perf_counter()
    check_choice("on_loss_change", on_loss_change, ("stop", "raise", "warn"))
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps={steps!r} must be a non-negative integer")
    lr = _check_positive("lr", lr, allow_none=False)
    trust_region = _check_positive("trust_region", trust_region)
    max_ratio = _check_positive("max_ratio", max_ratio)
    max_step = _check_positive("max_step", max_step)
    pb = _problem(model, params, data, group, loss_fn, loss_rtol, loss_atol, approximate, check_symmetry, seed)
    base = pb.base
    obj = make_objective(objective)
    sign = 1.0 if obj.maximize else -1.0

    def value_at(moved: Params) -> Tensor:
        value = obj.fn(pb.loss, moved)
        if value.ndim != 0:
            raise ValueError(f"objective {obj.name!r} must return a scalar, got shape {tuple(value.shape)}")
        return value

    before = float(value_at(_detached_leaves(base)).detach())  # J(θ), before any group element acts
    if not math.isfinite(before):
        raise ValueError(f"objective {obj.name!r} is {before} at the starting parameters")

    def evaluate(leaves: Leaves) -> tuple[Tensor, float]:
        # a tensor the group leaves alone is still differentiated by the objective
        moved = tuple(p if p.requires_grad else p.detach().requires_grad_(True) for p in pb.act(leaves))
        value = value_at(moved)
        return value, float(value.detach())

    def refused(candidate: Leaves, current: Params) -> tuple[str | None, Params | None]:
        """Why an iterate is refused before its objective is computed (None: accepted), and its g·θ."""
        element = pb.element(candidate)
        if on_loss_change == "stop":
            cond = pb.condition(element)
            if not cond <= max_condition:
                return f"condition number {cond:.3g} > max_condition={max_condition:g}", None
        if (on_loss_change != "stop" or pb.approximate) and trust_region is None:
            return None, None  # nothing below to check: spare the extra action
        try:
            with torch.no_grad():
                moved = tuple(t.detach() for t in pb.apply(element, base))
                here = float(pb.loss(moved))
        except torch.linalg.LinAlgError:  # e.g. σ(gZ) lost rank in the data-dependent action
            return "the data-dependent action is singular here", None
        if on_loss_change == "stop" and not pb.keeps(here):
            return (f"loss {here:.10g} vs {pb.loss0:.10g} (relative "
                    f"{abs(here - pb.loss0) / max(abs(pb.loss0), pb.atol):.3g})"), None
        if trust_region is not None:
            change = _norm([a - b for a, b in zip(moved, current)]) / max(_norm(current), 1e-300)
            if change > trust_region:
                return f"the parameters changed by {change:.3g} of their norm > trust_region={trust_region:g}", None
        return None, moved

    leaves = tuple(z.detach().requires_grad_(True) for z in pb.zero())
    current = base
    value, v = evaluate(leaves)
    history = [v]
    best = (sign * v, 0, tuple(x.detach() for x in leaves))
    stopped, scale, halvings, k = None, 1.0, 0, 0
    while k < steps:
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        step = [sign * lr * (g if g is not None else torch.zeros_like(x)) for g, x in zip(grads, leaves)]
        cap = min(c for c in (max_step, trust_region, math.inf) if c is not None)
        if cap < math.inf:  # ξ is dimensionless: ‖Δξ‖ ≤ trust_region moves θ by about that fraction
            norm = _norm(step)
            if norm > cap:
                step = [s * (cap / norm) for s in step]
        while True:  # backtracking: halve a step that is refused, or (backtrack=True) does not improve J
            candidate = tuple((x.detach() + scale * s).requires_grad_(True) for x, s in zip(leaves, step))
            why, moved = refused(candidate, current)
            if why is None:
                new_value, new_v = evaluate(candidate)
                if not math.isfinite(new_v):
                    why = f"objective is {new_v}"
                elif backtrack and not sign * new_v > sign * v:
                    why = "the objective did not improve"
                elif objective_limit is not None and sign * new_v > sign * objective_limit:
                    why = f"the objective {new_v:.4g} passed objective_limit={objective_limit:g}"
                elif max_ratio is not None and abs(new_v) > max_ratio * abs(before):
                    why = f"the objective {new_v:.4g} passed max_ratio={max_ratio:g} × its start {before:.4g}"
            if why is None:
                break
            halvings += 1
            scale *= 0.5
            if halvings > max_halvings:
                stopped = f"step {k + 1}: {why} after {max_halvings} halvings of the step"
                break
        if stopped:
            break
        leaves, value, v, k = candidate, new_value, new_v, k + 1
        if moved is not None:
            current = moved
        scale = min(1.0, 2 * scale)  # let the step grow back after a success
        history.append(v)
        if sign * v > best[0]:
            best = (sign * v, k, tuple(x.detach() for x in leaves))
    _, best_step, xi_best = best
    fields = dict(objective=obj.name, maximize=obj.maximize, objective_before=before,
                  objective_after=before if best_step == 0 else history[best_step], ascent_steps=k,
                  best_step=best_step, history=history, stopped=stopped, halvings=halvings, kind="ascent")
    new, report = _finish(pb, xi_best, best_step == 0, on_loss_change, max_condition, holdout,
                          {**fields, "seconds": 0.0})
    report.seconds = time.perf_counter() - start
    return new, report


@_with_grad
def teleport_random(model, params, data: tuple, group: str | Group | Symmetry, xi_norm: float, *, seed: int = 0,
                    objective: str | Objective | Callable = "grad_norm", loss_fn: Callable | None = None,
                    loss_rtol: float | None = None, loss_atol: float | None = None, on_loss_change: str = "raise",
                    check_symmetry: bool = True, max_condition: float = 1e8, approximate: bool = False,
                    holdout: tuple | None = None) -> tuple[Any, TeleportReport]:
    """The random-element control of a teleport: apply exp(ξ) with ξ a Gaussian direction in the Lie
    algebra (from ``seed``) scaled to ‖ξ‖ = ``xi_norm`` (the size of an optimised teleport's ξ*).

    Same arguments and checks as [`teleport_to`][] (``on_loss_change``: ``raise`` or ``warn``; there is no
    ascent to stop); the report's ``objective_before``/``after`` give J at θ and at the random g·θ."""
    start = time.perf_counter()
    check_choice("on_loss_change", on_loss_change, ("raise", "warn"))
    if not (isinstance(xi_norm, (int, float)) and not isinstance(xi_norm, bool) and xi_norm >= 0
            and math.isfinite(xi_norm)):
        raise ValueError(f"xi_norm={xi_norm!r} must be a non-negative number")
    pb = _problem(model, params, data, group, loss_fn, loss_rtol, loss_atol, approximate, check_symmetry, seed)
    obj = make_objective(objective)
    gen = torch.Generator().manual_seed(seed)
    zero = pb.zero()
    direction = tuple(torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device) for z in zero)
    size = _norm(direction)
    xi = tuple(d * (xi_norm / size) for d in direction) if size > 0 else zero
    before = float(obj.fn(pb.loss, _detached_leaves(pb.base)).detach())
    new, report = _finish(pb, xi, xi_norm == 0, on_loss_change, max_condition, holdout,
                          dict(objective=obj.name, maximize=obj.maximize, objective_before=before,
                               objective_after=before, ascent_steps=0, best_step=0, kind="random", seconds=0.0))
    moved = tuple(new[n] for n in pb.names) if pb.names is not None else new
    report.objective_after = float(obj.fn(pb.loss, _detached_leaves(moved)).detach())
    report.history = [before, report.objective_after]
    report.seconds = time.perf_counter() - start
    return new, report


# ---------------------------------------------------------------------------------------
# Teleporting inside training: a stepper for the engine's loop, symmetry.dynamics.run
# ---------------------------------------------------------------------------------------

@dataclass
class TeleportSchedule:
    """Teleport before the steps in ``at`` and, if ``every`` is set, before every ``every``-th step
    (0, every, 2·every, …) up to ``until``."""

    at: tuple[int, ...] = (0,)
    every: int | None = None
    until: int | None = None

    def __post_init__(self):
        if self.every is not None and not (isinstance(self.every, int) and self.every > 0):
            raise ValueError(f"every={self.every!r} must be a positive integer or None")
        self.at = tuple(int(a) for a in self.at)

    def due(self, step: int) -> bool:
        if step in self.at:
            return True
        if self.every is None or (self.until is not None and step > self.until):
            return False
        return step % self.every == 0


class TeleportingStepper:
    """A stepper of the engine's protocol ([`symmetry.dynamics.Stepper`][]: ``init_state(params, velocity)
    -> State``, ``step(state, grad) -> State``) that teleports before the scheduled steps; run it with
    [`symmetry.dynamics.run`][], the one training loop.

    Before ``stepper.step`` at a scheduled ``state.step``, [`teleport_to`][] moves ``state.params`` on
    ``data`` ((X, Y), or a function step ↦ (X, Y), e.g. a teleport batch drawn for that step) and hands
    the inner stepper ``dataclasses.replace(state, params=new)``: its memory (momentum, Adam's moments,
    AdaGrad's sum) is kept, not transported (``state="keep"``, as NeurIPS 2022 keeps AdaGrad's
    accumulator); ``state="reset"`` restarts it with ``init_state(new)`` (as the ICLR 2024 code rebuilds
    its optimiser). ``random_norms``: the random-element control instead: the i-th teleport applies
    [`teleport_random`][] with ‖ξ‖ = ``random_norms[i]`` (seed ``seed + i``). The controls of a teleport:
    ``steps=0`` (null teleport; with ``state="reset"``, the optimiser reset alone) and ``random_norms``.
    ``events`` lists {"step", "report"}; ``teleport_kwargs`` go to [`teleport_to`][].
    """

    def __init__(self, stepper, model, data, schedule: TeleportSchedule, *, state: str = "keep",
                 random_norms: Sequence[float] | None = None, seed: int = 0, **teleport_kwargs):
        if not isinstance(schedule, TeleportSchedule):
            raise TypeError(f"schedule must be a TeleportSchedule, got {type(schedule).__name__}")
        self.stepper, self.model, self.data, self.schedule = stepper, model, data, schedule
        self.state = check_choice("state", state, ("keep", "reset"))
        self.random_norms = None if random_norms is None else [float(x) for x in random_norms]
        self.seed, self.kwargs = seed, teleport_kwargs
        self.name = f"{getattr(stepper, 'name', 'stepper')}+teleport"
        self.dt = getattr(stepper, "dt", 1.0)
        self.events: list[dict] = []

    def __repr__(self) -> str:
        return f"TeleportingStepper({self.stepper!r}, {self.schedule}, state={self.state!r})"

    def init_state(self, params: Params, velocity: Params | None = None):
        return self.stepper.init_state(params, velocity)

    def teleport(self, params: Params, step: int) -> tuple[Params, TeleportReport]:
        data = self.data(step) if callable(self.data) else self.data
        if self.random_norms is None:
            return teleport_to(self.model, params, data, seed=self.seed, **self.kwargs)
        i = len(self.events)
        if i >= len(self.random_norms):
            raise ValueError(f"random_norms has {len(self.random_norms)} sizes, but teleport {i + 1} is due at step {step}")
        keep = ("group", "objective", "loss_fn", "loss_rtol", "loss_atol", "approximate", "holdout", "max_condition")
        return teleport_random(self.model, params, data, xi_norm=self.random_norms[i], seed=self.seed + i,
                               **{k: v for k, v in self.kwargs.items() if k in keep})

    def step(self, state, grad):
        import dataclasses

        if self.schedule.due(state.step):
            new, report = self.teleport(tuple(state.params), state.step)
            if self.state == "reset":
                state = dataclasses.replace(self.stepper.init_state(new), time=state.time, step=state.step)
            else:
                state = dataclasses.replace(state, params=new)
            self.events.append({"step": state.step, "report": report})
        return self.stepper.step(state, grad)
