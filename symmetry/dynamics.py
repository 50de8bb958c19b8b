"""The one dynamics engine: how a step is taken, how a run is recorded, how a flow is integrated.

Three pieces serve every figure, notebook and extension:

- **Steppers** ([`Stepper`][]): one discrete method each. ``state = stepper.init_state(params)``,
  then ``state = stepper.step(state, grad)`` with ``grad(params) -> (loss, gradient tuple)``.
  Built in: [`SGD`][] (exactly ``torch.optim.SGD``: momentum, dampening, Nesterov, coupled
  weight decay; [`GD`][] is its plain case), [`Adam`][] / [`AdamW`][] (coupled / decoupled
  weight decay, exactly ``torch.optim.Adam`` / ``AdamW``), [`AdaGrad`][] (``torch.optim.Adagrad``),
  Gluch & Urbanke's [`HeavyBall`][], [`Leapfrog`][] and [`Nesterov`][] (discretisations of
  ND and NAGF), [`TwoLayerGD`][] (GD on [`TwoLayerNet`][] in fused, preallocated
  tensor ops: the hot loop of Figs. 3, 6, 9), and [`wrap_optimizer`][] for any ``torch.optim.Optimizer``.
- **One loop**, [`run`][]: a stepper on a model for a number of steps, all configurations of a
  batched run at once, observables recorded every k steps, divergence reported by configuration.
  [`gradient_descent`][] is its full-batch GD case (Fig. 3's fast step where it applies).
- **One ODE integrator**, [`integrate`][]: θ̈ + b(t)θ̇ = −∇L in float64 by scipy's DOP853, for
  gradient flow (first order, Eq. 23 / G&U Eq. 27), Newtonian dynamics (b = 0) and Nesterov's
  accelerated flow (b = 3/t). [`gradient_flow`][] is its GF case.

Models: a tuple model of [`symmetry.models`][] (loss a pure function of a parameter tuple), or any
``torch.nn.Module`` through [`ModuleModel`][] (``torch.func.functional_call``, a loss function).

Observables everywhere are functions of a [`Snapshot`][] (``.params``, ``.velocity``, ``.time``,
``.step``, ``.loss``, ``.integrals``): ``{"Q": lambda s: conserved_Q(s.params, "tanh")}``.

Gradients: ``model.loss_and_grad`` — the closed form where a model has one (two-layer nets), else
plain reverse-mode autograd ([`symmetry.models.Model.loss_and_grad`][]; 2.2–2.6× less time per call
than ``torch.func.grad`` on G&U's small problems, benchmarks/bench_grad.py), which falls back to ``torch.func.grad`` inside
a ``torch.func`` transform so that a step can still be nested (vmap, jacrev of a step).

Replacing the parameters between steps (teleportation): a wrapper may hand ``step`` a state whose
``params`` it replaced, ``dataclasses.replace(state, params=new)`` (same shapes and dtype). Every
stepper takes the new parameters as they are; its optimizer memory (momentum buffer, Adam's moments
and step count, AdaGrad's sum, the previous iterate of heavy ball / Nesterov, a wrapped optimizer's
``state``) is kept unchanged, not transported by the group action: the next step combines the new
point with the old memory. A wrapper that wants fresh memory calls ``init_state(new)`` instead.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import torch

from .errors import DivergenceError, NotSupportedError
from .models import Model, TwoLayerNet, _residual_scale, flatten, unflatten
from .types import Params
from .validation import (
    cast_exactly,
    check_choice,
    check_count,
    check_data,
    check_learning_rate,
    check_number,
    check_params,
    check_times,
    checked_by_caller,
)

Tensor = torch.Tensor
GradFn = Callable[[Params], tuple[Tensor, Params]]  # params ↦ (loss per configuration, gradient tuple)


# ----------------------------------------------------------------------------- what is recorded

class Snapshot(tuple):
    """What an observable sees at a recorded step or time (the same object in [`run`][] and [`integrate`][]).

    It is the parameter tuple itself (pass it wherever a parameter tuple goes:
    ``observables={"Q": S.conserved_Q}`` works) with the run's ``velocity`` (θ̇ estimate; None where a
    stepper does not keep one), continuous ``time``, ``loss`` (*batch), path ``integrals``
    (∫ f(s, θ, θ̇) ds of each integrand) and ``step`` attached; ``.params`` is the plain tuple.
    """

    velocity: Params | None
    time: float
    loss: Tensor
    integrals: dict[str, Tensor]
    step: int

    def __new__(cls, params: Params, velocity: Params | None, time: float, loss: Tensor,
                integrals: dict[str, Tensor] | None = None, step: int = 0) -> Snapshot:
        self = super().__new__(cls, params)
        self.velocity, self.time, self.loss, self.step = velocity, time, loss, step
        self.integrals = dict(integrals or {})
        return self

    @property
    def params(self) -> Params:
        return tuple(self)


Observable = Callable[[Snapshot], Tensor]
Integrand = Callable[[float, Params, Params], Tensor]  # f(t, θ, θ̇) for a path integral


@dataclass
class Trajectory:
    """What a run recorded: ``loss`` and each observable are (T, *batch, ...) over ``times``."""

    times: Tensor  # (T,): step numbers (clock="steps") or continuous times
    loss: Tensor  # (T, *batch)
    observables: dict[str, Tensor] = field(default_factory=dict)
    params: Params = ()  # parameters at the last recorded time
    step_loss: Tensor | None = None  # (steps, *batch): the loss each step's gradient saw (mini-batch runs)


def _like_params(name: str, t: Tensor | None, params: Params) -> Tensor | None:
    """Floating data in the parameters' dtype: promoted where that is exact (float32 data, float64 parameters),
    refused naming both where it would round."""
    if t is None or not t.is_floating_point():
        return t
    dtype = params[0].dtype
    return cast_exactly(name, t, dtype, "params",
                        f"casting {name} down would round it; pass params in {t.dtype} or {name} in {dtype}")


def _batch_shape(params: Params) -> torch.Size:
    return params[0].shape[:-2]


def _per_config(value, params: Params, name: str) -> Tensor | float:
    """A scalar, or a tensor with one value per configuration shaped to broadcast over matrices."""
    if isinstance(value, (int, float)):
        return float(value)
    value = torch.as_tensor(value, dtype=params[0].dtype, device=params[0].device)
    batch = _batch_shape(params)
    if value.shape != batch:
        raise ValueError(f"{name} must be a number or have the parameters' batch shape {tuple(batch)}, "
                         f"got shape {tuple(value.shape)}")
    return value.reshape(*batch, 1, 1)


def _check_finite_loss(loss: Tensor, step, labels: Sequence[str] | None) -> None:
    finite = torch.isfinite(loss)
    if bool(finite.all()):
        return
    value = float(loss[~finite].reshape(-1)[0])
    if loss.ndim == 0:  # one unbatched run has no configuration index to name
        raise DivergenceError(f"loss became {value} at {step} of the run (one unbatched configuration): "
                              f"lower the learning rate lr or the init scale")
    names = [labels[i[0]] if labels is not None else str(tuple(i)) for i in (~finite).nonzero().tolist()]
    raise DivergenceError(f"loss became {value} at {step} for configuration(s) {', '.join(names)}")


class _Recorder:
    """Preallocated (T, *batch, ...) buffers filled at the recorded steps."""

    def __init__(self, n_records: int, observables: Mapping[str, Observable]):
        self.n, self.i = n_records, 0
        self.observables = dict(observables)
        self.times: list[float] = []
        self.buffers: dict[str, Tensor] = {}

    def __call__(self, time: float, snapshot: Snapshot) -> None:
        values = {"loss": snapshot.loss.detach(),
                  **{k: f(snapshot).detach() for k, f in self.observables.items()}}
        for k, v in values.items():
            if k not in self.buffers:
                self.buffers[k] = v.new_empty((self.n, *v.shape))
            self.buffers[k][self.i] = v
        self.times.append(time)
        self.i += 1

    def trajectory(self, params: Params, step_loss: Tensor | None = None) -> Trajectory:
        obs = {k: v[: self.i] for k, v in self.buffers.items() if k != "loss"}
        return Trajectory(torch.tensor(self.times, dtype=torch.float64), self.buffers["loss"][: self.i], obs, params,
                          step_loss)


# ----------------------------------------------------------------------------- models

def gradient_fn(model, X: Tensor | None, Y: Tensor | None) -> GradFn:
    """params ↦ (loss per configuration, ∇L): the model's one gradient path (``loss_and_grad``)."""
    return lambda params: model.loss_and_grad(params, X, Y)


