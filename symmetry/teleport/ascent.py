"""The ascent of a teleport: gradient steps on ξ in the Lie algebra, g = exp(ξ), from ξ = 0 (the identity),
each step halved until [`AcceptancePolicy`][symmetry.teleport.AcceptancePolicy] takes it (backtracking);
[`teleport_to`][] applies the best iterate."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..groups import Symmetry
from ..groups.paper import Group
from ..types import Params
from ..validation import check_choice
from .acceptance import AcceptancePolicy, _finish
from .element import _norm
from .objectives import Objective, _detached_leaves, make_objective
from .problem import Leaves, Tensor, _check_positive, _Problem, _problem, _with_grad
from .report import TeleportReport

__all__ = ["Ascent", "ascend", "teleport_to"]


@dataclass
class Ascent:
    """What [`ascend`][] did: J(θ) before any element acts (``before``), J at each accepted iterate
    (``history``, from ξ = 0), the best iterate (``best_step``, its ξ), the steps taken, why the ascent
    stopped early (None: it did not) and the halvings of the step."""

    before: float
    history: list[float]
    best_step: int
    xi: Leaves
    steps: int
    stopped: str | None
    halvings: int


def ascend(pb: _Problem, obj: Objective, policy: AcceptancePolicy, *, lr: float, steps: int,
           max_step: float | None, max_halvings: int) -> Ascent:
    """``steps`` gradient steps on ξ (ascent on J, or descent when ``obj.maximize`` is False) of size ``lr``,
    each capped at ‖Δξ‖ ≤ min(``max_step``, ``policy.trust_region``) and halved while the policy refuses it,
    at most ``max_halvings`` times in all; after a success the step may grow back (×2, up to the full step)."""
    sign = 1.0 if obj.maximize else -1.0
    base = pb.base

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

    leaves = tuple(z.detach().requires_grad_(True) for z in pb.zero())
    current = base
    value, v = evaluate(leaves)
    history = [v]
    best = (sign * v, 0, tuple(x.detach() for x in leaves))
    stopped, scale, halvings, k = None, 1.0, 0, 0
    while k < steps:
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        step = [sign * lr * (g if g is not None else torch.zeros_like(x)) for g, x in zip(grads, leaves)]
        cap = min(c for c in (max_step, policy.trust_region, math.inf) if c is not None)
        if cap < math.inf:  # ξ is dimensionless: ‖Δξ‖ ≤ trust_region moves θ by about that fraction
            norm = _norm(step)
            if norm > cap:
                step = [s * (cap / norm) for s in step]
        while True:  # backtracking: halve a step that is refused, or (backtrack=True) does not improve J
            candidate = tuple((x.detach() + scale * s).requires_grad_(True) for x, s in zip(leaves, step))
            why, moved = policy.refuse_element(pb, candidate, current)
            if why is None:
                new_value, new_v = evaluate(candidate)
                why = policy.refuse_value(new_v, v, before, sign)
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
    return Ascent(before, history, best[1], best[2], k, stopped, halvings)


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
    obj = make_objective(objective)
    policy = AcceptancePolicy(on_loss_change, max_condition, trust_region, backtrack, objective_limit, max_ratio)
    run = ascend(pb, obj, policy, lr=lr, steps=steps, max_step=max_step, max_halvings=max_halvings)
    fields = dict(objective=obj.name, maximize=obj.maximize, objective_before=run.before,
                  objective_after=run.before if run.best_step == 0 else run.history[run.best_step],
                  ascent_steps=run.steps, best_step=run.best_step, history=run.history, stopped=run.stopped,
                  halvings=run.halvings, kind="ascent")
    new, report = _finish(pb, run.xi, run.best_step == 0, on_loss_change, max_condition, holdout,
                          {**fields, "seconds": 0.0})
    report.seconds = time.perf_counter() - start
    return new, report
