"""The one loop: a stepper on a model for a number of steps, observables recorded every k steps."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..errors import NotSupportedError
from ..models import TwoLayerNet
from ..types import Params
from ..validation import check_choice, check_count, check_data, check_params
from .fused import TwoLayerGD
from .module_model import ModuleModel, gradient_fn
from .records import Integrand, Observable, Recorder, Snapshot, Trajectory, check_finite_loss
from .state import State, Stepper, batch_shape, like_params
from .steppers import GD

Tensor = torch.Tensor


def run(model, params: Params, X: Tensor | None, Y: Tensor | None, stepper: Stepper, steps: int, *,
        velocity: Params | None = None, record_every: int = 1, observables: Mapping[str, Observable] | None = None,
        integrands: Mapping[str, Integrand] | None = None, batches: Callable[[int], tuple[Tensor, Tensor]] | None = None,
        labels: Sequence[str] | None = None, clock: str = "steps", progress: bool = False,
        description: str | None = None) -> Trajectory:
    """Run ``stepper`` on ``model`` for ``steps`` steps from ``params`` (the inputs are not modified).

    ``model``: a tuple model of [`symmetry.models`][] or an ``nn.Module`` (wrap it in
    [`ModuleModel`][symmetry.dynamics.ModuleModel] to choose the loss; a bare module gets the mean squared error). Loss and
    ``observables`` (name → function of a [`Snapshot`][symmetry.dynamics.Snapshot]) are recorded at steps 0, k, 2k, … and
    the last; ``times`` are step numbers (``clock="steps"``) or continuous times step·dt
    (``clock="time"``). ``integrands`` f(t, θ, θ̇) are summed along the steps by the trapezoidal rule
    (the discrete counterpart of [`integrate`][symmetry.dynamics.integrate]'s path integrals). ``batches(k) -> (X_k, Y_k)``
    gives step k its mini-batch (recorded losses then use the batch of that step, and
    ``step_loss`` holds every step's). A NaN or infinite loss raises [`DivergenceError`][symmetry.errors.DivergenceError]
    naming the configuration (by ``labels`` if given).
    """
    if isinstance(model, torch.nn.Module):
        model = ModuleModel(model)
    params = check_params("params", params, getattr(model, "n_params", None))
    steps, record_every = check_count("steps", steps), check_count("record_every", record_every, 1)
    check_choice("clock", clock, ("steps", "time"))
    if batches is None:
        check_data(X, Y)
        X, Y = like_params("X", X, params), like_params("Y", Y, params)
    batch = batch_shape(params)
    if labels is not None and (len(batch) != 1 or len(labels) != batch[0]):
        raise ValueError(f"labels must name each of the {tuple(batch)} configurations")
    if batches is not None and not getattr(stepper, "uses_grad", True):
        raise NotSupportedError(f"{stepper!r} steps on its own data and cannot take mini-batches; use GD or SGD")
    integrands = dict(integrands or {})
    n_records = steps // record_every + 1 + (steps % record_every != 0)
    record = Recorder(n_records, observables or {})
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
        check_finite_loss(loss, where, labels)
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
    """Full-batch GD θ_{t+1} = θ_t − η ∇L(θ_t) (App. C.1), every configuration at once: a thin name for
    [`run`][symmetry.dynamics.run] with [`TwoLayerGD`][symmetry.dynamics.TwoLayerGD] on a two-layer net,
    [`GD`][symmetry.dynamics.GD] otherwise (the same step; the compiled one is
    [`compiled_gradient_descent`][symmetry.dynamics.compiled.compiled_gradient_descent]). ``lr`` is a number
    or a tensor of the batch shape; ``times`` are step numbers."""
    stepper = TwoLayerGD(model, X, Y, lr) if isinstance(model, TwoLayerNet) else GD(lr)
    return run(model, params, X, Y, stepper, steps, record_every=record_every, observables=observables,
               labels=labels, progress=progress, description=description)
