"""Group actions on parameters (App. B) and their infinitesimal versions.

Two-layer convention (see models.py): θ = (U, V), F = U σ(VᵀX). A group element g ∈ GL_h
acts on the hidden layer, Z = VᵀX ↦ gZ, i.e. V ↦ V gᵀ, and U ↦ U π(g)⁻¹ (Eq. 12).
Every action takes g as an (h, h) matrix, so one Lie-algebra machinery serves all:
``infinitesimal_action`` differentiates any action at the identity (Eq. 9) and
``orbit_dimension`` takes the rank of that map over a basis of the Lie algebra.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch

from .activations import ActivationLike, get_activation
from .errors import RankDeficiencyWarning
from .tuples import jvp
from .types import Params
from .validation import check_alike, check_choice, check_finite_tensor, check_group_element, check_params, check_square

Tensor = torch.Tensor
Action = Callable[[Tensor, Params], Params]


# ---------------------------------------------------------------------------------------
# Linear actions (Examples 2–5, Eq. 12, Eq. 17): one implementation, multilayer_action
# ---------------------------------------------------------------------------------------

def _two_layer_view(params: Params) -> Params:
    """(U, V) as the multilayer weights (W_1, W_2) = (Vᵀ, U)."""
    return params[1].mT, params[0]


def _two_layer_back(weights: Params) -> Params:
    return weights[1], weights[0].mT


def _diagonal_of(argument: str, g: Tensor, group: str) -> Tensor:
    c = torch.diagonal(g, dim1=-2, dim2=-1)
    if not torch.equal(torch.diag_embed(c), g):
        raise ValueError(f"{argument} must be diagonal for {group}")
    return c


def linear_action(g: Tensor, params: Params) -> Params:
    """(U, V) ↦ (U g⁻¹, V gᵀ): GL_h on a linear layer pair (Example 2, π(g) = g)."""
    check_group_element("g", g, params)
    return _two_layer_back(multilayer_action([g], _two_layer_view(params), 1.0))


def scaling_action(g: Tensor, params: Params, alpha: float = 1.0) -> Params:
    """(U, V) ↦ (U g^{−α}, V g) for positive diagonal g: α-homogeneous σ (Example 3, π(g) = g^α)."""
    check_group_element("g", g, params)
    c = _diagonal_of("g", g, "the positive scaling group (Example 3)")
    if not bool((c > 0).all()):
        raise ValueError("g must be diagonal with positive entries for the positive scaling group (Example 3)")
    return _two_layer_back(multilayer_action([c], _two_layer_view(params), alpha))


def orthogonal_action(g: Tensor, params: Params) -> Params:
    """(U, V) ↦ (U gᵀ, V gᵀ) for g ∈ O(h): radial rescaling σ (Example 5, π(g) = g, g⁻¹ = gᵀ)."""
    U, V = check_group_element("g", g, params)
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    if not torch.allclose(g.mT @ g, eye, atol=1e-6 if g.dtype == torch.float64 else 1e-4):
        raise ValueError("g must be orthogonal (gᵀg = I) for the O(h) action on radial nets (Example 5)")
    return U @ g.mT, V @ g.mT


def neuron_scaling_action(g: Tensor, params: Params) -> Params:
    """(U, V) ↦ (U g, V g), g diagonal with nonzero entries: the symmetry of Prop. 14's radial net.

    g(c v) = g(v)/c for f(r) = r⁻², so scaling neuron i's incoming weights by c_i is undone
    by scaling its outgoing weights by c_i; its conserved quantity is λ_i = ‖u_i‖² + ‖v_i‖².
    The scaling action of Example 3 with π(c) = c⁻¹ (α = −1), which needs c ≠ 0 only.
    """
    check_group_element("g", g, params)
    c = _diagonal_of("g", g, "the per-neuron scaling of the radial net")
    return _two_layer_back(multilayer_action([c], _two_layer_view(params), -1.0))


def multilayer_action(gs: Sequence[Tensor], weights: Params, alphas: Sequence[float] | float = 1.0) -> Params:
    """Eq. 17 for a bias-free MLP: W_i ↦ g_i W_i π_{i−1}(g_{i−1})⁻¹, with g_0 = g_L = I.

    ``gs`` holds one factor per hidden layer (L − 1 of them): an (h, h) matrix, or an (h,) vector for a
    diagonal one; π_i(g) = g^{α_i}, where α_i = 1 with any invertible g for linear layers and α_i =
    homogeneity with a diagonal g for homogeneous ones. (The paper's Eq. 17 shifts the indices by one.)
    Every linear action of [`symmetry.actions`][] and of the paper's groups ([`symmetry.groups.paper`][]) is this one.
    """
    L = len(weights)
    if len(gs) != L - 1:
        raise ValueError(f"{L} weight matrices have {L - 1} hidden layers; got {len(gs)} group elements")
    alphas = [alphas] * (L - 1) if isinstance(alphas, (int, float)) else list(alphas)
    if len(alphas) != L - 1:
        raise ValueError(f"alphas must give one degree per hidden layer ({L - 1}), got {len(alphas)}")
    out = []
    for i, W in enumerate(weights):
        if i < L - 1:
            g = gs[i]
            if g.ndim == 1:
                if g.shape[0] != W.shape[-2]:
                    raise ValueError(f"gs[{i}] must have {W.shape[-2]} entries (a diagonal), got {g.shape[0]}")
                W = g[:, None] * W
            else:
                check_square(f"gs[{i}]", g, W.shape[-2])
                W = g @ W
        if i > 0:
            W = _times_representation_inverse(W, gs[i - 1], alphas[i - 1], f"gs[{i - 1}]")
        out.append(W)
    return tuple(out)


def _times_representation_inverse(W: Tensor, g: Tensor, alpha: float, argument: str) -> Tensor:
    """W π(g)⁻¹, π(g) = g^α: a solve for a matrix with α = 1, an entrywise power for a diagonal."""
    if g.ndim == 1:
        return W * g ** (-alpha)
    if alpha == 1.0:
        return torch.linalg.solve(g.mT, W.mT).mT  # W g⁻¹ = (g⁻ᵀ Wᵀ)ᵀ: a solve, not an inverse
    c = _diagonal_of(argument, g, f"π(g) = g^α with α = {alpha:g} (Example 3)")
    return W * c.unsqueeze(-2) ** (-alpha)


# ---------------------------------------------------------------------------------------
# The nonlinear, data-dependent action (Prop. 8)
# ---------------------------------------------------------------------------------------

ON_RANK_DEFICIENT = ("raise", "warn", "ignore")
PI_FORMS = ("paper", "identity")


def nonlinear_pi(g: Tensor, Z: Tensor, activation: ActivationLike, on_rank_deficient: str = "warn",
                 rcond: float | None = None, form: str = "paper") -> Tensor:
    """π(g, Z) of Prop. 8, the solution of π σ(gZ) = σ(Z) on the batch Z (..., h, k), in one of two forms:

    - ``form="paper"``: π = σ(Z) σ(gZ)⁺ (Eq. 15), as in the paper's figures and notebooks;
    - ``form="identity"``: π = I + (σ(Z) − σ(gZ)) σ(gZ)⁺ = σ(Z)σ(gZ)⁺ + (I − σ(gZ)σ(gZ)⁺), which adds the
      projector onto the complement of σ(gZ)'s columns (annihilated by σ(gZ)): π σ(gZ) = σ(Z) still holds
      for k ≤ h, and π(I, Z) = I exactly, where the paper's form is the projection σ(Z)σ(Z)⁺ of rank k
      (teleportation uses this one, [`symmetry.groups.paper.NonlinearGL`][]). For k > h both forms agree.

    The pseudo-inverse is applied by ``torch.linalg.lstsq`` (gelsd: the minimum-norm solution, without
    forming σ(gZ)⁺; differentiable in g). If σ(gZ) has rank < min(h, k), π is no longer a representation:
    ``on_rank_deficient`` says whether to raise, warn or ignore. ``rcond`` regularises an ill-conditioned
    σ(gZ): singular values below rcond × the largest are treated as zero, so π stays finite.
    """
    check_choice("on_rank_deficient", on_rank_deficient, ON_RANK_DEFICIENT)
    check_choice("form", form, PI_FORMS)
    return _pi_and_hidden(g, Z, activation, on_rank_deficient, rcond, form)[0]


def _pi_and_hidden(g: Tensor, Z: Tensor, activation: ActivationLike, on_rank_deficient: str, rcond: float | None,
                   form: str) -> tuple[Tensor, Tensor]:
    """(π(g, Z), σ(gZ)): the next layer's input comes with π, computed once."""
    act = get_activation(activation)
    check_square("g", g, Z.shape[-2])
    A = act.sigma(g @ Z)  # σ(gZ), (..., h, k)
    B = act.sigma(Z)
    if on_rank_deficient != "ignore":
        s = torch.linalg.svdvals(A.detach())  # (..., min(h, k))
        tol = s.amax(dim=-1, keepdim=True) * max(A.shape[-2:]) * torch.finfo(A.dtype).eps
        rank = (s > tol).sum(dim=-1)
        if bool((rank < s.shape[-1]).any()):
            msg = (f"σ(gZ) is rank-deficient (rank {int(rank.min())} < {s.shape[-1]}, condition number "
                   f"{float(torch.nan_to_num(s[..., 0] / s[..., -1], nan=float('inf')).max()):.3g}): π(g, Z) = σ(Z)σ(gZ)⁺ is not a group action here")
            if on_rank_deficient == "raise":
                raise ValueError(msg)
            warnings.warn(msg, RankDeficiencyWarning, stacklevel=3)
    target = B if form == "paper" else B - A  # exactly 0 at g = I: the identity form is then exactly I
    # gelsd (SVD-based) gives the minimum-norm solution even when rank-deficient or k < h; CUDA's
    # only driver (gels) needs full column rank, so the small (h, h) solve always runs on the CPU
    solution = torch.linalg.lstsq(A.mT.cpu(), target.mT.cpu(), rcond=rcond, driver="gelsd").solution
    pi = solution.mT.to(Z.device)  # (..., h, h)
    if form == "identity":
        pi = pi + torch.eye(pi.shape[-1], dtype=pi.dtype, device=pi.device)
    return pi, A


def multilayer_nonlinear_action(gs: Sequence[Tensor], weights: Params, X: Tensor | None,
                                activations: Sequence[ActivationLike], form: str = "identity",
                                on_rank_deficient: str = "warn") -> Params:
    """Prop. 8 on every hidden layer of an MLP, bottom to top (W_i: h_i × h_{i−1}, H_0 = X):

    Z_i = W_i H_{i−1},  W_i ↦ g_i W_i,  W_{i+1} ↦ W_{i+1} π_i(g_i, Z_i),  H_i = σ_i(g_i Z_i),

    with π in the ``form`` of [`nonlinear_pi`][] (``on_rank_deficient`` as there). Each pair's input H_{i−1} is recomputed from the already
    transformed lower layers (Z_i itself is unchanged where π_{i−1}σ(g_{i−1}Z_{i−1}) = σ(Z_{i−1}), k ≤ h_{i−1}).
    ``X=None`` means X = I_n. Keeps the outputs on this batch exactly when k is at most every hidden width.
    """
    check_choice("form", form, PI_FORMS)
    check_choice("on_rank_deficient", on_rank_deficient, ON_RANK_DEFICIENT)
    L = len(weights)
    if len(gs) != L - 1 or len(activations) != L - 1:
        raise ValueError(f"{L} weight matrices have {L - 1} hidden layers; got {len(gs)} group elements and "
                         f"{len(activations)} activations")
    H = None if X is None else X.to(weights[0])
    out, right = [], None
    for i, W in enumerate(weights):
        if right is not None:
            W = W @ right
        if i == L - 1:
            out.append(W)
            break
        Z = W if H is None else W @ H  # (h_i, k)
        right, H = _pi_and_hidden(gs[i], Z, activations[i], on_rank_deficient, None, form)  # H = σ(g_i Z_i)
        out.append(gs[i] @ W)
    return tuple(out)


def nonlinear_action(g: Tensor, params: Params, X: Tensor | None, activation: ActivationLike,
                     square_only: bool = True, on_rank_deficient: str = "warn") -> Params:
    """g · (U, V, X) = (U π(g, VᵀX), V gᵀ, X) (Prop. 8, the paper's form π = σ(Z)σ(gZ)⁺): keeps F(X) on this
    batch X when h = k.

    X = None means X = I_n (k = n). Prop. 8 is a group action and a symmetry only for a
    square batch (h = k); ``square_only=False`` computes the map anyway.
    """
    U, V = check_group_element("g", g, params)
    if X is not None:
        check_finite_tensor("X", X)
        check_alike("X", X, U, "params[0]")
    h, k = V.shape[-1], (V.shape[-2] if X is None else X.shape[-1])
    if square_only and h != k:
        raise ValueError(f"the nonlinear action is a symmetry only for h == k (Prop. 8); got hidden width "
                         f"h={h} and batch size k={k}. Pass square_only=False to compute it anyway")
    weights = multilayer_nonlinear_action([g], _two_layer_view((U, V)), X, [activation], "paper", on_rank_deficient)
    return _two_layer_back(weights)


# ---------------------------------------------------------------------------------------
# Lie algebras, infinitesimal actions, orbits
# ---------------------------------------------------------------------------------------

def _gl_basis(h: int) -> Tensor:
    return torch.eye(h * h).reshape(h * h, h, h)


def _diagonal_basis(h: int) -> Tensor:
    return torch.diag_embed(torch.eye(h))


def _so_basis(h: int) -> Tensor:
    basis = []
    for k in range(h):
        for l in range(k + 1, h):
            E = torch.zeros(h, h)
            E[k, l], E[l, k] = 1.0, -1.0  # E_[kl] = E_kl − E_lk (App. C.3)
            basis.append(E)
    return torch.stack(basis) if basis else torch.zeros(0, h, h)


LIE_ALGEBRAS = {
    "gl": _gl_basis,  # GL_h: linear layers (Example 2)
    "diagonal": _diagonal_basis,  # positive scaling: homogeneous σ (Example 3)
    "so": _so_basis,  # O(h): radial rescaling σ (Example 5)
}


def lie_algebra_basis(name: str, h: int, dtype=torch.float64, device=None) -> Tensor:
    """A basis of gl(h), the diagonal algebra or so(h), stacked as (dim, h, h)."""
    check_choice("algebra", name, LIE_ALGEBRAS)
    return LIE_ALGEBRAS[name](h).to(dtype=dtype, device=device)


def random_lie_algebra_element(name: str, h: int, generator: torch.Generator | None = None,
                               dtype=torch.float64) -> Tensor:
    """A random combination of the basis: M ∈ gl(h), diagonal, or so(h)."""
    basis = lie_algebra_basis(name, h, dtype)
    coeffs = torch.randn(basis.shape[0], generator=generator, dtype=dtype)
    return torch.einsum("b,bij->ij", coeffs, basis)


def linear_infinitesimal_action(M: Tensor, params: Params, alpha: float = 1.0) -> Params:
    """M · (U, V) = (−U dπ(M), V Mᵀ) with dπ(M) = αM (Eq. 13; Example 9 for α ≠ 1): Eq. 18 for two layers."""
    return _two_layer_back(multilayer_infinitesimal_action([M], _two_layer_view(tuple(params)), alpha))


def multilayer_infinitesimal_action(Ms: Sequence[Tensor], weights: Params,
                                    alphas: Sequence[float] | float = 1.0) -> Params:
    """Eq. 18: M · W_i = M_i W_i − W_i dπ_{i−1}(M_{i−1}), dπ(M) = αM, M_0 = M_L = 0."""
    L = len(weights)
    alphas = [alphas] * (L - 1) if isinstance(alphas, (int, float)) else list(alphas)
    out = []
    for i, W in enumerate(weights):
        term = torch.zeros_like(W)
        if i < L - 1:
            term = term + Ms[i] @ W
        if i > 0:
            term = term - alphas[i - 1] * (W @ Ms[i - 1])
        out.append(term)
    return tuple(out)


def infinitesimal_action(action: Action, M: Tensor, params: Params) -> Params:
    """d/dt|₀ exp(tM) · θ (Eq. 9), by forward-mode differentiation of any action."""
    t0 = torch.zeros((), dtype=M.dtype, device=M.device)

    def along(t):
        return tuple(action(torch.linalg.matrix_exp(t * M), tuple(params)))

    return jvp(along, (t0,), (torch.ones_like(t0),))[1]


def orbit_dimension(action: Action, params: Params, algebra: str, rtol: float = 1e-8) -> int:
    """Dimension of the orbit {g · θ} at θ: rank of the Jacobian of g ↦ g · θ at g = I (Eq. 20–22).

    The Jacobian's columns are the infinitesimal actions of a basis of the Lie algebra;
    the rank is numerical, with singular values below ``rtol``·(largest) counted as zero.
    """
    params = check_params("params", params)
    h = params[0].shape[-1]
    basis = lie_algebra_basis(algebra, h, params[0].dtype, params[0].device)
    if basis.shape[0] == 0:
        return 0
    columns = [torch.cat([t.reshape(-1) for t in infinitesimal_action(action, E, params)]) for E in basis]
    J = torch.stack(columns, dim=1)  # (D, dim g)
    s = torch.linalg.svdvals(J)
    return int((s > rtol * s.max()).sum()) if s.max() > 0 else 0


def orbit_dimension_formula(kind: str, m: int, h: int, n: int) -> dict[str, int]:
    """The paper's Eq. 20–22 for a generic (U, V), and what the rank computation gives.

    Returns ``{"paper": …, "generic": …}``. They agree for the linear case. For the
    positive scaling group the generic stabiliser is trivial, so the orbit has dimension h
    (Eq. 21 says min(h, max(n, m))); for O(h) the stabiliser fixes the span of the rows of
    U and the columns of V, of dimension min(h, m + n) (Eq. 22 uses max(m, n)).
    """
    check_choice("kind", kind, ("linear", "homogeneous", "radial"))
    if kind == "linear":
        d = h * h - max(0, h - n) * max(0, h - m)
        return {"paper": d, "generic": d}
    if kind == "homogeneous":
        return {"paper": min(h, max(n, m)), "generic": h}
    paper = math.comb(h, 2) - (math.comb(h - max(m, n), 2) if h > max(m, n) else 0)
    generic = math.comb(h, 2) - math.comb(max(0, h - (m + n)), 2)
    return {"paper": paper, "generic": generic}
