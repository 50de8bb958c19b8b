"""Dynamics beyond gradient flow (Gluch & Urbanke, "Noether: the more things change…", G&U below):
their conserved quantities and test problems.

The dynamics themselves are the engine's ([`symmetry.dynamics`][]): the ODE integrator
[`integrate`][symmetry.dynamics.integrate] for GF, Newtonian dynamics (ND, b = 0) and Nesterov's accelerated
gradient flow (NAGF, b = 3/t) of θ̈ + b(t)θ̇ = −∇L (G&U Eq. 22), and the steppers GD, heavy ball,
leapfrog and Nesterov with the loop [`run`][]. Here: the weight w(t) = exp ∫ b of
the Noether charges, each G&U quantity as an observable of a [`Snapshot`][]
(it needs θ̇ and t as well as θ), [`measure`][] (run one dynamics, return each quantity's drift), the
rotation-symmetric losses of Sec. 6, and the small problems and claims of the drift table.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from . import conserved as C
from . import dynamics as D
from .dynamics import DYNAMICS, Snapshot, Stepper
from .models import MLP, PotentialModel, SwishMLP
from .types import Params
from .validation import check_choice

Tensor = torch.Tensor


def charge_weight(dynamics: str, t: float | Tensor) -> float | Tensor:
    """w(t) = exp ∫ b: 1 for ND (and GF), t³ for NAGF; the weight of the Noether charges (G&U Eq. 30, 46)."""
    check_choice("dynamics", dynamics, DYNAMICS)
    return t ** 3 if dynamics == "nagf" else 1.0 + 0 * t


# ----------------------------------------------------------------------------- rotation-symmetric losses (Sec. 6)

def radial_loss(params: Params) -> Tensor:
    """L(w) = ¼(‖w‖² − 1)² for w = params[0] (a 1 × n row): rotation-invariant, minimal on the unit sphere.

    The population loss E[((wᵀx)² − y)²] of isotropic x and a constant y has this form (up to scale
    and shift); G&U Sec. 6.1 state only that their loss is rotation-invariant with minimum on the sphere.
    """
    w = params[0]
    r2 = (w * w).sum(dim=(-2, -1))
    return 0.25 * (r2 - 1) ** 2


def isotropic_relu_loss(params: Params, target: float = 1.0) -> Tensor:
    """L = ¼(E‖W₂ relu(W₁x)‖² − target)², x ~ N(0, I), in closed form (arc-cosine kernel of degree 1).

    E[relu(w_iᵀx) relu(w_jᵀx)] = ‖w_i‖‖w_j‖(sin φ + (π − φ) cos φ)/(2π), φ the angle of w_i, w_j: a function
    of W₁W₁ᵀ, so L(W₁R, W₂) = L(W₁, W₂) for every rotation R of the data (G&U Sec. 6.2).
    """
    W1, W2 = params
    norms = torch.linalg.vector_norm(W1, dim=-1)  # (..., h)
    outer = norms.unsqueeze(-1) * norms.unsqueeze(-2)
    cos = ((W1 @ W1.mT) / outer).clamp(-1.0, 1.0)
    eye = torch.eye(W1.shape[-2], dtype=torch.bool, device=W1.device)
    cos = torch.where(eye, torch.zeros_like(cos), cos)  # diagonal handled below: keeps arccos' off its kink
    phi = torch.arccos(cos)
    K = outer * (torch.sin(phi) + (math.pi - phi) * cos) / (2 * math.pi)
    K = torch.where(eye, 0.5 * outer, K)  # E[relu(wᵀx)²] = ‖w‖²/2
    energy = (W2 @ K * W2).sum(dim=(-2, -1))
    return 0.25 * (energy - target) ** 2


# ----------------------------------------------------------------------------- quantities and their drift

@dataclass(frozen=True)
class Quantity:
    """A G&U quantity as an observable: ``value(snapshot, dynamics)`` and the size of its terms
    ``scale(snapshot, dynamics)`` (drift is measured relative to it); ``integrands(dynamics)`` are the
    path integrals it needs (for the Noether charges)."""

    name: str
    value: Callable[[Snapshot, str], Tensor]
    scale: Callable[[Snapshot, str], Tensor]
    integrands: Callable[[str], dict] = lambda dynamics: {}


def _norm(x) -> Tensor:
    if isinstance(x, (list, tuple)):
        return torch.sqrt(sum((t * t).sum() for t in x))
    return torch.linalg.vector_norm(x)


def _sq(p: Params) -> Params:
    return tuple(x.abs() for x in p)


def _charge_quantity(name: str, form, abs_form) -> Quantity:
    """w f(θ̇, θ) − ∫ w f(θ̇, θ̇): conserved along θ̈ + bθ̇ = −∇L when f(∇L, θ) = 0 (G&U Eq. 17)."""

    def integrands(dynamics):
        return {name: lambda t, p, v: _stack(form(v, v)) * charge_weight(dynamics, t)}

    def value(s, dynamics):
        return _stack(form(s.velocity, s.params)) * charge_weight(dynamics, s.time) - s.integrals[name]

    def scale(s, dynamics):
        return (_norm(_stack(abs_form(_sq(s.velocity), _sq(s.params)))) * abs(charge_weight(dynamics, s.time))
                + _norm(s.integrals[name]))

    return Quantity(name, value, scale, integrands)


def _stack(x) -> Tensor:
    return torch.stack(x) if isinstance(x, (list, tuple)) else x


def balance_quantities(alpha: float = 1.0) -> dict[str, Quantity]:
    """Layer balance α‖W_{i+1}‖² − ‖W_i‖² (Eq. 31) and its ND / NAGF Noether charge (Eq. 30)."""
    def absform(a, b):
        return C.layer_balance(a, b, alpha=alpha) + 2 * C.layer_balance(a, b, alpha=0.0).abs()  # α⟨|a|,|b|⟩ + ⟨|a|,|b|⟩

    return {
        "balance": Quantity("balance", lambda s, d: C.layer_balance(s.params, alpha=alpha),
                            lambda s, d: _norm(absform(_sq(s.params), _sq(s.params)))),
        "balance_charge": _charge_quantity("balance_charge", lambda a, b: C.layer_balance(a, b, alpha=alpha), absform),
    }


def swish_quantities() -> dict[str, Quantity]:
    """‖W_{i+1}‖² + ‖β_i‖² − ‖W_i‖² (Sec. 4.3, trainable β) and its Noether charge."""
    def absform(a, b):
        return C.swish_balance(a, b) + 2 * torch.stack([(x * y).sum() for x, y in zip(a[0::2][:-1], b[0::2][:-1])])

    return {
        "swish_balance": Quantity("swish_balance", lambda s, d: C.swish_balance(s.params),
                                  lambda s, d: _norm(absform(_sq(s.params), _sq(s.params)))),
        "swish_charge": _charge_quantity("swish_charge", C.swish_balance, absform),
    }


def balance_matrix_quantities() -> dict[str, Quantity]:
    """Balance matrices W_{i+1}ᵀW_{i+1} − W_iW_iᵀ of a linear MLP (Eq. 42) and their charge (Eq. 41)."""
    def absform(a, b):
        return [b[i + 1].mT @ a[i + 1] + a[i] @ b[i].mT for i in range(len(a) - 1)]

    return {
        "balance_matrix": Quantity("balance_matrix", lambda s, d: torch.stack(C.balance_matrix(s.params)),
                                   lambda s, d: _norm(absform(_sq(s.params), _sq(s.params)))),
        "balance_matrix_charge": _charge_quantity("balance_matrix_charge", C.balance_matrix, absform),
    }


def rotation_quantities() -> dict[str, Quantity]:
    """J = W₁ᵀẆ₁ − Ẇ₁ᵀW₁ (Eq. 45, 48; w × ẇ for one row) and t³J (Eq. 46 for NAGF)."""
    def scale(s, d):
        return 2 * _norm(s.params[0]) * _norm(s.velocity[0]) * abs(charge_weight(d, s.time))

    return {
        "angular_momentum": Quantity("angular_momentum", lambda s, d: C.data_angular_momentum(s.params, s.velocity),  # type: ignore[arg-type]  # runs with a velocity
                                     lambda s, d: scale(s, "nd")),
        "weighted_angular_momentum": Quantity(
            "weighted_angular_momentum",
            lambda s, d: C.data_angular_momentum(s.params, s.velocity) * charge_weight(d, s.time), scale),  # type: ignore[arg-type]  # runs with a velocity
    }


def energy_quantities() -> dict[str, Quantity]:
    """H = ½‖θ̇‖² + L (Sec. 7)."""
    return {"hamiltonian": Quantity("hamiltonian", lambda s, d: C.hamiltonian(s.loss, s.velocity),  # type: ignore[arg-type]  # runs with a velocity
                                    lambda s, d: C.hamiltonian(s.loss.abs(), s.velocity))}  # type: ignore[arg-type]  # runs with a velocity


def measure(model, params: Params, X, Y, quantities: Mapping[str, Quantity], dynamics: str, t_end: float, *,
            stepper: Stepper | None = None, velocity: Params | None = None, t0: float = 0.0, points: int = 101,
            rtol: float = 1e-12, atol: float = 1e-12, max_evaluations: int = 50_000) -> dict:
    """Run ``dynamics`` (continuous, or ``stepper`` in discrete time) to ``t_end`` and return, per quantity,
    the curve and its drift: max_t ‖Q(t) − Q(t0)‖ / max_t scale(t) (``relative_drift``), the largest
    increase over any earlier value relative to the scale (``relative_increase``, for "non-increasing"),
    and the trajectory."""
    integrands = {}
    for q in quantities.values():
        integrands.update(q.integrands(dynamics))
    observables = {}
    for name, q in quantities.items():
        observables[name] = lambda s, q=q: q.value(s, dynamics)
        observables[name + ":scale"] = lambda s, q=q: q.scale(s, dynamics)
    if stepper is None:
        times = torch.linspace(t0, t_end, points, dtype=torch.float64)
        run = D.integrate(model, params, X, Y, times, dynamics, velocity=velocity, t0=t0, integrands=integrands,
                          observables=observables, rtol=rtol, atol=atol, max_evaluations=max_evaluations)
    else:
        steps = max(1, round((t_end - t0) / stepper.dt))
        run = D.run(model, params, X, Y, stepper, steps, velocity=velocity, integrands=integrands,
                    observables=observables, record_every=max(1, steps // (points - 1)), clock="time")
    out: dict = {"trajectory": run}
    for name in quantities:
        values, scales = run.observables[name], run.observables[name + ":scale"]
        flat = values.reshape(len(values), -1)
        delta = torch.linalg.vector_norm(flat - flat[0], dim=-1)
        scale = float(scales.max())
        running_min = torch.cummin(flat.sum(-1), dim=0).values
        out[name] = {"relative_drift": float(delta.max()) / scale, "absolute_drift": float(delta.max()),
                     "scale": scale, "relative_increase": float((flat.sum(-1) - running_min).max()) / scale,
                     "values": values, "times": run.times}
    return out


# ----------------------------------------------------------------------------- the drift table's problems and claims

def small_problems(seed: int = 0) -> dict:
    """Small random float64 problems, one per symmetry of G&U: name → (model, params, X, Y, velocity of ND/NAGF
    runs or None for rest, {name: Quantity}). The drift table and the tests run them."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape, s=1.0):
        return s * torch.randn(*shape, generator=g, dtype=torch.float64)

    mlp = lambda s: (rn(4, 3, s=s), rn(4, 4, s=s), rn(2, 4, s=s))
    X, Y = rn(3, 8), rn(2, 8)
    return {
        "relu": (MLP("relu", reduction="half_sum"), mlp(0.7), X, Y, None, balance_quantities(1.0)),
        "repu2": (MLP("repu", reduction="half_sum"), mlp(0.5), 0.5 * X, Y, None, balance_quantities(2.0)),
        "linear": (MLP("identity", reduction="half_sum"), mlp(0.7), X, Y, None,
                   {**balance_matrix_quantities(), **energy_quantities()}),
        "swish": (SwishMLP("half_sum"), (rn(4, 3, s=0.7), rn(4, 1), rn(4, 4, s=0.7), rn(4, 1), rn(2, 4, s=0.7)), X, Y,
                  None, swish_quantities()),
        "rotation": (PotentialModel(radial_loss), (rn(1, 3),), None, None, (rn(1, 3, s=0.5),), rotation_quantities()),
        "rotation_nn": (PotentialModel(isotropic_relu_loss), (rn(4, 3, s=0.7), rn(2, 4, s=0.7)), None, None,
                        (rn(4, 3, s=0.3), rn(2, 4, s=0.3)), rotation_quantities()),
    }


