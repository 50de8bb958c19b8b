"""Every block's conserved quantity in one grouped pass over the parameters (the monitor's record).

A module's quantities are sums over its legs ([`symmetry.groups.blocks`][]): a rescaling block's
Q_c = Σ_legs −e Σ_{rows u of class c} ‖θ_u‖² (row sums of squares), a GL block's Q = Σ_legs −sign(e) V Vᵀ (V the
leg's (C, K) table), a translation's column sums. [`FusedQuantities`][] computes them grouped, never block by block:

- squares: each parameter a rescaling leg reads is squared once, into one reused scratch buffer (kept in cache,
  as the floor's square is), and each distinct reduction of it is one call into one buffer R, the outer
  dimensions first (a vectorised reduction). A parameter read by rows only is reduced by one fused
  ``vector_norm`` per row (then squared) without a square;
- one weighted ``index_add`` puts every row sum into its block's class;
- GL: the tables of one parameter that differ by an offset in arithmetic progression (an attention layer's heads)
  are one strided view of the live parameter, made once, and one ``bmm`` (Gram matrices of all its heads); one
  signed ``index_add`` per C sums them into the blocks;
- translations: one reduction per leg on the live parameter.

The result is one flat tensor (``layout``: block → (start, shape)), equal to the blocks' ``quantity`` up to the
order of the additions (round-off). A block with a leg that is no strided pattern is computed by its own
``quantity`` (``plain``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from .groups.blocks import _strided_plan

Tensor = torch.Tensor

__all__ = ["FusedQuantities"]

#: a parameter above this many entries read by rows only: one fused vector_norm per row instead of a square
NORM = 1 << 16


def _plan(leg) -> tuple[int, list[int], list[int], int] | None:
    """The leg's table as a strided pattern (offset, sizes, strides, row dimensions), or None."""
    index = getattr(leg, "index", None)
    return _strided_plan(index) if isinstance(index, Tensor) else None


@dataclass(frozen=True)
class _Reduction:
    """Row sums of squares of one leg's table: rows = the first ``nrow`` dimensions of the strided view."""

    offset: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    nrow: int

    @property
    def rows(self) -> int:
        return math.prod(self.sizes[:self.nrow])

    def split(self) -> tuple[list[int], list[int]]:
        """The column dimensions outside every row dimension (reduced first) and the others."""
        top = max((self.strides[d] for d in range(self.nrow)), default=0)
        cols = range(self.nrow, len(self.sizes))
        return [d for d in cols if self.strides[d] > top], [d for d in cols if self.strides[d] <= top]


def _reduce(view: Tensor, outer: list[int], inner: list[int], out: Tensor) -> tuple:
    """A step that sums ``view`` over ``outer`` then ``inner`` into ``out`` (or copies it, no column)."""
    if outer and inner:
        return ("sum2", view, outer, [d - sum(o < d for o in outer) for d in inner], out)
    if outer or inner:
        return ("sum", view, outer or inner, out)
    return ("copy", view, out)


