"""A user's ``nn.Module``: the symmetries found in its computation graph, checked, and their conserved quantities.

[`module_symmetries`][] records the model with torch.export ([`symmetry.graph`][]), reads the blocks of
[`symmetry.groups.blocks`][] off the graph and checks each one on the example input before it returns them: a
random element must keep the output (the log-softmax of the output for the loss-level translation of a
``loss="cross_entropy"`` head) to a relative 1e-9 in float64 (1e-4 in float32). The result,
[`ModuleSymmetries`][], is the product of the blocks and follows the one protocol
([`symmetry.groups.Symmetry`][]) that ``teleport``, ``ConservationMonitor`` and the law count take.

Normalization's ε. BatchNorm's, LayerNorm's and RMSNorm's scale symmetries are exact only at ε = 0, which torch
refuses in training. They are checked with every ε of the model set to 1e-300 (exact to round-off wherever a
normalized variance is above ~1e-290), then measured at the model's own ε: ``describe()`` marks them approximate
and prints that measured relative change of the output (first order in ε/σ² for a variance σ²: rescaling a
channel by g moves x̂ = x/√(σ² + ε) by about ε|1 − g⁻²|/(2σ²)).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from .activations import ActivationLike, get_activation
from .graph import Reader, SymmetryCheckError, Walker, trace, unwrap
from .graph.assemble import _blocks_of, _merge_pairs, _translations_of
from .graph.verify import _TINY_EPS, CHECK_TOLERANCE, _verify, _with_buffers  # noqa: F401  (_TINY_EPS: re-exported)
from .groups import NotSupportedError
from .groups.blocks import Block, Leg
from .groups.product import ModuleSymmetries

Tensor = torch.Tensor

__all__ = ["Elementwise", "ModuleSymmetries", "module_symmetries", "NotSupportedError", "SymmetryCheckError",
           "CHECK_TOLERANCE"]

LOSSES = (None, "mse", "cross_entropy")


class Elementwise(nn.Module):
    """An activation of the table ([`symmetry.activations`][]) as a layer, e.g. ``Elementwise("repu", power=2)``."""

    def __init__(self, activation: ActivationLike, **options):
        super().__init__()
        self.activation = get_activation(activation, **options)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation.sigma(x)

    def extra_repr(self) -> str:
        return self.activation.name


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, p in model.named_parameters():
        if not p.is_floating_point():
            raise TypeError(f"parameter {name!r} has dtype {p.dtype}; symmetries act on floating-point weights")
        if p.numel() == 0:
            raise ValueError(f"parameter {name!r} has no entries (shape {tuple(p.shape)}): a zero-width layer")


def _default_input(model: nn.Module, dtype, device) -> tuple[Tensor, ...]:
    first = next((m for m in model.modules() if not isinstance(m, (nn.Sequential,)) and
                  any(True for _ in m.parameters(recurse=False))), None)
    if isinstance(model, nn.Sequential) and isinstance(first, nn.Linear):
        x = torch.randn(8, first.in_features, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return (x.to(dtype=dtype, device=device),)
    raise TypeError(f"example_input is needed for a {type(model).__name__} (what the model computes depends on the "
                    "input's shape): pass one batch, e.g. module_symmetries(model, x[:8])")


def module_symmetries(model: nn.Module, example_input=None, loss: str | None = None, *,
                      leaves: Sequence[str] = (), check: bool = True, seed: int = 0,
                      approximate: bool = False) -> ModuleSymmetries:
    """The symmetries of ``model`` read from its computation graph (``torch.export``), each checked on
    ``example_input``.

    ``example_input``: one batch (a tensor or a tuple of the forward's arguments); optional for an
    ``nn.Sequential`` that starts with a ``Linear`` (then drawn on the model's device). ``loss``: None or "mse"
    (symmetries of the output), or "cross_entropy" over the output's last axis (as in
    ``F.cross_entropy(out.reshape(-1, out.shape[-1]), y)``; adds the softmax head's translation, a symmetry of the
    loss). ``leaves``: submodule names kept opaque (for code torch.export cannot record); their parameters are
    reported as not covered. ``approximate``: keep the blocks that are exact only at normalization's ε = 0 even
    where, at the model's own ε, a random element moves the output by more than the check's tolerance (by default
    they are reported in ``coverage`` with that error and left out). A wrapped model (``torch.compile``,
    ``DataParallel``, DDP) is read through the module it runs, with the wrapper's parameter names. Tied weights
    (one tensor read at several places) are covered only by blocks that act on it identically at every use; the
    others are reported. Dropout is read in the mode the model is in and checked with one random stream for both
    passes. Blocks that fail the check raise [`SymmetryCheckError`][] naming the block; the check's relative
    tolerance follows the dtype (``CHECK_TOLERANCE``, said in ``describe()``).
    """
    _check_model(model)
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not allowed; choose one of {', '.join(map(repr, LOSSES))}")
    inner, prefix = unwrap(model)
    if prefix:
        return _prefixed(module_symmetries(inner, example_input, loss, leaves=leaves, check=check, seed=seed,
                                           approximate=approximate), prefix, type(model).__name__)
    params = dict(model.named_parameters())
    dtype = next(iter(params.values())).dtype if params else torch.get_default_dtype()
    device = next(iter(params.values())).device if params else torch.device("cpu")
    if device.type == "meta":
        raise NotSupportedError(f"{type(model).__name__} is on the meta device: it has no weights to run the graph "
                                "on and check the symmetries with; materialise it first (model.to_empty(device='cpu') "
                                "and initialise, or load its weights)")
    if example_input is None:
        example_input = _default_input(model, dtype, device)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != dtype:
            raise TypeError(f"example_input{'[%d]' % i if len(inputs) > 1 else ''} has dtype {x.dtype} but the "
                            f"model's parameters are {dtype}: convert one of them")
        if isinstance(x, Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"example_input{'[%d]' % i if len(inputs) > 1 else ''} contains NaN or infinity: the "
                             "symmetries are checked on it; pass a batch of finite inputs")
        if isinstance(x, Tensor) and x.ndim and x.shape[0] == 0:
            raise ValueError(f"example_input{'[%d]' % i if len(inputs) > 1 else ''} is an empty batch (shape "
                             f"{tuple(x.shape)}): the symmetries are checked on it; pass at least one sample")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gm = trace(model, inputs, leaves)
    except RuntimeError as error:
        if isinstance(error, (NotSupportedError, SymmetryCheckError)):
            raise
        shapes = [tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__ for x in inputs]
        raise ValueError(f"{type(model).__name__} cannot run on example_input {shapes[0] if len(shapes) == 1 else shapes}: "
                         f"{str(error).splitlines()[0]}; pass one batch the model takes") from None
    buffers = {n: b.clone() for n, b in gm.named_buffers()}
    walker = Reader(gm, loss)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            _with_buffers(gm, buffers, lambda: walker.run(*inputs))
        except RuntimeError as error:  # torch's own (shapes, dtypes): its first line
            if isinstance(error, SymmetryCheckError):
                raise
            shapes = [tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__ for x in inputs]
            raise ValueError(f"{type(model).__name__} cannot run on example_input {shapes[0] if len(shapes) == 1 else shapes}: "
                             f"{str(error).splitlines()[0]}; pass one batch the model takes") from None
    merged = _merge_pairs(walker)
    blocks: list[Block] = []
    for p in walker.producers:
        if p.pid in merged:
            continue
        if p.broken is None and (p.outgoing or p.invariant):
            blocks.extend(_blocks_of(p))
        blocks.extend(_translations_of(p))
    blocks, dropped = _untie(blocks, walker)
    coverage = _coverage(params, blocks, walker, merged)
    for name, why in dropped.items():
        if not [c for c in coverage.get(name, []) if not c.startswith("none")]:
            coverage[name] = [f"none — {why}"]
    sym = ModuleSymmetries(tuple(blocks), tuple(params), dtype, device, type(model).__name__, coverage,
                           {n: tuple(p.shape) for n, p in params.items()}, training=model.training)
    if check:
        _verify(sym, model, gm, inputs, loss, walker, seed, approximate)
    return sym


def _untie(blocks: list[Block], walker: Walker) -> tuple[list[Block], dict[str, str]]:
    """Tied weights: a tensor whose entries are read by more than one operation keeps only the blocks that act on
    it identically at every use; a block that acts on it at one use only (the others see it moved) is dropped and
    the reason reported per parameter."""
    tied: dict[str, list[str]] = {}
    for param, uses in walker.uses.items():
        if len(uses) < 2:
            continue
        counts = torch.bincount(torch.cat([u for u, _ in uses]))
        if bool((counts > 1).any()):
            tied[param] = list(dict.fromkeys(where for _, where in uses))
    if not tied:
        return blocks, {}
    kept, dropped = [], {}
    for b in blocks:
        shared = sorted(b.parameters() & set(tied))
        if not shared:
            kept.append(b)
            continue
        for name in shared:
            dropped[name] = (f"tied: read at {len(tied[name])} places ({'; '.join(tied[name])}); no block acts on it "
                             f"identically at every use (block {b.name!r} moves it at one use only)")
        for name in b.parameters() - set(shared):
            dropped.setdefault(name, f"its block {b.name!r} also acts on the tied weight {shared[0]!r}")
    return kept, dropped


def _prefixed(sym: ModuleSymmetries, prefix: str, wrapper: str) -> ModuleSymmetries:
    """The symmetries of a wrapped model's inner module, named as the wrapper names its parameters."""
    blocks = []
    for b in sym.blocks:
        legs = tuple(Leg(prefix + leg.param, leg.index, leg.exponent, leg.units) for leg in b.legs)
        blocks.append(dataclasses.replace(b, legs=legs))
    return ModuleSymmetries(tuple(blocks), tuple(prefix + n for n in sym.parameter_names), sym.dtype, sym.device,
                            f"{wrapper}({sym.model_name})", {prefix + n: c for n, c in sym.coverage.items()},
                            {prefix + n: s for n, s in sym.shapes.items()}, sym.tolerance, sym.training, sym.unchecked)


def _coverage(params, blocks, walker: Walker, merged: set[int]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for n in params}
    for b in blocks:
        for name in b.parameters():
            out[name].append(b.name)
    for name, names in out.items():
        if names:
            continue
        reasons = []
        for p in walker.producers:
            if any(leg.param == name for leg in p.incoming + p.outgoing) and p.broken:
                reasons.append(f"{p.name}: its output {p.broken}")
        reasons += walker.notes.get(name, [])
        out[name] = [f"none — {'; '.join(dict.fromkeys(reasons)) or 'no operation the walker reads acts on it linearly'}"]
    return out