#: (problem, quantity, dynamics, the paper's claim): the rows of the drift table
CLAIMS = [
    ("relu", "balance", "gf", "conserved (Eq. 31)"), ("relu", "balance", "nd", "bounded, Eq. 34"),
    ("relu", "balance", "nagf", "not conserved"), ("relu", "balance_charge", "nd", "conserved (Eq. 30, b = 0)"),
    ("relu", "balance_charge", "nagf", "conserved (Eq. 30, b = 3/t, weight t³)"),
    ("repu2", "balance", "gf", "conserved (Table 2, α = 2)"), ("repu2", "balance", "nd", "bounded, Eq. 34 with max(1, α)"),
    ("repu2", "balance", "nagf", "not conserved"), ("repu2", "balance_charge", "nd", "conserved (Table 2)"),
    ("repu2", "balance_charge", "nagf", "conserved (Table 2)"),
    ("linear", "balance_matrix", "gf", "conserved (Eq. 42)"), ("linear", "balance_matrix", "nd", "not conserved (Eq. 43)"),
    ("linear", "balance_matrix", "nagf", "not conserved"), ("linear", "balance_matrix_charge", "nd", "conserved (Eq. 41, b = 0)"),
    ("linear", "balance_matrix_charge", "nagf", "conserved (Eq. 41, weight t³)"),
    ("linear", "hamiltonian", "nd", "conserved (Sec. 7)"), ("linear", "hamiltonian", "nagf", "non-increasing (Eq. 35)"),
    ("swish", "swish_balance", "gf", "conserved (Sec. 4.3)"), ("swish", "swish_balance", "nd", "not conserved"),
    ("swish", "swish_charge", "nd", "conserved (Table 2)"), ("swish", "swish_charge", "nagf", "conserved (Table 2)"),
    ("rotation", "angular_momentum", "gf", "zero (Sec. 6.1)"), ("rotation", "angular_momentum", "nd", "conserved (Eq. 45)"),
    ("rotation", "angular_momentum", "nagf", "not conserved (Eq. 46: decays as t⁻³)"),
    ("rotation", "weighted_angular_momentum", "nagf", "conserved: t³ w × ẇ (Eq. 46)"),
    ("rotation_nn", "angular_momentum", "gf", "zero (Eq. 47)"), ("rotation_nn", "angular_momentum", "nd", "conserved (Eq. 48)"),
    ("rotation_nn", "weighted_angular_momentum", "nagf", "conserved: t³J (Eq. 47)"),
]
