"""Translations W → W + 1vᵀ (and b → b + c1): the same shift on every unit of a sample ("row"), or b → b + t:
a constant per unit ("bias"). Followed through shape operations and sums with tensors that do not depend on the
producer; absorbed by softmax/log_softmax/LayerNorm over the units or the subtraction of their mean (row), by
BatchNorm in training (bias), or by a cross-entropy loss on the output (row); anything else ends them."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .registry import rule_for
from .rules.shape import IDENTITY, SHAPE, reapply
from .state import Tensor, is_number, is_permutation_rows
from .walk import Walker, op_name

aten = torch.ops.aten
_SHAPE = {op for op in SHAPE if op is not None}
_IDENTITY = {op for op in IDENTITY if op is not None}


def follow_shifts(w: Walker, n: fx.Node, result) -> dict:
    incoming: dict[tuple[tuple[int, str], fx.Node], Tensor] = {}
    for a in w.nodes_in((n.args, n.kwargs)):
        for key, L in (w.shift.get(a) or {}).items():
            incoming[(key, a)] = L
    out: dict[tuple[int, str], Tensor] = {}
    for pid in w.created.get(n, []):
        p = w.producers[pid]
        tag = w.tags(n).get(pid)
        if tag is not None:
            for mode in p.translation:
                out[(pid, mode)] = tag.labels
    if not incoming:
        return out
    for ((pid, mode), a), L in incoming.items():
        p = w.producers[pid]
        kept = shift_rule(w, n, result, a, L, mode, p)
        if kept is None:
            p.translation[mode] = False
        elif kept is not True:
            out[(pid, mode)] = kept
    return out


def _packet(n: fx.Node):
    return getattr(n.target, "overloadpacket", n.target)


def _absorbed(p, mode: str, why: str) -> bool:
    p.translation_absorbed.setdefault(mode, []).append(why)
    return True


def shift_rule(w: Walker, n: fx.Node, result, a: fx.Node, L: Tensor, mode: str, p):
    """The shift's labels after node n, True if absorbed, None if it ends here."""
    if n.op == "output":
        if w.loss == "cross_entropy" and mode == "row" and isinstance(result, (Tensor, tuple, list)):
            flat = list(result) if isinstance(result, (tuple, list)) else [result]
            if len(flat) == 1 and flat[0].ndim >= 2 and is_permutation_rows(L):
                return _absorbed(p, mode, "the cross-entropy loss")
        return None
    if n.op != "call_function":
        return None
    custom = rule_for(n.target, shift=True)
    if custom is not None:
        return custom(w, n, w.args(n), result, a, L, mode, p)
    op = _packet(n)
    args = w.args(n)
    first = list(args.nodes.values())[0] if args.nodes else None
    if op in _IDENTITY:
        return L
    if op in (aten.dropout, getattr(aten, "native_dropout", None)):
        return L if not (args.value("train") and float(args.value("p") or 0) > 0) else None
    if op is operator.getitem:
        return None
    if op in _SHAPE:
        return reapply(n, args, L.expand(w.value(a).shape)) if first is a else None
    name = op_name(n)
    if name in ("sub",) and mode == "row" and _centring(n):
        return _absorbed(p, mode, f"the subtraction of its mean ({w.where(n)})")
    if name == "mean" and mode == "row" and n.users and all(_centring(u) and u.args[1] is n for u in n.users) \
            and L.ndim and is_permutation_rows(L):
        return L.amin(-1, keepdim=True)  # the mean of a row-shifted x is shifted alike; the sub cancels both
    if name in ("add", "sub") and not any(p.pid in _depends(w, o) for o in w.nodes_in(n.args) if o is not a):
        return L.expand(result.shape)
    if name in ("mul", "div") and any(is_number(x) for x in n.args):
        return L
    if name in ("softmax", "_softmax", "log_softmax", "_log_softmax") and mode == "row" and a is first \
            and bool((L >= 0).all()):
        dim = args.value("dim") % L.ndim
        along = L.movedim(dim, -1)
        if p.units == 1 or not bool((along == along[..., :1]).all()):  # softmax over the units' axis
            return _absorbed(p, mode, f"softmax ({w.where(n)})")
        return None
    if name == "layer_norm" and mode == "row" and a is first and bool((L >= 0).all()):
        return _absorbed(p, mode, f"LayerNorm's centring ({w.where(n)})")
    if name in ("batch_norm",) and mode == "bias" and a is first:
        training = bool(args.value("training")) or args.value("running_mean") is None
        per_channel = L.transpose(0, 1).reshape(L.shape[1], -1) if L.ndim > 1 else L[:, None]
        if training and bool((per_channel == per_channel[:, :1]).all()) and bool((per_channel >= 0).all()):
            return _absorbed(p, mode, f"BatchNorm's mean ({w.where(n)})")
    return None


def _centring(n: fx.Node) -> bool:
    """n is x − x.mean(-1, keepdim=True) (a hand-written LayerNorm's centring over the last axis)."""
    if op_name(n) != "sub" or len(n.args) < 2 or not isinstance(n.args[0], fx.Node) or not isinstance(n.args[1], fx.Node):
        return False
    x, m = n.args[0], n.args[1]
    if op_name(m) != "mean" or not m.args or m.args[0] is not x:
        return False
    dim = m.kwargs.get("dim", m.args[1] if len(m.args) > 1 else None)
    dim = dim[0] if isinstance(dim, (list, tuple)) and len(dim) == 1 else dim
    return bool(dim == -1) and bool(m.kwargs.get("keepdim", m.args[2] if len(m.args) > 2 else False))


def _depends(w: Walker, node: fx.Node) -> set[int]:
    deps_of: dict[fx.Node, set[int]] = w.__dict__.setdefault("_deps", {})
    if node in deps_of:
        return deps_of[node]
    deps: set[int] = set()
    tags = w.ann.get(node)
    if isinstance(tags, dict):
        deps |= set(tags)
    deps |= {key[0] for key in (w.shift.get(node) or {})}
    for a in w.nodes_in((node.args, node.kwargs)):
        deps |= _depends(w, a)
    deps_of[node] = deps
    return deps
