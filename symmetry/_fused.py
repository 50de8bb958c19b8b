"""Every block's conserved quantity in one pass over the parameters (the monitor's record).

A module's quantities are sums of Gram entries of its legs ([`symmetry.groups.blocks`][]): a rescaling block's
Q_c = Σ_legs −e Σ_{rows u of class c} ‖θ_u‖² (the diagonal), a GL block's Q = Σ_legs −sign(e) V Vᵀ (V the leg's
(C, K) table). [`FusedQuantities`][] computes them grouped rather than block by block:

- the squares of every parameter a rescaling leg reads, in one ``torch._foreach_mul``; each distinct (parameter,
  rows) pattern reduced once, into one buffer R, with the reductions over outer dimensions first (vectorised);
  then one weighted ``index_add`` puts R's rows into every rescaling block's classes;
- the legs of GL blocks with the same table shape on one parameter (an attention layer's heads) as one batched
  strided view of the live parameter, made once, and one ``bmm`` per group into one buffer per size C; one
  signed ``index_add`` sums them into the blocks;
- translation blocks (few; linear) and any leg without a strided pattern: the block's own ``quantity``.

The result is one flat tensor (``layout`` maps each block to its slice and shape): equal to the blocks'
``quantity`` up to the order of the additions (round-off).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

Tensor = torch.Tensor

__all__ = ["FusedQuantities"]


def _plan(leg) -> tuple[int, list[int], list[int], int] | None:
    try:
        from .groups.blocks import _strided_plan
    except ImportError:  # pragma: no cover - a reader without strided legs: the blocks' own quantity
        return None
    return _strided_plan(leg.index)


class FusedQuantities:
    """The quantities of ``blocks`` (rescaling, GL, translation) on the live tensors ``params``, grouped.

    ``params``: name → tensor whose storage the caller keeps (a module's parameters, detached); ``valid()`` says
    whether they still hold the same storage (a ``.to()``/``.double()`` swaps it: build a new one then)."""

    def __init__(self, blocks, params: Mapping[str, Tensor]):
        self.params = {n: t.detach() for n, t in params.items()}
        self.pointers = {n: t.data_ptr() for n, t in self.params.items()}
        self.layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.plain: list[Any] = []  # blocks computed by their own quantity
        # --- rescaling legs: distinct (param, plan) reductions into R; R's rows → classes ------------------------
        square_names: list[str] = []
        reductions: dict[tuple, int] = {}  # (param, plan) → index into self.reductions
        self.reductions: list[tuple[str, int, list[int], list[int], list[int], list[int], int, int]] = []
        sources, targets, weights = [], [], []
        n_classes = 0
        scaling_slots: list[tuple[str, int, int]] = []
        r_size = 0
        # --- GL legs: groups of equal tables on one parameter → batched views; grams per C --------------------
        gl_legs: dict[tuple, list[tuple[int, int, float]]] = {}  # (param, sizes, strides, nrow) → [(offset, block#, sign)]
        gl_blocks: dict[int, list[str]] = {}  # C → block names
        plain_blocks = []
        for b in blocks:
            kind = getattr(b, "kind", None)
            plans = [_plan(leg) for leg in b.legs] if kind in ("scaling", "GL") else []
            if kind not in ("scaling", "GL") or any(p is None for p in plans) or not b.legs:
                plain_blocks.append(b)
                continue
            if kind == "scaling":
                classes = b.classes
                first = n_classes
                n_classes += b.n_classes
                scaling_slots.append((b.name, first, b.n_classes))
                for leg, plan in zip(b.legs, plans):
                    assert plan is not None
                    offset, sizes, strides, nrow = plan
                    key = (leg.param, offset, tuple(sizes), tuple(strides), nrow)
                    if key not in reductions:
                        rows = math.prod(sizes[:nrow])
                        reductions[key] = len(self.reductions)
                        if leg.param not in square_names:
                            square_names.append(leg.param)
                        cols = list(range(nrow, len(sizes)))
                        top = max((strides[d] for d in range(nrow)), default=0)
                        outer = [d for d in cols if strides[d] > top]
                        inner = [d for d in cols if strides[d] <= top]
                        self.reductions.append((leg.param, offset, list(sizes), list(strides), outer, inner, r_size,
                                                rows))
                        r_size += rows
                    _, _, _, _, _, _, start, rows = self.reductions[reductions[key]]
                    unit_rows = leg.rows(b.units)
                    sources.append(torch.arange(start, start + rows))
                    targets.append(first + classes[unit_rows].reshape(-1))
                    weights.append(torch.full((rows,), -float(leg.exponent), dtype=torch.float64))
            else:
                C = b.units
                names = gl_blocks.setdefault(C, [])
                names.append(b.name)
                for leg, plan in zip(b.legs, plans):
                    assert plan is not None
                    offset, sizes, strides, nrow = plan
                    if math.prod(sizes[:nrow]) != C:
                        raise AssertionError(f"{b.name}: a GL leg of {leg.param!r} has {sizes[:nrow]} rows for {C} units")
                    table = (leg.param, tuple(sizes), tuple(strides), nrow, C)
                    sign = 1.0 if leg.exponent < 0 else -1.0  # Q = O Oᵀ − I Iᵀ
                    gl_legs.setdefault(table, []).append((offset, len(names) - 1, sign))
        self.square_names = square_names
        self.r_size = r_size
        self.n_classes = n_classes
        dtype = next(iter(self.params.values())).dtype if self.params else torch.float64
        device = next(iter(self.params.values())).device if self.params else torch.device("cpu")
        self.plain = plain_blocks
        # --- layout of the flat result: rescaling classes, GL blocks by C, plain blocks --------------------------
        for name, first, count in scaling_slots:
            self.layout[name] = (first, (count,))
        start = n_classes
        gl_start: dict[int, int] = {}
        for C, names in gl_blocks.items():
            gl_start[C] = start
            for i, name in enumerate(names):
                self.layout[name] = (start + i * C * C, (C, C))
            start += len(names) * C * C
        self.plain_start = start
        self.fused_size = start
        self.out = torch.empty(start, dtype=dtype, device=device)  # the fused part of the result, reused
        # rescaling: per parameter, its square (into a scratch buffer of the largest one, reused) and its
        # reductions into R (views made once); a parameter read only entry by entry is squared into R directly
        self.R = torch.empty(r_size, dtype=dtype, device=device)
        largest = max((self.params[n].numel() for n in square_names), default=0)
        self.scratch = torch.empty(largest, dtype=dtype, device=device)
        self.steps: list[tuple] = []  # ("square", param, scratch view) / ("sum", view, dims, out) / ("mul", view, out)
        by_param: dict[str, list] = {}
        for reduction in self.reductions:
            by_param.setdefault(reduction[0], []).append(reduction)
        for param, group in by_param.items():
            p = self.params[param]
            flat = p.reshape(-1)
            if all(not outer and not inner for _, _, _, _, outer, inner, _, _ in group):
                for _, offset, sizes, strides, _, _, start, rows in group:
                    view = flat.as_strided(sizes, strides, flat.storage_offset() + offset)
                    self.steps.append(("mul", view, self.R[start:start + rows].view(sizes)))
                continue
            if all(not outer for _, _, _, _, outer, _, _, _ in group):
                # rows outside, columns inside: ‖row‖² by one fused pass (vector_norm, then squared), no square
                for _, offset, sizes, strides, _, inner, start, rows in group:
                    view = flat.as_strided(sizes, strides, flat.storage_offset() + offset)
                    out = self.R[start:start + rows].view(sizes[:len(sizes) - len(inner)])
                    self.steps.append(("norm", view, inner, out) if inner else ("mul", view, out))
                continue
            square = self.scratch[:p.numel()]
            self.steps.append(("square", p, square.view(p.shape)))
            for _, offset, sizes, strides, outer, inner, start, rows in group:
                view = square.as_strided(sizes, strides, square.storage_offset() + offset)
                out = self.R[start:start + rows].view(sizes[:len(sizes) - len(outer) - len(inner)])
                if outer and inner:  # the outer dimensions first (a vectorised reduction), then the short inner ones
                    self.steps.append(("sum2", view, outer, [d - sum(o < d for o in outer) for d in inner], out))
                elif outer or inner:
                    self.steps.append(("sum", view, outer or inner, out))
                else:
                    self.steps.append(("copy", view, out))
        # the rows reduced by vector_norm hold ‖row‖: squared together, in place, after the reductions
        norm_rows = [step[3].reshape(-1) for step in self.steps if step[0] == "norm"]
        self.norm_rows = norm_rows
        if sources:
            src = torch.cat(sources)
            self.gather = None if torch.equal(src, torch.arange(r_size)) else src.to(device)
            self.targets = torch.cat(targets).to(device)
            self.weights = torch.cat(weights).to(dtype=dtype, device=device)
        # GL: legs of one parameter whose tables differ only by an offset in arithmetic progression (the heads of
        # one projection) as one batched view of the live parameter; one bmm per group into a buffer per C
        per_c_legs: dict[int, list[tuple[int, float]]] = {}
        pending = []
        for (param, sizes, strides, nrow, C), legs in gl_legs.items():
            at = 0
            for first_offset, step, count in _progressions([o for o, _, _ in legs]):
                slot = len(per_c_legs.setdefault(C, []))
                per_c_legs[C].extend((block, sign) for _, block, sign in legs[at:at + count])
                at += count
                pending.append((param, first_offset, step, count, list(sizes), list(strides), C, slot))
        self.grams = {C: torch.empty(len(m), C, C, dtype=dtype, device=device) for C, m in per_c_legs.items()}
        self.gl_steps = []
        for param, offset, step, count, sizes, strides, C, slot in pending:
            flat = self.params[param].reshape(-1)
            view = flat.as_strided([count] + sizes, [step] + strides, flat.storage_offset() + offset)
            try:
                batched: Tensor | None = view.view(count, C, -1)
            except RuntimeError:
                batched = None  # this table needs a copy at each record
            self.gl_steps.append((batched, view, C, self.grams[C][slot:slot + count]))
        self.gl_sums = []
        for C, members in per_c_legs.items():
            index = torch.tensor([blk for blk, _ in members], dtype=torch.long, device=device)
            signs = torch.tensor([sg for _, sg in members], dtype=dtype, device=device).reshape(-1, 1, 1)
            n_blocks = len(gl_blocks[C])
            target = self.out[gl_start[C]:gl_start[C] + n_blocks * C * C].view(n_blocks, C, C)
            self.gl_sums.append((self.grams[C], signs, index, target))

    def valid(self, params: Mapping[str, Tensor]) -> bool:
        """Whether ``params`` are the tensors this was built on, with the same storage."""
        return all(n in params and params[n].data_ptr() == p for n, p in self.pointers.items())

    def __call__(self, order: Tensor | None = None) -> Tensor:
        """All quantities as one new flat tensor (``layout``: block → (start, shape)), or its entries ``order``;
        no per-block loop."""
        for step in self.steps:
            kind = step[0]
            if kind == "square":
                torch.mul(step[1], step[1], out=step[2])
            elif kind == "sum":
                torch.sum(step[1], step[2], out=step[3])
            elif kind == "sum2":
                torch.sum(step[1].sum(step[2]), step[3], out=step[4])
            elif kind == "mul":
                torch.mul(step[1], step[1], out=step[2])
            elif kind == "norm":
                torch.linalg.vector_norm(step[1], dim=step[2], out=step[3])
            else:
                step[2].copy_(step[1])
        if self.norm_rows:
            torch._foreach_mul_(self.norm_rows, self.norm_rows)
        if self.r_size:
            values = (self.R if self.gather is None else self.R[self.gather]) * self.weights
            scaled = self.out[:self.n_classes]
            scaled.zero_()
            scaled.index_add_(0, self.targets, values)
        for batched, view, C, out in self.gl_steps:
            table = batched if batched is not None else view.reshape(view.shape[0], C, -1)
            torch.bmm(table, table.mT, out=out)
        for grams, signs, index, target in self.gl_sums:
            grams.mul_(signs)
            target.zero_()
            target.index_add_(0, index, grams)
        if not self.plain:
            return self.out.clone() if order is None else self.out[order]
        flat = torch.cat([self.out] + [b.quantity(self.params).reshape(-1) for b in self.plain])
        return flat if order is None else flat[order]

    def plain_layout(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """The slices of the blocks computed by their own quantity (their shapes known after one call)."""
        out, start = {}, self.plain_start
        for b in self.plain:
            shape = tuple(b.quantity(self.params).shape)
            out[b.name] = (start, shape)
            start += math.prod(shape)
        return out


def _progressions(offsets: list[int]) -> list[tuple[int, int, int]]:
    """``offsets`` cut into maximal runs o, o + d, o + 2d, … (d > 0): (first, d, count) each, in order."""
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < len(offsets):
        j = i + 1
        step = offsets[j] - offsets[i] if j < len(offsets) else 1
        if step <= 0:
            step = 1
            runs.append((offsets[i], step, 1))
            i += 1
            continue
        while j < len(offsets) and offsets[j] - offsets[j - 1] == step:
            j += 1
        runs.append((offsets[i], step, j - i))
        i = j
    return runs
