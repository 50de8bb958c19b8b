"""Pooling over positions: a window that stays within one unit's entries keeps its units (max pooling a positive
rescaling only); one that runs across units breaks them. The windows are read by pooling the labels with the
op's own geometry (max and min of the labels agree iff no window mixes units)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Args, on
from ..state import Tag
from ..walk import Walker

aten = torch.ops.aten


def _ops(prefix):
    return [getattr(aten, f"{prefix}{d}d", None) for d in (1, 2, 3)]


@on(*_ops("max_pool"), *_ops("avg_pool"), *_ops("adaptive_avg_pool"), *_ops("adaptive_max_pool"),
    *[getattr(aten, f"max_pool{d}d_with_indices", None) for d in (1, 2, 3)], getattr(aten, "_adaptive_avg_pool2d", None))
def pool_rule(w: Walker, n, a: Args, result):
    name = getattr(n.target, "__name__", "").split(".")[0]
    dims = int(name.split("pool")[1][0])
    x = list(a.nodes.values())[0]
    if name.startswith(("adaptive", "_adaptive")):
        size = a.value("output_size")
        fn = getattr(F, f"adaptive_max_pool{dims}d")
        window = lambda t: fn(t, size)  # noqa: E731
    else:
        kernel = a.value("kernel_size")
        stride = a.value("stride") or kernel
        padding = a.value("padding") or 0
        dilation = a.value("dilation") or 1
        ceil = bool(a.value("ceil_mode"))
        fn = getattr(F, f"max_pool{dims}d")
        window = lambda t: fn(t, kernel, stride, padding, dilation, ceil_mode=ceil)  # noqa: E731
    is_max = "max" in name
    out = {}
    first = result[0] if isinstance(result, (tuple, list)) else result
    for pid, tag in w.tags(x).items():
        p = w.producers[pid]
        L = tag.labels.expand(w.value(x).shape).to(torch.float64)
        if L.ndim == dims + 1:  # unbatched input
            L = L[None]
        hi, lo = window(L), -window(-L)
        if not bool((hi == lo).all()):
            p.break_(f"pooled across different units ({w.where(n)}): the pooling window runs over the axis that "
                     "carries them, not over positions only")
            continue
        if is_max:
            p.restrict(positive=True)
        out[pid] = Tag(hi.long().reshape(first.shape), tag.degree)
    return (out, {}) if isinstance(result, (tuple, list)) else out
