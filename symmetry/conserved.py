"""Conserved quantities of gradient flow (App. C).

Convention: the elementwise Q carries the ½ of Eq. 48, Q = ½Tr[UᵀU] − Σ_{a,j} A(V_aj)
with A(x) = ∫₀ˣ σ/σ'. The reference code plots Tr[UᵀU] − Tr[VᵀV] (linear) and
Tr[UᵀU] − Σ cosh²(V) (tanh), i.e. 2Q + const: equally conserved, twice as large.
All functions accept leading batch dimensions on U and V.

One sign for every quadratic quantity: outer layer minus inner, as Eq. 45 and 48 (Q = ½Tr[UᵀU − VVᵀ]) and
Example 9 (diag[αUᵀU − VVᵀ]) write it. One name per quantity; the others are aliases of the same sign:
[`balance_matrix`][] (the matrix W_{i+1}ᵀW_{i+1} − W_iW_iᵀ of a linear MLP; alias [`layer_imbalances`][],
Example 7's name; two-layer case [`imbalance_matrix`][], UᵀU − VᵀV), [`neuron_balance`][] (per neuron;
two-layer case [`homogeneous_imbalance`][]), [`layer_balance`][] (per layer, its trace form).
"""
from __future__ import annotations

from typing import Sequence, cast

import torch

from .activations import ActivationLike, get_activation
from .errors import NotSupportedError
from .types import Params
from .validation import check_params, check_two_layer

Tensor = torch.Tensor


def Q_terms(params: Params, activation: ActivationLike) -> tuple[Tensor, Tensor]:
    """The two terms of Eq. 48 per neuron: (½‖u_i‖², Σ_a A(V_ai)), each of shape (..., h)."""
    U, V = check_two_layer("params", params)
    act = get_activation(activation)
    if getattr(act, "integral", True) is None:
        raise NotSupportedError(f"activation {act.name!r} has no ∫σ/σ' in the table: Eq. 48 is not available for it")
    return 0.5 * (U * U).sum(dim=-2), act.integral(V).sum(dim=-2)  # type: ignore[misc]  # checked above


def conserved_Q(params: Params, activation: ActivationLike, per_neuron: bool = False) -> Tensor:
    """Q = ½Tr[UᵀU] − Σ_{a,j} ∫₀^{V_aj} σ/σ' (Eq. 48), for whitened input X = I.

    Conserved under gradient flow of any loss of F = Uσ(Vᵀ); ``per_neuron=True`` returns
    the h neuron-wise terms Q_i = ½‖u_i‖² − Σ_a A(V_ai), each conserved on its own.
    """
    u_term, v_term = Q_terms(params, activation)
    Q = u_term - v_term
    return Q if per_neuron else Q.sum(dim=-1)


AUTHORS_A_OFFSET = {"tanh": 0.5, "sigmoid": 1.0}
"""The constant per entry of V that the authors' code adds to A(x) = ∫₀ˣ σ/σ′: their tanh term Σcosh²V is
Σ(2A + 1) = 2Σ(A + ½), their sigmoid term Σ(V + eⱽ) is Σ(A + 1); identity and ReLU carry none."""
Q_CONVENTIONS = ("authors", "ours")


def Q_normalizer(initial: Params, activation: ActivationLike, convention: str = "ours") -> tuple[float, Tensor]:
    """(shift, denominator) of Q̃ = |Q − shift| / denominator (App. D.2) in a ``convention``:

    ``"ours"``: A(0) = 0, Q̃ = |Q| / (|½Tr U₀ᵀU₀| + |ΣA(V₀)|);
    ``"authors"``: the reference code's A + c (c in [`AUTHORS_A_OFFSET`][]), so both terms carry
    c·n·h: Q̃ = |Q − c·nh| / (|½Tr U₀ᵀU₀| + |ΣA(V₀) + c·nh|). A positive multiple cancels in the ratio.
    """
    if convention not in Q_CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not allowed; choose one of {', '.join(Q_CONVENTIONS)}")
    u0, v0 = (t.sum(dim=-1) for t in Q_terms(initial, activation))
    shift = 0.0
    if convention == "authors":
        V0 = initial[1]
        shift = AUTHORS_A_OFFSET.get(get_activation(activation).name, 0.0) * V0.shape[-1] * V0.shape[-2]
    return shift, u0.abs() + (v0 + shift).abs()


