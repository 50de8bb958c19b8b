"""Parameter-linear operations: ``aten.linear``, ``aten.addmm`` (GPT-2's Conv1D), ``x @ W``, convolutions and
embeddings. Each is a *producer* of units (output features, channels, embedding coordinates) and a *consumer*
of the units on its contracted axis: their columns become the outgoing weights, with the degree as exponent."""
from __future__ import annotations

import torch
import torch.fx as fx

from ...groups.blocks import Leg
from ..registry import Args, on
from ..state import PRef, Tag, constant_along_last
from ..walk import Walker
from .attention import pair

aten = torch.ops.aten
Tensor = torch.Tensor


def consume(w: Walker, n, tags: dict[int, Tag], W_in: Tensor, param: str, xval: Tensor, what: str,
            result) -> dict[int, Tag]:
    """Units on the last axis of the input, read by columns of W_in (out, in): absorbed; units on other
    axes (constant along the contracted one): passed through."""
    passed = {}
    for pid, tag in tags.items():
        p = w.producers[pid]
        L = tag.labels.expand(xval.shape)
        rows = L.reshape(-1, L.shape[-1])
        if bool((rows == rows[:1]).all()) and bool((rows[0] >= 0).any()):
            row = rows[0]
            units = row[row >= 0].unique()
            counts = torch.stack([(row == u).sum() for u in units])
            if counts.unique().numel() != 1:
                p.break_(f"its units appear a different number of times in the input of {what}")
                continue
            cols = torch.stack([torch.nonzero(row == u).flatten() for u in units])  # (units, K)
            entries = W_in[:, cols].permute(1, 0, 2).reshape(len(units), -1)  # (units, out·K)
            p.outgoing.append(Leg(param, entries, -tag.degree, units=units))
            p.consumers.append(what)
            p.site(w.site_key(), [units])
        elif constant_along_last(rows):
            passed[pid] = Tag(L[..., :1].expand(result.shape), tag.degree)
            p.site(w.site_key(), [r for r in L[..., 0].reshape(-1, 1)])
        else:
            p.break_(f"its units are mixed with other entries along the axis {what} contracts")
    return passed


def linear(w: Walker, n, x, W: PRef | None, b: PRef | None, result, what: str):
    """y = x Wᵀ + b with W given as an (out, in) table of entry positions."""
    if W is None:
        w.unknown(n, what, f"reaches {what} with a weight that is not a parameter")
        return {}
    passed = consume(w, n, w.tags(x), W.index, W.param, w.value(x), what, result)
    if passed and b is not None:
        w.break_all(passed, f"{what} adds a bias along an axis that does not carry its units")
        passed = {}
    out = w.new_producer(w.producer_name(W), W.index.shape[0], [Leg(W.param, W.index, 1.0)] +
                         ([Leg(b.param, b.index.reshape(-1, 1), 1.0)] if b is not None else []),
                         what, result, -1, translation=("row", "bias") if b is not None else ("row",))
    out.update(passed)
    return out


def _what(w: Walker, n, ref: PRef | None, kind: str) -> str:
    name = w.producer_name(ref) if ref is not None else "?"
    path, cls = w.module_path(n)
    if path and path == name:
        return f"{name} ({cls.rsplit('.', 1)[-1]})"
    return f"{name} ({kind} in {w.module_of(n)})"


@on(aten.linear)
def linear_rule(w: Walker, n, a: Args, result):
    what = _what(w, n, w.pref(a["weight"]), "linear")
    return linear(w, n, a["input"], w.param_ref(a["weight"], what), w.param_ref(a["bias"], what), result, what)


@on(aten.addmm)
def addmm_rule(w: Walker, n, a: Args, result):
    """bias + x @ W (GPT-2's Conv1D, W of shape (in, out))."""
    ref = w.pref(a["mat2"])
    if a.value("beta") != 1 or a.value("alpha") != 1 or ref is None or w.pref(a["mat1"]) is not None:
        w.unknown(n)
        return {}
    what = _what(w, n, ref, "addmm")
    W = w.param_ref(a["mat2"], what)
    assert W is not None
    return linear(w, n, a["mat1"], PRef(W.param, W.index.T), w.param_ref(a["self"], what), result, what)