class ModuleModel(Model):
    """A ``torch.nn.Module`` as a tuple model: loss(params, X, Y) = ``loss_fn(functional_call(module, params, X), Y)``.

    ``params`` is the tuple of the module's parameters in ``named_parameters()`` order (tied
    parameters once): [`parameters`][] reads it, [`load`][] writes a tuple back into the module.
    ``loss_fn`` defaults to the mean squared error. Not batched: one configuration per module.
    """

    n_params = None

    def __init__(self, module: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None):
        super().__init__("mean")
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.names = tuple(name for name, _ in module.named_parameters())
        self.loss_fn = loss_fn if loss_fn is not None else torch.nn.functional.mse_loss

    def __repr__(self) -> str:
        return f"ModuleModel({type(self.module).__name__}, {len(self.names)} parameter tensors)"

    def parameters(self) -> Params:
        """The module's parameters as a detached tuple (copies)."""
        return tuple(p.detach().clone() for _, p in self.module.named_parameters())

    def load(self, params: Params) -> torch.nn.Module:
        """Copy ``params`` into the module's parameters in place; returns the module."""
        with torch.no_grad():
            for (_, p), q in zip(self.module.named_parameters(), params, strict=True):
                p.copy_(q)
        return self.module

    def forward(self, params: Params, X: Tensor | None) -> Tensor:
        return torch.func.functional_call(self.module, dict(zip(self.names, params, strict=True)), (X,))

    def loss(self, params: Params, X: Tensor | None, Y: Tensor) -> Tensor:
        return self.loss_fn(self.forward(params, X), Y)


