"""The numerical check before anything is returned: each block of a [`ModuleSymmetries`][] must keep the
model's output on the example input under a random element (the log-softmax for a cross-entropy head's
translation), all blocks of one setting in one forward pass, bisected only when that pass fails. Blocks exact only
at normalization's ε = 0 are checked at ε = 1e-300 and measured at the model's own ε."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..groups.blocks import Block, RotationBlock, TranslationBlock
from ..groups.product import ModuleSymmetries
from . import SymmetryCheckError
from .export import _opened
from .walk import Walker

Tensor = torch.Tensor

__all__ = ["CHECK_TOLERANCE", "verify"]

#: relative change of the output a symmetry may cause on the example input, by dtype
#: (half precision rounds the action itself: a relative 1e-3 in float16, 8e-3 in bfloat16 per operation)
CHECK_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}
_TINY_EPS = 1e-300


def _with_buffers(gm, buffers, fn):
    """Run fn with the model's buffers replaced by copies (BatchNorm in training mode updates them)."""
    saved = {n: b for n, b in gm.named_buffers()}
    try:
        for n, b in buffers.items():
            _set(gm, n, b.clone())
        return fn()
    finally:
        for n, b in saved.items():
            _set(gm, n, b)


def _set(module: nn.Module, name: str, value: Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    sub._buffers[attr] = value


def _outputs(result) -> Tensor:
    if isinstance(result, Tensor):
        return result.reshape(-1)
    if isinstance(result, (tuple, list)):
        parts = [_outputs(r) for r in result if r is not None]
        return torch.cat([p for p in parts if p.numel()]) if parts else torch.zeros(0)
    if isinstance(result, dict):
        return _outputs(list(result.values()))
    return torch.zeros(0)


def _verify(sym: ModuleSymmetries, model, gm, inputs, loss, walker: Walker, seed: int,
            keep_approximate: bool = False) -> None:
    """Each block: a random element keeps the output (log-softmax for the translations of a cross-entropy head).
    Every pass runs with the same random stream (dropout's masks agree). Approximate blocks whose error at the
    model's ε exceeds the tolerance are removed from ``sym`` (reported in its coverage) unless kept."""
    from torch.func import functional_call

    params = {n: p.detach() for n, p in gm.named_parameters()}
    buffers = {n: b.detach() for n, b in gm.named_buffers()}
    tol = CHECK_TOLERANCE.get(sym.dtype, 1e-4)

    def run(p, on_loss: bool) -> Tensor:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = functional_call(gm, {**p, **{n: b.clone() for n, b in buffers.items()}}, inputs)
        if on_loss:
            out = torch.log_softmax(out, dim=-1)
        return _outputs(out)

    with torch.no_grad(), torch.random.fork_rng(devices=[]), _opened():  # the code path that was recorded
        torch.manual_seed(seed)
        model_buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        reference = _outputs(functional_call(model, {**dict(model.named_parameters()), **model_buffers}, inputs))
    if not bool(reference.ne(0).any()):  # every action keeps a zero output: nothing can be checked, said so
        sym.unchecked = (f"{type(model).__name__}'s output is identically 0 on example_input (a head initialised "
                         "to zero?): the blocks are read from the graph, unchecked; initialise the last layer to "
                         "have them checked")
        return
    traced = run(params, False)
    error = _relative(traced - reference, reference)
    if not error <= tol:
        raise SymmetryCheckError(f"the recorded graph does not reproduce {type(model).__name__}'s output (relative "
                                 f"difference {error:.3g}): the model's code does something torch.export does not "
                                 "record (Python-side state, a random stream of its own); please report this model")
    gen = torch.Generator().manual_seed(seed + 1)
    elements = {b.name: b.exp(b.random_algebra(0.5, gen, sym.dtype, torch.device("cpu"), params)).to(sym.device)
                for b in sym.blocks}
    switch = _EpsilonSwitch(gm, walker.eps_sites)
    try:
        _checks(sym, model, tol, loss, params, run, traced, elements, switch, keep_approximate)
    finally:
        switch.set(False)  # the recorded ε back in the graph
    sym.tolerance = tol


def _checks(sym: ModuleSymmetries, model, tol: float, loss, params, run, traced: Tensor, elements,
            switch: _EpsilonSwitch, keep_approximate: bool) -> None:
    """The passes of the check, those at ε = 1e-300 first and then those at the model's ε (the graph is
    recompiled once each way)."""
    bases: dict[tuple[bool, bool], Tensor] = {(False, False): traced}  # the recorded graph's own output

    def base(tiny: bool, on_loss: bool) -> Tensor:
        if (tiny, on_loss) not in bases:
            switch.set(tiny)
            bases[tiny, on_loss] = run(params, on_loss)
        return bases[tiny, on_loss]

    def change(blocks: list[Block], tiny: bool, on_loss: bool) -> float:
        moved = dict(params)
        for b in blocks:
            b.act(moved, elements[b.name])
        switch.set(tiny)
        acted = run(moved, on_loss)
        reference = base(tiny, on_loss)
        return _relative(acted - reference, reference)

    def on_loss(b: Block) -> bool:
        return isinstance(b, TranslationBlock) and loss == "cross_entropy" and "cross-entropy" in b.where

    # RoPE rotation candidates: kept where a random rotation keeps the output, dropped otherwise (a missed
    # symmetry, never a wrong one)
    candidates: list[Block] = [b for b in sym.blocks if isinstance(b, RotationBlock)]
    if candidates and change(candidates, True, False) > tol:
        wrong = {b.name for b in candidates if change([b], True, False) > tol}
        sym.blocks = tuple(b for b in sym.blocks if b.name not in wrong)

    # All the blocks of one setting at once: the product of random elements keeps the output iff (almost surely)
    # each does. Only when the product fails is the group bisected, to name the block that fails.
    def failing(group: list[Block], tiny: bool, loss_level: bool) -> Block | None:
        if change(group, tiny, loss_level) <= tol:
            return None
        if len(group) == 1:
            return group[0]
        half = len(group) // 2
        return failing(group[:half], tiny, loss_level) or failing(group[half:], tiny, loss_level) or group[0]

    for tiny in (True, False):
        for loss_level in (False, True):
            group = [b for b in sym.blocks if bool(b.approximate) == tiny and on_loss(b) == loss_level]
            if not group:
                continue
            bad = failing(group, tiny, loss_level)
            if bad is None:
                continue
            moved_by = change([bad], tiny, loss_level)
            if not moved_by <= tol:
                raise SymmetryCheckError(f"block {bad.name!r} ({bad.kind}, {bad.where}) changes the output of "
                                         f"{type(model).__name__} by a relative {moved_by:.3g} > {tol:g} on the "
                                         "example input: the graph was misread; please report this model")
            raise SymmetryCheckError(f"the blocks {[b.name for b in group]} each keep the output of "
                                     f"{type(model).__name__} but not together: the graph was misread; please "
                                     "report this model")

    # Approximate blocks at the model's ε: all of one setting in one pass; a group that moves the output by more
    # than the tolerance is halved (each half measured), and where both halves fail each block is measured alone:
    # one pass when all pass, about 2·log₂(n) for one failing block, n + 3 at most
    measured: dict[str, tuple[float, int]] = {}  # block → (relative change, blocks measured together)

    def measure(group: list[Block], loss_level: bool, together: float) -> None:
        if together <= tol or len(group) == 1:
            measured.update({b.name: (together, len(group)) for b in group})
            return
        halves = [group[:len(group) // 2], group[len(group) // 2:]]
        moved = [change(h, False, loss_level) for h in halves]
        if min(moved) > tol:
            for h, m in zip(halves, moved):
                measured.update({b.name: (m, 1) if len(h) == 1 else (change([b], False, loss_level), 1) for b in h})
            return
        for h, m in zip(halves, moved):
            measure(h, loss_level, m)

    for loss_level in (False, True):
        group = [b for b in sym.blocks if b.approximate and on_loss(b) == loss_level]
        if group:
            measure(group, loss_level, change(group, False, loss_level))
    kept = []
    for b in sym.blocks:
        if b.approximate:
            moved_by, count = measured[b.name]
            together_with = f" and the {count - 1} other approximate blocks measured with it" if count > 1 else ""
            b.approximate += (f" (at the model's ε a random element of scale 0.5 of this block{together_with} moves "
                              f"the output by {moved_by:.2g} relative)")
            if moved_by > tol and not keep_approximate:
                for name in b.parameters():
                    others = [c for c in sym.coverage.get(name, []) if c != b.name and not c.startswith("none")]
                    sym.coverage[name] = others or [
                        f"none — block {b.name!r} is exact only at normalization's ε = 0: at the model's ε a random "
                        f"element moves the output by {moved_by:.2g} > the tolerance {tol:g} (pass approximate=True "
                        "to keep it)"]
                continue
        kept.append(b)
    sym.blocks = tuple(kept)


def _relative(difference: Tensor, reference: Tensor) -> float:
    """‖difference‖ / ‖reference‖ in Python floats: 0 where both are 0 (an all-zero model's output), never the
    0/0 = NaN of a float32 division (whose clamp at 1e-300 is 0), and infinite where only the reference is 0."""
    size, scale = float(difference.norm()), float(reference.norm())
    return size / scale if scale > 0 else (0.0 if size == 0 else math.inf)


class _EpsilonSwitch:
    """Every normalization ε the walker found (an argument of a graph node) set to 1e-300 or back to the model's
    own, the graph recompiled only when the setting changes."""

    def __init__(self, gm, sites):
        self.gm, self.sites = gm, sites
        self.saved: list = []

    def set(self, tiny: bool) -> None:
        if not self.sites or tiny == bool(self.saved):
            return
        if tiny:
            for node, name, _ in self.sites:
                self.saved.append((node, node.args, dict(node.kwargs)))
                names = [a.name for a in node.target._schema.arguments]
                slot = names.index(name)
                if slot < len(node.args):
                    args = list(node.args)
                    args[slot] = _TINY_EPS
                    node.args = tuple(args)
                else:
                    node.kwargs = {**node.kwargs, name: _TINY_EPS}
        else:
            for node, args, kwargs in reversed(self.saved):
                node.args, node.kwargs = args, kwargs
            self.saved = []
        self.gm.recompile()


verify = _verify