@on(aten.matmul, aten.mm, aten.bmm)
def matmul_rule(w: Walker, n, a: Args, result):
    x, y = a["self"], a["mat2"] if "mat2" in a else a["other"]
    rx, ry = w.pref(x), w.pref(y)
    vx, vy = w.value(x), w.value(y)
    if ry is not None and rx is None and ry.index.ndim == 2:  # x @ W: a linear layer written out
        what = _what(w, n, ry, "matmul")
        W = w.param_ref(y, what)
        assert W is not None
        return linear(w, n, x, PRef(W.param, W.index.T), None, result, what)
    if rx is not None or ry is not None:
        w.unknown(n, f"{w.where(n)} with a parameter on the left")
        return {}
    if vx.ndim < 2 or vy.ndim < 2:
        w.unknown(n, f"{w.where(n)} of a vector")
        return {}
    return contract(w, n, w.tags(x), w.tags(y), vx, vy, result)


def contract(w: Walker, n, A: dict[int, Tag], B: dict[int, Tag], vx, vy, result) -> dict[int, Tag]:
    """x @ y for two values no parameter is: units on x's rows or y's columns pass; units contracted on both
    sides pair a query with a key (Cor. 3.9); units contracted against a tensor no group acts on break."""
    out: dict[int, Tag] = {}
    shape = torch.broadcast_shapes(vx.shape[:-2], vy.shape[:-2])
    for pid in set(A) | set(B):
        p = w.producers[pid]
        if pid in A and pid in B:
            p.break_(f"multiplied by a function of itself ({w.where(n)})")
            continue
        if pid in A:
            L = A[pid].labels.expand(vx.shape)
            if constant_along_last(L):  # units on the rows: passed through
                out[pid] = Tag(L[..., :1].expand(result.shape), A[pid].degree)
                p.site(w.site_key(), list(L[..., 0].expand(*shape, L.shape[-2]).reshape(-1, L.shape[-2])))
                continue
            # units on the contracted axis of the left factor: paired with a key, or lost
            partner = [q for q, t in B.items() if not constant_along_last(t.labels.expand(vy.shape).transpose(-1, -2))]
            if len(partner) == 1:
                pair(w, n, pid, A[pid], vx, partner[0], B[partner[0]], vy, transposed=True)
            else:
                p.break_(f"contracted with a tensor that no group acts on ({w.where(n)})")
        else:
            L = B[pid].labels.expand(vy.shape)
            if constant_along_last(L.transpose(-1, -2)):  # units on the columns: passed through
                out[pid] = Tag(L[..., :1, :].expand(result.shape), B[pid].degree)
                p.site(w.site_key(), list(L[..., 0, :].expand(*shape, L.shape[-1]).reshape(-1, L.shape[-1])))
            elif not any(not constant_along_last(t.labels.expand(vx.shape)) for t in A.values()):
                p.break_(f"contracted with a tensor that no group acts on ({w.where(n)})")
    return out


