"""Dynamics beyond gradient flow (Gluch & Urbanke, "Noether: the more things change…", G&U below).

Continuous time, θ̈ + b(t)θ̇ = −∇L(θ) (G&U Eq. 22), integrated in float64 by scipy's DOP853:

- ``"gf"``   gradient flow θ̇ = −∇L (Eq. 27; first order),
- ``"nd"``   Newtonian dynamics, b = 0 (Eq. 25): heavy ball without friction,
- ``"nagf"`` Nesterov's accelerated gradient flow, b = 3/t (Eq. 26, Su, Boyd & Candès 2014).

NAGF's friction 3/t is singular at t = 0. From rest the singularity is removable: θ̇ ≈ θ̈(0)t gives
θ̈(0) = −∇L/4, and :func:`flow` uses that limit at t = 0 exactly; a start with non-zero velocity
must begin at some t0 > 0 (G&U footnote 3), which :func:`flow` requires.

Discrete time, one stepping interface (:class:`Stepper`: ``init_state`` / ``step``) for gradient
descent, heavy ball without damping θ_{k+1} = 2θ_k − θ_{k−1} − η∇L (ND with step h = √η; G&U Eq. 21),
its velocity form, the symplectic leapfrog (velocity Verlet, same positions), and Nesterov's
accelerated gradient (Su et al. form, time t = k√s). :func:`run_stepper` records them with the
recorder of :func:`symmetry.dynamics.gradient_descent` (same Trajectory, DivergenceError, tqdm).

Observables here are functions of a :class:`Snapshot` (params, velocity, time, loss, path
integrals), because the quantities of G&U need θ̇ and t as well as θ.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .dynamics import Trajectory, _check_finite_loss, _Recorder
from .models import Model, flatten, unflatten
from .validation import check_choice, check_params

Tensor = torch.Tensor
Params = tuple[Tensor, ...]

#: The continuous dynamics and their friction b(t) in θ̈ + b(t)θ̇ = −∇L (GF: first order, no b).
DYNAMICS = ("gf", "nd", "nagf")


def friction(dynamics: str, t: float) -> float:
    """b(t): 0 for ND, 3/t for NAGF."""
    check_choice("dynamics", dynamics, ("nd", "nagf"))
    return 0.0 if dynamics == "nd" else 3.0 / t


def charge_weight(dynamics: str, t: float | Tensor) -> float | Tensor:
    """w(t) = exp ∫ b: 1 for ND (and GF), t³ for NAGF; the weight of the Noether charges (G&U Eq. 30, 46)."""
    check_choice("dynamics", dynamics, DYNAMICS)
    return t ** 3 if dynamics == "nagf" else 1.0 + 0 * t


@dataclass
class Snapshot:
    """What an observable sees at a recorded time."""

    params: Params
    velocity: Params
    time: float
    loss: Tensor
    integrals: dict[str, Tensor] = field(default_factory=dict)  # ∫_{t0}^{t} f(s, θ, θ̇) ds for each integrand


Integrand = Callable[[float, Params, Params], Tensor]  # f(t, θ, θ̇) for a path integral
Observable = Callable[[Snapshot], Tensor]


def _grad_fn(model, X, Y):
    """params ↦ (loss, ∇L): the model's closed form where it has one, else plain reverse-mode autograd
    (for these small problems about 15× less overhead per call than ``torch.func.grad``)."""
    if type(model).loss_and_grad is not Model.loss_and_grad:
        return lambda params: model.loss_and_grad(params, X, Y)

    def grad(params):
        with torch.enable_grad():
            leaves = tuple(p.detach().requires_grad_(True) for p in params)
            loss = model.loss(leaves, X, Y)
            grads = torch.autograd.grad(loss.sum(), leaves)
        return loss.detach(), grads
    return grad


# ----------------------------------------------------------------------------- continuous time

def flow(model, params: Params, X: Tensor | None, Y: Tensor | None, times: Sequence[float] | Tensor,
         dynamics: str = "nd", *, velocity: Params | None = None, t0: float = 0.0,
         integrands: Mapping[str, Integrand] | None = None, observables: Mapping[str, Observable] | None = None,
         rtol: float = 1e-12, atol: float = 1e-12, method: str = "DOP853", first_step: float | None = None,
         max_evaluations: int = 2_000_000) -> Trajectory:
    """GF, ND or NAGF from θ(t0) = ``params``, θ̇(t0) = ``velocity`` (default 0), recorded at ``times``.

    The state (θ, θ̇) — θ alone for GF, whose velocity is −∇L — is integrated in float64 by
    ``solve_ivp`` at ``rtol``/``atol``, together with the path integrals ∫_{t0}^t f(s, θ, θ̇) ds of
    ``integrands`` (so a Noether charge with an integral is as accurate as the trajectory).
    ``observables`` map a :class:`Snapshot` to a tensor; the Trajectory's ``observables`` also hold
    ``"velocity_norm"`` and each integral under ``"∫" + name``.
    """
    import numpy as np
    from scipy.integrate import solve_ivp

    check_choice("dynamics", dynamics, DYNAMICS)
    params = tuple(p.detach().to(torch.float64) for p in check_params("params", params))
    if velocity is None:
        velocity = tuple(torch.zeros_like(p) for p in params)
    velocity = tuple(v.detach().to(torch.float64) for v in check_params("velocity", velocity, len(params)))
    moving = any(bool(v.any()) for v in velocity)
    if dynamics == "gf" and moving:
        raise ValueError("gradient flow is first order: its velocity is −∇L, not an initial condition")
    if dynamics == "nagf" and t0 <= 0 and moving:
        raise ValueError("NAGF with a non-zero initial velocity needs t0 > 0: the friction 3/t is infinite at t = 0 "
                         "(G&U footnote 3)")
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if times.numel() == 0 or bool((times < t0).any()) or bool((times[1:] < times[:-1]).any()):
        raise ValueError(f"times must be a non-empty, non-decreasing sequence, all ≥ t0 = {t0}")
    X64 = None if X is None else X.to(torch.float64)
    Y64 = Y if Y is None or not Y.is_floating_point() else Y.to(torch.float64)
    grad = _grad_fn(model, X64, Y64)
    integrands = dict(integrands or {})
    device = params[0].device
    n = flatten(params).numel()

    # the integrals' shapes, from one evaluation at the start
    shapes = {k: f(t0, params, velocity).shape for k, f in integrands.items()}
    sizes = {k: int(math.prod(s)) for k, s in shapes.items()}
    evaluations = 0

    def split(y):
        y = torch.from_numpy(np.ascontiguousarray(y)).to(device)
        theta = unflatten(y[:n], params)
        if dynamics == "gf":
            return theta, None, y[n:]
        return theta, unflatten(y[n:2 * n], params), y[2 * n:]

    def state_velocity(t, theta, v):
        """(θ̇, θ̈, loss): θ̈ is None for GF."""
        with torch.no_grad():
            loss, g = grad(theta)
        if dynamics == "gf":
            return tuple(-x for x in g), None, loss
        b = 0.0 if dynamics == "nd" else (None if t == 0 else 3.0 / t)
        if b is None:  # NAGF at t = 0 from rest: the limit θ̈(0) = −∇L/4
            return v, tuple(-x / 4 for x in g), loss
        return v, tuple(-x - b * u for x, u in zip(g, v)), loss

    def rhs(t, y):
        nonlocal evaluations
        evaluations += 1
        if evaluations > max_evaluations:
            raise RuntimeError(f"{dynamics} needed more than max_evaluations={max_evaluations} gradient evaluations "
                               f"(a non-smooth activation sliding along its kink?); loosen rtol/atol")
        if not np.isfinite(y).all():  # a trial step of the solver overflowed: reject it (the error is inf)
            return np.full_like(y, np.inf)
        theta, v, _ = split(y)
        dtheta, acc, _ = state_velocity(t, theta, v)
        if not all(bool(torch.isfinite(x).all()) for x in dtheta + (acc or ())):
            return np.full_like(y, np.inf)
        parts = [flatten(dtheta)] + ([] if acc is None else [flatten(acc)])
        parts += [integrands[k](t, theta, dtheta).reshape(-1).to(torch.float64) for k in integrands]
        return torch.cat(parts).cpu().numpy()

    y0 = [flatten(params)] + ([] if dynamics == "gf" else [flatten(velocity)])
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

    record = _Recorder(times.numel(), _with_defaults(observables))
    for t, y in zip(times.tolist(), states):
        theta, v, rest = split(y)
        dtheta, _, loss = state_velocity(t, theta, v if v is not None else None)
        _check_finite_loss(loss, f"time {t:g}", None)
        values, offset = {}, 0
        for k in integrands:
            values[k] = rest[offset:offset + sizes[k]].reshape(shapes[k])
            offset += sizes[k]
        record(t, loss, Snapshot(theta, dtheta, t, loss, values))
    traj = record.trajectory(theta, torch.float64)
    return traj


def _with_defaults(observables: Mapping[str, Observable] | None) -> dict[str, Observable]:
    obs = {"velocity_norm": lambda s: torch.sqrt(sum((v * v).sum(dim=(-2, -1)) for v in s.velocity))}
    obs.update(observables or {})
    return obs


# ----------------------------------------------------------------------------- discrete time

@dataclass
class StepperState:
    """One optimizer's state: parameters, a velocity estimate θ̇, the continuous time the step stands for."""

    params: Params
    velocity: Params
    time: float
    step: int = 0
    memory: dict = field(default_factory=dict)  # whatever else the method carries (previous iterate, gradient)


