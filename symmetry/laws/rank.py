"""Numerical ranks: the span of the fields seen so far, and the number of functionally independent laws (the rank of
their Jacobian)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .factorisations import Factorization

Tensor = torch.Tensor


#: Relative tolerance of every numerical rank here: a direction counts as new when its
#: component outside the current span exceeds RANK_RTOL times its norm (unit-normalised).
RANK_RTOL = 1e-8


class _Span:
    """An orthonormal basis of the span of vectors seen so far (two-pass Gram–Schmidt)."""

    def __init__(self, D: int, dtype=torch.float64):
        self.basis = torch.zeros(D, 0, dtype=dtype)
        self.accepted: list[float] = []  # relative residual of each vector added
        self.rejected_max = 0.0  # largest relative residual among vectors found dependent

    @property
    def dim(self) -> int:
        return self.basis.shape[1]

    def add(self, vectors: Tensor, rtol: float, scales: Tensor | None = None) -> list[int]:
        """Add the columns of ``vectors`` that leave the current span; returns their indices.

        A column counts as new when its component outside the span exceeds ``rtol`` times its
        scale: its own norm by default, or for a bracket ∂b g − ∂g b the norms of the two terms
        added, so that a bracket that cancels to round-off (a mathematical zero) never counts.
        """
        scales = vectors.norm(dim=0) if scales is None else torch.maximum(scales, vectors.norm(dim=0))
        live = scales > 0
        R = vectors[:, live] / scales[live]
        index = live.nonzero().reshape(-1).tolist()
        kept = []
        # pivoted Gram–Schmidt: take the largest remaining residual first, so a nearly
        # dependent column never enters the basis ahead of a clearly independent one
        for _ in range(2):
            R = R - self.basis @ (self.basis.T @ R)
        while R.shape[1] and self.dim < self.basis.shape[0]:
            norms = R.norm(dim=0)
            j = int(norms.argmax())
            if float(norms[j]) <= rtol:
                break
            v = R[:, j] / norms[j]
            v = v - self.basis @ (self.basis.T @ v)
            v = v / v.norm()
            self.basis = torch.cat([self.basis, v[:, None]], dim=1)
            self.accepted.append(float(norms[j]))
            kept.append(index.pop(j))
            R = torch.cat([R[:, :j], R[:, j + 1:]], dim=1)
            for _ in range(2):
                R = R - v[:, None] * (v @ R)[None, :]
        if R.shape[1]:
            self.rejected_max = max(self.rejected_max, float(R.norm(dim=0).max()))
        return sorted(kept)


def symmetry_law_count(symmetry, params, rtol: float = RANK_RTOL) -> int:
    """The number of functionally independent conserved quantities of ``symmetry`` near θ = ``params`` (a dict
    of named tensors or a tuple): the rank of the Jacobian of its ``quantities``, every entry flattened. At a
    generic θ this is at most [`count_conservation_laws`][] of the model."""
    tensors = list(params.values()) if isinstance(params, dict) else list(params)
    sizes = [t.numel() for t in tensors]

    def laws(theta: Tensor) -> Tensor:
        parts = [c.reshape(t.shape) for c, t in zip(torch.split(theta, sizes), tensors)]
        rebuilt = dict(zip(params, parts)) if isinstance(params, dict) else tuple(parts)
        return torch.cat([q.reshape(-1) for q in symmetry.quantities(rebuilt).values()])

    theta = torch.cat([t.detach().reshape(-1) for t in tensors]).to(torch.float64)
    return independent_count(laws, theta, rtol)


def independent_rows(matrix: Tensor, rtol: float = RANK_RTOL) -> int:
    """Numerical rank: singular values above ``rtol`` times the largest."""
    if matrix.numel() == 0:
        return 0
    s = torch.linalg.svdvals(matrix)
    return int((s > rtol * s.max()).sum()) if float(s.max()) > 0 else 0


def independent_count(laws: Callable[[Tensor], Tensor], theta: Tensor, rtol: float = RANK_RTOL) -> int:
    """Number of functionally independent entries of ``laws`` near θ: the rank of their Jacobian."""
    return independent_rows(torch.func.jacrev(laws)(theta), rtol)


def known_law_count(fact: Factorization, seed: int = 0) -> int:
    """Rank of the gradients of the paper's laws at a generic point (``fact.known_laws``)."""
    if fact.known_laws is None:
        raise ValueError(f"no known laws are attached to {fact.description!r}")
    theta = fact.random_point(torch.Generator().manual_seed(seed))
    return independent_count(fact.known_laws, theta)


def laws_are_conserved(fact: Factorization, laws: Callable[[Tensor], Tensor], points: int = 3, seed: int = 0) -> float:
    """max |⟨∇h(θ), ∇φ_i(θ)⟩| / (‖∇h‖‖∇φ_i‖) over the laws h, outputs i and random points:
    ≈ 0 (round-off) iff every h is a conservation law of φ."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(points):
        theta = fact.random_point(gen)
        Jh = torch.func.jacrev(laws)(theta)  # (L, D)
        Jphi = torch.func.jacrev(fact.phi)(theta)  # (N, D)
        inner = Jh @ Jphi.T
        scale = Jh.norm(dim=1, keepdim=True) * Jphi.norm(dim=1) + 1e-300
        worst = max(worst, float((inner.abs() / scale).max()))
    return worst