def normalized_Q(params: Params, activation: ActivationLike, initial: Params, convention: str = "ours") -> Tensor:
    """Q̃ = |Q| / (|½Tr U₀ᵀU₀| + |Σ A(V₀)|) (App. D.2): Q relative to its two terms at init.

    ``convention="authors"`` uses the reference code's constants (see [`Q_normalizer`][]).
    """
    shift, denominator = Q_normalizer(initial, activation, convention)
    return (conserved_Q(params, activation) - shift).abs() / denominator


def imbalance_matrix(params: Params) -> Tensor:
    """UᵀU − VᵀV (h × h): every entry is conserved for a linear two-layer net (Example 7). The two-layer
    case of [`balance_matrix`][] ((W_1, W_2) = (Vᵀ, U)), in the paper's words."""
    U, V = check_two_layer("params", params)
    return balance_matrix((V.mT, U))[0]


def homogeneous_imbalance(params: Params, alpha: float = 1.0) -> Tensor:
    """diag[α UᵀU − VᵀV] = α‖u_i‖² − ‖v_i‖², conserved for α-homogeneous σ (Example 9). Shape (..., h)."""
    U, V = check_two_layer("params", params)
    return neuron_balance((V.mT, U), alpha=alpha)[0]


def neuron_balance(a: Params, b: Params | None = None, alpha: float | Sequence[float] = 1.0) -> list[Tensor]:
    """α_i⟨a_{i+1}[:, j], b_{i+1}[:, j]⟩ − ⟨a_i[j, :], b_i[j, :]⟩ per neuron j of each hidden layer i of an MLP
    (W_1, …, W_L), a list of (..., h_i): "outer minus inner" (Example 9, Eq. 25). With b = a = θ it is conserved
    by GF when σ_i is α_i-homogeneous; a GD step θ − ηd with d a gradient changes it by exactly η²·(d, d)."""
    a, b = _pair(a, b)
    alphas = _alphas(alpha, len(a) - 1)
    return [alphas[i] * (a[i + 1] * b[i + 1]).sum(dim=-2) - (a[i] * b[i]).sum(dim=-1) for i in range(len(a) - 1)]


def layer_imbalances(weights: Sequence[Tensor]) -> list[Tensor]:
    """An alias of [`balance_matrix`][] (same sign): W_{i+1}ᵀW_{i+1} − W_iW_iᵀ (n_i × n_i) for each hidden
    layer of a linear MLP (W_1, …, W_L), conserved by GF (Example 7). Example 7 writes the negative,
    W_iW_iᵀ − W_{i+1}ᵀW_{i+1}; the library keeps one sign for every quadratic quantity, outer layer minus
    inner, as Eq. 45 and 48 (Q = ½Tr[UᵀU − VVᵀ]) and Example 9 write it (equally conserved)."""
    return balance_matrix(check_params("weights", weights))


def conserved_Q_M(params: Params, M_theta: Params) -> Tensor:
    """Q_M = ⟨θ, M·θ⟩ (Prop. 12, Eq. 25), given the infinitesimal action M·θ.

    Conserved for any symmetric M in the Lie algebra of a linear symmetry; zero for
    anti-symmetric M (then see [`angular_momentum`][]).
    """
    params = check_params("params", params)
    if len(M_theta) != len(params):
        raise ValueError(f"M·θ has {len(M_theta)} tensors but θ has {len(params)}")
    return cast(Tensor, sum((p * m).sum(dim=(-2, -1)) for p, m in zip(params, M_theta)))


def radial_lambda(params: Params) -> Tensor:
    """λ_i = ‖u_i‖² + ‖v_i‖² (Eq. 65), shape (..., h).

    Conserved for Prop. 14's radial net from any init (its per-neuron scaling symmetry);
    under spectral init it equals ū_i² + v̄_i², the rate constant of Prop. 15–16.
    """
    U, V = check_two_layer("params", params)
    return (U * U).sum(dim=-2) + (V * V).sum(dim=-2)


