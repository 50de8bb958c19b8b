"""What a run records: the [`Snapshot`][symmetry.dynamics.Snapshot] an observable sees, the
[`Trajectory`][symmetry.dynamics.Trajectory] a run returns, and the recorder that fills it (shared by the loop,
[`run`][symmetry.dynamics.run], and the ODE integrator, [`integrate`][symmetry.dynamics.integrate])."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from ..errors import DivergenceError
from ..types import Params

Tensor = torch.Tensor



class Snapshot(tuple):
    """What an observable sees at a recorded step or time (the same object in [`run`][symmetry.dynamics.run] and
    [`integrate`][symmetry.dynamics.integrate]).

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


def check_finite_loss(loss: Tensor, step, labels: Sequence[str] | None) -> None:
    finite = torch.isfinite(loss)
    if bool(finite.all()):
        return
    value = float(loss[~finite].reshape(-1)[0])
    if loss.ndim == 0:  # one unbatched run has no configuration index to name
        raise DivergenceError(f"loss became {value} at {step} of the run (one unbatched configuration): "
                              f"lower the learning rate lr or the init scale")
    names = [labels[i[0]] if labels is not None else str(tuple(i)) for i in (~finite).nonzero().tolist()]
    raise DivergenceError(f"loss became {value} at {step} for configuration(s) {', '.join(names)}")


class Recorder:
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

