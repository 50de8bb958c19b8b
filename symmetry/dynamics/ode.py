"""The one ODE integrator: GF, Newtonian dynamics and Nesterov's accelerated flow, θ̈ + b(t)θ̇ = −∇L,
in float64 (scipy's DOP853)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from ..tuples import flatten, unflatten
from ..types import Params
from ..validation import (check_choice, check_count, check_data, check_number, check_params, check_times,
                          checked_by_caller)
from .module_model import gradient_fn
from .records import Integrand, Observable, Recorder, Snapshot, Trajectory, check_finite_loss

Tensor = torch.Tensor

#: The continuous dynamics θ̈ + b(t)θ̇ = −∇L (G&U Eq. 22) and GF, its first-order limit.
DYNAMICS = ("gf", "nd", "nagf")


def friction(dynamics: str, t: float) -> float:
    """b(t) of θ̈ + b(t)θ̇ = −∇L (G&U Eq. 22): 0 for ND, 3/t for NAGF (at t > 0; at t = 0 from rest
    [`integrate`][symmetry.dynamics.integrate] uses the removable singularity's limit θ̈(0) = −∇L/4)."""
    check_choice("dynamics", dynamics, ("nd", "nagf"))
    if dynamics == "nd":
        return 0.0
    if not t > 0:
        raise ValueError(f"t={t!r}: NAGF's friction 3/t is defined for t > 0 only")
    return 3.0 / t


#: the one set of defaults of the ODE integrator, [`integrate`][] and its gradient-flow name [`gradient_flow`][]
RTOL, ATOL, MAX_EVALUATIONS, STALL_EVALUATIONS = 1e-12, 1e-12, 200_000, 5_000


def integrate(model, params: Params, X: Tensor | None, Y: Tensor | None, times: Sequence[float] | Tensor,
              dynamics: str = "gf", *, lr: float = 1.0, velocity: Params | None = None, t0: float = 0.0,
              integrands: Mapping[str, Integrand] | None = None, observables: Mapping[str, Observable] | None = None,
              labels: Sequence[str] | None = None, rtol: float = RTOL, atol: float = ATOL, method: str = "DOP853",
              first_step: float | None = None, max_evaluations: int = MAX_EVALUATIONS,
              stall_evaluations: int = STALL_EVALUATIONS) -> Trajectory:
    """GF, ND or NAGF from θ(t0) = ``params``, θ̇(t0) = ``velocity`` (default 0), recorded at ``times``.

    - ``"gf"``   gradient flow θ̇ = −η∇L (Eq. 23; G&U Eq. 27): ``lr`` = η rescales time, so GF time t
      matches GD step t at learning rate η;
    - ``"nd"``   Newtonian dynamics θ̈ = −∇L (G&U Eq. 25): heavy ball without friction;
    - ``"nagf"`` Nesterov's accelerated gradient flow θ̈ + (3/t)θ̇ = −∇L (G&U Eq. 26, Su, Boyd & Candès).
      Its friction is singular at t = 0; from rest the singularity is removable (θ̈(0) = −∇L/4, used
      exactly), a start with non-zero velocity needs t0 > 0 (G&U footnote 3).

    The state (θ, θ̇) — θ alone for GF — is integrated in float64 by ``scipy.integrate.solve_ivp``
    (default DOP853, adaptive 8th-order Runge–Kutta) at ``rtol``/``atol``, together with the path
    integrals ∫_{t0}^t f(s, θ, θ̇) ds of ``integrands`` (``Snapshot.integrals``). Batched
    configurations integrate together. ReLU-type activations on non-whitened data make the vector
    field discontinuous; where the flow slides along a kink adaptive solvers take ever smaller steps.
    The run stops with a RuntimeError after ``max_evaluations`` gradient evaluations, or sooner when
    ``stall_evaluations`` evaluations in a row reach no time beyond the furthest one evaluated so far
    (by 1e-9 of the horizon): a stalled solver (G&U's ReLU net under GF is stuck at one t after ~4 000
    evaluations, while its ND and NAGF runs advance by at least 1% of the horizon every 2 000).
    """
    import numpy as np
    from scipy.integrate import solve_ivp

    check_choice("dynamics", dynamics, DYNAMICS)
    params = tuple(p.detach().to(torch.float64) for p in check_params("params", params, getattr(model, "n_params", None)))
    if velocity is None:
        velocity = tuple(torch.zeros_like(p) for p in params)
    velocity = tuple(v.detach().to(torch.float64) for v in check_params("velocity", velocity, len(params)))
    moving = any(bool(v.any()) for v in velocity)
    if dynamics == "gf" and moving:
        raise ValueError("gradient flow is first order: its velocity is −∇L, not an initial condition")
    if dynamics == "nagf" and t0 <= 0 and moving:
        raise ValueError("NAGF with a non-zero initial velocity needs t0 > 0: the friction 3/t is infinite at t = 0 "
                         "(G&U footnote 3)")
    times = check_times("times", times)  # finite, non-negative, non-decreasing: t = inf or NaN fails here, fast
    t0 = check_number("t0", t0, minimum=0)
    if bool((times < t0).any()):
        raise ValueError(f"times must all be ≥ t0 = {t0}")
    lr = check_number("lr", lr, minimum=0, exclusive=True)
    rtol, atol = check_number("rtol", rtol, minimum=0, exclusive=True), check_number("atol", atol, minimum=0)
    max_evaluations = check_count("max_evaluations", max_evaluations, 1)
    stall_evaluations = check_count("stall_evaluations", stall_evaluations, 1)
    check_data(X, Y)
    X64 = X if X is None or not X.is_floating_point() else X.to(torch.float64)  # token ids stay integers
    Y64 = Y if Y is None or not Y.is_floating_point() else Y.to(torch.float64)
    grad = gradient_fn(model, X64, Y64)
    integrands = dict(integrands or {})
    device = params[0].device
    n = flatten(params).numel()

    # the integrals' shapes, from one evaluation at the start
    shapes = {k: f(t0, params, velocity).shape for k, f in integrands.items()}
    sizes = {k: int(math.prod(s)) for k, s in shapes.items()}
    evaluations = 0
    furthest, since_advance = t0, 0  # the furthest time evaluated, and evaluations since it last moved
    advance = 1e-9 * (float(times[-1]) - t0)  # less than this is no progress

    def as_params(flat):
        """The first n entries of a flat numpy vector as a parameter tuple (θ of a state, θ̇ of a motion)."""
        return unflatten(torch.from_numpy(flat[:n]).to(device), params)

    def motion(t, y):
        """(θ, [θ̇, θ̈] flat in numpy) at state y: GF θ̇ = −η∇L; ND and NAGF θ̈ = −∇L − bθ̇. In numpy on the flat
        state: the evaluations of G&U's small nets are bound by the overhead per torch call."""
        theta = as_params(y)
        with torch.no_grad():
            _, g = grad(theta)
        g = flatten(g).cpu().numpy()
        if dynamics == "gf":
            return theta, (-g if lr == 1.0 else -lr * g)
        v = y[n:2 * n]
        if dynamics == "nagf" and t == 0:  # from rest (checked above): the limit θ̈(0) = −∇L/4
            return theta, np.concatenate([v, -g / 4])
        return theta, np.concatenate([v, -g - friction(dynamics, t) * v])

    def rhs(t, y):
        nonlocal evaluations, furthest, since_advance
        evaluations += 1
        if evaluations > max_evaluations:
            raise RuntimeError(f"{dynamics} needed more than max_evaluations={max_evaluations} gradient evaluations "
                               f"(a non-smooth activation sliding along its kink?); loosen rtol/atol")
        if t > furthest + advance:
            furthest, since_advance = t, 0
        else:
            since_advance += 1
            if since_advance > stall_evaluations:
                raise RuntimeError(f"{dynamics} stalled at t = {furthest:.6g}: stall_evaluations={stall_evaluations} "
                                   f"gradient evaluations without getting further (a non-smooth activation sliding "
                                   f"along its kink?); loosen rtol/atol")
        if not np.isfinite(y).all():  # a trial step of the solver overflowed: reject it (the error is inf)
            return np.full_like(y, np.inf)
        theta, move = motion(t, np.ascontiguousarray(y))
        if not np.isfinite(move).all():  # one check per evaluation, before the integrands
            return np.full_like(y, np.inf)
        if not integrands:
            return move
        dtheta = as_params(move)  # θ̇: −η∇L for GF, v otherwise
        with checked_by_caller():  # θ and θ̇ are the engine's own, just checked
            parts = [integrands[k](t, theta, dtheta).reshape(-1).to(torch.float64) for k in integrands]
        return np.concatenate([move, torch.cat(parts).cpu().numpy()])

    y0: Any = [flatten(params)] + ([] if dynamics == "gf" else [flatten(velocity)])
    y0 = torch.cat(y0 + [torch.zeros(sizes[k], dtype=torch.float64, device=device) for k in integrands]).cpu().numpy()
    t_end = float(times[-1])
    if t_end > t0:
        solution = solve_ivp(rhs, (t0, t_end), y0, method=method, t_eval=times.numpy(), rtol=rtol, atol=atol,
                             first_step=first_step)
        if not solution.success:
            raise RuntimeError(f"{dynamics} integration failed: {solution.message}")
        states = solution.y.T
    else:
        states = np.repeat(y0[None], times.numel(), axis=0)

    record = Recorder(times.numel(), observables or {})
    for t, y in zip(times.tolist(), states):
        y = np.ascontiguousarray(y)
        theta, move = motion(t, y)
        dtheta = as_params(move)
        rest = torch.from_numpy(y[n if dynamics == "gf" else 2 * n:]).to(device)  # the path integrals
        with torch.no_grad():
            loss = model.loss(theta, X64, Y64)
        check_finite_loss(loss, f"time {t:g}", labels)
        values, offset = {}, 0
        for k in integrands:
            values[k] = rest[offset:offset + sizes[k]].reshape(shapes[k])
            offset += sizes[k]
        with torch.no_grad():
            record(t, Snapshot(theta, dtheta, t, loss, values))
    return record.trajectory(theta)


def gradient_flow(model, params: Params, X: Tensor | None, Y: Tensor, times: Sequence[float] | Tensor, *,
                  lr: float = 1.0, rtol: float = RTOL, atol: float = ATOL, method: str = "DOP853",
                  observables: Mapping[str, Observable] | None = None,
                  labels: Sequence[str] | None = None, max_evaluations: int = MAX_EVALUATIONS,
                  stall_evaluations: int = STALL_EVALUATIONS) -> Trajectory:
    """Gradient flow θ̇ = −η∇L(θ) (Eq. 23) from t = 0, recorded at ``times``, in float64: a thin name of
    [`integrate`][symmetry.dynamics.integrate] with ``dynamics="gf"``, with the same defaults (``RTOL``,
    ``ATOL``, ``MAX_EVALUATIONS``, ``STALL_EVALUATIONS``). A figure made at other tolerances passes them
    (``Q_sharpness_1d.py`` and ``reproduce.py``: ``rtol=1e-10, max_evaluations=1_000_000``)."""
    return integrate(model, params, X, Y, times, "gf", lr=lr, rtol=rtol, atol=atol, method=method,
                     stall_evaluations=stall_evaluations,
                     observables=observables, labels=labels, max_evaluations=max_evaluations)
