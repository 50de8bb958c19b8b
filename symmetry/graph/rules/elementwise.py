"""Elementwise operations and reductions. Positively homogeneous maps (ReLU, LeakyReLU, |x|, max over positions)
keep a positive rescaling with degrees multiplying; a product with a tensor the units do not reach keeps a
rescaling, not GL; sums mixing two units tie them to one scale; reductions over units tie them (hand-written
norms), degrees add in products. A non-homogeneous activation (GELU, SiLU, tanh) breaks the symmetry (Tran et al.
Thm 4.1); a residual sum with another tensor too (Marcotte et al. Thm 4.7)."""
from __future__ import annotations

import torch
import torch.fx as fx

from ..registry import Args, on
from ..state import Producer, Tag, is_number
from ..walk import Walker

aten = torch.ops.aten
Tensor = torch.Tensor


def _op(name):
    return getattr(aten, name, None)


def _x(a: Args):
    return list(a.nodes.values())[0]


def homogeneous(w: Walker, x, degree: float, positive: bool = True):
    out = {}
    for pid, tag in w.tags(x).items():
        w.producers[pid].restrict(positive)
        out[pid] = Tag(tag.labels, tag.degree * degree)
    return out


@on(aten.relu, aten.leaky_relu, aten.abs)
def relu_rule(w, n, a, result):
    if "negative_slope" in a and a.value("negative_slope") == 1:
        return w.tags(_x(a))
    return homogeneous(w, _x(a), 1.0)


@on(aten.neg)
def neg_rule(w, n, a, result):
    return w.tags(_x(a))


NOT_HOMOGENEOUS = [_op(n) for n in (
    "gelu", "silu", "tanh", "sigmoid", "softplus", "elu", "selu", "celu", "mish", "hardswish", "hardsigmoid",
    "hardtanh", "relu6", "exp", "log", "sin", "cos", "erf", "softmax", "_softmax", "log_softmax", "_log_softmax",
    "log_sigmoid", "glu", "log1p", "expm1", "softmin", "prelu", "_prelu_kernel", "rrelu", "logit", "exp2", "tan",
    "atan", "sign", "floor", "ceil", "round", "clamp", "clamp_min", "clamp_max", "clip")]


@on(*NOT_HOMOGENEOUS)
def not_homogeneous_rule(w: Walker, n, a, result):
    for x in w.nodes_in((n.args, n.kwargs)):
        w.break_all(w.tags(x), f"passes through {w.where(n)}, which is not positively homogeneous: no rescaling or "
                               "GL commutes with it (Tran et al. Thm 4.1)")
    return {} if isinstance(result, Tensor) else tuple({} for _ in result)


POWERS = {"square": 2.0, "sqrt": 0.5, "rsqrt": -0.5, "reciprocal": -1.0}


@on(aten.pow, *[_op(k) for k in POWERS])
def power_rule(w: Walker, n, a, result):
    name = getattr(n.target, "__name__", "").split(".")[0]
    exponent = POWERS.get(name, a.value("exponent"))
    if not is_number(exponent) or "self" in a and not isinstance(a["self"], fx.Node):
        w.unknown(n, f"{w.where(n)} with a tensor exponent")
        return {}
    return homogeneous(w, _x(a), float(exponent), positive=not float(exponent).is_integer())


@on(aten.dropout, _op("feature_dropout"), _op("alpha_dropout"), _op("native_dropout"))
def dropout_rule(w: Walker, n, a, result):
    """Dropout in the mode the model is in: a random mask per entry (a product with a tensor no group acts on)
    when active, the identity otherwise."""
    active = bool(a.value("train")) and float(a.value("p") or 0) > 0
    tags = w.tags(_x(a))
    if active:
        for pid in tags:
            w.producers[pid].restrict()
    return (tags, {}) if isinstance(result, tuple) else tags


def scalar_value(w: Walker, x):
    """A constant scalar (a number, or a 0-d tensor computed from constants), else None."""
    v = w.value(x)
    if is_number(v):
        return float(v)
    if isinstance(v, Tensor) and v.ndim == 0 and w.is_const(x):
        return float(v)
    return None