# ----------------------------------------------------------------------------- the Stepper protocol

@dataclass
class State:
    """A stepper's state between steps. ``params`` and ``velocity`` are what observables see; ``memory``
    holds the method's own buffers (momentum, moments, previous iterate, a wrapped optimizer)."""

    params: Params
    velocity: Params | None
    time: float = 0.0  # continuous time the steps stand for (step · dt)
    step: int = 0
    memory: dict[str, Any] = field(default_factory=dict)
    loss: Tensor | None = None  # the loss the last step's gradient saw (None before the first step)


@runtime_checkable
class Stepper(Protocol):
    """One discrete method: ``init_state(params, velocity=None) -> State``, ``step(state, grad) -> State``.

    ``grad(params) -> (loss, gradient tuple)``; ``dt`` is the continuous time of one step (η for GD
    in GF time, √η for heavy ball in ND time, √s for Nesterov in NAGF time, 1 where there is none).
    ``step`` may update the state's tensors in place (the loop owns copies) and returns the new state.
    Optional ``advance(state, n) -> State``: n steps in one call, which [`run`][] uses between records
    when nothing is needed per step (no mini-batches, no integrands); it must equal n calls of ``step``.
    A wrapper may replace ``state.params`` between steps: see the module docstring (memory is kept).
    """

    name: str
    dt: float

    def init_state(self, params: Params, velocity: Params | None = None) -> State: ...

    def step(self, state: State, grad: GradFn) -> State: ...


def _start(params: Params, velocity: Params | None = None, track_velocity: bool = True) -> State:
    params = tuple(p.detach().clone() for p in params)
    if velocity is None:
        velocity = tuple(torch.zeros_like(p) for p in params) if track_velocity else None
    else:
        velocity = tuple(v.detach().clone() for v in velocity)
    return State(params, velocity)


def _rest_only(name: str, velocity: Params | None) -> None:
    if velocity is not None and any(bool(v.any()) for v in velocity):
        raise ValueError(f"{name} starts from rest: it takes no initial velocity")


def _check_lr(lr, name: str = "lr") -> float | Tensor:
    """A positive finite learning rate, or one per configuration (validation.check_learning_rate)."""
    return check_learning_rate(name, lr)


def _check_nonnegative(name: str, value) -> float:
    return check_number(name, value, minimum=0)


def _clock(lr) -> float:
    return lr if isinstance(lr, float) else 1.0


