"""ALGO 1 (Marcotte et al.): the polynomial conservation laws up to a degree, as the null space of ⟨∇h, ∇φ_i⟩ over
monomials h; random polynomial fields (its control)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations_with_replacement

import torch

from .._optional import require
from ..threads import torch_threads
from ..tuples import quiet_forward_mode
from .factorisations import Factorization
from .fields import VectorFields, vector_fields
from .rank import independent_rows

Tensor = torch.Tensor


def random_polynomial_fields(D: int, count: int, degree: int, seed: int = 0) -> VectorFields:
    """``count`` vector fields on R^D whose D components are random polynomials of degree ≤ ``degree``
    (Gaussian coefficients): generically they have no polynomial conservation law at all."""
    for name, value, low in (("D", D, 1), ("count", count, 1), ("degree", degree, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    gen = torch.Generator().manual_seed(seed)
    exponents = monomial_exponents(D, degree, constant=True)
    coefficients = torch.randn(count, D, exponents.shape[0], generator=gen, dtype=torch.float64)
    monomials = _monomials(exponents)
    return VectorFields(lambda theta: coefficients @ monomials(theta), D, tuple(f"x{i}" for i in range(D)),
                        f"{count} random polynomial fields of degree {degree} on R^{D}")


# ---------------------------------------------------------------------------------------------
# ALGO 1: polynomial conservation laws
# ---------------------------------------------------------------------------------------------

def monomial_exponents(D: int, degree: int, constant: bool = False) -> Tensor:
    """Exponent vectors of every monomial in D variables of total degree 1 … ``degree`` (M×D),
    or 0 … ``degree`` with ``constant``."""
    rows = []
    for k in range(0 if constant else 1, degree + 1):
        for combo in combinations_with_replacement(range(D), k):
            e = [0] * D
            for i in combo:
                e[i] += 1
            rows.append(e)
    return torch.tensor(rows, dtype=torch.long).reshape(-1, D)


def _monomials(exponents: Tensor) -> Callable[[Tensor], Tensor]:
    E = exponents.to(torch.float64)

    def values(theta: Tensor) -> Tensor:
        # θ^E as a product of integer powers; masking E = 0 keeps 0⁰ = 1 and its derivative 0
        return torch.prod(torch.where(E > 0, theta[None, :] ** E, torch.ones_like(E)), dim=1)
    return values


@dataclass
class PolynomialLaws:
    """What ALGO 1 found: a basis of the polynomial laws of degree ≤ ``degree``."""

    degree: int
    variables: list[str]
    exponents: Tensor  # (M, D) monomials
    coefficients: Tensor  # (count, M): one law per row, in reduced row echelon form
    independent: int  # rank of the laws' gradients at a generic point (functionally independent)
    smallest_kept: float  # singular-value gap behind the nullspace: last nonzero / largest
    largest_null: float  # and largest one counted as zero / largest
    seconds: float

    @property
    def count(self) -> int:
        """Number of linearly independent polynomial laws (as polynomials)."""
        return self.coefficients.shape[0]

    def expressions(self):
        """The laws as sympy expressions (coefficients rounded to nearby small-denominator rationals)."""
        sympy = require("sympy", "laws", "printing the polynomial laws")

        symbols = sympy.symbols(self.variables)
        out = []
        for row in self.coefficients.tolist():
            terms = []
            for c, e in zip(row, self.exponents.tolist()):
                if abs(c) < 1e-10:
                    continue
                monomial = sympy.Mul(*[s ** k for s, k in zip(symbols, e) if k])
                terms.append(_nice_number(c) * monomial)
            out.append(sympy.Add(*terms))
        return out

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.expressions())


def _nice_number(c: float):
    sympy = require("sympy", "laws", "printing the polynomial laws")

    f = Fraction(c).limit_denominator(1000)
    return sympy.Rational(f.numerator, f.denominator) if abs(float(f) - c) < 1e-8 else sympy.Float(c, 12)


def _rref(A: Tensor, tol: float = 1e-9) -> Tensor:
    """Reduced row echelon form with partial pivoting (rows of A span the nullspace)."""
    A = A.clone()
    rows, cols = A.shape
    r = 0
    for c in range(cols):
        if r == rows:
            break
        p = r + int(A[r:, c].abs().argmax())
        if float(A[p, c].abs()) <= tol:
            continue
        A[[r, p]] = A[[p, r]]
        A[r] = A[r] / A[r, c]
        others = torch.arange(rows) != r
        A[others] -= A[others, c:c + 1] * A[r]
        r += 1
    A[A.abs() < tol] = 0.0
    return A[:r]


def polynomial_laws(model: Factorization | VectorFields, degree: int, *, seed: int = 0, rtol: float = 1e-9,
                    max_monomials: int = 6000) -> PolynomialLaws:
    """ALGO 1: every polynomial h of degree ≤ ``degree`` (no constant term) with ⟨∇h, w⟩ ≡ 0
    for every field w (the ∇φ_i of a model).

    h = Σ_α c_α θ^α is a law iff the identity ⟨∇h(θ), w(θ)⟩ = 0 holds for all θ. For
    polynomial fields that is a linear system in c, exact once it is imposed at enough random
    points (here twice as many equations as unknowns, at points uniform in [−1, 1]^D).
    Columns are normalised, the nullspace is read from an SVD in float64 with relative
    tolerance ``rtol``, and the basis is returned in reduced row echelon form, so simple laws
    come out with simple coefficients. For a non-polynomial model the laws returned are the
    polynomials that pass at every sampled point.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be an integer ≥ 1, got {degree!r}")
    start = time.perf_counter()
    vf = vector_fields(model, seed)
    D = vf.D
    M = math.comb(D + degree, degree) - 1
    if M > max_monomials:
        raise ValueError(f"degree={degree} in D={D} variables gives {M} monomials, more than "
                         f"max_monomials={max_monomials}; lower the degree or raise max_monomials")
    exponents = monomial_exponents(D, degree)
    monomials = _monomials(exponents)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with quiet_forward_mode(), torch_threads(1):  # thousands of tiny ops: a second thread only waits
        rank = independent_rows(vf.fields(vf.check(vf.random_point(gen))))
        for _ in range(max(4, math.ceil(2 * M / max(rank, 1)))):
            theta = 2 * torch.rand(D, generator=gen, dtype=torch.float64) - 1
            # ⟨∇m_α(θ), w(θ)⟩ for every monomial α and field w: one JVP of the monomials per field
            rows.append(torch.func.vmap(lambda w, t=theta: torch.func.jvp(monomials, (t,), (w,))[1])(vf.fields(theta)))
        A = torch.cat(rows)  # (equations, M)
        scale = A.norm(dim=0).clamp_min(1e-300)
        _, s, Vh = torch.linalg.svd(A / scale, full_matrices=True)
        s_full = torch.zeros(M, dtype=A.dtype)
        s_full[: s.numel()] = s
        null = s_full <= rtol * s_full.max()
        basis = Vh[null] / scale  # back to the monomials' own scale
        coefficients = _rref(basis) if basis.shape[0] else basis
        independent = 0
        if coefficients.shape[0]:
            independent = independent_rows(coefficients @ torch.func.jacfwd(monomials)(vf.random_point(gen)))
    nonzero = s_full[~null]
    return PolynomialLaws(degree=degree, variables=list(vf.variables), exponents=exponents,
                          coefficients=coefficients, independent=independent,
                          smallest_kept=float(nonzero.min() / s_full.max()) if nonzero.numel() else float("nan"),
                          largest_null=float(s_full[null].max() / s_full.max()) if null.any() else 0.0,
                          seconds=time.perf_counter() - start)
