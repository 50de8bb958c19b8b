"""Training dynamics: batched full-batch gradient descent and gradient flow (Eq. 23).

One stepping loop serves every figure. Many configurations (learning rates, activations,
inits) run at once: stack their parameters along a leading batch dimension, give ``lr``
one value per configuration, and each step updates all of them with the same tensor ops.
Gradient flow θ̇ = −η∇L(θ) is integrated by scipy's adaptive ``solve_ivp``; with the
same η, flow time t corresponds to GD step t, so GF and GD share an axis.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from .models import flatten, unflatten
from .validation import check_count, check_learning_rate, check_number, check_params, check_times

Tensor = torch.Tensor
Params = tuple[Tensor, ...]
Observable = Callable[[Params], Tensor]


@dataclass
class Trajectory:
    """What a run recorded: ``loss`` and each observable are (T, *batch, ...) over ``times``."""

    times: Tensor  # (T,): GD step numbers, or gradient-flow times
    loss: Tensor  # (T, *batch)
    observables: dict[str, Tensor] = field(default_factory=dict)
    params: Params = ()  # parameters at the last recorded time


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite; the message names the configurations."""


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
    if loss.ndim == 0:  # robustness: one unbatched run has no configuration index to name
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

    def __call__(self, time: float, loss: Tensor, params: Params) -> None:
        values = {"loss": loss.detach(), **{k: f(params).detach() for k, f in self.observables.items()}}
        for k, v in values.items():
            if k not in self.buffers:
                self.buffers[k] = v.new_empty((self.n, *v.shape))
            self.buffers[k][self.i] = v
        self.times.append(time)
        self.i += 1

    def trajectory(self, params: Params, dtype) -> Trajectory:
        obs = {k: v[: self.i] for k, v in self.buffers.items() if k != "loss"}
        return Trajectory(torch.tensor(self.times, dtype=dtype), self.buffers["loss"][: self.i], obs, params)


def gradient_descent(model, params: Params, X: Tensor | None, Y: Tensor, lr, steps: int, *,
                     record_every: int = 1, observables: Mapping[str, Observable] | None = None,
                     labels: Sequence[str] | None = None, progress: bool = False,
                     description: str = "gradient descent") -> Trajectory:
    """Full-batch GD θ_{t+1} = θ_t − η ∇L(θ_t) (App. C.1), for every configuration at once.

    ``lr`` is a number or a tensor of the batch shape. Loss and ``observables`` (name →
    function of the parameters) are recorded at steps 0, k, 2k, … and at the last step;
    a NaN or infinite loss stops the run with a :class:`DivergenceError` naming the
    configuration (by ``labels`` if given).
    """
    params = check_params("params", params, getattr(model, "n_params", None))
    lr = check_learning_rate("lr", lr)  # robustness: shared input checks (validation.py)
    steps, record_every = check_count("steps", steps), check_count("record_every", record_every, 1)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer")
    if not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every={record_every!r} must be a positive integer")
    batch = _batch_shape(params)
    if labels is not None and (len(batch) != 1 or len(labels) != batch[0]):
        raise ValueError(f"labels must name each of the {tuple(batch)} configurations")
    eta = _per_config(lr, params, "lr")
    n_records = steps // record_every + 1 + (steps % record_every != 0)
    record = _Recorder(n_records, observables or {})
    params = tuple(p.detach().clone() for p in params)

    from tqdm.auto import tqdm  # lazily: keeps `import symmetry` light

    with torch.no_grad():
        # in place on our own copies; a model may offer a preallocated step (fewer ops per step)
        step = getattr(model, "stepper", lambda *args: None)(params, X, Y, eta)
        if step is None:
            step = functools.partial(model.descent_step, params, X, Y, eta)
        for t in tqdm(range(steps), desc=description, disable=not progress, mininterval=0.5):
            if t % record_every == 0:
                loss = model.loss(params, X, Y)
                _check_finite_loss(loss, f"step {t}", labels)
                record(t, loss, params)
            step()
        loss = model.loss(params, X, Y)
        _check_finite_loss(loss, f"step {steps}", labels)
        record(steps, loss, params)
    return record.trajectory(params, torch.float64)


def gradient_flow(model, params: Params, X: Tensor | None, Y: Tensor, times: Sequence[float] | Tensor, *,
                  lr: float = 1.0, rtol: float = 1e-10, atol: float = 1e-12, method: str = "DOP853",
                  observables: Mapping[str, Observable] | None = None,
                  labels: Sequence[str] | None = None, max_evaluations: int = 1_000_000) -> Trajectory:
    """Gradient flow θ̇ = −η∇L(θ) (Eq. 23) from t = 0, recorded at ``times``, in float64.

    Integrated by ``scipy.integrate.solve_ivp`` (default DOP853, an adaptive 8th-order
    Runge–Kutta) at tolerances ``rtol``/``atol``; ``lr`` = η rescales time so that GF time
    t matches GD step t at learning rate η. Batched configurations integrate together.

    ReLU-type activations on non-whitened data make the vector field discontinuous; where
    the flow slides along a kink (a Filippov solution) adaptive solvers take ever smaller
    steps. After ``max_evaluations`` gradient evaluations the run stops with a RuntimeError.
    """
    import numpy as np
    from scipy.integrate import solve_ivp

    params = check_params("params", params, getattr(model, "n_params", None))
    times = check_times("times", times)  # robustness: shared input checks (validation.py)
    lr = check_number("lr", lr, minimum=0, exclusive=True)
    rtol, atol = check_number("rtol", rtol, minimum=0, exclusive=True), check_number("atol", atol, minimum=0)
    max_evaluations = check_count("max_evaluations", max_evaluations, 1)
    params = tuple(p.detach().to(torch.float64) for p in params)
    device = params[0].device
    X64 = None if X is None else X.to(torch.float64)
    Y64 = Y.to(torch.float64)

    evaluations = 0

    def velocity(_t, y):
        nonlocal evaluations
        evaluations += 1
        if evaluations > max_evaluations:
            raise RuntimeError(f"gradient flow needed more than max_evaluations={max_evaluations} gradient "
                               f"evaluations (a non-smooth activation sliding along its kink?); loosen rtol/atol, "
                               f"use whitened input, or use gradient_descent with a small lr")
        theta = unflatten(torch.from_numpy(y).to(device), params)
        with torch.no_grad():
            _, grads = model.loss_and_grad(theta, X64, Y64)
        return (-lr * flatten(grads)).cpu().numpy()

    y0 = flatten(params).cpu().numpy()
    t_end = float(times[-1])
    if t_end > 0:
        solution = solve_ivp(velocity, (0.0, t_end), y0, method=method, t_eval=times.numpy(), rtol=rtol, atol=atol)
        if not solution.success:
            raise RuntimeError(f"gradient flow integration failed: {solution.message}")
        states = solution.y.T
    else:
        states = np.repeat(y0[None], times.numel(), axis=0)
    record = _Recorder(times.numel(), observables or {})
    with torch.no_grad():
        for t, y in zip(times.tolist(), states):
            theta = unflatten(torch.from_numpy(np.ascontiguousarray(y)).to(device), params)
            loss = model.loss(theta, X64, Y64)
            _check_finite_loss(loss, f"time {t:g}", labels)
            record(t, loss, theta)
    return record.trajectory(theta, torch.float64)