class Stepper:
    """One interface for every discrete method: ``state = init_state(params)``, ``state = step(state, grad)``.

    ``grad(params) -> (loss, gradient tuple)``. ``dt`` is the continuous time of one step: η for GD
    (GF time), √η for heavy ball / leapfrog (ND time), √s for Nesterov (NAGF time, Su et al.).
    """

    name = "stepper"
    dt: float

    def init_state(self, params: Params, velocity: Params | None = None) -> StepperState:
        params = tuple(p.detach().clone() for p in params)
        velocity = tuple(torch.zeros_like(p) for p in params) if velocity is None else tuple(v.clone() for v in velocity)
        return StepperState(params, velocity, 0.0)

    def step(self, state: StepperState, grad) -> StepperState:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dt={self.dt:g})"


def _check_lr(lr) -> float:
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr={lr!r} must be a positive number")
    return float(lr)


class GD(Stepper):
    """θ_{k+1} = θ_k − η∇L(θ_k): GF with time step η. Its velocity is −∇L(θ_k) (the step taken / η)."""

    name = "gd"

    def __init__(self, lr: float):
        self.lr = self.dt = _check_lr(lr)

    def step(self, state, grad):
        _, g = grad(state.params)
        new = tuple(p - self.lr * x for p, x in zip(state.params, g))
        return StepperState(new, tuple(-x for x in g), state.time + self.dt, state.step + 1)


