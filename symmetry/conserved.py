"""Conserved quantities of gradient flow (App. C).

Convention: the elementwise Q carries the ½ of Eq. 48, Q = ½Tr[UᵀU] − Σ_{a,j} A(V_aj)
with A(x) = ∫₀ˣ σ/σ'. The reference code plots Tr[UᵀU] − Tr[VᵀV] (linear) and
Tr[UᵀU] − Σ cosh²(V) (tanh), i.e. 2Q + const: equally conserved, twice as large.
All functions accept leading batch dimensions on U and V.
"""
from __future__ import annotations

import torch

from .activations import ActivationLike, get_activation
from .validation import check_params

Tensor = torch.Tensor
Params = tuple[Tensor, ...]


def Q_terms(params: Params, activation: ActivationLike) -> tuple[Tensor, Tensor]:
    """The two terms of Eq. 48 per neuron: (½‖u_i‖², Σ_a A(V_ai)), each of shape (..., h)."""
    U, V = check_params("params", params, 2)
    act = get_activation(activation)
    if getattr(act, "integral", True) is None:
        raise ValueError(f"activation {act.name!r} has no ∫σ/σ' in the table: Eq. 48 is not available for it")
    return 0.5 * (U * U).sum(dim=-2), act.integral(V).sum(dim=-2)


def conserved_Q(params: Params, activation: ActivationLike, per_neuron: bool = False) -> Tensor:
    """Q = ½Tr[UᵀU] − Σ_{a,j} ∫₀^{V_aj} σ/σ' (Eq. 48), for whitened input X = I.

    Conserved under gradient flow of any loss of F = Uσ(Vᵀ); ``per_neuron=True`` returns
    the h neuron-wise terms Q_i = ½‖u_i‖² − Σ_a A(V_ai), each conserved on its own.
    """
    u_term, v_term = Q_terms(params, activation)
    Q = u_term - v_term
    return Q if per_neuron else Q.sum(dim=-1)


def normalized_Q(params: Params, activation: ActivationLike, initial: Params) -> Tensor:
    """Q̃ = |Q| / (|½Tr U₀ᵀU₀| + |Σ A(V₀)|) (App. D.2): Q relative to its two terms at init."""
    u0, v0 = (t.sum(dim=-1) for t in Q_terms(initial, activation))
    return conserved_Q(params, activation).abs() / (u0.abs() + v0.abs())


def imbalance_matrix(params: Params) -> Tensor:
    """UᵀU − VᵀV (h × h): every entry is conserved for a linear two-layer net (Example 7)."""
    U, V = check_params("params", params, 2)
    return U.mT @ U - V.mT @ V


def homogeneous_imbalance(params: Params, alpha: float = 1.0) -> Tensor:
    """diag[α UᵀU − VᵀV] = α‖u_i‖² − ‖v_i‖², conserved for α-homogeneous σ (Example 9). Shape (..., h)."""
    U, V = check_params("params", params, 2)
    return alpha * (U * U).sum(dim=-2) - (V * V).sum(dim=-2)


def layer_imbalances(weights: Params) -> list[Tensor]:
    """W_i W_iᵀ − W_{i+1}ᵀ W_{i+1} (n_i × n_i) for each hidden layer of a linear MLP (Example 7)."""
    weights = check_params("weights", weights)
    return [W @ W.mT - W_next.mT @ W_next for W, W_next in zip(weights[:-1], weights[1:])]


def conserved_Q_M(params: Params, M_theta: Params) -> Tensor:
    """Q_M = ⟨θ, M·θ⟩ (Prop. 12, Eq. 25), given the infinitesimal action M·θ.

    Conserved for any symmetric M in the Lie algebra of a linear symmetry; zero for
    anti-symmetric M (then see :func:`angular_momentum`).
    """
    params = check_params("params", params)
    if len(M_theta) != len(params):
        raise ValueError(f"M·θ has {len(M_theta)} tensors but θ has {len(params)}")
    return sum((p * m).sum(dim=(-2, -1)) for p, m in zip(params, M_theta))


def radial_lambda(params: Params) -> Tensor:
    """λ_i = ‖u_i‖² + ‖v_i‖² (Eq. 65), shape (..., h).

    Conserved for Prop. 14's radial net from any init (its per-neuron scaling symmetry);
    under spectral init it equals ū_i² + v̄_i², the rate constant of Prop. 15–16.
    """
    U, V = check_params("params", params, 2)
    return (U * U).sum(dim=-2) + (V * V).sum(dim=-2)


def angular_momentum(params: Params, velocities: Params) -> Tensor:
    """J = A(UᵀU̇ + VᵀV̇), A(B) = B − Bᵀ: the (k, l) angular momenta of Eq. 30 in plane (e_k, e_l).

    θ̇ᵀMθ = 0 for every anti-symmetric M of an O(h) symmetry (Eq. 29) says J = 0 along
    gradient flow: in each plane the rows of U and of V carry opposite angular momenta
    (the paper's V is our Vᵀ, hence its minus sign). Shape (..., h, h).
    """
    U, V = check_params("params", params, 2)
    dU, dV = velocities
    B = U.mT @ dU + V.mT @ dV
    return B - B.mT

