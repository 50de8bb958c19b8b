"""The acceptance policy of a teleport: which group elements and ascent iterates are taken, which refused.

An element g = exp(ξ) is refused when it is singular or ill-conditioned (its
[`condition_number`][symmetry.teleport.condition_number] above ``max_condition``), when it changes the loss
on the teleport batch by more than the tolerance (the group does not keep this loss here), or when it moves θ
by more than ``trust_region`` of its norm; an ascent iterate also when its objective is not finite, does not
improve (``backtrack``), or passes ``objective_limit`` or ``max_ratio`` × J(θ). [`AcceptancePolicy`][] holds
these criteria; ``_finish`` checks the chosen element once more, applies it and writes the
[`TeleportReport`][symmetry.teleport.TeleportReport].
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..types import Params
from ..validation import check_finite
from .element import _norm
from .problem import Leaves, _Problem
from .report import TeleportReport

Tensor = torch.Tensor

__all__ = ["AcceptancePolicy", "TeleportWarning"]


class TeleportWarning(UserWarning):
    """A teleport changed the loss by more than the tolerance (``on_loss_change="warn"``)."""



@dataclass(frozen=True)
class AcceptancePolicy:
    """Which ascent iterates of [`teleport_to`][symmetry.teleport.teleport_to] are refused (its arguments of
    the same names). ``on_loss_change="stop"`` refuses an element whose condition number passes
    ``max_condition`` or whose loss change passes the tolerance; ``raise``/``warn`` leave both to the final
    check (``_finish``). ``trust_region`` refuses a step that moves θ by more than that fraction of its norm."""

    on_loss_change: str = "stop"
    max_condition: float = 1e8
    trust_region: float | None = None
    backtrack: bool = True
    objective_limit: float | None = None
    max_ratio: float | None = None

    def refuse_element(self, pb: _Problem, candidate: Leaves, current: Params) -> tuple[str | None, Params | None]:
        """Why the iterate ξ = ``candidate`` is refused before its objective is computed (None: accepted), and
        its g·θ when it was computed (``current``: the last accepted g·θ, for the trust region)."""
        element = pb.element(candidate)
        if self.on_loss_change == "stop":
            cond = pb.condition(element)
            if not cond <= self.max_condition:
                return f"condition number {cond:.3g} > max_condition={self.max_condition:g}", None
        if (self.on_loss_change != "stop" or pb.approximate) and self.trust_region is None:
            return None, None  # nothing below to check: spare the extra action
        try:
            with torch.no_grad():
                moved = tuple(t.detach() for t in pb.apply(element, pb.base))
                here = float(pb.loss(moved))
        except torch.linalg.LinAlgError:  # e.g. σ(gZ) lost rank in the data-dependent action
            return "the data-dependent action is singular here", None
        if self.on_loss_change == "stop" and not pb.keeps(here):
            return (f"loss {here:.10g} vs {pb.loss0:.10g} (relative "
                    f"{abs(here - pb.loss0) / max(abs(pb.loss0), pb.atol):.3g})"), None
        if self.trust_region is not None:
            change = _norm([a - b for a, b in zip(moved, current)]) / max(_norm(current), 1e-300)
            if change > self.trust_region:
                return (f"the parameters changed by {change:.3g} of their norm > "
                        f"trust_region={self.trust_region:g}"), None
        return None, moved

    def refuse_value(self, new: float, last: float, start: float, sign: float) -> str | None:
        """Why an iterate whose objective is ``new`` is refused (None: accepted); ``last``: J at the last
        accepted iterate, ``start``: J(θ); ``sign`` = +1 to maximise, −1 to minimise."""
        if not math.isfinite(new):
            return f"objective is {new}"
        if self.backtrack and not sign * new > sign * last:
            return "the objective did not improve"
        if self.objective_limit is not None and sign * new > sign * self.objective_limit:
            return f"the objective {new:.4g} passed objective_limit={self.objective_limit:g}"
        if self.max_ratio is not None and abs(new) > self.max_ratio * abs(start):
            return f"the objective {new:.4g} passed max_ratio={self.max_ratio:g} × its start {start:.4g}"
        return None


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