def angular_momentum(params: Params, velocities: Params) -> Tensor:
    """J = A(UᵀU̇ + VᵀV̇), A(B) = B − Bᵀ: the (k, l) angular momenta of Eq. 30 in plane (e_k, e_l).

    θ̇ᵀMθ = 0 for every anti-symmetric M of an O(h) symmetry (Eq. 29) says J = 0 along
    gradient flow: in each plane the rows of U and of V carry opposite angular momenta
    (the paper's V is our Vᵀ, hence its minus sign). Shape (..., h, h).
    """
    U, V = check_two_layer("params", params)
    dU, dV = velocities
    B = U.mT @ dU + V.mT @ dV
    return B - B.mT



# ---------------------------------------------------------------------------------------------
# Gluch & Urbanke, "Noether: the more things change, the more stay the same" (G&U below): what
# survives beyond gradient flow, for θ̈ + b(t)θ̇ = −∇L (their Eq. 22): Newtonian dynamics ND (b = 0),
# Nesterov's flow NAGF (b = 3/t), and gradient flow GF (θ̇ = −∇L).
#
# Each scaling-type symmetry gives a bilinear form f(a, b) of two parameter tuples with f(∇L, θ) = 0.
# Then f(θ, θ) is the balance that GF conserves, and along θ̈ + bθ̇ = −∇L
#     d/dt [w(t) f(θ̇, θ)] = w(t) f(θ̇, θ̇),   w = exp∫b (ND: w = 1; NAGF: w = t³),
# so the Noether charge w f(θ̇, θ) − ∫ w f(θ̇, θ̇) dt is conserved (G&U Eq. 17, 30, 41, 47) — the
# ∫ runs along the trajectory (``noether_charge``). Sign convention: outer layer minus inner,
# as in ``homogeneous_imbalance``.
# ---------------------------------------------------------------------------------------------

def _alphas(alpha, n: int) -> list[float]:
    if isinstance(alpha, (int, float)):
        return [float(alpha)] * n
    alpha = [float(a) for a in alpha]
    if len(alpha) != n:
        raise ValueError(f"alpha needs one degree per hidden layer ({n}), got {len(alpha)}")
    return alpha


def _pair(a: Params, b: Params | None) -> tuple[Params, Params]:
    a = check_params("a", a)
    b = a if b is None else check_params("b", b, len(a))
    return a, b


