"""Teleporting inside training: [`TeleportingStepper`][] wraps a stepper of the engine's protocol and
teleports at the steps of a [`TeleportSchedule`][]; [`symmetry.dynamics.run`][] is the loop that runs it."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from ..types import Params
from ..validation import check_choice
from .ascent import teleport_to
from .random_teleport import teleport_random
from .report import TeleportReport

__all__ = ["TeleportSchedule", "TeleportingStepper"]


@dataclasses.dataclass
class TeleportSchedule:
    """Teleport before the steps in ``at`` and, if ``every`` is set, before every ``every``-th step
    (0, every, 2·every, …) up to ``until``."""

    at: tuple[int, ...] = (0,)
    every: int | None = None
    until: int | None = None

    def __post_init__(self):
        if self.every is not None and not (isinstance(self.every, int) and self.every > 0):
            raise ValueError(f"every={self.every!r} must be a positive integer or None")
        self.at = tuple(int(a) for a in self.at)

    def due(self, step: int) -> bool:
        if step in self.at:
            return True
        if self.every is None or (self.until is not None and step > self.until):
            return False
        return step % self.every == 0


class TeleportingStepper:
    """A stepper of the engine's protocol ([`symmetry.dynamics.Stepper`][]: ``init_state(params, velocity)
    -> State``, ``step(state, grad) -> State``) that teleports before the scheduled steps; run it with
    [`symmetry.dynamics.run`][], the one training loop.

    Before ``stepper.step`` at a scheduled ``state.step``, [`teleport_to`][] moves ``state.params`` on
    ``data`` ((X, Y), or a function step ↦ (X, Y), e.g. a teleport batch drawn for that step) and hands
    the inner stepper ``dataclasses.replace(state, params=new)``: its memory (momentum, Adam's moments,
    AdaGrad's sum) is kept, not transported (``state="keep"``, as NeurIPS 2022 keeps AdaGrad's
    accumulator); ``state="reset"`` restarts it with ``init_state(new)`` (as the ICLR 2024 code rebuilds
    its optimiser). ``random_norms``: the random-element control instead: the i-th teleport applies
    [`teleport_random`][] with ‖ξ‖ = ``random_norms[i]`` (seed ``seed + i``). The controls of a teleport:
    ``steps=0`` (null teleport; with ``state="reset"``, the optimiser reset alone) and ``random_norms``.
    ``events`` lists {"step", "report"}; ``teleport_kwargs`` go to [`teleport_to`][].
    """

    def __init__(self, stepper, model, data, schedule: TeleportSchedule, *, state: str = "keep",
                 random_norms: Sequence[float] | None = None, seed: int = 0, **teleport_kwargs):
        if not isinstance(schedule, TeleportSchedule):
            raise TypeError(f"schedule must be a TeleportSchedule, got {type(schedule).__name__}")
        self.stepper, self.model, self.data, self.schedule = stepper, model, data, schedule
        self.state = check_choice("state", state, ("keep", "reset"))
        self.random_norms = None if random_norms is None else [float(x) for x in random_norms]
        self.seed, self.kwargs = seed, teleport_kwargs
        self.name = f"{getattr(stepper, 'name', 'stepper')}+teleport"
        self.dt = getattr(stepper, "dt", 1.0)
        self.events: list[dict] = []

    def __repr__(self) -> str:
        return f"TeleportingStepper({self.stepper!r}, {self.schedule}, state={self.state!r})"

    def init_state(self, params: Params, velocity: Params | None = None):
        return self.stepper.init_state(params, velocity)

    def teleport(self, params: Params, step: int) -> tuple[Params, TeleportReport]:
        data = self.data(step) if callable(self.data) else self.data
        if self.random_norms is None:
            return teleport_to(self.model, params, data, seed=self.seed, **self.kwargs)
        i = len(self.events)
        if i >= len(self.random_norms):
            raise ValueError(f"random_norms has {len(self.random_norms)} sizes, but teleport {i + 1} is due at step {step}")
        keep = ("group", "objective", "loss_fn", "loss_rtol", "loss_atol", "approximate", "holdout", "max_condition")
        return teleport_random(self.model, params, data, xi_norm=self.random_norms[i], seed=self.seed + i,
                               **{k: v for k, v in self.kwargs.items() if k in keep})

    def step(self, state, grad):
        if self.schedule.due(state.step):
            new, report = self.teleport(tuple(state.params), state.step)
            if self.state == "reset":
                state = dataclasses.replace(self.stepper.init_state(new), time=state.time, step=state.step)
            else:
                state = dataclasses.replace(state, params=new)
            self.events.append({"step": state.step, "report": report})
        return self.stepper.step(state, grad)
