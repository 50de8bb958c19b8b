"""Measures of a group element g = exp(ξ) that the acceptance policy reads: its condition number over the
factors that scale (translations and RoPE rotations left out), and the norm of a tuple of tensors (‖ξ‖, ‖Δθ‖)."""
from __future__ import annotations

import math
from typing import Collection, Mapping, Sequence

import torch

Tensor = torch.Tensor

__all__ = ["condition_number", "shift_and_rotation_keys"]


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


def _norm(tensors: Sequence[Tensor]) -> float:
    """Euclidean norm of a tuple of tensors taken as one vector."""
    return float(torch.sqrt(torch.stack([(t * t).sum() for t in tensors]).sum())) if len(tensors) else 0.0
