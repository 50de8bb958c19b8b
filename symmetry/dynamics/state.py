"""A stepper's [`State`][symmetry.dynamics.State] and the [`Stepper`][symmetry.dynamics.Stepper] protocol,
with the helpers every stepper shares (the engine's internal API: public names, not re-exported by the package)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ..types import Params
from ..validation import cast_exactly, check_learning_rate, check_number

Tensor = torch.Tensor
GradFn = Callable[[Params], tuple[Tensor, Params]]  # params ↦ (loss per configuration, gradient tuple)


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
    Optional ``advance(state, n) -> State``: n steps in one call, which [`run`][symmetry.dynamics.run] uses between records
    when nothing is needed per step (no mini-batches, no integrands); it must equal n calls of ``step``.
    A wrapper may replace ``state.params`` between steps: see [`symmetry.dynamics`][] (memory is kept).
    """

    name: str
    dt: float

    def init_state(self, params: Params, velocity: Params | None = None) -> State: ...

    def step(self, state: State, grad: GradFn) -> State: ...


def start_state(params: Params, velocity: Params | None = None, track_velocity: bool = True) -> State:
    """The state at step 0: copies of ``params`` and of ``velocity`` (zeros where None, unless not tracked)."""
    params = tuple(p.detach().clone() for p in params)
    if velocity is None:
        velocity = tuple(torch.zeros_like(p) for p in params) if track_velocity else None
    else:
        velocity = tuple(v.detach().clone() for v in velocity)
    return State(params, velocity)


def require_rest(name: str, velocity: Params | None) -> None:
    """Refuse a non-zero initial velocity for a method that starts from rest, naming the method."""
    if velocity is not None and any(bool(v.any()) for v in velocity):
        raise ValueError(f"{name} starts from rest: it takes no initial velocity")


def check_lr(lr, name: str = "lr") -> float | Tensor:
    """A positive finite learning rate, or one per configuration (validation.check_learning_rate)."""
    return check_learning_rate(name, lr)


def check_nonnegative(name: str, value) -> float:
    """A finite number ≥ 0 (momentum, weight decay, eps), or a ValueError naming ``name``."""
    return check_number(name, value, minimum=0)


def step_clock(lr) -> float:
    """``dt`` of a GD-type step: η for one learning rate (GF time), 1 for one per configuration."""
    return lr if isinstance(lr, float) else 1.0


def like_params(name: str, t: Tensor | None, params: Params) -> Tensor | None:
    """Floating data in the parameters' dtype: promoted where that is exact (float32 data, float64 parameters),
    refused naming both where it would round."""
    if t is None or not t.is_floating_point():
        return t
    dtype = params[0].dtype
    return cast_exactly(name, t, dtype, "params",
                        f"casting {name} down would round it; pass params in {t.dtype} or {name} in {dtype}")


def batch_shape(params: Params) -> torch.Size:
    """The configurations' shape: the leading dimensions of the first parameter matrix."""
    return params[0].shape[:-2]


def per_config(value, params: Params, name: str) -> Tensor | float:
    """A scalar, or a tensor with one value per configuration shaped to broadcast over matrices."""
    if isinstance(value, (int, float)):
        return float(value)
    value = torch.as_tensor(value, dtype=params[0].dtype, device=params[0].device)
    batch = batch_shape(params)
    if value.shape != batch:
        raise ValueError(f"{name} must be a number or have the parameters' batch shape {tuple(batch)}, "
                         f"got shape {tuple(value.shape)}")
    return value.reshape(*batch, 1, 1)


def bind_in_place(state: State, make: Callable[[Params], Callable[[], None]], contiguous: bool = False) -> Params:
    """One step of a stepper that updates bound tensors in place (``TwoLayerGD``, ``compiled.CompiledGD``).
    On the first step, or when a wrapper replaced ``state.params``, the parameters are cloned (made
    contiguous if asked) and ``make(clones)`` builds the in-place step on them; it is then called once.
    Returns the clones, which the step has advanced."""
    if state.memory.get("bound") is not state.params:
        params = tuple(p.detach().clone().contiguous() if contiguous else p.clone() for p in state.params)
        state.memory.update(bound=params, closure=make(params))
    state.memory["closure"]()
    return state.memory["bound"]