@on(aten.add, aten.sub, _op("rsub"))
def add_rule(w: Walker, n, a: Args, result):
    x, y = a["self"], a["other"]
    alpha = a.value("alpha")
    if alpha is not None and alpha != 1 and w.tags(y):
        w.unknown(n, f"{w.where(n)} with alpha = {alpha}")
        return {}
    for side, other in ((x, y), (y, x)):
        if not isinstance(side, fx.Node) or not w.tags(side):
            continue
        value = scalar_value(w, other)
        if value is not None:
            for pid, tag in w.tags(side).items():
                if value == 0:
                    continue
                if 0 < value <= 1e-2 and tag.degree > 0 and tag.degree % 2 == 0:
                    # a normalization's ε under a root: exact only at ε = 0 (checked there, measured here)
                    w.producers[pid].eps.append((w.where(n), value))
                    w.eps_sites.append((n, "other" if side is x else "self", value))
                else:
                    w.producers[pid].break_(f"a constant {value:g} is added to it ({w.where(n)}): no rescaling "
                                            "passes an affine map")
            return w.tags(side)
    A, B = w.tags(x), w.tags(y)
    rx, ry = w.pref(x), w.pref(y)
    if rx is not None or ry is not None:
        data, ref = (x, ry) if ry is not None else (y, rx)
        assert ref is not None
        tags = w.tags(data)
        if not tags:
            w.note(ref.param, f"added to a tensor no group acts on ({w.where(n)})")
            return {}
        w.use(ref, w.where(n))
        expanded = ref.index.expand(result.shape)
        out = {}
        for pid, tag in tags.items():
            if absorb_bias(w, pid, tag, ref, expanded, n):
                out[pid] = Tag(tag.labels.expand(result.shape), tag.degree)
        return out
    out = {}
    for pid in set(A) | set(B):
        p = w.producers[pid]
        if pid in A and pid in B:
            ta, tb = A[pid], B[pid]
            la, lb = ta.labels.expand(result.shape), tb.labels.expand(result.shape)
            if ta.degree != tb.degree or bool(((la >= 0) != (lb >= 0)).any()):
                p.break_(f"added to a different function of its units ({w.where(n)})")
                continue
            differ = (la != lb) & (la >= 0)
            if bool(differ.any()):
                p.restrict()
                p.tie_where(la, lb, differ)
                pairs = torch.stack([la[differ], lb[differ]], 1).unique(dim=0)
                p.mixed.update((int(u), int(v)) for u, v in pairs.tolist())
            out[pid] = Tag(la, ta.degree)
        else:
            p.break_(f"added to a tensor its units do not reach ({w.where(n)}): a residual or skip connection; no "
                     "law crosses it (Marcotte et al. Thm 4.7)")
    return out


def absorb_bias(w: Walker, pid: int, tag: Tag, ref, expanded: Tensor, n) -> bool:
    """``y + b`` with a parameter b: b's entries join the producer's incoming weights (exponent = degree)."""
    from ...groups.blocks import Leg

    p = w.producers[pid]
    labels = tag.labels.expand(expanded.shape)
    pairs = torch.stack([expanded.reshape(-1), labels.reshape(-1)], 1).unique(dim=0)
    entries, units = pairs[:, 0], pairs[:, 1]
    if bool((units < 0).any()) or entries.unique().numel() != entries.numel():
        p.break_(f"a parameter {ref.param!r} is added across its units unevenly ({w.where(n)})")
        w.note(ref.param, f"added across the units of {p.name} unevenly ({w.where(n)})")
        return False
    order = torch.argsort(units)
    units, entries = units[order], entries[order]
    counts = torch.bincount(units, minlength=p.units)
    present = counts > 0
    if counts[present].unique().numel() != 1:
        p.break_(f"a parameter {ref.param!r} is added to its units a different number of times ({w.where(n)})")
        return False
    K = int(counts[present][0])
    p.incoming.append(Leg(ref.param, entries.reshape(-1, K), tag.degree, units=units.reshape(-1, K)[:, 0]))
    if tag.degree != 1 or p.kind != "GL":
        p.restrict()
    return True


def restrict_each(w: Walker, tags: dict[int, Tag]) -> dict[int, Tag]:
    for pid in tags:
        w.producers[pid].restrict()
    return dict(tags)


