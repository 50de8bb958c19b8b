"""The library's exceptions and warnings, in a leaf module every other module may import.

Each is also importable from where it was first defined (``symmetry.groups.NotSupportedError``,
``symmetry.dynamics.DivergenceError``, ``symmetry.actions.RankDeficiencyWarning``) and from ``symmetry``.
"""
from __future__ import annotations

__all__ = ["DivergenceError", "NotSupportedError", "RankDeficiencyWarning"]


class NotSupportedError(TypeError, ValueError):
    """What the library cannot treat exactly, refused by name (a layer, an operation, a model structure, a
    quantity a group does not have).

    A ``TypeError`` and a ``ValueError`` at once, so code written against either keeps catching it."""


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite; the message names the configurations."""


class RankDeficiencyWarning(UserWarning):
    """σ(gZ) lost rank: π(g, Z) = σ(Z)σ(gZ)⁺ is then not a group action (Prop. 8)."""
