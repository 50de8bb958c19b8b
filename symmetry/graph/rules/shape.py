"""Shape operations: they move the labels exactly as they move the numbers (a pooling axis, a reshape into heads
or a flatten is read from the labels, never assumed), and a parameter's entry positions alike."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ..registry import Args, on
from ..state import PRef, Tag
from ..walk import Walker, getitem_rule

aten = torch.ops.aten
Tensor = torch.Tensor


def _op(name):
    return getattr(aten, name, None)


SHAPE = [_op(n) for n in (
    "view", "reshape", "_unsafe_view", "flatten", "unflatten", "permute", "transpose", "swapaxes", "swapdims", "t",
    "unsqueeze", "squeeze", "expand", "repeat", "narrow", "flip", "roll", "movedim", "moveaxis", "select", "slice",
    "index_select", "alias", "numpy_T", "mT", "mH", "adjoint", "split", "split_with_sizes", "chunk", "unbind",
    "tensor_split", "repeat_interleave", "unsafe_split", "unsafe_chunk", "diagonal", "view_as", "reshape_as",
    "expand_as", "unfold")]
IDENTITY = [_op(n) for n in ("clone", "contiguous", "_to_copy", "to", "detach", "lift_fresh_copy", "type_as",
                             "_assert_tensor_metadata", "positive", "alias_copy")]


_VIEWS = {getattr(aten, "view", None), getattr(aten, "_unsafe_view", None)}


def reapply(n: fx.Node, a: Args, t: Tensor):
    """The node's op on another tensor in place of its first argument (the labels, or entry positions)."""
    if getattr(n.target, "overloadpacket", None) in _VIEWS:
        t = t.contiguous()  # labels are often broadcast views: a view needs compatible strides
    values = [a.values[k] for k in list(a.values)[1:]]
    names = list(a.nodes)[1:]
    schema = n.target._schema  # type: ignore[union-attr]
    kw = {arg.name: a.values[arg.name] for arg in schema.arguments[1:] if arg.kwarg_only and arg.name in a.values}
    positional = [v for name, v in zip(names, values) if name not in kw]
    return n.target(t, *positional, **kw)  # type: ignore[operator]


def shape_op(w: Walker, n: fx.Node, a: Args, result, fn=None):
    first = list(a.nodes.values())[0]
    fn = fn or (lambda t: reapply(n, a, t))
    r = w.pref(first)
    if r is not None:
        moved = fn(r.index)
        if isinstance(moved, (tuple, list)):
            return tuple(PRef(r.param, t) for t in moved)
        return PRef(r.param, moved)
    tags = w.tags(first)
    if isinstance(result, (tuple, list)):
        parts: list[dict[int, Tag]] = [{} for _ in result]
        for pid, tag in tags.items():
            for i, t in enumerate(fn(tag.labels.expand(w.value(first).shape))):
                parts[i][pid] = Tag(t, tag.degree)
        return tuple(parts)
    return {pid: Tag(fn(tag.labels.expand(w.value(first).shape)), tag.degree) for pid, tag in tags.items()}


@on(*SHAPE)
def shape_rule(w: Walker, n, a: Args, result):
    return shape_op(w, n, a, result)


@on(*IDENTITY)
def identity_rule(w: Walker, n, a: Args, result):
    first = list(a.nodes.values())[0]
    if isinstance(w.ann.get(first), PRef):
        return w.ann[first]
    return w.tags(first)


@on(aten.cat, _op("concat"), _op("concatenate"), aten.stack)
def cat_rule(w: Walker, n, a: Args, result):
    nodes, values = a["tensors"], a.value("tensors")
    pids = {pid for x in nodes for pid in w.tags(x)}
    for x in nodes:
        r = w.pref(x)
        if r is not None:
            w.note(r.param, f"concatenated with other tensors in {w.module_of(n)}, which the walker does not read")
    out = {}
    for pid in pids:
        degrees = {w.tags(x)[pid].degree for x in nodes if pid in w.tags(x)}
        if len(degrees) > 1:
            w.producers[pid].break_(f"joined at different degrees by {w.where(n)}")
            continue
        parts = [w.tags(x)[pid].labels.expand(v.shape) if pid in w.tags(x) else torch.full(v.shape, -1, dtype=torch.long)
                 for x, v in zip(nodes, values)]
        out[pid] = Tag(n.target(parts, a.value("dim")), degrees.pop())
    return out


on(operator.getitem)(getitem_rule)
