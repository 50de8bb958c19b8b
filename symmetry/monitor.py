"""ConservationMonitor: a model's conserved quantities watched in any training loop (one process, DDP or FSDP),
for any [`symmetry.groups.Symmetry`][]: a module's (found by [`symmetry.module_symmetries`][]) or one of the
paper's groups on a tuple model ([`symmetry.groups.paper`][])."""
from __future__ import annotations

import json
import operator
import time
from typing import Any, Mapping

import torch
from torch import nn

from .groups import Symmetry
from ._tools import without_frozen
from .modules import module_symmetries

Tensor = torch.Tensor

__all__ = ["ConservationMonitor", "full_parameters", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel (or DataParallel) wrapper; the module itself otherwise."""
    inner = getattr(model, "module", None)
    if isinstance(inner, nn.Module) and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
        return inner
    return model


def full_parameters(model: nn.Module) -> dict[str, Tensor]:
    """Named parameters as whole tensors: a DDP replica as it is, an FSDP ``fully_shard`` DTensor shard gathered
    from every rank (``full_tensor``, a collective: every rank must call it)."""
    out = {}
    for name, p in unwrap(model).named_parameters():
        t = p.detach()
        full = getattr(t, "full_tensor", None)
        out[name] = full() if callable(full) else t
    return out


def _step_number(step) -> int:
    """A step as a Python int: any integer (numpy's, a one-element integer tensor) ≥ 0; not a bool or a float."""
    raw: Any = step.item() if isinstance(step, Tensor) and step.numel() == 1 else step
    try:
        value = None if isinstance(raw, bool) else operator.index(raw)
    except TypeError:
        value = None
    if value is None or value < 0:
        raise ValueError(f"step={step!r} must be a non-negative integer (0, 1, 2, …)")
    return value


class ConservationMonitor:
    """Watch a module's conserved quantities in any training loop: ``monitor.record(step)`` after ``optimizer.step()``.

    ``model``: the module (or its DDP/FSDP wrapper); ``example_input``: one batch, for reading the symmetries
    ([`symmetry.module_symmetries`][]; optional for an ``nn.Sequential`` starting with a ``Linear``), or pass
    ``symmetries``, any [`symmetry.groups.Symmetry`][] acting on the module's named parameters; for a tuple
    model, a paper group bound to it with ``model=None`` and ``record(step, params)``. Quantities are kept at
    every ``every``-th step, on the CPU. ``drift()``: the relative drift |Q(t) − Q(t₀)| / m(t₀) against the first
    record t₀, m the size of Q's terms (the symmetry's ``magnitudes``; without them |Q(t₀)|, a matrix's norm);
    where m(t₀) = 0 (an all-zero block) the drift is the absolute change, never NaN.

    Frozen parameters (``requires_grad=False``) never move: the blocks that act on one are no symmetry of the
    training that happens and are not watched (``note`` and ``symmetries.describe()`` say which), the rule of
    teleport and the Hessian too.
    """

    def __init__(self, model: nn.Module | None = None, example_input=None, loss: str | None = None, every: int = 1,
                 *, symmetries: Symmetry | None = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer")
        if symmetries is None:
            if model is None:
                raise ValueError("model=None needs symmetries: the monitor reads them from a module")
            symmetries = module_symmetries(unwrap(model), example_input, loss)
        elif not isinstance(symmetries, Symmetry):
            raise TypeError(f"symmetries must follow symmetry.groups.Symmetry (keys, quantities, describe, ...); got "
                            f"{type(symmetries).__name__}")
        #: what the monitor left out of the symmetry and why (frozen parameters), or None
        self.note: str | None = None
        if model is not None:
            symmetries, self.note = without_frozen(symmetries, unwrap(model))
        self.model = model
        self.every = every
        self.symmetries = symmetries
        self.steps: list[int] = []
        self.history: dict[str, list[Tensor]] = {k: [] for k in self.symmetries.keys()}
        self.reference_magnitudes: dict[str, Tensor] | None = None
        self._calls = 0
        self.record_seconds = 0.0  # total time spent inside record (for the overhead benchmark)

    def _parameters(self, params):
        if params is not None:
            return params
        if self.model is None:
            raise ValueError("params is needed: this monitor has no model to read them from (model=None)")
        return full_parameters(self.model)

    def _magnitudes(self, params) -> Mapping[str, Tensor]:
        magnitudes = getattr(self.symmetries, "magnitudes", None)
        if callable(magnitudes):
            return magnitudes(params)
        return {k: v.abs() if v.ndim < 2 else torch.linalg.matrix_norm(v)
                for k, v in self.symmetries.quantities(params).items()}

    def record(self, step: int | None = None, params=None) -> bool:
        """Record the quantities now (at ``step``, default: a running count); returns whether it recorded.

        ``params``: the parameters to read (a tuple model's tuple), instead of the model's own. Steps must
        increase; recording a step already recorded replaces that row (the weights changed)."""
        start = time.perf_counter()
        step = self._calls if step is None else _step_number(step)
        if self.steps and step < self.steps[-1]:
            raise ValueError(f"step={step} comes before the last recorded step {self.steps[-1]}: steps must increase")
        self._calls = step + 1
        if step % self.every:
            return False
        with torch.no_grad():
            params = self._parameters(params)
            q = self.symmetries.quantities(params)
            replace = bool(self.steps) and self.steps[-1] == step
            if self.reference_magnitudes is None or (replace and len(self.steps) == 1):
                self.reference_magnitudes = {k: v.detach().cpu().clone()
                                             for k, v in self._magnitudes(params).items()}
            for k, v in q.items():
                if replace:
                    self.history[k][-1] = v.detach().cpu().clone()
                else:
                    self.history[k].append(v.detach().cpu().clone())
        if not replace:
            self.steps.append(step)
        self.record_seconds += time.perf_counter() - start
        return True

    def stacked(self) -> dict[str, Tensor]:
        """Each quantity over the recorded steps: (T, C) or (T, C, C)."""
        if not self.steps:
            raise RuntimeError("nothing recorded yet: call record(step) after optimizer.step()")
        return {k: torch.stack(v) for k, v in self.history.items()}

    def drift(self, reduce: str | None = "max") -> dict[str, Tensor]:
        """Relative drift per quantity at each recorded step: (T,) reduced over its entries by ``reduce``
        ('max' or 'mean'), or per entry with ``reduce=None``; GL blocks: (T,) Frobenius norm of the change."""
        if reduce not in ("max", "mean", None):
            raise ValueError(f"reduce={reduce!r} is not allowed; choose one of 'max', 'mean', None")
        out = {}
        assert self.reference_magnitudes is not None or not self.steps
        for k, Q in self.stacked().items():
            assert self.reference_magnitudes is not None
            scale = self.reference_magnitudes[k]
            change = Q - Q[0]
            if Q.ndim == 3:
                size = torch.linalg.matrix_norm(change)
                out[k] = size / scale if float(scale) > 0 else size
                continue
            rel = change.abs() / torch.where(scale > 0, scale, torch.ones_like(scale))
            out[k] = rel if reduce is None else (rel.amax(1) if reduce == "max" else rel.mean(1))
        return out

    def to_json(self) -> dict:
        """The record as plain lists: steps, quantities, reference magnitudes, max and mean drift, groups."""
        stacked = self.stacked() if self.steps else {k: torch.empty(0) for k in self.history}
        payload = {
            "groups": self.symmetries.describe(), "every": self.every, "steps": list(self.steps),
            "quantities": {k: v.tolist() for k, v in stacked.items()},
            "reference_magnitudes": {k: v.tolist() for k, v in (self.reference_magnitudes or {}).items()},
            "max_relative_drift": {k: v.tolist() for k, v in self.drift("max").items()} if self.steps else {},
            "mean_relative_drift": {k: v.tolist() for k, v in self.drift("mean").items()} if self.steps else {},
            "record_seconds_total": self.record_seconds,
        }
        json.dumps(payload)  # fail here, not in the caller's writer, if anything is not JSON
        return payload