class HeavyBall(Stepper):
    """θ_{k+1} = 2θ_k − θ_{k−1} − η∇L(θ_k) (heavy ball without damping, G&U Eq. 21): ND with h = √η.

    Started from (θ₀, θ̇₀) by Störmer's first step θ₁ = θ₀ + hθ̇₀ − (η/2)∇L(θ₀), so its positions are
    those of :class:`Leapfrog` with step h. Velocity estimate: (θ_k − θ_{k−1})/h (first order).
    """

    name = "heavy_ball"

    def __init__(self, lr: float):
        self.lr = _check_lr(lr)
        self.dt = math.sqrt(self.lr)

    def step(self, state, grad):
        _, g = grad(state.params)
        h = self.dt
        if state.step == 0:
            new = tuple(p + h * v - 0.5 * self.lr * x for p, v, x in zip(state.params, state.velocity, g))
        else:
            prev = state.memory["previous"]
            new = tuple(2 * p - q - self.lr * x for p, q, x in zip(state.params, prev, g))
        velocity = tuple((a - b) / h for a, b in zip(new, state.params))
        return StepperState(new, velocity, state.time + h, state.step + 1, {"previous": state.params})


class Leapfrog(Stepper):
    """Velocity Verlet for ND: v ← v − (h/2)∇L; θ ← θ + hv; v ← v − (h/2)∇L(θ). Symplectic and
    time-reversible, so ½‖θ̇‖² + L stays within O(h²) of its start for exponentially long times."""

    name = "leapfrog"

    def __init__(self, step: float):
        self.dt = _check_lr(step)

    def step(self, state, grad):
        h = self.dt
        g = state.memory.get("grad")
        if g is None:
            _, g = grad(state.params)
        half = tuple(v - 0.5 * h * x for v, x in zip(state.velocity, g))
        new = tuple(p + h * v for p, v in zip(state.params, half))
        _, g_new = grad(new)
        velocity = tuple(v - 0.5 * h * x for v, x in zip(half, g_new))
        return StepperState(new, velocity, state.time + h, state.step + 1, {"grad": g_new})