class FusedQuantities:
    """The quantities of ``blocks`` (rescaling, GL, translation; a rotation's, identically 0) on the live tensors
    ``params``, grouped.

    ``params``: name → tensor whose storage the caller keeps (a module's parameters); the views are made once, so
    ``pointers`` records each one's storage: when a parameter's storage is swapped (``.to()``, ``.data =``), build
    a new one."""

    def __init__(self, blocks, params: Mapping[str, Tensor]):
        self.params = {n: t.detach() for n, t in params.items()}
        self.pointers = {n: t.data_ptr() for n, t in self.params.items()}
        like = next(iter(self.params.values()))
        dtype, device = like.dtype, like.device
        self.layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.plain: list[Any] = []
        reductions: dict[str, list[_Reduction]] = {}  # param → its distinct reductions, in order
        contributions: list[tuple[str, _Reduction, Tensor, float]] = []  # (param, reduction, class targets, −e)
        gl_legs: dict[tuple, list[tuple[int, int, float]]] = {}  # table shape → [(offset, GL block #, sign)]
        gl_blocks: dict[int, list[str]] = {}  # C → GL block names
        translation_legs: list[tuple[str, str, _Reduction]] = []
        scaling: list[tuple[str, int]] = []
        rotations: list[tuple[str, int]] = []  # RoPE's pair rotations: quantity identically 0, no law
        for b in blocks:
            kind = getattr(b, "kind", None)
            if kind == "rotation":
                rotations.append((b.name, int(b.element_shape()[0])))
                continue
            plans = [_plan(leg) for leg in b.legs]
            if kind not in ("scaling", "GL", "translation") or not b.legs or any(p is None for p in plans) or (
                    kind == "GL" and any(math.prod(p[1][:p[3]]) != b.units for p in plans if p is not None)):
                self.plain.append(b)  # no strided pattern (or a GL leg on part of the units): its own quantity
                continue
            if kind == "scaling":
                first = sum(n for _, n in scaling)
                scaling.append((b.name, b.n_classes))
            elif kind == "GL":
                gl_blocks.setdefault(b.units, []).append(b.name)
            for leg, plan in zip(b.legs, plans):
                assert plan is not None
                offset, sizes, strides, nrow = plan
                r = _Reduction(offset, tuple(sizes), tuple(strides), nrow)
                if kind == "scaling":
                    mine = reductions.setdefault(leg.param, [])
                    if r not in mine:
                        mine.append(r)
                    contributions.append((leg.param, r, first + b.classes[leg.rows(b.units)].reshape(-1),
                                          -float(leg.exponent)))
                elif kind == "GL":
                    gl_legs.setdefault((leg.param, r.sizes, r.strides, nrow, b.units), []).append(
                        (offset, len(gl_blocks[b.units]) - 1, 1.0 if leg.exponent < 0 else -1.0))  # O Oᵀ − I Iᵀ
                else:
                    translation_legs.append((b.name, leg.param, r))
        # --- the layout: rescaling classes, GL blocks by C, translations, then the plain blocks ------------------
        start = 0
        for name, count in scaling:
            self.layout[name] = (start, (count,))
            start += count
        self.n_classes = start
        gl_start = {}
        for C, names in gl_blocks.items():
            gl_start[C] = start
            for i, name in enumerate(names):
                self.layout[name] = (start + i * C * C, (C, C))
            start += len(names) * C * C
        translation_out: list[tuple[str, _Reduction, int]] = []
        for name, param, r in translation_legs:
            width = math.prod(r.sizes[r.nrow:])
            at, size = self.layout.get(name, (start, (0,)))
            self.layout[name] = (at, (size[0] + width,))
            translation_out.append((param, r, start))
            start += width
        for name, count in rotations:  # zeros, never written: a rotation's quantity is 0 whatever the weights
            self.layout[name] = (start, (count,))
            start += count
        self.size = start
        self.out = torch.zeros(start, dtype=dtype, device=device)
        self.steps: list[tuple] = []
        # --- rescaling: squares and row sums -----------------------------------------------------------------------
        r_start: dict[tuple[str, _Reduction], int] = {}
        r_size = 0

        def place(r: _Reduction, count: int = 1) -> int:
            """The start in R of ``count`` consecutive copies of reduction r's rows."""
            nonlocal r_size
            r_size += count * r.rows
            return r_size - count * r.rows

        pending: list[tuple] = []  # (kind, ..., R base, shape) resolved once R exists
        singles: list[str] = []
        entrywise: list[Tensor] = []  # parameters read entry by entry (a norm's weight): squared together into R
        for param, mine in reductions.items():
            p = self.params[param]
            flat = p.reshape(-1)
            if all(not r.split()[0] and not r.split()[1] for r in mine):
                for r in mine:  # every row a single entry: squared straight into R
                    view = flat.as_strided(list(r.sizes), list(r.strides), flat.storage_offset() + r.offset)
                    if view.is_contiguous():
                        r_start[param, r] = place(r)
                        entrywise.append(view.view(-1))
        for param, mine in reductions.items():
            p = self.params[param]
            if all(not r.split()[0] and not r.split()[1] for r in mine):
                for r in mine:
                    if (param, r) not in r_start:  # a strided pattern: one multiplication of its own
                        base = place(r)
                        r_start[param, r] = base
                        pending.append(("mul", param, r, base))
            elif p.numel() > NORM and all(not r.split()[0] for r in mine):
                for r in mine:  # rows outside, columns inside: ‖row‖ by one fused pass, squared after
                    base = place(r)
                    r_start[param, r] = base
                    pending.append(("norm", param, r, base))
            else:
                singles.append(param)
        # the squares one at a time through one scratch buffer (reused: it stays in cache, as the floor's does)
        largest = max((self.params[n].numel() for n in singles), default=0)
        self.scratch = torch.empty(largest, dtype=dtype, device=device)
        for param in singles:  # one at a time through the shared end of the scratch
            p = self.params[param]
            square = self.scratch[:p.numel()]
            pending.append(("square", param, square.view(p.shape)))
            for r in reductions[param]:
                base = place(r)
                r_start[param, r] = base
                view = self.scratch.as_strided(list(r.sizes), list(r.strides), r.offset)
                outer, inner = r.split()
                pending.append(("reduce", view, outer, inner, base, list(r.sizes[:r.nrow]), param))
        self.R = torch.empty(r_size, dtype=dtype, device=device)
        norm_rows = []
        by_param: dict[str, list[tuple]] = {}  # each parameter's steps, run together (it is read once, in cache)
        for step in pending:
            kind = step[0]
            if kind == "square":
                by_param.setdefault(step[1], []).append(("square", self.params[step[1]], step[2]))
            elif kind in ("mul", "norm"):
                _, param, r, base = step
                flat = self.params[param].reshape(-1)
                view = flat.as_strided(list(r.sizes), list(r.strides), flat.storage_offset() + r.offset)
                out = self.R[base:base + r.rows].view(r.sizes[:r.nrow])
                if kind == "mul":
                    by_param.setdefault(param, []).append(("mul", view, out))
                else:
                    by_param.setdefault(param, []).append(("norm", view, list(range(r.nrow, len(r.sizes))), out))
                    norm_rows.append(self.R[base:base + r.rows])
            else:
                _, view, outer, inner, base, shape, param = step
                by_param.setdefault(param, []).append(
                    _reduce(view, outer, inner, self.R[base:base + math.prod(shape)].view(shape)))
        self.norm_rows = norm_rows
        if contributions:
            src = torch.cat([torch.arange(r_start[param, r], r_start[param, r] + r.rows)
                             for param, r, _, _ in contributions])
            targets = torch.cat([t for _, _, t, _ in contributions])
            weights = torch.cat([torch.full((r.rows,), w, dtype=torch.float64) for _, r, _, w in contributions])
            order = torch.argsort(src, stable=True)
            if torch.equal(src[order], torch.arange(r_size)):  # each row of R used once: R's order, no gather
                src, targets, weights = src[order], targets[order], weights[order]
            self.gather = None if torch.equal(src, torch.arange(r_size)) else src.to(device)
            self.targets = targets.to(device)
            self.weights = weights.to(dtype=dtype, device=device)
        # --- GL: batched views of the live parameters, concatenated per (C, K), one bmm each -------------------
        tables: dict[int, list[tuple[Tensor, int, str]]] = {}  # C → [(strided view (count, C, …), count, param)]
        rows_of: dict[int, list[tuple[int, float]]] = {}  # C → [(block #, sign)] in the order of the tables' rows
        for (param, sizes, strides, nrow, C), legs in gl_legs.items():
            flat = self.params[param].reshape(-1)
            at = 0
            for offset, stride, count in _progressions([o for o, _, _ in legs]):
                rows_of.setdefault(C, []).extend((blk, sign) for _, blk, sign in legs[at:at + count])
                at += count
                view = flat.as_strided([count, *sizes], [stride, *strides], flat.storage_offset() + offset)
                tables.setdefault(C, []).append((view, count, param))
        self.gl_sums: list[tuple] = []
        for C, group in tables.items():
            total = sum(count for _, count, _ in group)
            grams = torch.empty(total, C, C, dtype=dtype, device=device)
            at = 0
            for v, count, param in group:  # one bmm per parameter's run of heads, on the live parameter (no copy)
                try:
                    table = v.view(count, C, -1)
                    by_param.setdefault(param, []).append(("bmm", table, table.mT, grams[at:at + count]))
                except RuntimeError:  # a table that is no (count, C, K) view: reshaped (copied) at each record
                    by_param.setdefault(param, []).append(("bmm-copy", v, count, C, grams[at:at + count]))
                at += count
            index = torch.tensor([blk for blk, _ in rows_of[C]], dtype=torch.long, device=device)
            signs = torch.tensor([sg for _, sg in rows_of[C]], dtype=dtype, device=device).reshape(-1, 1, 1)
            n = len(gl_blocks[C])
            self.gl_sums.append((grams, signs, index, self.out[gl_start[C]:gl_start[C] + n * C * C].view(n, C, C)))
        # --- translations: column sums of each leg on the live parameter ------------------------------------
        for param, r, at in translation_out:
            flat = self.params[param].reshape(-1)
            view = flat.as_strided(list(r.sizes), list(r.strides), flat.storage_offset() + r.offset)
            out = self.out[at:at + math.prod(r.sizes[r.nrow:])].view(r.sizes[r.nrow:])
            by_param.setdefault(param, []).append(("sum", view, list(range(r.nrow)), out) if r.nrow
                                                  else ("copy", view, out))
        self.steps = [step for name in self.params if name in by_param for step in by_param[name]]
        if entrywise:  # one multiplication for all of them, one copy into the start of R
            self.steps.insert(0, ("entrywise", entrywise, self.R[:sum(t.numel() for t in entrywise)]))

    def __call__(self) -> Tensor:
        """All quantities as one new flat tensor (``layout``: block → (start, shape)); no per-block loop."""
        for step in self.steps:  # parameter by parameter: squares, row sums, Gram matrices, column sums
            kind = step[0]
            if kind == "square" or kind == "mul":
                torch.mul(step[1], step[1], out=step[2])
            elif kind == "sum":
                torch.sum(step[1], step[2], out=step[3])
            elif kind == "bmm":
                torch.bmm(step[1], step[2], out=step[3])
            elif kind == "sum2":
                torch.sum(step[1].sum(step[2]), step[3], out=step[4])
            elif kind == "norm":
                torch.linalg.vector_norm(step[1], dim=step[2], out=step[3])
            elif kind == "entrywise":
                torch.cat(torch._foreach_mul(step[1], step[1]), out=step[2])
            elif kind == "bmm-copy":
                _, view, count, C, grams = step
                table = view.reshape(count, C, -1)
                torch.bmm(table, table.mT, out=grams)
            else:
                step[2].copy_(step[1])
        if self.norm_rows:
            torch._foreach_mul_(self.norm_rows, self.norm_rows)
        if self.n_classes:
            values = (self.R if self.gather is None else self.R[self.gather]) * self.weights
            scaled = self.out[:self.n_classes]
            scaled.zero_()
            scaled.index_add_(0, self.targets, values)
        for grams, signs, index, target in self.gl_sums:
            grams.mul_(signs)
            target.zero_()
            target.index_add_(0, index, grams)
        if not self.plain:
            return self.out.clone()
        return torch.cat([self.out] + [b.quantity(self.params).reshape(-1) for b in self.plain])

    def plain_layout(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """The slices of the blocks computed by their own quantity (after the fused ones)."""
        out, start = {}, self.size
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
            runs.append((offsets[i], 1, 1))
            i += 1
            continue
        while j < len(offsets) and offsets[j] - offsets[j - 1] == step:
            j += 1
        runs.append((offsets[i], step, j - i))
        i = j
    return runs
