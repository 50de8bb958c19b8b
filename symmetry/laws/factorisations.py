"""Factorizations φ of the paper's models (Marcotte et al.): g(θ, x) = f(φ(θ), x), θ flat of size D, φ(θ) flat of size
N."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..activations import ActivationLike, get_activation
from ..conserved import conserved_Q, homogeneous_imbalance, imbalance_matrix, layer_imbalances

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# Factorizations φ of the paper's models
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Factorization:
    """A model's reparametrisation φ: θ ∈ R^D ↦ φ(θ) ∈ R^N, with θ packed from named blocks.

    ``known_laws`` (optional) maps θ to a vector of the laws a paper gives; the number of
    independent ones is the rank of their Jacobian at a generic point ([`known_law_count`][]).
    """

    phi: Callable[[Tensor], Tensor]
    shapes: tuple[tuple[int, ...], ...]
    names: tuple[str, ...]
    description: str
    known_laws: Callable[[Tensor], Tensor] | None = None

    @property
    def D(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def split(self, theta: Tensor) -> tuple[Tensor, ...]:
        """θ as its parameter blocks (views)."""
        sizes = [math.prod(s) for s in self.shapes]
        return tuple(c.reshape(s) for c, s in zip(torch.split(theta, sizes), self.shapes))

    def variable_names(self) -> list[str]:
        """One name per entry of θ, e.g. ``U1_0_2`` for U1[0, 2] (valid sympy symbols)."""
        out = []
        for name, shape in zip(self.names, self.shapes):
            for index in torch.cartesian_prod(*[torch.arange(n) for n in shape]).reshape(-1, len(shape)).tolist():
                out.append("_".join([name, *map(str, index)]))
        return out

    def random_point(self, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        """A generic θ: i.i.d. standard normal entries."""
        return torch.randn(self.D, generator=generator, dtype=dtype)


def _check_widths(argument: str, widths: Sequence[int], minimum_layers: int = 2) -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) < minimum_layers + 1 or not all(isinstance(n, int) and n >= 1 for n in widths):
        raise ValueError(f"{argument} must list at least {minimum_layers + 1} positive integer widths "
                         f"(n_0, …, n_q) for q ≥ {minimum_layers} layers, got {widths!r}")
    return widths


def _upper_triangle(M: Tensor) -> Tensor:
    """The entries on and above the diagonal of a symmetric matrix: its independent entries."""
    rows, cols = torch.triu_indices(M.shape[-2], M.shape[-1])
    return M[..., rows, cols]


def linear_net(widths: Sequence[int]) -> Factorization:
    """q-layer linear net φ(θ) = U₁U₂⋯U_q with U_i ∈ R^{n_(i−1)×n_i}.

    Known laws (Arora et al.; the paper's Eq. 27 with every M ∈ gl): the entries of
    U_iᵀU_i − U_(i+1)U_(i+1)ᵀ, i = 1 … q−1 (upper triangles, the matrices are symmetric).
    """
    n = _check_widths("widths", widths)
    shapes = tuple((n[i], n[i + 1]) for i in range(len(n) - 1))
    fact: Factorization

    def phi(theta: Tensor) -> Tensor:
        U = fact.split(theta)
        P = U[0]
        for Ui in U[1:]:
            P = P @ Ui
        return P.reshape(-1)

    def known(theta: Tensor) -> Tensor:
        # with W_i = U_iᵀ these are the multilayer imbalances W_(i+1)ᵀW_(i+1) − W_iW_iᵀ (Example 7, the library's sign)
        return torch.cat([_upper_triangle(M) for M in layer_imbalances([U.T for U in fact.split(theta)])])

    fact = Factorization(phi, shapes, tuple(f"U{i + 1}" for i in range(len(shapes))),
                         f"linear net, widths {n}", known)
    return fact


def relu_net(widths: Sequence[int], bias: bool = False) -> Factorization:
    """q-layer ReLU net in its path factorisation: φ(θ) lists, for every path through the net,
    the product of the weights along it (and, with ``bias``, every path that starts at a bias).

    On a region where the activation pattern is fixed, the net's output is a linear function
    of these products, so φ is the right factorisation (Marcotte et al.; for q = 2 it is the
    slides' (u_k v_kᵀ)_k). Weights W_l ∈ R^{n_l×n_(l−1)}, biases b_l ∈ R^{n_l} (l = 1 … q).
    Known laws (Du et al.): for every hidden neuron, ‖incoming weights and bias‖² − ‖outgoing weights‖².
    """
    n = _check_widths("widths", widths)
    q = len(n) - 1
    shapes: list[tuple[int, ...]] = [(n[l + 1], n[l]) for l in range(q)]
    names = [f"W{l + 1}" for l in range(q)]
    if bias:
        shapes += [(n[l + 1],) for l in range(q)]
        names += [f"b{l + 1}" for l in range(q)]
    fact: Factorization

    def phi(theta: Tensor) -> Tensor:
        blocks = fact.split(theta)

        def extend(tensor: Tensor, layer: int) -> Tensor:
            """Path products P[i_q, …, i_layer, …] from a tensor indexed by layer ``layer``'s neurons."""
            for W in blocks[layer + 1:q]:  # W: (n_(l+1), n_l); no sum, every path is kept
                tensor = W.reshape(W.shape + (1,) * (tensor.ndim - 1)) * tensor.unsqueeze(0)
            return tensor

        out = [extend(blocks[0], 0).reshape(-1)]
        if bias:
            out += [extend(blocks[q + l], l).reshape(-1) for l in range(q)]
        return torch.cat(out)

    def known(theta: Tensor) -> Tensor:
        blocks = fact.split(theta)
        laws = []
        for l in range(q - 1):  # hidden layer l+1: incoming W_{l+1} (and b_{l+1}), outgoing W_{l+2}
            # Example 9 with (U, V) = (outgoing, incoming): ‖u_k‖² − ‖v_k‖², negated to read in − out
            balance = -homogeneous_imbalance((blocks[l + 1], blocks[l].T))
            laws.append(balance + blocks[q + l] ** 2 if bias else balance)
        return torch.cat(laws)

    fact = Factorization(phi, tuple(shapes), tuple(names),
                         f"ReLU net, widths {n}{', biases' if bias else ''} (path products)", known)
    return fact


def two_layer_net(m: int, h: int, n: int, activation: ActivationLike = "identity") -> Factorization:
    """The main paper's F = Uσ(Vᵀ) with whitened input X = I: φ(U, V) = Uσ(Vᵀ) ∈ R^{m×n}.

    U ∈ R^{m×h}, V ∈ R^{n×h} (the repository's convention). Known laws: for σ = identity the
    entries of UᵀU − VᵀV (Eq. 27/28 with M ∈ gl_h); otherwise the h per-neuron
    Q_k = ½‖u_k‖² − Σ_a ∫₀^{V_ak} σ/σ' of Eq. 48.
    """
    for name, value in (("m", m), ("h", h), ("n", n)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    act = get_activation(activation)
    shapes = ((m, h), (n, h))
    fact: Factorization

    def phi(theta: Tensor) -> Tensor:
        U, V = fact.split(theta)
        return (U @ act.sigma(V).T).reshape(-1)

    def known(theta: Tensor) -> Tensor:
        U, V = fact.split(theta)
        if act.name == "identity":
            return _upper_triangle(imbalance_matrix((U, V)))
        return conserved_Q((U, V), act, per_neuron=True)

    fact = Factorization(phi, shapes, ("U", "V"), f"two-layer net F = U·{act.name}(Vᵀ), (m, h, n) = ({m}, {h}, {n})",
                         known)
    return fact


def product_map(D: int) -> Factorization:
    """φ(x) = x₁x₂⋯x_D (one output): D − 1 laws, dim Lie = 1 (Marcotte et al.'s first example)."""
    if not isinstance(D, int) or D < 1:
        raise ValueError(f"D must be a positive integer, got {D!r}")
    return Factorization(lambda x: x.prod().reshape(1), ((D,),), ("x",), f"product of {D} variables")
