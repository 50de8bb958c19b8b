"""From the walker's producers to blocks ([`symmetry.groups.blocks`][]): attention scores join the key
projection's rows to the query's block (Marcotte et al. Cor. 3.9; grouped-query attention: the GL of each key
group), a producer's units become a rescaling (its tied classes, RoPE's rotation candidates) or GL blocks (one per
class of units read alike), and absorbed shifts become translations (Prop. 3.11)."""
from __future__ import annotations

import torch

from ..groups.blocks import (
    Block,
    Leg,
    LinearBlock,
    RotationBlock,
    ScalingBlock,
    TranslationBlock,
)
from . import SymmetryCheckError
from .state import Producer
from .walk import Walker

Tensor = torch.Tensor

__all__ = ["merge_pairs", "blocks_of", "translations_of"]


def _rows_for(leg: Leg, units: Tensor, n: int) -> Tensor | None:
    """The leg's rows for ``units`` in that order, or None if the leg lacks some of them."""
    have = leg.rows(n).tolist()
    where = {u: i for i, u in enumerate(have)}
    if not all(int(u) in where for u in units):
        return None
    return torch.tensor([where[int(u)] for u in units], dtype=torch.long)


def _merge_pairs(walker: Walker) -> set[int]:
    """Attention scores: the key projection's rows join the query projection's block with exponent −1."""
    merged: set[int] = set()
    count: dict[int, int] = {}
    for qid, kid, _ in walker.pairs:
        count[qid] = count.get(qid, 0) + 1
        count[kid] = count.get(kid, 0) + 1
    for qid, kid, mapping in walker.pairs:
        Pq, Pk = walker.producers[qid], walker.producers[kid]
        if count[qid] > 1 or count[kid] > 1 or Pk.outgoing or Pq.outgoing:
            for p in (Pq, Pk):
                p.break_("its attention score pairs it with more than one projection, or it is also read elsewhere")
            continue
        if Pk.broken or Pq.broken:
            why = Pk.broken or Pq.broken
            for p in (Pq, Pk):
                p.break_(f"paired in attention with a projection whose symmetry is broken ({why})")
            continue
        if len(set(mapping.values())) < len(mapping):  # grouped-query attention: the GL of each key group
            _merge_grouped(Pq, Pk, mapping)
            merged.add(qid)
            continue
        q_units = torch.tensor(sorted(mapping), dtype=torch.long)
        k_units = torch.tensor([mapping[int(u)] for u in q_units], dtype=torch.long)
        for leg in Pk.incoming:
            rows = _rows_for(leg, k_units, Pk.units)
            if rows is None:
                Pq.break_("its attention key has units the score does not pair")
                break
            Pq.outgoing.append(Leg(leg.param, leg.index[rows], -leg.exponent, units=q_units))
        if Pk.kind == "scaling":
            Pq.restrict(Pk.positive)
        inverse = {k: q for q, k in mapping.items()}
        for k in range(Pk.units):
            root = Pk.find(k)
            if root != k and k in inverse and root in inverse:
                Pq.tie(inverse[k], inverse[root])
        for q, k in mapping.items():
            Pq.signature[q] += Pk.signature[k]
        Pq.eps += Pk.eps
        Pq.paired_with = kid
        Pq.name = f"{Pq.name}–{Pk.name}"
        Pq.where = f"attention scores of {Pq.where} with {Pk.where}"
        merged.add(kid)
    return merged


def _merge_grouped(Pq: Producer, Pk: Producer, mapping: dict[int, int]) -> None:
    """Grouped-query attention: r query units read each key unit. K → GK and every query head of the group
    Q_h → G⁻ᵀQ_h with one G (the scores Q_hᵀK are kept): the query rows of a key unit, side by side, join the
    key projection's block as outgoing rows (exponent −1)."""
    readers: dict[int, list[int]] = {}
    for q, k in sorted(mapping.items()):
        readers.setdefault(k, []).append(q)
    k_units = torch.tensor(sorted(readers), dtype=torch.long)
    for leg in Pq.incoming:
        parts = []
        for r in range(len(readers[int(k_units[0])])):
            rows = _rows_for(leg, torch.tensor([readers[int(k)][r] for k in k_units]), Pq.units)
            if rows is None:
                Pk.break_("its grouped queries have units the score does not pair")
                return
            parts.append(leg.index[rows])
        Pk.outgoing.append(Leg(leg.param, torch.cat(parts, 1), -leg.exponent, units=k_units))
    if Pq.kind == "scaling":
        Pk.restrict(Pq.positive)
    for q in mapping:
        root = Pq.find(q)
        if root in mapping:
            Pk.tie(mapping[q], mapping[root])
    for q, k in mapping.items():
        Pk.signature[k] += Pq.signature[q]
    Pk.eps += Pq.eps
    Pk.paired_with = Pq.pid
    Pk.name = f"{Pk.name}–{Pq.name}"
    Pk.where = f"attention scores of {Pk.where} with the grouped queries of {Pq.where}"


