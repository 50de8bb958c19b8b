"""ConservationMonitor: a model's conserved quantities watched in any training loop (one process, DDP or FSDP),
for any [`symmetry.groups.Symmetry`][]: a module's (found by [`symmetry.module_symmetries`][]) or one of the
paper's groups on a tuple model ([`symmetry.groups.paper`][])."""
from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import math
import operator
import time
import warnings
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from .groups import Symmetry
from ._fused import FusedQuantities
from ._tools import without_frozen
from .modules import module_symmetries

Tensor = torch.Tensor

__all__ = ["ConservationMonitor", "ModelChangedWarning", "full_parameters", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel (or DataParallel) wrapper; the module itself otherwise."""
    inner = getattr(model, "module", None)
    if isinstance(inner, nn.Module) and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
        return inner
    return model


def full_parameters(model: nn.Module) -> dict[str, Tensor]:
    """Named parameters as whole tensors: a DDP replica as it is, an FSDP ``fully_shard`` DTensor shard gathered
    from every rank (``full_tensor``, a collective: every rank must call it; ``ConservationMonitor.record`` checks
    that they do before it gathers)."""
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


class ModelChangedWarning(UserWarning):
    """The model a monitor watches changed since its symmetries were read (train/eval mode, layers, frozen)."""


def _sharded(model: nn.Module) -> bool:
    """Whether the module's parameters are FSDP shards (DTensors), which a read or a record must gather."""
    return any(callable(getattr(p, "full_tensor", None)) for p in model.parameters())


@contextlib.contextmanager
def _unsharded(model: nn.Module) -> Iterator[None]:
    """Every FSDP2 (``fully_shard``) submodule's full parameters in place for the block (a collective on entry:
    every rank must enter), its shards back after."""
    from torch.distributed.fsdp import FSDPModule  # torch.distributed is absent from some builds of torch

    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in sharded:
        m.unshard()
    try:
        yield
    finally:
        for m in sharded:
            m.reshard()


class _Layout:
    """What a read depends on besides the weights: every submodule (the same objects), its train/eval mode, and
    which parameters train; ``changes()`` lists what differs now (a few attribute reads per submodule)."""

    def __init__(self, model: nn.Module):
        named = list(model.named_modules())
        self.names = [n or type(model).__name__ for n, _ in named]
        self.modules = [m for _, m in named]
        self.children = [list(m._modules.values()) for m in self.modules]
        self.modes = [m.training for m in self.modules]
        self.params = list(model.parameters())
        self.trains = [p.requires_grad for p in self.params]
        self.containers = [m._modules for m in self.modules if m._modules]  # the dicts a layer swap changes
        self.contents = [list(d.values()) for d in self.containers]
        self.leaves = [m._modules for m in self.modules if not m._modules]

    def same(self) -> bool:
        """Nothing changed (the check at every record: list comparisons, identity first, in C)."""
        return ([m.training for m in self.modules] == self.modes
                and [list(d.values()) for d in self.containers] == self.contents
                and not any(self.leaves)
                and [p.requires_grad for p in self.params] == self.trains)

    def changes(self) -> list[str]:
        out = []
        modes = [m.training for m in self.modules]
        if modes != self.modes:
            def mode(training: bool) -> str:
                return "train" if training else "eval"
            if modes[0] != self.modes[0]:
                out.append(f"it was read in {mode(self.modes[0])} mode and is now in {mode(modes[0])} mode")
            else:
                moved = [n for n, a, b in zip(self.names, self.modes, modes) if a != b]
                out.append(f"submodules {moved[:3]}{' …' if len(moved) > 3 else ''} switched between train and eval mode")
        swapped = [n for n, m, c in zip(self.names, self.modules, self.children)
                   if len(m._modules) != len(c) or not all(map(operator.is_, m._modules.values(), c))]
        if swapped:
            out.append(f"layers were replaced, added or removed in {swapped[:3]}{' …' if len(swapped) > 3 else ''}")
        if [p.requires_grad for p in self.params] != self.trains:
            out.append("parameters were frozen or unfrozen (requires_grad)")
        return out


_READ_OPTIONS = tuple(name for name, parameter in inspect.signature(module_symmetries).parameters.items()
                      if parameter.kind is inspect.Parameter.KEYWORD_ONLY)
_MONITORS = itertools.count()  # each process numbers its monitors in the order made: the same on every rank


class ConservationMonitor:
    """Watch a module's conserved quantities in any training loop: ``monitor.record(step)`` after ``optimizer.step()``.

    ``model``: the module (or its DDP/FSDP wrapper); ``example_input``: one batch, for reading the symmetries
    ([`symmetry.module_symmetries`][]; optional for an ``nn.Sequential`` starting with a ``Linear``), with
    ``loss`` and every keyword option ``module_symmetries`` takes (``leaves=``, ``check=``, ``seed=``, …) passed
    on to it; or pass ``symmetries``, any [`symmetry.groups.Symmetry`][] acting on the module's named
    parameters; for a tuple model, a paper group bound to it with ``model=None`` and ``record(step, params)``.
    Quantities are kept at every ``every``-th step, on the CPU. ``drift()``: the relative drift
    |Q(t) − Q(t₀)| / m(t₀) against the first record t₀, m the size of Q's terms (the symmetry's ``magnitudes``;
    without them |Q(t₀)|, a matrix's norm); where m(t₀) = 0 (an all-zero block) the drift is the absolute change,
    never NaN.

    Frozen parameters (``requires_grad=False``) never move: the blocks that act on one are no symmetry of the
    training that happens and are not watched (``note`` and ``symmetries.describe()`` say which), the rule of
    teleport and the Hessian too. The symmetries hold for the model as it was read (its layers, its train/eval
    mode: dropout and batch statistics differ between the two): when that changed, ``record`` warns once
    ([`ModelChangedWarning`][]).

    A record of a module's blocks is one fused pass over the parameters (``symmetry._fused``: the squares and
    Gram matrices of all blocks grouped, no per-block loop), equal to the blocks' own ``quantities`` to round-off.
    FSDP (``fully_shard``): the read gathers the full parameters (every rank builds the monitor), and every record
    gathers them again, a collective: every rank must call ``record``; one that waits ``timeout`` seconds for the
    others fails with one line before any collective is started.
    """

    def __init__(self, model: nn.Module | None = None, example_input=None, loss: str | None = None, every: int = 1,
                 *, symmetries: Symmetry | None = None, timeout: float = 60.0, **read_options):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or not math.isfinite(timeout):
            raise ValueError(f"timeout={timeout!r} must be a positive number of seconds")
        unknown = sorted(set(read_options) - set(_READ_OPTIONS))
        if unknown:
            raise TypeError(f"ConservationMonitor got unknown option(s) {unknown}; it passes these on to "
                            f"module_symmetries: {', '.join(_READ_OPTIONS)}")
        if symmetries is None:
            if model is None:
                raise ValueError("model=None needs symmetries: the monitor reads them from a module")
            inner = unwrap(model)
            with _unsharded(inner) if _sharded(inner) else contextlib.nullcontext():
                symmetries = module_symmetries(inner, example_input, loss, **read_options)
        elif not isinstance(symmetries, Symmetry):
            raise TypeError(f"symmetries must follow symmetry.groups.Symmetry (keys, quantities, describe, ...); got "
                            f"{type(symmetries).__name__}")
        elif read_options or example_input is not None or loss is not None:
            given = [n for n, v in (("example_input", example_input), ("loss", loss)) if v is not None]
            raise ValueError(f"{sorted(given + list(read_options))} are for reading the symmetries from the model; "
                             "symmetries= was given: pass them to module_symmetries instead")
        #: what the monitor left out of the symmetry and why (frozen parameters), or None
        self.note: str | None = None
        if model is not None:
            symmetries, self.note = without_frozen(symmetries, unwrap(model))
        self.model = model
        self.every = every
        self.timeout = float(timeout)
        self.symmetries = symmetries
        self.steps: list[int] = []
        self.rows: list[Tensor] = []  # one flat row of every quantity per recorded step (``layout`` slices it)
        self.layout: dict[str, tuple[int, tuple[int, ...]]] | None = None
        self.reference_magnitudes: dict[str, Tensor] | None = None
        self._calls = 0
        self.record_seconds = 0.0  # total time spent inside record (for the overhead benchmark)
        self._layout = _Layout(unwrap(model)) if model is not None else None
        self._warned = False
        self._id = next(_MONITORS)
        self._gathers = 0
        self._fused: FusedQuantities | None = None
        self._slots: list[tuple[dict, str]] = []
        self._bound: list[Tensor] = []
        self._pointers: list[int] = []
        if model is not None and not _sharded(unwrap(model)):
            self._fuse(unwrap(model))

    # --- the fused record -----------------------------------------------------------------------------------
    def _fuse(self, module: nn.Module) -> None:
        """Build the grouped computation of every block's quantity on the module's live parameters."""
        blocks = getattr(self.symmetries, "blocks", None)
        if not blocks or list(self.symmetries.keys()) != [b.name for b in blocks]:
            return
        needed = {leg.param for b in blocks for leg in getattr(b, "legs", ())}
        owners = {}
        position = {n: i for i, (n, _) in enumerate(module.named_parameters())}
        for name in sorted(needed, key=lambda n: (position.get(n, len(position)), n)):  # the model's order
            owner_name, _, attr = name.rpartition(".")
            try:
                owner = module.get_submodule(owner_name) if owner_name else module
            except AttributeError:
                return
            if not isinstance(owner._parameters.get(attr), Tensor):
                return
            owners[name] = (owner, attr)
        try:
            self.symmetries.quantities({n: getattr(o, a) for n, (o, a) in owners.items()})  # the plain path's checks
        except (KeyError, TypeError, ValueError):
            return  # the plain path raises these at each record, by name
        fused = FusedQuantities(blocks, {n: getattr(o, a).detach() for n, (o, a) in owners.items()})
        self._fused = fused
        self._slots = [(o._parameters, a) for o, a in owners.values()]  # where each parameter is held
        self._bound = [getattr(o, a) for o, a in owners.values()]
        self._pointers = [p.data_ptr() for p in self._bound]
        self.layout = {**fused.layout, **fused.plain_layout()}

    def _parameters(self, params):
        if params is not None:
            return params
        if self.model is None:
            raise ValueError("params is needed: this monitor has no model to read them from (model=None)")
        if _sharded(unwrap(self.model)):
            self._all_ranks_record()
        return full_parameters(self.model)

    def _all_ranks_record(self) -> None:
        """Before gathering a sharded model's parameters: wait (through the process group's store, which is no
        collective) until every rank has called record as often, and fail with one line if one does not."""
        import torch.distributed as dist  # absent from some builds of torch

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world, rank = dist.get_world_size(), dist.get_rank()
        store = dist.distributed_c10d._get_default_store()
        key = f"symmetry.ConservationMonitor/{self._id}/{self._gathers}"
        self._gathers += 1
        arrived = int(store.add(key, 1))
        deadline = time.monotonic() + self.timeout
        while arrived < world:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ConservationMonitor.record on rank {rank}: {world - arrived} of the {world} ranks "
                                   f"did not call it within timeout={self.timeout:g} s; the model is sharded (FSDP) and "
                                   "a record gathers its parameters, a collective: call record on every rank and "
                                   "write the results on one")
            time.sleep(0.001)
            arrived = int(store.add(key, 0))

    def _magnitudes(self, params) -> Mapping[str, Tensor]:
        magnitudes = getattr(self.symmetries, "magnitudes", None)
        if callable(magnitudes):
            return magnitudes(params)
        return {k: v.abs() if v.ndim < 2 else torch.linalg.matrix_norm(v)
                for k, v in self.symmetries.quantities(params).items()}

    def _check_model(self) -> None:
        if self._layout is None or self._warned or self._layout.same():
            return
        changes = self._layout.changes()
        if changes:
            self._warned = True
            warnings.warn(f"ConservationMonitor: the model changed since its symmetries were read: {'; '.join(changes)}. "
                          "Its blocks may no longer be symmetries of what trains now (and are no laws then): read "
                          "them again (a new ConservationMonitor) from the model as it trains", ModelChangedWarning,
                          stacklevel=3)

    def _quantities(self, params) -> Tensor:
        """Every quantity as one flat row (``layout``): fused on the module's live parameters, else per block."""
        if params is None and self._fused is not None and self._live():
            return self._fused()
        params = self._parameters(params)
        q = self.symmetries.quantities(params)
        if self.layout is None:
            self.layout, start = {}, 0
            for k, v in q.items():
                self.layout[k] = (start, tuple(v.shape))
                start += v.numel()
        layout = self.layout
        order = sorted(layout, key=lambda k: layout[k][0])  # the rows' layout (the fused path's, if it ran)
        return torch.cat([q[k].detach().reshape(-1) for k in order]) if q else torch.zeros(0)

    def _live(self) -> bool:
        """The fused computation still reads the module's parameters; rebuilt once when they were swapped."""
        assert self._fused is not None
        if all(map(operator.is_, [d.get(a) for d, a in self._slots], self._bound)) and \
                [p.data_ptr() for p in self._bound] == self._pointers:
            return True
        self._fused = None  # the layout (the symmetry's keys and shapes) stays
        assert self.model is not None
        self._fuse(unwrap(self.model))
        return self._fused is not None

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
        self._check_model()
        with torch.no_grad():
            row = self._quantities(params)
            replace = bool(self.steps) and self.steps[-1] == step
            if self.reference_magnitudes is None or (replace and len(self.steps) == 1):
                full = self._parameters(params)
                self.reference_magnitudes = {k: v.detach().cpu().clone() for k, v in self._magnitudes(full).items()}
            row = row.cpu() if row.device.type != "cpu" else row
            if replace:
                self.rows[-1] = row
            else:
                self.rows.append(row)
        if not replace:
            self.steps.append(step)
        self.record_seconds += time.perf_counter() - start
        return True

    def _slices(self, table: Tensor) -> dict[str, Tensor]:
        assert self.layout is not None
        lead = table.shape[:-1]
        layout = self.layout
        return {k: table[..., layout[k][0]:layout[k][0] + math.prod(layout[k][1])].reshape(*lead, *layout[k][1])
                for k in self.symmetries.keys()}

    @property
    def history(self) -> dict[str, list[Tensor]]:
        """Each quantity at each recorded step: name → list of tensors (views of the recorded rows)."""
        if not self.rows:
            return {k: [] for k in self.symmetries.keys()}
        per_row = [self._slices(row) for row in self.rows]
        return {k: [r[k] for r in per_row] for k in per_row[0]}

    def stacked(self) -> dict[str, Tensor]:
        """Each quantity over the recorded steps: (T, C) or (T, C, C)."""
        if not self.steps:
            raise RuntimeError("nothing recorded yet: call record(step) after optimizer.step()")
        return self._slices(torch.stack(self.rows))

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
        stacked = self.stacked() if self.steps else {k: torch.empty(0) for k in self.symmetries.keys()}
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
