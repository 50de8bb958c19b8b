"""What one teleport did: [`TeleportReport`][symmetry.teleport.TeleportReport], returned by
[`teleport_to`][symmetry.teleport.teleport_to] and [`teleport_random`][symmetry.teleport.teleport_random]."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["TeleportReport"]


@dataclass
class TeleportReport:
    """What one teleport did. ``relative_loss_change`` = |L(g·θ) − L(θ)| / |L(θ)| on the teleport batch;
    ``holdout_*``: the same on held-out data (``holdout=`` of [`teleport_to`][]; None without it).
    ``objective_before`` is J at the given parameters, before any group element acts."""

    group: str
    objective: str
    maximize: bool
    objective_before: float
    objective_after: float
    loss_before: float
    loss_after: float
    relative_loss_change: float
    condition_number: float
    xi_norm: float
    ascent_steps: int
    best_step: int
    seconds: float
    history: list[float] = field(default_factory=list)  # objective at each ascent iterate
    stopped: str | None = None  # why the ascent stopped early, if it did
    halvings: int = 0  # backtracking halvings of the step
    approximate: bool = False  # a data-dependent action on a batch larger than a hidden width
    holdout_loss_before: float | None = None
    holdout_loss_after: float | None = None
    holdout_relative_loss_change: float | None = None
    kind: str = "ascent"  # "ascent" (teleport_to) or "random" (teleport_random)
    notes: list[str] = field(default_factory=list)  # what the teleport left out and why (translations, frozen)

    @property
    def improved(self) -> bool:
        d = self.objective_after - self.objective_before
        return d > 0 if self.maximize else d < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "improved": self.improved}

