"""What the walker carries beside every value: a producer's units as integer labels laid out like the value
([`Tag`][]), a parameter moved by shape operations only ([`PRef`][]), and the producers themselves
([`Producer`][]: the units a parameter-linear operation writes, their union-find of tied scales, the legs of their
incoming and outgoing weights and why their symmetry broke)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..groups.blocks import Leg

Tensor = torch.Tensor


@dataclass
class Tag:
    """One producer's units in a value: ``labels`` (the value's shape) holds a unit or −1; scaling degree."""

    labels: Tensor
    degree: float = 1.0


@dataclass
class PRef:
    """A value that is a parameter moved by shape operations only: ``index`` holds each entry's flat position."""

    param: str
    index: Tensor


@dataclass
class Producer:
    """The units one parameter-linear operation writes, and what became of them (module docstring)."""

    pid: int
    name: str
    units: int
    incoming: list[Leg]
    where: str
    kind: str = "GL"  # "GL" or "scaling"
    positive: bool = False
    broken: str | None = None
    outgoing: list[Leg] = field(default_factory=list)
    invariant: list[str] = field(default_factory=list)  # normalizations that absorb the units at degree 0
    consumers: list[str] = field(default_factory=list)
    eps: list[tuple[str, float]] = field(default_factory=list)
    translation: dict[str, bool] = field(default_factory=dict)  # mode -> still valid (absorbed somewhere)
    translation_absorbed: dict[str, list[str]] = field(default_factory=dict)
    paired_with: int | None = None  # a key projection paired to this query projection (or the reverse)
    mixed: set[tuple[int, int]] = field(default_factory=set)  # units summed with each other (RoPE's pairs)

    def __post_init__(self):
        self.parent = list(range(self.units))
        self.signature: list[list[tuple[int, int]]] = [[] for _ in range(self.units)]

    def find(self, u: int) -> int:
        while self.parent[u] != u:
            self.parent[u] = self.parent[self.parent[u]]
            u = self.parent[u]
        return u

    def tie(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def tie_where(self, la: Tensor, lb: Tensor, mask: Tensor) -> None:
        """Tie unit la[i] to lb[i] wherever ``mask`` holds (one scale for both)."""
        a, b = la[mask].long(), lb[mask].long()
        if not a.numel():
            return
        width = int(b.max()) + 1
        pairs = (a * width + b).unique()  # one int per pair: a 1-D unique, far cheaper than unique(dim=0)
        for u, v in zip((pairs // width).tolist(), (pairs % width).tolist()):
            self.tie(u, v)

    def restrict(self, positive: bool = False) -> None:
        self.kind = "scaling"
        self.positive = self.positive or positive

    def site(self, key: int, groups: list[Tensor]) -> None:
        """Units contracted together: a linear map may mix units only within one group of each site."""
        for gi, units in enumerate(groups):
            for u in units.unique().tolist():
                if u >= 0:
                    self.signature[u].append((key, gi))

    def break_(self, why: str) -> None:
        if self.broken is None:
            self.broken = why


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def constant_along_last(L: Tensor) -> bool:
    return bool((L == L[..., :1]).all())


def is_permutation_rows(L: Tensor) -> bool:
    """Every row of L (over its last axis) holds each unit 0…n−1 once."""
    return bool((L >= 0).all()) and bool((L.reshape(-1, L.shape[-1]).sort(1).values
                                          == torch.arange(L.shape[-1])).all())