def _blocks_of(p: Producer) -> list[Block]:
    legs = p.incoming + p.outgoing
    if p.kind == "GL" and any(abs(leg.exponent) != 1 for leg in legs):
        p.restrict()
    where = p.where + (f" → {', '.join(dict.fromkeys(p.consumers))}" if p.consumers else "") + \
        (f"; invariant under {', '.join(p.invariant)}" if p.invariant else "")
    eps = _eps_text(p)
    if p.kind == "scaling":
        roots = [p.find(u) for u in range(p.units)]
        ids = {r: i for i, r in enumerate(dict.fromkeys(roots))}
        classes = torch.tensor([ids[r] for r in roots], dtype=torch.long)
        scaling: list[Block] = [ScalingBlock(p.name, p.units, tuple(legs), where, eps, classes=classes)]
        rotation = _rotation_of(p, classes, legs, where, eps)
        return scaling + ([rotation] if rotation is not None else [])
    groups: dict[tuple, list[int]] = {}
    for u in range(p.units):
        groups.setdefault(tuple(sorted(p.signature[u])), []).append(u)
    blocks: list[Block] = []
    for i, members in enumerate(groups.values()):
        chosen_units = torch.tensor(members, dtype=torch.long)
        chosen = []
        for leg in legs:
            rows = _rows_for(leg, chosen_units, p.units)
            if rows is None:
                if leg.units is not None and not set(leg.units.tolist()) & set(members):
                    continue  # this leg belongs to other blocks only
                raise SymmetryCheckError(f"{p.name}: a leg of {leg.param!r} covers part of a GL block")
            chosen.append(Leg(leg.param, leg.index[rows], leg.exponent))
        name = p.name if len(groups) == 1 else f"{p.name}[{i}]"
        blocks.append(LinearBlock(name, len(members), tuple(chosen), where, eps))
    return blocks


def _rotation_of(p: Producer, classes: Tensor, legs: list[Leg], where: str, eps) -> Block | None:
    """RoPE: in a query–key block, classes of two units that were summed with each other (q cos + rot(q) sin)
    also rotate together (a candidate, kept only if the check confirms it)."""
    if p.paired_with is None or not p.mixed or any(abs(leg.exponent) != 1 for leg in legs):
        return None
    members: dict[int, list[int]] = {}
    for u, c in enumerate(classes.tolist()):
        members.setdefault(c, []).append(u)
    pairs = [tuple(m) for m in members.values() if len(m) == 2 and (tuple(m) in p.mixed or tuple(m[::-1]) in p.mixed)]
    if not pairs:
        return None
    return RotationBlock(f"{p.name}:rotation", p.units, tuple(legs), f"{where}; rotations of RoPE's pairs", eps,
                         pairs=torch.tensor(pairs, dtype=torch.long))


def _eps_text(p: Producer) -> str | None:
    if not p.eps:
        return None
    return "exact at ε = 0; " + ", ".join(f"ε = {e:g} at {w}" for w, e in dict.fromkeys(p.eps))


def _translations_of(p: Producer) -> list[Block]:
    out: list[Block] = []
    for mode, valid in p.translation.items():
        if not valid or not p.translation_absorbed.get(mode):
            continue
        where = f"{p.where}, absorbed by {', '.join(dict.fromkeys(p.translation_absorbed[mode]))}"
        if mode == "row":
            legs = tuple(Leg(leg.param, leg.index, 1.0) for leg in p.incoming if leg.units is None)
            out.append(TranslationBlock(f"{p.name}:translation", p.units, legs, where))
        else:
            bias = [leg for leg in p.incoming if leg.index.shape[1] == 1 and leg.units is None][-1:]
            if bias:
                out.append(TranslationBlock(f"{p.name}:bias", 1, (Leg(bias[0].param, bias[0].index.reshape(1, -1), 1.0),),
                                            where))
    return out


merge_pairs, blocks_of, translations_of = _merge_pairs, _blocks_of, _translations_of
