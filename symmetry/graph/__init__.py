"""A user's ``nn.Module`` read from what it computes: its ``torch.export`` ATen graph
([`symmetry.graph.export`][]), run on an example input, with every value tagged by the hidden units it carries
([`symmetry.graph.walk`][]). The one module reader of the library (``module_symmetries`` and the law count).

A *producer* is an operation linear in a parameter that writes units: ``aten.linear``, ``aten.addmm``, ``x @ W``
(units = output features), convolutions (output channels, grouped too), ``aten.embedding``, the affine part of
BatchNorm/LayerNorm/RMSNorm, ``γ * x`` with a parameter γ. Its units are followed, as integer labels laid out like
the value itself, through the graph by the rule of each op ([`symmetry.graph.registry`][], one module per family in
[`symmetry.graph.rules`][]): shape operations move the labels as they move the numbers; positively homogeneous
maps keep a positive rescaling; a *consumer* absorbs the units (the next parameter-linear operation along its
contracted axis, the key projection of an attention score, Marcotte et al. Cor. 3.9, or a normalization, Kunin
et al.'s scale law). Anything else a unit reaches breaks its producer's symmetry with the reason recorded; an op
without a rule breaks it by name ([`register_rule`][symmetry.graph.registry.register_rule] teaches the walker an
op). Translations are followed the same way ([`symmetry.graph.shifts`][]). Each symmetry found is then checked
on the example input ([`module_symmetries`][symmetry.modules.module_symmetries]).
"""
from __future__ import annotations

from . import rules  # noqa: F401  (fills the table)
from .export import trace, unwrap
from .registry import Args, register_rule
from .state import PRef, Producer, Tag
from .walk import Walker
from .read import Reader

__all__ = ["trace", "unwrap", "register_rule", "Args", "SymmetryCheckError", "Walker", "Reader", "Producer", "Tag", "PRef"]


class SymmetryCheckError(RuntimeError):
    """A symmetry read from the graph does not keep the model's output on the example input (a misread graph)."""
