"""Normalizations: BatchNorm per channel, LayerNorm and RMSNorm for the whole layer absorb a positive rescaling of
the units they normalize at degree 0 (Kunin et al.'s scale law; exact at ε = 0, so their ε is recorded for the
check); their affine (γ, β) is a producer of its own."""
from __future__ import annotations

import math

import torch

from ...groups.blocks import Leg
from ..registry import Args, on
from ..state import Producer, Tag, constant_along_last
from ..walk import Walker

aten = torch.ops.aten


def record_eps(w: Walker, p: Producer, n, eps) -> None:
    value = float(eps) if eps is not None else float(torch.finfo(torch.get_default_dtype()).eps)
    p.eps.append((w.module_of(n), value))
    w.eps_sites.append((n, "eps", value))


@on(aten.batch_norm, getattr(aten, "_native_batch_norm_legit_functional", None))
def batch_norm_rule(w: Walker, n, a: Args, result):
    x = a["input"]
    xval = w.value(x)
    name = w.module_of(n)
    batch_stats = bool(a.value("training")) or a.value("running_mean") is None
    for pid, tag in w.tags(x).items():
        p = w.producers[pid]
        if not batch_stats:
            p.break_(f"enters {name} in eval mode, an affine map with fixed running statistics")
            continue
        L = tag.labels.expand(xval.shape)
        per_channel = L.transpose(0, 1).reshape(L.shape[1], -1)
        if not constant_along_last(per_channel) or bool((per_channel < 0).any()):
            p.break_(f"its units do not each fill one channel of {name}")
            continue
        p.restrict(positive=True)  # each channel normalized on its own: one positive scale per channel
        p.invariant.append(f"{name} (BatchNorm, per channel)")
        record_eps(w, p, n, a.value("eps"))
    wt, b = w.param_ref(a["weight"], name), w.param_ref(a["bias"], name)
    if wt is None:
        return {}
    legs = [Leg(wt.param, wt.index.reshape(-1, 1), 1.0)] + ([Leg(b.param, b.index.reshape(-1, 1), 1.0)] if b else [])
    owner = wt.param.rpartition(".")[0] or wt.param
    return w.new_producer(f"{owner} (affine)", wt.index.numel(), legs, f"{name} (BatchNorm's γ, β)", result,
                          1 if result.ndim > 1 else 0, kind="scaling", translation=())


@on(aten.layer_norm, aten.rms_norm)
def layer_norm_rule(w: Walker, n, a: Args, result):
    kind = "rms_norm" if "rms" in getattr(n.target, "__name__", "") else "layer_norm"
    x = a["input"]
    xval = w.value(x)
    shape = tuple(a.value("normalized_shape"))
    name = w.module_of(n)
    label = "LayerNorm" if kind == "layer_norm" else "RMSNorm"
    for pid, tag in w.tags(x).items():
        p = w.producers[pid]
        rows = tag.labels.expand(xval.shape).reshape(-1, math.prod(shape))
        if bool((rows < 0).any()):
            p.break_(f"normalized by {name} together with entries that do not carry its units")
            continue
        p.restrict(positive=True)
        for row in rows.unique(dim=0).tolist():
            for u in row[1:]:
                p.tie(row[0], u)
        p.invariant.append(f"{name} ({label}: the whole layer scales as one)")
        record_eps(w, p, n, a.value("eps") if a.value("eps") is not None or kind == "rms_norm" else 1e-5)
    wt = w.param_ref(a["weight"], name)
    b = w.param_ref(a["bias"], name) if "bias" in a else None
    if wt is None:
        return {}
    units = wt.index.numel()
    legs = [Leg(wt.param, wt.index.reshape(-1, 1), 1.0)] + ([Leg(b.param, b.index.reshape(-1, 1), 1.0)] if b else [])
    owner = wt.param.rpartition(".")[0] or wt.param
    p = Producer(len(w.producers), w.unique_name(f"{owner} (affine)"), units, legs,
                 f"{name} ({kind}'s γ" + (", β)" if b else ")"), kind="scaling")
    w.producers.append(p)
    return {p.pid: Tag(torch.arange(units).reshape(shape).expand(result.shape))}