@on(aten.mul, aten.div, _op("true_divide"))
def mul_rule(w: Walker, n, a: Args, result):
    from ...groups.blocks import Leg

    divide = "div" in getattr(n.target, "__name__", "")
    x, y = a["self"], a["other"]
    mode = a.value("rounding_mode")
    if divide and mode is not None:
        w.unknown(n, f"{w.where(n)} with rounding")
        return {}
    for side, other in ((x, y), (y, x)):
        if scalar_value(w, other) is not None and not w.tags(other) and w.pref(other) is None:
            if divide and side is y:
                w.break_all(w.tags(side), f"divides a constant ({w.where(n)})")
                return {}
            return w.tags(side) if isinstance(side, fx.Node) else {}
    A, B = w.tags(x), w.tags(y)
    rx, ry = w.pref(x), w.pref(y)
    if rx is not None and ry is not None:
        w.note(rx.param, f"multiplied by another parameter ({w.where(n)})")
        w.note(ry.param, f"multiplied by another parameter ({w.where(n)})")
        return {}
    ref, data = (ry, x) if ry is not None else (rx, y) if rx is not None else (None, None)
    out: dict[int, Tag] = {}
    if ref is not None:
        if divide and ref is ry:
            w.note(ref.param, f"divides a tensor ({w.where(n)}), which the walker does not read")
            return restrict_each(w, w.tags(data))
        if divide:
            w.note(ref.param, f"divided by a tensor ({w.where(n)})")
            w.break_all(w.tags(data), f"divides a parameter ({w.where(n)})")
            return {}
        w.use(ref, w.where(n))
        out.update(restrict_each(w, w.tags(data)))
        # γ ⊙ x: a producer whose units are γ's entries (the affine of a hand-written norm)
        units = int(ref.index.numel())
        entries = ref.index.reshape(-1)
        index = torch.arange(units).reshape(ref.index.shape).expand(result.shape)
        p = Producer(len(w.producers), w.unique_name(ref.param), units, [Leg(ref.param, entries[:, None], 1.0)],
                     f"{ref.param} (elementwise product, {w.where(n)})", kind="scaling")
        w.producers.append(p)
        out[p.pid] = Tag(index.clone())
        return out
    for pid in set(A) | set(B):
        p = w.producers[pid]
        if pid in A and pid in B:
            ta, tb = A[pid], B[pid]
            la, lb = ta.labels.expand(result.shape), tb.labels.expand(result.shape)
            if bool(((la >= 0) != (lb >= 0)).any()):
                p.break_(f"multiplied by a function of its units on other entries ({w.where(n)})")
                continue
            p.restrict()
            p.tie_where(la, lb, la >= 0)
            degree = ta.degree - tb.degree if divide else ta.degree + tb.degree
            if degree != 0:
                out[pid] = Tag(la, degree)
            else:
                p.invariant.append(f"normalized by a function of itself ({w.where(n)})")
        elif pid in A:
            p.restrict()
            out[pid] = Tag(A[pid].labels.expand(result.shape), A[pid].degree)
        else:
            if divide:
                p.break_(f"divides a tensor ({w.where(n)})")
                continue
            p.restrict()
            out[pid] = Tag(B[pid].labels.expand(result.shape), B[pid].degree)
    return out


REDUCE = {"sum": 1.0, "mean": 1.0, "var": 2.0, "std": 1.0, "norm": 1.0, "linalg_vector_norm": 1.0, "amax": 1.0}


@on(*[_op(k) for k in REDUCE])
def reduce_rule(w: Walker, n, a: Args, result):
    name = getattr(n.target, "__name__", "").split(".")[0]
    x = _x(a)
    xv = w.value(x)
    dim = a.value("dim")
    if dim is None and name == "norm" and "p" in a:
        dim = a.value("dim")
    dims = tuple(range(xv.ndim)) if dim is None or (isinstance(dim, (list, tuple)) and not dim) else \
        (dim,) if isinstance(dim, int) else tuple(dim)
    dims = tuple(d % max(xv.ndim, 1) for d in dims)
    keep = [d for d in range(xv.ndim) if d not in dims]
    out = {}
    for pid, tag in w.tags(x).items():
        p = w.producers[pid]
        L = tag.labels.expand(xv.shape).permute(*keep, *dims).reshape(*[xv.shape[d] for d in keep], -1)
        rows = L.reshape(-1, L.shape[-1])
        labelled = rows >= 0
        if bool((labelled.any(1) & ~labelled.all(1)).any()):
            p.break_(f"summed with entries that do not carry its units ({w.where(n)})")
            continue
        p.restrict(positive=name in ("var", "std", "norm", "linalg_vector_norm", "amax"))
        for row in rows[labelled.all(1)].unique(dim=0).tolist():
            for u in row[1:]:
                p.tie(row[0], u)
        out[pid] = Tag(rows[:, 0].reshape(result.shape), tag.degree * REDUCE[name])
    return out


@on(aten.masked_fill, aten.where, _op("triu"), _op("tril"))
def masking_rule(w: Walker, n, a: Args, result):
    """A mask applied to scores no group reaches (causal masks): nothing to follow; on tagged values: unknown."""
    if not any(w.tags(x) for x in w.nodes_in((n.args, n.kwargs))):
        return {}
    w.unknown(n)
    return {}
