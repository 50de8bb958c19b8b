"""Attention: the query and key projections contracted in a score are paired, Q → GQ, K → G⁻ᵀK (Marcotte et al.
Cor. 3.9); the value projection's units pass through the attention weights (constant over the tokens mixed)."""
from __future__ import annotations

import torch

from ..registry import Args, on
from ..state import Tag
from ..walk import Walker

aten = torch.ops.aten


def pair(w: Walker, n, qid, qtag, qval, kid, ktag, kval, transposed: bool):
    """Scores q·k over the last axis of q and the contracted axis of k: Q → GQ, K → G⁻ᵀK (Cor. 3.9)."""
    Pq, Pk = w.producers[qid], w.producers[kid]
    Lq = qtag.labels.expand(qval.shape)  # (..., T, d)
    Lk = ktag.labels.expand(kval.shape)
    if transposed:
        Lk = Lk.transpose(-1, -2)  # (..., S, d)
    if qtag.degree != 1 or ktag.degree != 1:
        for p in (Pq, Pk):
            p.break_(f"paired in an attention score at degree ≠ 1 ({w.where(n)})")
        return
    if not (bool((Lq == Lq[..., :1, :]).all()) and bool((Lk == Lk[..., :1, :]).all())):
        for p in (Pq, Pk):
            p.break_(f"its units vary over the tokens of an attention score ({w.where(n)})")
        return
    shape = torch.broadcast_shapes(Lq.shape[:-2], Lk.shape[:-2])
    q0 = Lq[..., 0, :].expand(*shape, Lq.shape[-1]).reshape(-1, Lq.shape[-1])
    k0 = Lk[..., 0, :].expand(*shape, Lk.shape[-1]).reshape(-1, Lk.shape[-1])
    pairs = torch.stack([q0.reshape(-1), k0.reshape(-1)], 1).unique(dim=0)
    keys = pairs[:, 1][pairs[:, 1] >= 0]
    shared = torch.bincount(keys).unique() if keys.numel() else torch.ones(1, dtype=torch.long)
    shared = shared[shared > 0]
    # one to one, or grouped-query attention: every key unit read by the same number r of query units
    if bool(((pairs[:, 0] >= 0) != (pairs[:, 1] >= 0)).any()) or pairs[:, 0].unique().numel() != len(pairs) \
            or shared.numel() != 1 or qid == kid:
        for p in (Pq, Pk):
            p.break_(f"its units are not paired one to one in an attention score ({w.where(n)})")
        return
    key = w.site_key()
    Pq.site(key, list(q0))
    Pk.site(key, list(k0))
    w.pairs.append((qid, kid, {int(q): int(k) for q, k in pairs.tolist() if q >= 0}))
    Pq.consumers.append(f"attention scores with {Pk.name}")
    Pk.consumers.append(f"attention scores with {Pq.name}")


@on(aten.scaled_dot_product_attention)
def sdpa_rule(w: Walker, n, a: Args, result):
    q, k, v = a["query"], a["key"], a["value"]
    Q, K, V = w.tags(q), w.tags(k), w.tags(v)
    if a.value("enable_gqa"):
        kval, vval = w.value(k), w.value(v)
        rep = w.value(q).shape[-3] // kval.shape[-3]
        K = {pid: Tag(t.labels.expand(kval.shape).repeat_interleave(rep, -3), t.degree) for pid, t in K.items()}
        V = {pid: Tag(t.labels.expand(vval.shape).repeat_interleave(rep, -3), t.degree) for pid, t in V.items()}
        kval, vval = kval.repeat_interleave(rep, -3), vval.repeat_interleave(rep, -3)
    else:
        kval, vval = w.value(k), w.value(v)
    for pid in set(Q) & set(K) | set(V) & (set(Q) | set(K)):
        w.producers[pid].break_(f"enters two arguments of {w.where(n)}")
    if a.value("attn_mask") is not None and w.tags(a["attn_mask"]):
        w.break_all(w.tags(a["attn_mask"]), f"is the mask of {w.where(n)}")
    if len(Q) == 1 and len(K) == 1:
        (qid, qt), (kid, kt) = next(iter(Q.items())), next(iter(K.items()))
        pair(w, n, qid, qt, w.value(q), kid, kt, kval, transposed=False)
    else:
        w.break_all(Q, f"query of {w.where(n)} without one key projection")
        w.break_all(K, f"key of {w.where(n)} without one query projection")
    out = {}
    for pid, tag in V.items():
        L = tag.labels.expand(vval.shape)
        if not bool((L == L[..., :1, :]).all()):
            w.producers[pid].break_(f"its units vary over the tokens attention mixes ({w.where(n)})")
            continue
        out[pid] = Tag(L[..., :1, :].expand(result.shape), tag.degree)
        w.producers[pid].site(w.site_key(), list(L[..., 0, :].reshape(-1, L.shape[-1])))
    return out