def _unit_rows(index: Tensor, channel: Tensor, groups: int) -> tuple[Tensor, Tensor | None]:
    """A convolution weight's outgoing rows per unit of its input: ``channel[c]`` is the unit of input channel c
    (−1: none); row u concatenates, over the channels c of unit u in ascending order, the filters' entries that
    read c (its group's output channels × the kernel). None where the units appear unequally often."""
    C_out, per_group = index.shape[0], index.shape[1]
    valid = torch.nonzero(channel >= 0).flatten()
    units, counts = channel[valid].unique(return_counts=True)
    if not units.numel() or bool((counts != counts[0]).any()):
        return units, None
    order = valid[torch.sort(channel[valid], stable=True).indices]  # channels by unit, ascending within a unit
    g, local = order // per_group, order % per_group
    table = index.reshape(groups, C_out // groups, per_group, -1)
    parts = table[g, :, local]  # (channels, out per group, kernel)
    return units, parts.reshape(units.numel(), -1)


@on(aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution, getattr(aten, "_convolution", None))
def conv_rule(w: Walker, n, a: Args, result):
    if a.value("transposed"):
        w.unknown(n, f"{w.where(n)} (a transposed convolution)")
        return {}
    what = _what(w, n, w.pref(a["weight"]), "convolution")
    W, b = w.param_ref(a["weight"], what), w.param_ref(a["bias"], what)
    if W is None:
        w.unknown(n, what, f"reaches {what} with a weight that is not a parameter")
        return {}
    groups = int(a.value("groups") or 1)
    x = a["input"]
    xval = w.value(x)
    C_out, per_group = W.index.shape[0], W.index.shape[1]
    out_per_group = C_out // groups
    for pid, tag in w.tags(x).items():
        p = w.producers[pid]
        L = tag.labels.expand(xval.shape)
        if L.ndim == W.index.ndim - 1:  # unbatched
            L = L[None]
        per_channel = L.transpose(0, 1).reshape(L.shape[1], -1)
        if not constant_along_last(per_channel):
            p.break_(f"its units vary over the positions that {what} slides over")
            continue
        channel = per_channel[:, 0]
        units, rows = _unit_rows(W.index, channel, groups)
        if rows is None:
            p.break_(f"its units appear a different number of times in the input of {what}")
            continue
        p.outgoing.append(Leg(W.param, rows, -tag.degree, units=units))
        p.consumers.append(what)
        p.site(w.site_key(), [channel[g * per_group:(g + 1) * per_group] for g in range(groups)])
    legs = [Leg(W.param, W.index.reshape(C_out, -1), 1.0)]
    if b is not None:
        legs.append(Leg(b.param, b.index.reshape(-1, 1), 1.0))
    out = w.new_producer(w.producer_name(W), C_out, legs, what, result, 1 if result.ndim == W.index.ndim else 0,
                         translation=("row", "bias") if b is not None and groups == 1 else
                         ("row",) if groups == 1 else ())
    if groups > 1:  # each group's filters read their own input channels: GL mixes within a group only
        w.producers[-1].site(w.site_key(), list(torch.arange(C_out).reshape(groups, -1)))
    return out


@on(aten.embedding)
def embedding_rule(w: Walker, n, a: Args, result):
    what = _what(w, n, w.pref(a["weight"]), "embedding")
    W = w.param_ref(a["weight"], what)
    if W is None:
        w.unknown(n, what)
        return {}
    return w.new_producer(w.producer_name(W), W.index.shape[1], [Leg(W.param, W.index.T.contiguous(), 1.0)],
                          what, result, -1)


_ = fx


@on(aten.einsum)
def einsum_rule(w: Walker, n, a: Args, result):
    """A two-operand einsum without ellipsis, read as the matmul it is: each operand permuted to
    (batch, free, contracted) / (batch, contracted, free), the product's labels moved back to the output's order."""
    equation, operands = a.value("equation").replace(" ", ""), a["tensors"]
    values = a.value("tensors")
    if "..." in equation or "->" not in equation or len(operands) != 2 or any(w.pref(o) for o in operands):
        if any(w.tags(o) or w.pref(o) for o in operands):
            w.unknown(n, f"{w.where(n)} ({equation!r}: the walker reads two-operand einsums of activations only)")
        return {}
    (ta, tb), to = equation.split("->")[0].split(","), equation.split("->")[1]
    if len(set(ta)) != len(ta) or len(set(tb)) != len(tb) or any(c not in tb and c not in to for c in ta) or \
            any(c not in ta and c not in to for c in tb):
        w.unknown(n, f"{w.where(n)} ({equation!r}: a trace or a sum over one operand)")
        return {}
    batch = [c for c in to if c in ta and c in tb]
    free_a, free_b = [c for c in to if c in ta and c not in tb], [c for c in to if c in tb and c not in ta]
    summed = [c for c in ta if c in tb and c not in to]
    size = {c: d for t, v in ((ta, values[0]), (tb, values[1])) for c, d in zip(t, v.shape)}

    def prod(cs):
        out = 1
        for c in cs:
            out *= size[c]
        return out

    def canon(L, t, first, second):
        order = [t.index(c) for c in batch + first + second]
        return L.permute(*order).reshape(prod(batch), prod(first), prod(second))

    A = {pid: Tag(canon(tag.labels.expand(values[0].shape), ta, free_a, summed), tag.degree)
         for pid, tag in w.tags(operands[0]).items()}
    B = {pid: Tag(canon(tag.labels.expand(values[1].shape), tb, summed, free_b), tag.degree)
         for pid, tag in w.tags(operands[1]).items()}
    vx = torch.empty(prod(batch), prod(free_a), prod(summed), device="meta")
    vy = torch.empty(prod(batch), prod(summed), prod(free_b), device="meta")
    vr = torch.empty(prod(batch), prod(free_a), prod(free_b), device="meta")
    out = contract(w, n, A, B, vx, vy, vr)
    letters = batch + free_a + free_b
    back = [letters.index(c) for c in to]
    return {pid: Tag(tag.labels.reshape(*[size[c] for c in letters]).permute(*back), tag.degree)
            for pid, tag in out.items()}
