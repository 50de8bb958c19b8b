"""The random-element control of a teleport: [`teleport_random`][] applies exp(ξ) with ξ a random direction
of the Lie algebra scaled to a given norm (the size of an optimised teleport's ξ*)."""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch

from ..groups import Symmetry
from ..groups.paper import Group
from ..validation import check_choice
from .acceptance import _finish
from .element import _norm
from .objectives import Objective, _detached_leaves, make_objective
from .problem import _problem, _with_grad
from .report import TeleportReport

__all__ = ["teleport_random"]


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
