"""A user's ``nn.Module``: the symmetries found in its computation graph, checked, and their conserved quantities.

[`module_symmetries`][] records the model with torch.export ([`symmetry.graph`][]), reads the blocks of
[`symmetry.groups.blocks`][] off the graph and checks each one on the example input before it returns them: a
random element must keep the output (the log-softmax of the output for the loss-level translation of a
``loss="cross_entropy"`` head) to a relative 1e-9 in float64 (1e-4 in float32). The result,
[`ModuleSymmetries`][], is the product of the blocks and follows the one protocol
([`symmetry.groups.Symmetry`][]) that ``teleport``, ``ConservationMonitor`` and the law count take.

Normalization's ε. BatchNorm's, LayerNorm's and RMSNorm's scale symmetries are exact only at ε = 0, which torch
refuses in training. They are checked with every ε of the model set to 1e-300 (exact to round-off wherever a
normalized variance is above ~1e-290), then measured at the model's own ε: ``describe()`` marks them approximate
and prints that measured relative change of the output (first order in ε/σ² for a variance σ²: rescaling a
channel by g moves x̂ = x/√(σ² + ε) by about ε|1 − g⁻²|/(2σ²)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from .activations import ActivationLike, get_activation
from .graph import Producer, Reader, SymmetryCheckError, Walker, trace, unwrap
from .groups import NotSupportedError
from .validation import cast_exactly
from .groups.blocks import Block, Leg, LinearBlock, RotationBlock, ScalingBlock, TranslationBlock

Tensor = torch.Tensor

__all__ = ["Elementwise", "ModuleSymmetries", "module_symmetries", "NotSupportedError", "SymmetryCheckError"]

LOSSES = (None, "mse", "cross_entropy")
#: relative change of the output a symmetry may cause on the example input, by dtype
#: (half precision rounds the action itself: a relative 1e-3 in float16, 8e-3 in bfloat16 per operation)
CHECK_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}
_TINY_EPS = 1e-300


class Elementwise(nn.Module):
    """An activation of the table ([`symmetry.activations`][]) as a layer, e.g. ``Elementwise("repu", power=2)``."""

    def __init__(self, activation: ActivationLike, **options):
        super().__init__()
        self.activation = get_activation(activation, **options)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation.sigma(x)

    def extra_repr(self) -> str:
        return self.activation.name


# --------------------------------------------------------------------------------------------------------------
# the product of the blocks
# --------------------------------------------------------------------------------------------------------------
@dataclass
class ModuleSymmetries:
    """The symmetry blocks of a module, their product group, its algebra and its conserved quantities.

    Elements and algebra coordinates are dicts keyed by block name: (classes,) positive scales for a rescaling,
    (C, C) invertible matrices for GL, (K,) shifts for a translation.
    """

    blocks: tuple[Block, ...]
    parameter_names: tuple[str, ...]
    dtype: torch.dtype
    device: torch.device
    model_name: str = "model"
    coverage: dict[str, list[str]] = field(default_factory=dict)  # parameter → block names, or ["none: why"]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # parameter → its shape in the model read
    tolerance: float | None = None  # the relative change of the output the check allowed (by dtype)
    training: bool | None = None  # the mode the model was read in (dropout, BatchNorm's statistics)
    unchecked: str | None = None  # why the blocks could not be checked (an output identically 0)

    # --- names and summary ----------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return [b.name for b in self.blocks]

    @property
    def groups(self) -> tuple[Block, ...]:
        return self.blocks

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no block {name!r}; blocks: {self.keys()}")

    def dimension(self) -> int:
        """Dimension of the group: classes per rescaling, C² per GL, K per translation."""
        return sum(math.prod(b.element_shape()) for b in self.blocks)

    def law_count(self) -> int:
        """Independent quantities the blocks report (rescaling: one per class; GL: C(C+1)/2; translation: K)."""
        return sum(b.laws() for b in self.blocks)

    def describe(self) -> str:
        lines = [f"{self.model_name}: {len(self.blocks)} symmetry block(s), group dimension {self.dimension()}, "
                 f"{self.law_count()} conserved quantities"]
        if self.unchecked is not None:
            lines.append(f"  NOT CHECKED: {self.unchecked}")
        if self.tolerance is not None:
            lines.append(f"  each block checked on the example input: output kept to a relative {self.tolerance:g} "
                         f"(the tolerance for {str(self.dtype).replace('torch.', '')})")
        if self.training is not None:
            lines.append(f"  read in {'train' if self.training else 'eval'} mode: the blocks are symmetries of the model "
                         "in that mode (BatchNorm's batch statistics or running ones, dropout on or off)")
        for b in self.blocks:
            lines.append(f"  [{b.name!r}] {_group_text(b)}; {_quantity_text(b)}")
            lines.append(f"      {b.where}" + (f"; APPROXIMATE: {b.approximate}" if b.approximate else ""))
        lines.append("  parameters:")
        for name in self.parameter_names:
            lines.append(f"    {name}: {', '.join(self.coverage.get(name, ['none']))}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ModuleSymmetries({', '.join(f'{b.name}: {b.kind}({b.units})' for b in self.blocks)})"

    # --- parameters -------------------------------------------------------------------------------------------
    def _params(self, model_or_params, argument: str = "model") -> Mapping[str, Tensor]:
        if isinstance(model_or_params, nn.Module):
            params: Mapping[str, Tensor] = dict(model_or_params.named_parameters())
        elif isinstance(model_or_params, Mapping):
            params = model_or_params
        else:
            raise TypeError(f"{argument} must be an nn.Module or a dict of named parameters "
                            f"(dict(model.named_parameters())), got {type(model_or_params).__name__}")
        needed = {p for b in self.blocks for p in b.parameters()}
        missing = sorted(needed - set(params))
        if missing:
            raise KeyError(f"{argument} lacks the parameters {missing} of the model these symmetries were found in")
        order = {n: i for i, n in enumerate(self.parameter_names)}
        for n in sorted(needed, key=lambda n: (order.get(n, len(order)), n)):  # the model's order: the same error each run
            t = params[n]
            if not isinstance(t, Tensor) or not t.is_floating_point():
                kind = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(f"{argument}[{n!r}] must be a floating-point tensor, got {kind}")
            if n in self.shapes and tuple(t.shape) != self.shapes[n]:
                raise ValueError(f"{argument}[{n!r}] has shape {tuple(t.shape)} but is {self.shapes[n]} in the "
                                 f"{self.model_name} these symmetries were found in: read them from this model")
        return params

    # --- conserved quantities ---------------------------------------------------------------------------------
    def quantities(self, model) -> dict[str, Tensor]:
        """Per block: α‖O‖² − ‖I‖² per class (rescaling), O Oᵀ − I Iᵀ (GL), column sums (translation).

        ``model``: the module, or a dict of its named parameters. Conserved by gradient flow."""
        p = self._params(model)
        return {b.name: b.quantity(p) for b in self.blocks}

    def magnitudes(self, model) -> dict[str, Tensor]:
        """The size of each quantity's terms (the scale its drift is measured against)."""
        p = self._params(model)
        return {b.name: b.magnitude(p) for b in self.blocks}

    def balance(self, a, b=None) -> dict[str, Tensor]:
        """The bilinear form B(a, b) with B(θ, θ) = [`quantities`][] (zero for translations); a step θ − ηd with
        B(θ, d) = 0 (d a gradient) changes each quadratic quantity by exactly η²B(d, d)."""
        pa = self._params(a, "a")
        pb = pa if b is None else self._params(b, "b")
        return {blk.name: blk.balance(pa, pb) for blk in self.blocks}

    # --- elements and algebra ---------------------------------------------------------------------------------
    def _check_keys(self, argument: str, element) -> None:
        if not isinstance(element, Mapping):
            raise TypeError(f"{argument} must be a dict {{block name: tensor}} with keys {self.keys()}, "
                            f"got {type(element).__name__}")
        if set(element) != set(self.keys()):
            raise ValueError(f"{argument} has keys {sorted(element)}, but this model's groups are {self.keys()}")
        for b in self.blocks:
            t = element[b.name]
            shape = b.element_shape()
            if not isinstance(t, Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{argument}[{b.name!r}] must have shape {shape} ({b.kind} block), got {got}")
            if not t.is_floating_point():
                raise TypeError(f"{argument}[{b.name!r}] must be a floating-point tensor, got dtype {t.dtype}")

    def check_element(self, element: Mapping[str, Tensor]) -> None:
        """Raise a clear error unless ``element`` belongs to the group (keys, shapes, g > 0, G invertible)."""
        self._check_keys("element", element)
        with torch.no_grad():
            for b in self.blocks:
                b.check_element(f"element[{b.name!r}]", element[b.name])

    def algebra_zero(self, requires_grad: bool = False) -> dict[str, Tensor]:
        return {b.name: b.algebra_zero(self.dtype, self.device, requires_grad) for b in self.blocks}

    def exp(self, xi: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Algebra → group, differentiable: exp per class, matrix_exp per GL block, identity for translations."""
        self._check_keys("xi", xi)
        return {b.name: b.exp(xi[b.name]) for b in self.blocks}

    def identity(self) -> dict[str, Tensor]:
        return {b.name: b.identity(self.dtype, self.device) for b in self.blocks}

    def random_element(self, scale: float, generator: torch.Generator | None = None,
                       params=None) -> dict[str, Tensor]:
        """exp(scale·ξ), ξ standard normal (A/√C for GL; translations sized by the entries they shift, which
        needs ``params``: the module or its parameter dict); the identity at scale 0."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scale={scale!r} must be a finite number >= 0")
        p = self._params(params, "params") if params is not None else None
        out = {}
        for b in self.blocks:
            if isinstance(b, TranslationBlock) and p is None:
                xi = b.random_algebra(scale, generator, self.dtype, self.device, _ones_like_legs(b, self.dtype))
            else:
                xi = b.random_algebra(scale, generator, self.dtype, self.device, p or {})
            out[b.name] = b.exp(xi)
        return out

    # --- the action -------------------------------------------------------------------------------------------
    def act_params(self, params, element: Mapping[str, Tensor], check: bool = True) -> dict[str, Tensor]:
        """The action on a dict of named parameters (or a module's): a new dict, differentiable in both."""
        p = dict(self._params(params, "params"))
        if check:
            self.check_element(element)
        for b in self.blocks:
            b.act(p, _in_dtype_of(element[b.name], p[b.legs[0].param], b.name))
        return p

    def act(self, model: nn.Module, element: Mapping[str, Tensor]) -> nn.Module:
        """Apply ``element`` to ``model`` in place; returns ``model`` (nothing is written if the element is invalid)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (use act_params for a parameter dict), got {type(model).__name__}")
        params = dict(model.named_parameters())
        with torch.no_grad():
            moved = self.act_params(params, element)
            for name, t in moved.items():
                if t is not params[name]:
                    params[name].copy_(t)
        return model


def _in_dtype_of(element: Tensor, param: Tensor, name: str) -> Tensor:
    """An element in its parameters' dtype (and device): promoted where that is exact (a float32 element on a model
    turned to float64 after its symmetries were found), refused naming both where it would round."""
    return cast_exactly(f"element[{name!r}]", element, param.dtype, "the parameters it acts on",
                        f"draw it in {param.dtype}, or find the symmetries again on the model as it is now"
                        ).to(param.device)


def _ones_like_legs(b: Block, dtype) -> dict[str, Tensor]:
    size = max(int(leg.index.max()) + 1 for leg in b.legs)
    return {leg.param: torch.ones(size, dtype=dtype) for leg in b.legs}


def _group_text(b: Block) -> str:
    if isinstance(b, ScalingBlock):
        degrees = sorted({-leg.exponent for leg in b.legs if leg.exponent < 0})
        deg = ", outgoing degree " + "/".join(f"{d:g}" for d in degrees) if degrees else ", no outgoing weights (scale-invariant)"
        tied = f" ({b.units} units tied into {b.n_classes} scales)" if b.n_classes != b.units else ""
        return f"positive rescaling (R_>0)^{b.n_classes}{tied}{deg}"
    if isinstance(b, LinearBlock):
        return f"GL({b.units})"
    if isinstance(b, RotationBlock):
        return f"rotations SO(2)^{b.element_shape()[0]} of unit pairs"
    return f"translation R^{b.element_shape()[0]}"


def _quantity_text(b: Block) -> str:
    legs_in = ", ".join(sorted({leg.param for leg in b.legs if leg.exponent > 0}))
    legs_out = ", ".join(sorted({leg.param for leg in b.legs if leg.exponent < 0}))
    if isinstance(b, RotationBlock):
        return "quantities identically 0 (no law): Σ_legs e (θ_aᵀθ_b − θ_bᵀθ_a) per pair"
    if isinstance(b, ScalingBlock):
        if not legs_out:
            return f"Q_c = −‖I_c‖² (I: {legs_in})"
        return f"Q_c = Σ α‖O_c‖² − ‖I_c‖² (I: {legs_in}; O: {legs_out})"
    if isinstance(b, LinearBlock):
        return f"Q = O Oᵀ − I Iᵀ (I: {legs_in}; O: {legs_out})"
    return f"h_k = Σ_units θ_k (column sums of {legs_in})"


# --------------------------------------------------------------------------------------------------------------
# from the walker's producers to checked blocks
# --------------------------------------------------------------------------------------------------------------
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


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, p in model.named_parameters():
        if not p.is_floating_point():
            raise TypeError(f"parameter {name!r} has dtype {p.dtype}; symmetries act on floating-point weights")
        if p.numel() == 0:
            raise ValueError(f"parameter {name!r} has no entries (shape {tuple(p.shape)}): a zero-width layer")


def _default_input(model: nn.Module, dtype, device) -> tuple[Tensor, ...]:
    first = next((m for m in model.modules() if not isinstance(m, (nn.Sequential,)) and
                  any(True for _ in m.parameters(recurse=False))), None)
    if isinstance(model, nn.Sequential) and isinstance(first, nn.Linear):
        x = torch.randn(8, first.in_features, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return (x.to(dtype=dtype, device=device),)
    raise TypeError(f"example_input is needed for a {type(model).__name__} (what the model computes depends on the "
                    "input's shape): pass one batch, e.g. module_symmetries(model, x[:8])")


def module_symmetries(model: nn.Module, example_input=None, loss: str | None = None, *,
                      leaves: Sequence[str] = (), check: bool = True, seed: int = 0,
                      approximate: bool = False) -> ModuleSymmetries:
    """The symmetries of ``model`` read from its computation graph (``torch.export``), each checked on
    ``example_input``.

    ``example_input``: one batch (a tensor or a tuple of the forward's arguments); optional for an
    ``nn.Sequential`` that starts with a ``Linear`` (then drawn on the model's device). ``loss``: None or "mse"
    (symmetries of the output), or "cross_entropy" over the output's last axis (as in
    ``F.cross_entropy(out.reshape(-1, out.shape[-1]), y)``; adds the softmax head's translation, a symmetry of the
    loss). ``leaves``: submodule names kept opaque (for code torch.export cannot record); their parameters are
    reported as not covered. ``approximate``: keep the blocks that are exact only at normalization's ε = 0 even
    where, at the model's own ε, a random element moves the output by more than the check's tolerance (by default
    they are reported in ``coverage`` with that error and left out). A wrapped model (``torch.compile``,
    ``DataParallel``, DDP) is read through the module it runs, with the wrapper's parameter names. Tied weights
    (one tensor read at several places) are covered only by blocks that act on it identically at every use; the
    others are reported. Dropout is read in the mode the model is in and checked with one random stream for both
    passes. Blocks that fail the check raise [`SymmetryCheckError`][] naming the block; the check's relative
    tolerance follows the dtype (``CHECK_TOLERANCE``, said in ``describe()``).
    """
    _check_model(model)
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not allowed; choose one of {', '.join(map(repr, LOSSES))}")
    inner, prefix = unwrap(model)
    if prefix:
        return _prefixed(module_symmetries(inner, example_input, loss, leaves=leaves, check=check, seed=seed,
                                           approximate=approximate), prefix, type(model).__name__)
    params = dict(model.named_parameters())
    dtype = next(iter(params.values())).dtype if params else torch.get_default_dtype()
    device = next(iter(params.values())).device if params else torch.device("cpu")
    if device.type == "meta":
        raise NotSupportedError(f"{type(model).__name__} is on the meta device: it has no weights to run the graph "
                                "on and check the symmetries with; materialise it first (model.to_empty(device='cpu') "
                                "and initialise, or load its weights)")
    if example_input is None:
        example_input = _default_input(model, dtype, device)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != dtype:
            raise TypeError(f"example_input{'[%d]' % i if len(inputs) > 1 else ''} has dtype {x.dtype} but the "
                            f"model's parameters are {dtype}: convert one of them")
        if isinstance(x, Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"example_input{'[%d]' % i if len(inputs) > 1 else ''} contains NaN or infinity: the "
                             "symmetries are checked on it; pass a batch of finite inputs")
        if isinstance(x, Tensor) and x.ndim and x.shape[0] == 0:
            raise ValueError(f"example_input{'[%d]' % i if len(inputs) > 1 else ''} is an empty batch (shape "
                             f"{tuple(x.shape)}): the symmetries are checked on it; pass at least one sample")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gm = trace(model, inputs, leaves)
    except RuntimeError as error:
        if isinstance(error, (NotSupportedError, SymmetryCheckError)):
            raise
        shapes = [tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__ for x in inputs]
        raise ValueError(f"{type(model).__name__} cannot run on example_input {shapes[0] if len(shapes) == 1 else shapes}: "
                         f"{str(error).splitlines()[0]}; pass one batch the model takes") from None
    buffers = {n: b.clone() for n, b in gm.named_buffers()}
    walker = Reader(gm, loss)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            _with_buffers(gm, buffers, lambda: walker.run(*inputs))
        except RuntimeError as error:  # torch's own (shapes, dtypes): its first line
            if isinstance(error, SymmetryCheckError):
                raise
            shapes = [tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__ for x in inputs]
            raise ValueError(f"{type(model).__name__} cannot run on example_input {shapes[0] if len(shapes) == 1 else shapes}: "
                             f"{str(error).splitlines()[0]}; pass one batch the model takes") from None
    merged = _merge_pairs(walker)
    blocks: list[Block] = []
    for p in walker.producers:
        if p.pid in merged:
            continue
        if p.broken is None and (p.outgoing or p.invariant):
            blocks.extend(_blocks_of(p))
        blocks.extend(_translations_of(p))
    blocks, dropped = _untie(blocks, walker)
    coverage = _coverage(params, blocks, walker, merged)
    for name, why in dropped.items():
        if not [c for c in coverage.get(name, []) if not c.startswith("none")]:
            coverage[name] = [f"none — {why}"]
    sym = ModuleSymmetries(tuple(blocks), tuple(params), dtype, device, type(model).__name__, coverage,
                           {n: tuple(p.shape) for n, p in params.items()}, training=model.training)
    if check:
        _verify(sym, model, gm, inputs, loss, walker, seed, approximate)
    return sym


def _untie(blocks: list[Block], walker: Walker) -> tuple[list[Block], dict[str, str]]:
    """Tied weights: a tensor whose entries are read by more than one operation keeps only the blocks that act on
    it identically at every use; a block that acts on it at one use only (the others see it moved) is dropped and
    the reason reported per parameter."""
    tied: dict[str, list[str]] = {}
    for param, uses in walker.uses.items():
        if len(uses) < 2:
            continue
        counts = torch.bincount(torch.cat([u for u, _ in uses]))
        if bool((counts > 1).any()):
            tied[param] = list(dict.fromkeys(where for _, where in uses))
    if not tied:
        return blocks, {}
    kept, dropped = [], {}
    for b in blocks:
        shared = sorted(b.parameters() & set(tied))
        if not shared:
            kept.append(b)
            continue
        for name in shared:
            dropped[name] = (f"tied: read at {len(tied[name])} places ({'; '.join(tied[name])}); no block acts on it "
                             f"identically at every use (block {b.name!r} moves it at one use only)")
        for name in b.parameters() - set(shared):
            dropped.setdefault(name, f"its block {b.name!r} also acts on the tied weight {shared[0]!r}")
    return kept, dropped


def _prefixed(sym: ModuleSymmetries, prefix: str, wrapper: str) -> ModuleSymmetries:
    """The symmetries of a wrapped model's inner module, named as the wrapper names its parameters."""
    import dataclasses

    blocks = []
    for b in sym.blocks:
        legs = tuple(Leg(prefix + leg.param, leg.index, leg.exponent, leg.units) for leg in b.legs)
        blocks.append(dataclasses.replace(b, legs=legs))
    return ModuleSymmetries(tuple(blocks), tuple(prefix + n for n in sym.parameter_names), sym.dtype, sym.device,
                            f"{wrapper}({sym.model_name})", {prefix + n: c for n, c in sym.coverage.items()},
                            {prefix + n: s for n, s in sym.shapes.items()}, sym.tolerance, sym.training, sym.unchecked)


def _coverage(params, blocks, walker: Walker, merged: set[int]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for n in params}
    for b in blocks:
        for name in b.parameters():
            out[name].append(b.name)
    for name, names in out.items():
        if names:
            continue
        reasons = []
        for p in walker.producers:
            if any(leg.param == name for leg in p.incoming + p.outgoing) and p.broken:
                reasons.append(f"{p.name}: its output {p.broken}")
        reasons += walker.notes.get(name, [])
        out[name] = [f"none — {'; '.join(dict.fromkeys(reasons)) or 'no operation the walker reads acts on it linearly'}"]
    return out


def _with_buffers(gm, buffers, fn):
    """Run fn with the model's buffers replaced by copies (BatchNorm in training mode updates them)."""
    saved = {n: b for n, b in gm.named_buffers()}
    try:
        for n, b in buffers.items():
            _set(gm, n, b.clone())
        return fn()
    finally:
        for n, b in saved.items():
            _set(gm, n, b)


def _set(module: nn.Module, name: str, value: Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    sub._buffers[attr] = value


def _outputs(result) -> Tensor:
    if isinstance(result, Tensor):
        return result.reshape(-1)
    if isinstance(result, (tuple, list)):
        parts = [_outputs(r) for r in result if r is not None]
        return torch.cat([p for p in parts if p.numel()]) if parts else torch.zeros(0)
    if isinstance(result, dict):
        return _outputs(list(result.values()))
    return torch.zeros(0)


def _verify(sym: ModuleSymmetries, model, gm, inputs, loss, walker: Walker, seed: int,
            keep_approximate: bool = False) -> None:
    """Each block: a random element keeps the output (log-softmax for the translations of a cross-entropy head).
    Every pass runs with the same random stream (dropout's masks agree). Approximate blocks whose error at the
    model's ε exceeds the tolerance are removed from ``sym`` (reported in its coverage) unless kept."""
    from torch.func import functional_call

    params = {n: p.detach() for n, p in gm.named_parameters()}
    buffers = {n: b.detach() for n, b in gm.named_buffers()}
    tol = CHECK_TOLERANCE.get(sym.dtype, 1e-4)

    def run(p, on_loss: bool) -> Tensor:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = functional_call(gm, {**p, **{n: b.clone() for n, b in buffers.items()}}, inputs)
        if on_loss:
            out = torch.log_softmax(out, dim=-1)
        return _outputs(out)

    from .graph.export import _opened

    with torch.no_grad(), torch.random.fork_rng(devices=[]), _opened():  # the code path that was recorded
        torch.manual_seed(seed)
        model_buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        reference = _outputs(functional_call(model, {**dict(model.named_parameters()), **model_buffers}, inputs))
    if not bool(reference.ne(0).any()):  # every action keeps a zero output: nothing can be checked, said so
        sym.unchecked = (f"{type(model).__name__}'s output is identically 0 on example_input (a head initialised "
                         "to zero?): the blocks are read from the graph, unchecked; initialise the last layer to "
                         "have them checked")
        return
    traced = run(params, False)
    error = _relative(traced - reference, reference)
    if not error <= tol:
        raise SymmetryCheckError(f"the recorded graph does not reproduce {type(model).__name__}'s output (relative "
                                 f"difference {error:.3g}): the model's code does something torch.export does not "
                                 "record (Python-side state, a random stream of its own); please report this model")
    gen = torch.Generator().manual_seed(seed + 1)
    sites = walker.eps_sites
    elements = {b.name: b.exp(b.random_algebra(0.5, gen, sym.dtype, torch.device("cpu"), params)).to(sym.device)
                for b in sym.blocks}
    bases: dict[tuple[bool, bool], Tensor] = {(False, False): traced}  # the recorded graph's own output

    def base(tiny: bool, on_loss: bool) -> Tensor:
        if (tiny, on_loss) not in bases:
            with _epsilon(gm, sites, _TINY_EPS if tiny else None):
                bases[tiny, on_loss] = run(params, on_loss)
        return bases[tiny, on_loss]

    def change(blocks: list[Block], tiny: bool, on_loss: bool) -> float:
        moved = dict(params)
        for b in blocks:
            b.act(moved, elements[b.name])
        with _epsilon(gm, sites, _TINY_EPS if tiny else None):
            acted = run(moved, on_loss)
        reference = base(tiny, on_loss)
        return _relative(acted - reference, reference)

    def on_loss(b: Block) -> bool:
        return isinstance(b, TranslationBlock) and loss == "cross_entropy" and "cross-entropy" in b.where

    # RoPE rotation candidates: kept where a random rotation keeps the output, dropped otherwise (a missed
    # symmetry, never a wrong one)
    candidates: list[Block] = [b for b in sym.blocks if isinstance(b, RotationBlock)]
    if candidates and change(candidates, True, False) > tol:
        wrong = {b.name for b in candidates if change([b], True, False) > tol}
        sym.blocks = tuple(b for b in sym.blocks if b.name not in wrong)

    # All the blocks of one setting at once: the product of random elements keeps the output iff (almost surely)
    # each does. Only when the product fails is the group bisected, to name the block that fails.
    def failing(group: list[Block], tiny: bool, loss_level: bool) -> Block | None:
        if change(group, tiny, loss_level) <= tol:
            return None
        if len(group) == 1:
            return group[0]
        half = len(group) // 2
        return failing(group[:half], tiny, loss_level) or failing(group[half:], tiny, loss_level) or group[0]

    for tiny in (False, True):
        for loss_level in (False, True):
            group = [b for b in sym.blocks if bool(b.approximate) == tiny and on_loss(b) == loss_level]
            if not group:
                continue
            bad = failing(group, tiny, loss_level)
            if bad is None:
                continue
            moved_by = change([bad], tiny, loss_level)
            if not moved_by <= tol:
                raise SymmetryCheckError(f"block {bad.name!r} ({bad.kind}, {bad.where}) changes the output of "
                                         f"{type(model).__name__} by a relative {moved_by:.3g} > {tol:g} on the "
                                         "example input: the graph was misread; please report this model")
            raise SymmetryCheckError(f"the blocks {[b.name for b in group]} each keep the output of "
                                     f"{type(model).__name__} but not together: the graph was misread; please "
                                     "report this model")
    kept = []
    for b in sym.blocks:
        if b.approximate:
            moved_by = change([b], False, on_loss(b))
            b.approximate += (f" (at the model's ε a random element of scale 0.5 moves the output by "
                              f"{moved_by:.2g} relative)")
            if moved_by > tol and not keep_approximate:
                for name in b.parameters():
                    others = [c for c in sym.coverage.get(name, []) if c != b.name and not c.startswith("none")]
                    sym.coverage[name] = others or [
                        f"none — block {b.name!r} is exact only at normalization's ε = 0: at the model's ε a random "
                        f"element moves the output by {moved_by:.2g} > the tolerance {tol:g} (pass approximate=True "
                        "to keep it)"]
                continue
        kept.append(b)
    sym.blocks = tuple(kept)
    sym.tolerance = tol


def _relative(difference: Tensor, reference: Tensor) -> float:
    """‖difference‖ / ‖reference‖ in Python floats: 0 where both are 0 (an all-zero model's output), never the
    0/0 = NaN of a float32 division (whose clamp at 1e-300 is 0), and infinite where only the reference is 0."""
    size, scale = float(difference.norm()), float(reference.norm())
    return size / scale if scale > 0 else (0.0 if size == 0 else math.inf)


class _epsilon:
    """Temporarily set every normalization ε the walker found (an argument of a graph node)."""

    def __init__(self, gm, sites, value):
        self.gm, self.sites, self.value = gm, sites, value
        self.saved: list = []

    def __enter__(self):
        if self.value is None or not self.sites:
            return self
        for node, name, _ in self.sites:
            self.saved.append((node, node.args, dict(node.kwargs)))
            names = [a.name for a in node.target._schema.arguments]
            slot = names.index(name)
            if slot < len(node.args):
                args = list(node.args)
                args[slot] = self.value
                node.args = tuple(args)
            else:
                node.kwargs = {**node.kwargs, name: self.value}
        self.gm.recompile()
        return self

    def __exit__(self, *exc):
        if self.saved:
            for node, args, kwargs in reversed(self.saved):
                node.args, node.kwargs = args, kwargs
            self.gm.recompile()
        self.saved = []
        return False