def _frobenius(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum(dim=(-2, -1))


def layer_balance(a: Params, b: Params | None = None, alpha: float | list = 1.0) -> Tensor:
    """α_i⟨a_{i+1}, b_{i+1}⟩ − ⟨a_i, b_i⟩ per hidden layer i, shape (..., L − 1) (G&U Eq. 29–31, Table 2).

    With b = a = θ = (W_1, …, W_L): the layer balance α‖W_{i+1}‖²_F − ‖W_i‖²_F, conserved by GF when σ_i
    is α-homogeneous (Eq. 31; α = 1: ReLU, LeakyReLU, Du et al. 2018). With (θ̇, θ) it is half its rate,
    with (θ̇, θ̇) the kinetic term ‖Ẇ‖² of Eq. 30. ``alpha``: one degree, or one per hidden layer.
    """
    a, b = _pair(a, b)
    alphas = _alphas(alpha, len(a) - 1)
    terms = [alphas[i] * _frobenius(a[i + 1], b[i + 1]) - _frobenius(a[i], b[i]) for i in range(len(a) - 1)]
    return torch.stack(terms, dim=-1)


def balance_matrix(a: Params, b: Params | None = None) -> list[Tensor]:
    """b_{i+1}ᵀ a_{i+1} − a_i b_iᵀ (n_i × n_i) for each hidden layer i of a linear MLP (G&U Eq. 39–43).

    With b = a = θ: the balance matrix W_{i+1}ᵀW_{i+1} − W_iW_iᵀ, conserved by GF (Eq. 42; Example 7's
    imbalance with the library's one sign, outer minus inner; [`layer_imbalances`][] is its alias). With (θ̇, θ): W_{i+1}ᵀẆ_{i+1} − Ẇ_iW_iᵀ, which GF keeps at 0 and whose
    derivative under ND is the kinetic matrix (θ̇, θ̇) = Ẇ_{i+1}ᵀẆ_{i+1} − Ẇ_iẆ_iᵀ (Eq. 41, 43).
    """
    a, b = _pair(a, b)
    return [b[i + 1].mT @ a[i + 1] - a[i] @ b[i].mT for i in range(len(a) - 1)]


def swish_balance(a: Params, b: Params | None = None) -> Tensor:
    """⟨a_{W_{i+1}}, b_{W_{i+1}}⟩ + ⟨a_{β_i}, b_{β_i}⟩ − ⟨a_{W_i}, b_{W_i}⟩ per Swish layer (G&U Sec. 4.3).

    Parameters (W_1, β_1, …, W_L) of [`symmetry.models.SwishMLP`][]. With b = a = θ:
    ‖W_{i+1}‖² + ‖β_i‖² − ‖W_i‖², conserved by GF (trainable β, Table 2). Shape (..., L − 1).
    """
    a, b = _pair(a, b)
    terms = [_frobenius(a[k + 2], b[k + 2]) + _frobenius(a[k + 1], b[k + 1]) - _frobenius(a[k], b[k])
             for k in range(0, len(a) - 2, 2)]
    return torch.stack(terms, dim=-1)


def data_angular_momentum(params: Params, velocities: Params) -> Tensor:
    """J = W_1ᵀẆ_1 − Ẇ_1ᵀW_1 (n_0 × n_0, antisymmetric): G&U Eq. 47–48 for rotation-symmetric data.

    Conserved by ND; t³J by NAGF; J = 0 along GF. For linear regression w ∈ R³ (W_1 = wᵀ, one row)
    J holds the angular momentum w × ẇ of Eq. 45–46: see [`angular_momentum_vector`][].
    """
    W, dW = params[0], velocities[0]
    return W.mT @ dW - dW.mT @ W


def angular_momentum_vector(J: Tensor) -> Tensor:
    """(J₂₃, J₃₁, J₁₂): the vector w × ẇ from the 3 × 3 antisymmetric J of [`data_angular_momentum`][]."""
    return torch.stack([J[..., 1, 2], J[..., 2, 0], J[..., 0, 1]], dim=-1)


def hamiltonian(loss: Tensor, velocities: Params) -> Tensor:
    """H = ½‖θ̇‖² + L(θ): conserved by ND (time symmetry, G&U Sec. 7); non-increasing under NAGF (Eq. 35)."""
    return loss + 0.5 * sum((v * v).sum(dim=(-2, -1)) for v in velocities)


def noether_charge(rate: Tensor, kinetic_integral: Tensor, weight: float | Tensor = 1.0) -> Tensor:
    """w(t)·f(θ̇, θ) − ∫₀ᵗ w f(θ̇, θ̇) ds: the conserved form of G&U Eq. 30 / 41 (ND: w = 1; NAGF: w = t³).

    ``rate`` = f(θ̇, θ) and ``kinetic_integral`` = the path integral, from the trajectory
    ([`symmetry.dynamics.integrate`][] integrates it with the ODE; the discrete steppers sum it).
    """
    return weight * rate - kinetic_integral


def nd_balance_bound(initial_loss: Tensor | float, t: Tensor | float, alpha: float = 1.0,
                     min_loss: Tensor | float = 0.0) -> Tensor | float:
    """|Δ balance| ≤ 2·max(1, α)·(L(θ₀) − min L)·t² along ND from rest (G&U Eq. 33–34).

    From ½‖θ̇‖² + L = L(θ₀) (Hamiltonian, θ̇(0) = 0): |d²/dt² balance| = 2|α‖Ẇ_{i+1}‖² − ‖Ẇ_i‖²|
    ≤ 2 max(1, α)‖θ̇‖² ≤ 4 max(1, α)(L(θ₀) − min L); integrate twice. α = 1, min L = 0 is Eq. 34.
    """
    return 2 * max(1.0, float(alpha)) * (initial_loss - min_loss) * t ** 2
