"""The discrete methods, one class each, on the [`Stepper`][symmetry.dynamics.Stepper] protocol.

[`SGD`][symmetry.dynamics.SGD] is ``torch.optim.SGD``; [`GD`][symmetry.dynamics.GD], its plain case, is the one
definition of the gradient-descent step θ ← θ − η∇L (App. C.1). [`TwoLayerGD`][symmetry.dynamics.TwoLayerGD]
(fused tensor ops, ``fused``) and [`CompiledGD`][symmetry.dynamics.compiled.CompiledGD] (numba, ``compiled``)
are speed paths of that same step, tested equal to it.
"""
from __future__ import annotations

import math

import torch

from ..types import Params
from ..validation import check_choice
from .state import GradFn, State, Stepper, check_lr, check_nonnegative, per_config, require_rest, start_state, step_clock


class SGD:
    """``torch.optim.SGD`` (its documented update, in float64 to 1e-12 of it):
    g ← ∇L + λθ; b ← g at the first step, else μb + (1 − τ)g; d ← g + μb (Nesterov) or b; θ ← θ − ηd.

    ``lr`` is a number or a tensor with one value per configuration of a batched run; ``dt = lr``
    (GF time) for a number. Velocity estimate: −d (the step taken / η). With the defaults, GD.
    """

    name = "sgd"

    def __init__(self, lr, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        self.lr = check_lr(lr)
        self.momentum = check_nonnegative("momentum", momentum)
        self.dampening = float(dampening)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 (as torch.optim.SGD)")
        self.nesterov = bool(nesterov)
        self.dt = step_clock(self.lr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, momentum={self.momentum:g}, weight_decay={self.weight_decay:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        require_rest(self.name, velocity)
        state = start_state(params)
        state.memory["lr"] = per_config(self.lr, state.params, "lr")
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
    """θ_{k+1} = θ_k − η∇L(θ_k) (App. C.1): GF with time step η; velocity estimate −∇L(θ_k).

    The engine's one definition of the gradient-descent step ([`SGD`][symmetry.dynamics.SGD] with its defaults).
    [`TwoLayerGD`][symmetry.dynamics.TwoLayerGD] (fused tensor ops on a two-layer net) and
    [`CompiledGD`][symmetry.dynamics.compiled.CompiledGD] (numba, Fig. 7's models) take the same step faster;
    [`gradient_descent`][symmetry.dynamics.gradient_descent] runs the fastest of them that applies.
    """

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
        self.lr = check_lr(lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"betas={betas!r} must lie in [0, 1)")
        self.eps = check_nonnegative("eps", eps)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.decoupled = bool(decoupled)
        self.dt = 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, weight_decay={self.weight_decay:g}, decoupled={self.decoupled})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        require_rest(self.name, velocity)
        state = start_state(params, track_velocity=False)
        state.memory.update(lr=per_config(self.lr, state.params, "lr"),
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
        self.lr = check_lr(lr)
        self.lr_decay = check_nonnegative("lr_decay", lr_decay)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.initial = check_nonnegative("initial_accumulator_value", initial_accumulator_value)
        self.eps = check_nonnegative("eps", eps)
        self.dt = 1.0

    def __repr__(self) -> str:
        return f"AdaGrad(lr={self.lr}, lr_decay={self.lr_decay:g}, weight_decay={self.weight_decay:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        require_rest(self.name, velocity)
        state = start_state(params, track_velocity=False)
        state.memory.update(lr=per_config(self.lr, state.params, "lr"),
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
        self.lr = check_lr(lr)
        self.dt = math.sqrt(self.lr)

    def __repr__(self) -> str:
        return f"HeavyBall(dt={self.dt:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        return start_state(params, velocity)

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
        self.dt = check_lr(step, "step")

    def __repr__(self) -> str:
        return f"Leapfrog(dt={self.dt:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        return start_state(params, velocity)

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
        self.lr = check_lr(lr)
        self.dt = math.sqrt(self.lr)

    def __repr__(self) -> str:
        return f"Nesterov(dt={self.dt:g})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        if velocity is not None and any(bool(v.any()) for v in velocity):
            raise ValueError("Nesterov's method starts from rest (NAGF at t = 0)")
        return start_state(params)

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
        require_rest(self.name, velocity)
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


STEPPERS: dict[str, type] = {"gd": GD, "sgd": SGD, "adam": Adam, "adamw": AdamW, "adagrad": AdaGrad,
                             "heavy_ball": HeavyBall, "leapfrog": Leapfrog, "nesterov": Nesterov}


def make_stepper(name: str, lr: float, **kwargs) -> Stepper:
    """A stepper by name (``gd``, ``sgd``, ``adam``, ``adamw``, ``adagrad``, ``heavy_ball``, ``leapfrog``,
    ``nesterov``); ``lr`` is η, h (leapfrog) or s (Nesterov)."""
    check_choice("stepper", name, STEPPERS)
    return STEPPERS[name](lr, **kwargs)