class SGD:
    """``torch.optim.SGD`` (its documented update, in float64 to 1e-12 of it):
    g ← ∇L + λθ; b ← g at the first step, else μb + (1 − τ)g; d ← g + μb (Nesterov) or b; θ ← θ − ηd.

    ``lr`` is a number or a tensor with one value per configuration of a batched run; ``dt = lr``
    (GF time) for a number. Velocity estimate: −d (the step taken / η). With the defaults, GD.
    """

    name = "sgd"

    def __init__(self, lr, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        self.lr = _check_lr(lr)
        self.momentum = _check_nonnegative("momentum", momentum)
        self.dampening = float(dampening)
        self.weight_decay = _check_nonnegative("weight_decay", weight_decay)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 (as torch.optim.SGD)")
        self.nesterov = bool(nesterov)
        self.dt = _clock(self.lr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, momentum={self.momentum:g}, weight_decay={self.weight_decay:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        _rest_only(self.name, velocity)
        state = _start(params)
        state.memory["lr"] = _per_config(self.lr, state.params, "lr")
        return state

    def step(self, state: State, grad: GradFn) -> State:
        loss, g = grad(state.params)
        lr, mu, wd = state.memory["lr"], self.momentum, self.weight_decay
        if wd:
            g = tuple(x + wd * p for x, p in zip(g, state.params))
        memory = dict(state.memory)
        if mu:
            buf = state.memory.get("momentum_buffer")
            buf = g if buf is None else tuple(mu * b + (1 - self.dampening) * x for b, x in zip(buf, g))
            memory["momentum_buffer"] = buf
            g = tuple(x + mu * b for x, b in zip(g, buf)) if self.nesterov else buf
        new = tuple(p - lr * x for p, x in zip(state.params, g))
        return State(new, tuple(-x for x in g), state.time + self.dt, state.step + 1, memory, loss)


class GD(SGD):
    """θ_{k+1} = θ_k − η∇L(θ_k) (App. C.1): GF with time step η; velocity estimate −∇L(θ_k)."""

    name = "gd"

    def __init__(self, lr, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay=weight_decay)


class Adam:
    """``torch.optim.Adam`` (``decoupled=False``, weight decay added to the gradient) or ``AdamW``
    (``decoupled=True``: θ ← (1 − ηλ)θ before the step, Loshchilov & Hutter):
    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², θ ← θ − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε).
    """

    name = "adam"

    def __init__(self, lr=1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False):
        self.lr = _check_lr(lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"betas={betas!r} must lie in [0, 1)")
        self.eps = _check_nonnegative("eps", eps)
        self.weight_decay = _check_nonnegative("weight_decay", weight_decay)
        self.decoupled = bool(decoupled)
        self.dt = 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, weight_decay={self.weight_decay:g}, decoupled={self.decoupled})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        _rest_only(self.name, velocity)
        state = _start(params, track_velocity=False)
        state.memory.update(lr=_per_config(self.lr, state.params, "lr"),
                            exp_avg=tuple(torch.zeros_like(p) for p in state.params),
                            exp_avg_sq=tuple(torch.zeros_like(p) for p in state.params))
        return state

    def step(self, state: State, grad: GradFn) -> State:
        loss, g = grad(state.params)
        lr, wd, b1, b2 = state.memory["lr"], self.weight_decay, self.beta1, self.beta2
        params = state.params
        if wd and self.decoupled:
            params = tuple(p * (1 - lr * wd) for p in params)
        elif wd:
            g = tuple(x + wd * p for x, p in zip(g, params))
        t = state.step + 1
        m = tuple(a + (x - a) * (1 - b1) for a, x in zip(state.memory["exp_avg"], g))  # torch's lerp
        v = tuple(b2 * a + (1 - b2) * x * x for a, x in zip(state.memory["exp_avg_sq"], g))
        step_size = lr / (1 - b1 ** t)
        root = math.sqrt(1 - b2 ** t)
        new = tuple(p - step_size * a / (b.sqrt() / root + self.eps) for p, a, b in zip(params, m, v))
        memory = {**state.memory, "exp_avg": m, "exp_avg_sq": v}
        return State(new, None, state.time + self.dt, t, memory, loss)


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (default λ = 0.01, as torch)."""

    name = "adamw"

    def __init__(self, lr=1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(lr, betas, eps, weight_decay, decoupled=True)


class AdaGrad:
    """``torch.optim.Adagrad``: g ← ∇L + λθ; s ← s + g²; θ ← θ − η/(1 + (t − 1)·decay) · g / (√s + ε)."""

    name = "adagrad"

    def __init__(self, lr=1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10):
        self.lr = _check_lr(lr)
        self.lr_decay = _check_nonnegative("lr_decay", lr_decay)
        self.weight_decay = _check_nonnegative("weight_decay", weight_decay)
        self.initial = _check_nonnegative("initial_accumulator_value", initial_accumulator_value)
        self.eps = _check_nonnegative("eps", eps)
        self.dt = 1.0

    def __repr__(self) -> str:
        return f"AdaGrad(lr={self.lr}, lr_decay={self.lr_decay:g}, weight_decay={self.weight_decay:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        _rest_only(self.name, velocity)
        state = _start(params, track_velocity=False)
        state.memory.update(lr=_per_config(self.lr, state.params, "lr"),
                            sum=tuple(torch.full_like(p, self.initial) for p in state.params))
        return state

    def step(self, state: State, grad: GradFn) -> State:
        loss, g = grad(state.params)
        if self.weight_decay:
            g = tuple(x + self.weight_decay * p for x, p in zip(g, state.params))
        t = state.step + 1
        clr = state.memory["lr"] / (1 + (t - 1) * self.lr_decay)
        total = tuple(s + x * x for s, x in zip(state.memory["sum"], g))
        new = tuple(p - clr * x / (s.sqrt() + self.eps) for p, x, s in zip(state.params, g, total))
        return State(new, None, state.time + self.dt, t, {**state.memory, "sum": total}, loss)


class HeavyBall:
    """θ_{k+1} = 2θ_k − θ_{k−1} − η∇L(θ_k) (heavy ball without damping, G&U Eq. 21): ND with h = √η.

    Started from (θ₀, θ̇₀) by Störmer's first step θ₁ = θ₀ + hθ̇₀ − (η/2)∇L(θ₀), so its positions are
    those of [`Leapfrog`][] with step h. Velocity estimate: (θ_k − θ_{k−1})/h (first order).
    """

    name = "heavy_ball"

    def __init__(self, lr: float):
        self.lr = _check_lr(lr)
        self.dt = math.sqrt(self.lr)

    def __repr__(self) -> str:
        return f"HeavyBall(dt={self.dt:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        return _start(params, velocity)

    def step(self, state: State, grad: GradFn) -> State:
        loss, g = grad(state.params)
        h = self.dt
        assert state.velocity is not None  # _start always keeps a velocity
        if state.step == 0:
            new = tuple(p + h * v - 0.5 * self.lr * x for p, v, x in zip(state.params, state.velocity, g))
        else:
            prev = state.memory["previous"]
            new = tuple(2 * p - q - self.lr * x for p, q, x in zip(state.params, prev, g))
        velocity = tuple((a - b) / h for a, b in zip(new, state.params))
        return State(new, velocity, state.time + h, state.step + 1, {"previous": state.params}, loss)


class Leapfrog:
    """Velocity Verlet for ND: v ← v − (h/2)∇L; θ ← θ + hv; v ← v − (h/2)∇L(θ). Symplectic and
    time-reversible, so ½‖θ̇‖² + L stays within O(h²) of its start for exponentially long times."""

    name = "leapfrog"

    def __init__(self, step: float):
        self.dt = _check_lr(step, "step")

    def __repr__(self) -> str:
        return f"Leapfrog(dt={self.dt:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        return _start(params, velocity)

    def step(self, state: State, grad: GradFn) -> State:
        h = self.dt
        g = state.memory.get("grad")
        loss = None
        if g is None or state.memory.get("at") is not state.params:  # first step, or parameters replaced
            loss, g = grad(state.params)
        assert state.velocity is not None  # _start always keeps a velocity
        half = tuple(v - 0.5 * h * x for v, x in zip(state.velocity, g))
        new = tuple(p + h * v for p, v in zip(state.params, half))
        _, g_new = grad(new)
        velocity = tuple(v - 0.5 * h * x for v, x in zip(half, g_new))
        return State(new, velocity, state.time + h, state.step + 1, {"grad": g_new, "at": new}, loss)  # type: ignore[arg-type]  # time is a tensor for a per-configuration step


class Nesterov:
    """Nesterov's accelerated gradient in Su, Boyd & Candès's form (the discretisation of NAGF, G&U Eq. 20):
    x_k = y_{k−1} − s∇L(y_{k−1}),  y_k = x_k + (k−1)/(k+2)·(x_k − x_{k−1}),  x₀ = y₀ = θ₀; time t = k√s.

    ``params`` of the state are x_k; velocity estimate (x_k − x_{k−1})/√s. Starts from rest (NAGF at t = 0).
    (``torch.optim.SGD(nesterov=True)`` is [`SGD`][]'s constant-momentum form.)
    """

    name = "nesterov"

    def __init__(self, lr: float):
        self.lr = _check_lr(lr)
        self.dt = math.sqrt(self.lr)

    def __repr__(self) -> str:
        return f"Nesterov(dt={self.dt:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        if velocity is not None and any(bool(v.any()) for v in velocity):
            raise ValueError("Nesterov's method starts from rest (NAGF at t = 0)")
        return _start(params)

    def step(self, state: State, grad: GradFn) -> State:
        k = state.step + 1
        y = state.memory.get("y", state.params)
        loss, g = grad(y)
        x = tuple(a - self.lr * b for a, b in zip(y, g))
        mom = (k - 1) / (k + 2)
        y_new = tuple(a + mom * (a - b) for a, b in zip(x, state.params))
        velocity = tuple((a - b) / self.dt for a, b in zip(x, state.params))
        return State(x, velocity, state.time + self.dt, k, {"y": y_new}, loss)


class TorchOptimizer:
    """Any ``torch.optim.Optimizer`` class as a stepper: ``TorchOptimizer(torch.optim.RMSprop, lr=1e-3)``.

    The optimizer owns leaf copies of the parameters and its ``state``; each step sets their ``.grad``
    from ``grad`` and calls ``optimizer.step()``. A batched run treats each stacked tensor as one
    parameter: identical per configuration for elementwise optimizers (SGD, Adam, …), with one
    scalar ``lr``. Velocity is not estimated. Replaced parameters are copied into the leaves; the
    optimizer's state is kept.
    """

    name = "torch"

    def __init__(self, optimizer: type, **kwargs):
        if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer subclass, got {optimizer!r}")
        self.optimizer, self.kwargs = optimizer, kwargs
        self.name = optimizer.__name__.lower()
        self.dt = 1.0

    def __repr__(self) -> str:
        return f"TorchOptimizer({self.optimizer.__name__}, {self.kwargs})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        _rest_only(self.name, velocity)
        leaves = [p.detach().clone().requires_grad_(True) for p in params]
        views = tuple(p.detach() for p in leaves)
        return State(views, None, memory={"optimizer": self.optimizer(leaves, **self.kwargs), "leaves": leaves,
                                          "views": views})

    def step(self, state: State, grad: GradFn) -> State:
        leaves, views = state.memory["leaves"], state.memory["views"]
        if state.params is not views:  # replaced by a wrapper: move the new values into the leaves
            with torch.no_grad():
                for leaf, p in zip(leaves, state.params, strict=True):
                    leaf.copy_(p)
        loss, g = grad(views)
        for leaf, x in zip(leaves, g):
            leaf.grad = x.detach().clone()
        with torch.enable_grad():
            state.memory["optimizer"].step()
        return State(views, None, state.time + self.dt, state.step + 1, state.memory, loss)


def wrap_optimizer(optimizer: type, **kwargs) -> TorchOptimizer:
    """A stepper that runs ``optimizer(params, **kwargs)`` (any ``torch.optim.Optimizer`` class)."""
    return TorchOptimizer(optimizer, **kwargs)


def bind_in_place(state: State, make: Callable[[Params], Callable[[], None]], contiguous: bool = False) -> Params:
    """One step of a stepper that updates bound tensors in place (``TwoLayerGD``, ``kernels.CompiledGD``).
    On the first step, or when a wrapper replaced ``state.params``, the parameters are cloned (made
    contiguous if asked) and ``make(clones)`` builds the in-place step on them; it is then called once.
    Returns the clones, which the step has advanced."""
    if state.memory.get("bound") is not state.params:
        params = tuple(p.detach().clone().contiguous() if contiguous else p.clone() for p in state.params)
        state.memory.update(bound=params, closure=make(params))
    state.memory["closure"]()
    return state.memory["bound"]


class TwoLayerGD:
    """Full-batch GD on a [`TwoLayerNet`][], θ ← θ − η∇L, in fused in-place tensor ops:
    the hot loop of Figs. 3, 6, 9 (per-step overhead, not arithmetic, is the cost there).

    With whitened input (X = None), exactly one batch dimension and activations that can write σ and
    σ' into preallocated buffers, every buffer and view is made once: 4 tensor ops per step (5 with one
    lr per configuration) plus 1–2 per activation, no allocation. Both gradients are linear in the
    residual, so −η·scale is folded into it once: R' = −η·scale·(F − Y), U += R'σ(Z)ᵀ, V += (R'ᵀU) ⊙ σ'(Z)ᵀ.
    Otherwise the same update with σ, σ' in one pass and in-place updates. The gradient argument of
    ``step`` is not used (the step computes its own); the step's loss is not computed.
    """

    name = "two_layer_gd"
    uses_grad = False  # steps on its own (model, X, Y): the loop refuses mini-batches for it

    def __init__(self, model: TwoLayerNet, X: Tensor | None, Y: Tensor, lr):
        if not isinstance(model, TwoLayerNet):
            raise TypeError(f"TwoLayerGD steps a TwoLayerNet, got {type(model).__name__}")
        self.model, self.X, self.Y, self.lr = model, X, Y, _check_lr(lr)
        self.dt = _clock(self.lr)

    def __repr__(self) -> str:
        return f"TwoLayerGD({self.model!r}, lr={self.lr})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        _rest_only(self.name, velocity)
        state = _start(params, track_velocity=False)
        check_params("params", state.params, 2)
        # the stepper steps on its own data: promoted as run() promotes its own (float32 data, float64 parameters)
        Y = _like_params("Y", self.Y, state.params)
        assert Y is not None  # a tensor's promotion is a tensor
        self.X, self.Y = _like_params("X", self.X, state.params), Y
        state.memory["lr"] = _per_config(self.lr, state.params, "lr")
        return state

    def step(self, state: State, grad: GradFn | None = None) -> State:
        lr = state.memory["lr"]
        params = bind_in_place(state, lambda p: self._preallocated(p, lr) or (lambda: self._fused(p, lr)))
        return State(params, None, state.time + self.dt, state.step + 1, state.memory)

    def advance(self, state: State, steps: int) -> State:
        """``steps`` calls of ``step`` in one (the loop's fast path between records): the same
        in-place updates and the same clock, without a State per step."""
        new = self.step(state)
        closure, time = state.memory["closure"], new.time
        for _ in range(steps - 1):
            closure()
            time += self.dt  # added step by step, as ``step`` does: the same floating-point times
        return State(new.params, None, time, state.step + steps, state.memory)

    def _fused(self, params: Params, lr) -> None:
        U, V = params
        X, Y = self.X, self.Y
        Z = V.mT if X is None else V.mT @ X  # (..., h, k)
        S, D = self.model.activation.sigma_and_dsigma(Z)
        if U.ndim == 3 and S.ndim == 3:  # one batch dimension: bmm/baddbmm skip matmul's shape logic
            R = torch.baddbmm(Y, U, S, beta=-1)  # F − Y, (B, m, k)
            grad_U, grad_Z = torch.bmm(R, S.mT), torch.bmm(U.mT, R)
        else:
            R = (U @ S).sub_(Y)
            grad_U, grad_Z = R @ S.mT, U.mT @ R
        grad_Z.mul_(D)  # ∂L/∂Z up to the residual scale, taken before U changes
        scale = _residual_scale(self.model.reduction, R)
        _descend(U, grad_U, lr, scale)
        _descend(V, grad_Z.mT if X is None else X @ grad_Z.mT, lr, scale)

    def _preallocated(self, params: Params, lr) -> Callable[[], None] | None:
        U, V = params
        Y = self.Y
        if self.X is not None or U.ndim != 3 or V.ndim != 3 or Y.shape[-2:] != (U.shape[-2], V.shape[-2]):
            return None
        act = self.model.activation
        pieces = act._slices if hasattr(act, "_slices") else [(0, U.shape[0], act)]
        if pieces is None or any(a.into is None for _, _, a in pieces):
            return None
        Z = V.mT  # a view: it follows V's in-place updates
        S, D = torch.empty_like(Z), torch.empty_like(Z)
        R = torch.empty(U.shape[0], U.shape[1], Z.shape[-1], dtype=U.dtype, device=U.device)
        step_V = torch.empty_like(V)
        for start, stop, a in pieces:
            if a.constant_dsigma:
                D[start:stop] = a.dsigma(Z[start:stop])
        parts = [(a.into, Z[start:stop], S[start:stop], D[start:stop]) for start, stop, a in pieces]
        S_T, R_T, D_T = S.mT, R.mT, D.mT
        Y = Y.expand_as(R) if Y.ndim == 2 else Y
        scale = _residual_scale(self.model.reduction, R)
        per_config = isinstance(lr, Tensor)
        c = -scale * lr if per_config else -scale * float(lr)

        def step() -> None:
            for into, z, s, d in parts:
                into(z, s, d)  # type: ignore[misc]  # pieces without `into` returned None above
            if per_config:
                torch.baddbmm(Y, U, S, beta=-1, out=R).mul_(c)
            else:
                torch.baddbmm(Y, U, S, beta=-c, alpha=c, out=R)
            torch.bmm(R_T, U, out=step_V)  # (UᵀR')ᵀ with U before its update
            U.baddbmm_(R, S_T)
            V.addcmul_(step_V, D_T)
        return step


def _descend(p: Tensor, grad: Tensor, lr: Tensor | float, scale: float) -> None:
    """p ← p − lr·scale·grad in one in-place op (lr: a number or one value per configuration)."""
    if isinstance(lr, Tensor):
        p.addcmul_(lr, grad, value=-scale)
    else:
        p.add_(grad, alpha=-scale * lr)


STEPPERS: dict[str, type] = {"gd": GD, "sgd": SGD, "adam": Adam, "adamw": AdamW, "adagrad": AdaGrad,
                             "heavy_ball": HeavyBall, "leapfrog": Leapfrog, "nesterov": Nesterov}


def make_stepper(name: str, lr: float, **kwargs) -> Stepper:
    """A stepper by name (``gd``, ``sgd``, ``adam``, ``adamw``, ``adagrad``, ``heavy_ball``, ``leapfrog``,
    ``nesterov``); ``lr`` is η, h (leapfrog) or s (Nesterov)."""
    check_choice("stepper", name, STEPPERS)
    return STEPPERS[name](lr, **kwargs)


# ----------------------------------------------------------------------------- the one loop

def run(model, params: Params, X: Tensor | None, Y: Tensor | None, stepper: Stepper, steps: int, *,
        velocity: Params | None = None, record_every: int = 1, observables: Mapping[str, Observable] | None = None,
        integrands: Mapping[str, Integrand] | None = None, batches: Callable[[int], tuple[Tensor, Tensor]] | None = None,
        labels: Sequence[str] | None = None, clock: str = "steps", progress: bool = False,
        description: str | None = None) -> Trajectory:
    """Run ``stepper`` on ``model`` for ``steps`` steps from ``params`` (the inputs are not modified).

    ``model``: a tuple model of [`symmetry.models`][] or an ``nn.Module`` (wrap it in
    [`ModuleModel`][] to choose the loss; a bare module gets the mean squared error). Loss and
    ``observables`` (name → function of a [`Snapshot`][]) are recorded at steps 0, k, 2k, … and
    the last; ``times`` are step numbers (``clock="steps"``) or continuous times step·dt
    (``clock="time"``). ``integrands`` f(t, θ, θ̇) are summed along the steps by the trapezoidal rule
    (the discrete counterpart of [`integrate`][]'s path integrals). ``batches(k) -> (X_k, Y_k)``
    gives step k its mini-batch (recorded losses then use the batch of that step, and
    ``step_loss`` holds every step's). A NaN or infinite loss raises [`DivergenceError`][]
    naming the configuration (by ``labels`` if given).
    """
    if isinstance(model, torch.nn.Module):
        model = ModuleModel(model)
    params = check_params("params", params, getattr(model, "n_params", None))
    steps, record_every = check_count("steps", steps), check_count("record_every", record_every, 1)
    check_choice("clock", clock, ("steps", "time"))
    if batches is None:
        check_data(X, Y)
        X, Y = _like_params("X", X, params), _like_params("Y", Y, params)
    batch = _batch_shape(params)
    if labels is not None and (len(batch) != 1 or len(labels) != batch[0]):
        raise ValueError(f"labels must name each of the {tuple(batch)} configurations")
    if batches is not None and not getattr(stepper, "uses_grad", True):
        raise NotSupportedError(f"{stepper!r} steps on its own data and cannot take mini-batches; use GD or SGD")
    integrands = dict(integrands or {})
    n_records = steps // record_every + 1 + (steps % record_every != 0)
    record = _Recorder(n_records, observables or {})
    state = stepper.init_state(params, velocity)
    if integrands and state.velocity is None:
        raise NotSupportedError(f"integrands need a velocity estimate, which {stepper!r} does not keep")
    totals = {k: torch.zeros_like(f(state.time, state.params, state.velocity)) for k, f in integrands.items()}  # type: ignore[arg-type]  # velocity checked above
    last = {k: f(state.time, state.params, state.velocity) for k, f in integrands.items()}  # type: ignore[arg-type]  # velocity checked above
    step_loss: list[Tensor] = []

    def data(k: int) -> tuple[Tensor | None, Tensor | None]:
        return (X, Y) if batches is None else batches(min(k, steps - 1) if steps else 0)

    def snapshot(state: State) -> None:
        loss = model.loss(state.params, *data(state.step))
        where = f"step {state.step}" if clock == "steps" else f"step {state.step} of {stepper!r}"
        _check_finite_loss(loss, where, labels)
        s = Snapshot(state.params, state.velocity, state.time, loss, dict(totals), state.step)
        record(float(state.step) if clock == "steps" else state.time, s)

    grad = gradient_fn(model, X, Y)
    from tqdm.auto import tqdm  # lazily: keeps `import symmetry` light

    # fast path: a stepper with ``advance(state, n)`` runs the steps between two records in one call
    # (same arithmetic, no State per step); nothing per step may be needed (batches, integrands)
    advance = getattr(stepper, "advance", None) if batches is None and not integrands else None
    with torch.no_grad(), tqdm(total=steps, desc=description or stepper.name, disable=not progress,
                               mininterval=0.5) as bar:
        k = 0
        while k < steps:
            if k % record_every == 0:
                snapshot(state)
            if advance is not None:
                n = min(record_every - k % record_every, steps - k)
                state = advance(state, n)
            else:
                n = 1
                if batches is not None:
                    grad = gradient_fn(model, *batches(k))
                state = stepper.step(state, grad)
                if batches is not None and state.loss is not None:
                    step_loss.append(state.loss.detach())
                for name, f in integrands.items():
                    now = f(state.time, state.params, state.velocity)  # type: ignore[arg-type]  # velocity checked above
                    totals[name] = totals[name] + 0.5 * stepper.dt * (now + last[name])
                    last[name] = now
            k += n
            bar.update(n)
        snapshot(state)
    return record.trajectory(state.params, torch.stack(step_loss) if step_loss else None)


def gradient_descent(model, params: Params, X: Tensor | None, Y: Tensor, lr, steps: int, *,
                     record_every: int = 1, observables: Mapping[str, Observable] | None = None,
                     labels: Sequence[str] | None = None, progress: bool = False,
                     description: str = "gradient descent") -> Trajectory:
    """Full-batch GD θ_{t+1} = θ_t − η ∇L(θ_t) (App. C.1), every configuration at once: [`run`][]
    with [`TwoLayerGD`][] on a two-layer net, [`GD`][] otherwise. ``lr`` is a number or a
    tensor of the batch shape; ``times`` are step numbers."""
    stepper = TwoLayerGD(model, X, Y, lr) if isinstance(model, TwoLayerNet) else GD(lr)
    return run(model, params, X, Y, stepper, steps, record_every=record_every, observables=observables,
               labels=labels, progress=progress, description=description)


# ----------------------------------------------------------------------------- the one ODE integrator

#: The continuous dynamics θ̈ + b(t)θ̇ = −∇L (G&U Eq. 22) and GF, its first-order limit.
DYNAMICS = ("gf", "nd", "nagf")


def friction(dynamics: str, t: float) -> float:
    """b(t): 0 for ND, 3/t for NAGF."""
    check_choice("dynamics", dynamics, ("nd", "nagf"))
    return 0.0 if dynamics == "nd" else 3.0 / t


def integrate(model, params: Params, X: Tensor | None, Y: Tensor | None, times: Sequence[float] | Tensor,
              dynamics: str = "gf", *, lr: float = 1.0, velocity: Params | None = None, t0: float = 0.0,
              integrands: Mapping[str, Integrand] | None = None, observables: Mapping[str, Observable] | None = None,
              labels: Sequence[str] | None = None, rtol: float = 1e-12, atol: float = 1e-12, method: str = "DOP853",
              first_step: float | None = None, max_evaluations: int = 200_000,
              stall_evaluations: int = 5_000) -> Trajectory:
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
        b = 0.0 if dynamics == "nd" else (None if t == 0 else 3.0 / t)
        # b is None: NAGF at t = 0 from rest, where the limit is θ̈(0) = −∇L/4
        return theta, np.concatenate([v, -g / 4 if b is None else -g - b * v])

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

    record = _Recorder(times.numel(), observables or {})
    for t, y in zip(times.tolist(), states):
        y = np.ascontiguousarray(y)
        theta, move = motion(t, y)
        dtheta = as_params(move)
        rest = torch.from_numpy(y[n if dynamics == "gf" else 2 * n:]).to(device)  # the path integrals
        with torch.no_grad():
            loss = model.loss(theta, X64, Y64)
        _check_finite_loss(loss, f"time {t:g}", labels)
        values, offset = {}, 0
        for k in integrands:
            values[k] = rest[offset:offset + sizes[k]].reshape(shapes[k])
            offset += sizes[k]
        with torch.no_grad():
            record(t, Snapshot(theta, dtheta, t, loss, values))
    return record.trajectory(theta)


def gradient_flow(model, params: Params, X: Tensor | None, Y: Tensor, times: Sequence[float] | Tensor, *,
                  lr: float = 1.0, rtol: float = 1e-10, atol: float = 1e-12, method: str = "DOP853",
                  observables: Mapping[str, Observable] | None = None,
                  labels: Sequence[str] | None = None, max_evaluations: int = 1_000_000,
                  stall_evaluations: int = 5_000) -> Trajectory:
    """Gradient flow θ̇ = −η∇L(θ) (Eq. 23) from t = 0, recorded at ``times``, in float64:
    [`integrate`][] with ``dynamics="gf"``."""
    return integrate(model, params, X, Y, times, "gf", lr=lr, rtol=rtol, atol=atol, method=method,
                     stall_evaluations=stall_evaluations,
                     observables=observables, labels=labels, max_evaluations=max_evaluations)