class Nesterov(Stepper):
    """Nesterov's accelerated gradient in Su, Boyd & Candès's form (the discretisation of NAGF, G&U Eq. 20):
    x_k = y_{k−1} − s∇L(y_{k−1}),  y_k = x_k + (k−1)/(k+2)·(x_k − x_{k−1}),  x₀ = y₀ = θ₀; time t = k√s.

    ``params`` of the state are x_k; velocity estimate (x_k − x_{k−1})/√s. Starts from rest (NAGF at t = 0).
    """

    name = "nesterov"

    def __init__(self, lr: float):
        self.lr = _check_lr(lr)
        self.dt = math.sqrt(self.lr)

    def init_state(self, params, velocity=None):
        if velocity is not None and any(bool(v.any()) for v in velocity):
            raise ValueError("Nesterov's method starts from rest (NAGF at t = 0)")
        return super().init_state(params)

    def step(self, state, grad):
        k = state.step + 1
        y = state.memory.get("y", state.params)
        _, g = grad(y)
        x = tuple(a - self.lr * b for a, b in zip(y, g))
        mom = (k - 1) / (k + 2)
        y_new = tuple(a + mom * (a - b) for a, b in zip(x, state.params))
        velocity = tuple((a - b) / self.dt for a, b in zip(x, state.params))
        return StepperState(x, velocity, state.time + self.dt, k, {"y": y_new})


STEPPERS = {"gd": GD, "heavy_ball": HeavyBall, "leapfrog": Leapfrog, "nesterov": Nesterov}


def make_stepper(name: str, lr: float) -> Stepper:
    """A stepper by name (``gd``, ``heavy_ball``, ``leapfrog``, ``nesterov``); ``lr`` is η, h (leapfrog) or s."""
    check_choice("stepper", name, STEPPERS)
    return STEPPERS[name](lr)


def run_stepper(model, params: Params, X: Tensor | None, Y: Tensor | None, stepper: Stepper, steps: int, *,
                velocity: Params | None = None, record_every: int = 1,
                integrands: Mapping[str, Integrand] | None = None, observables: Mapping[str, Observable] | None = None,
                progress: bool = False, description: str | None = None) -> Trajectory:
    """Run a :class:`Stepper` for ``steps`` steps, recording loss and ``observables`` (functions of a
    :class:`Snapshot`) at steps 0, k, 2k, … and the last; ``times`` are continuous times k·dt.

    ``integrands`` f(t, θ, θ̇) are summed along the steps by the trapezoidal rule (the discrete
    counterpart of :func:`flow`'s path integrals). A NaN loss raises :class:`DivergenceError`.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer")
    if not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every={record_every!r} must be a positive integer")
    params = check_params("params", params)
    grad = _grad_fn(model, X, Y)
    integrands = dict(integrands or {})
    record = _Recorder(steps // record_every + 1 + (steps % record_every != 0), _with_defaults(observables))
    state = stepper.init_state(params, velocity)
    totals = {k: torch.zeros_like(f(state.time, state.params, state.velocity)) for k, f in integrands.items()}
    last = {k: f(state.time, state.params, state.velocity) for k, f in integrands.items()}

    from tqdm.auto import tqdm

    def snapshot(state):
        loss = model.loss(state.params, X, Y)
        _check_finite_loss(loss, f"step {state.step} of {stepper!r}", None)
        return Snapshot(state.params, state.velocity, state.time, loss, dict(totals))

    with torch.no_grad():
        for k in tqdm(range(steps), desc=description or stepper.name, disable=not progress, mininterval=0.5):
            if k % record_every == 0:
                s = snapshot(state)
                record(state.time, s.loss, s)
            state = stepper.step(state, grad)
            for name, f in integrands.items():
                now = f(state.time, state.params, state.velocity)
                totals[name] = totals[name] + 0.5 * stepper.dt * (now + last[name])
                last[name] = now
        s = snapshot(state)
        record(state.time, s.loss, s)
    return record.trajectory(state.params, torch.float64)


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
