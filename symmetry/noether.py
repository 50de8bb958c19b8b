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
from .models import MLP, Model, PotentialModel, SwishMLP, flatten, unflatten
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
         max_evaluations: int = 200_000) -> Trajectory:
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
    y0 = torch.cat(y0 + [torch.zeros(sizes[k], dtype=torch.float64, device=device) for k in integrands]).cpu().numpy()  # type: ignore[assignment]
    t_end = float(times[-1])
    if t_end > t0:
        solution = solve_ivp(rhs, (t0, t_end), y0, method=method, t_eval=times.numpy(), rtol=rtol, atol=atol,
                             first_step=first_step)
        if not solution.success:
            raise RuntimeError(f"{dynamics} integration failed: {solution.message}")
        states = solution.y.T
    else:
        states = np.repeat(y0[None], times.numel(), axis=0)  # type: ignore[call-overload]

    record = _Recorder(times.numel(), _with_defaults(observables))  # type: ignore[arg-type]
    for t, y in zip(times.tolist(), states):
        theta, v, rest = split(y)
        dtheta, _, loss = state_velocity(t, theta, v if v is not None else None)
        _check_finite_loss(loss, f"time {t:g}", None)
        values, offset = {}, 0
        for k in integrands:
            values[k] = rest[offset:offset + sizes[k]].reshape(shapes[k])
            offset += sizes[k]
        record(t, loss, Snapshot(theta, dtheta, t, loss, values))  # type: ignore[arg-type]
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
    record = _Recorder(steps // record_every + 1 + (steps % record_every != 0), _with_defaults(observables))  # type: ignore[arg-type]
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
    from . import conserved as C

    def absform(a, b):
        return C.layer_balance(a, b, alpha=alpha) + 2 * C.layer_balance(a, b, alpha=0.0).abs()  # α⟨|a|,|b|⟩ + ⟨|a|,|b|⟩

    return {
        "balance": Quantity("balance", lambda s, d: C.layer_balance(s.params, alpha=alpha),
                            lambda s, d: _norm(absform(_sq(s.params), _sq(s.params)))),
        "balance_charge": _charge_quantity("balance_charge", lambda a, b: C.layer_balance(a, b, alpha=alpha), absform),
    }


def swish_quantities() -> dict[str, Quantity]:
    """‖W_{i+1}‖² + ‖β_i‖² − ‖W_i‖² (Sec. 4.3, trainable β) and its Noether charge."""
    from . import conserved as C

    def absform(a, b):
        return C.swish_balance(a, b) + 2 * torch.stack([(x * y).sum() for x, y in zip(a[0::2][:-1], b[0::2][:-1])])

    return {
        "swish_balance": Quantity("swish_balance", lambda s, d: C.swish_balance(s.params),
                                  lambda s, d: _norm(absform(_sq(s.params), _sq(s.params)))),
        "swish_charge": _charge_quantity("swish_charge", C.swish_balance, absform),
    }


def balance_matrix_quantities() -> dict[str, Quantity]:
    """Balance matrices W_{i+1}ᵀW_{i+1} − W_iW_iᵀ of a linear MLP (Eq. 42) and their charge (Eq. 41)."""
    from . import conserved as C

    def absform(a, b):
        return [b[i + 1].mT @ a[i + 1] + a[i] @ b[i].mT for i in range(len(a) - 1)]

    return {
        "balance_matrix": Quantity("balance_matrix", lambda s, d: torch.stack(C.balance_matrix(s.params)),
                                   lambda s, d: _norm(absform(_sq(s.params), _sq(s.params)))),
        "balance_matrix_charge": _charge_quantity("balance_matrix_charge", C.balance_matrix, absform),
    }


def rotation_quantities() -> dict[str, Quantity]:
    """J = W₁ᵀẆ₁ − Ẇ₁ᵀW₁ (Eq. 45, 48; w × ẇ for one row) and t³J (Eq. 46 for NAGF)."""
    from . import conserved as C

    def scale(s, d):
        return 2 * _norm(s.params[0]) * _norm(s.velocity[0]) * abs(charge_weight(d, s.time))

    return {
        "angular_momentum": Quantity("angular_momentum", lambda s, d: C.data_angular_momentum(s.params, s.velocity),
                                     lambda s, d: scale(s, "nd")),
        "weighted_angular_momentum": Quantity(
            "weighted_angular_momentum",
            lambda s, d: C.data_angular_momentum(s.params, s.velocity) * charge_weight(d, s.time), scale),
    }


def energy_quantities() -> dict[str, Quantity]:
    """H = ½‖θ̇‖² + L (Sec. 7)."""
    from . import conserved as C

    return {"hamiltonian": Quantity("hamiltonian", lambda s, d: C.hamiltonian(s.loss, s.velocity),
                                    lambda s, d: C.hamiltonian(s.loss.abs(), s.velocity))}


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
        run = flow(model, params, X, Y, times, dynamics, velocity=velocity, t0=t0, integrands=integrands,
                   observables=observables, rtol=rtol, atol=atol, max_evaluations=max_evaluations)
    else:
        steps = max(1, round((t_end - t0) / stepper.dt))
        run = run_stepper(model, params, X, Y, stepper, steps, velocity=velocity, integrands=integrands,
                          observables=observables, record_every=max(1, steps // (points - 1)))
    out: dict[str, object] = {"trajectory": run}
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
