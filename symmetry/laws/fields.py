"""The fields ∇φ_i of a factorisation (or of any module's outputs) and their Lie brackets [w₁, w₂] = ∂w₁ w₂ − ∂w₂ w₁,
as functions of the flat θ."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._tools import math_attention
from ..tuples import quiet_forward_mode
from .factorisations import Factorization

Tensor = torch.Tensor


Field = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# Vector fields and brackets
# ---------------------------------------------------------------------------------------------

def check_differentiable(function: Callable[[Tensor], Tensor], theta: Tensor, name: str = "phi",
                         directions: int = 3, seed: int = 0) -> None:
    """Raise if ``function`` is not differentiable at θ: non-finite values or derivatives, or
    one-sided difference quotients that disagree (a kink, as for a ReLU at 0)."""
    gen = torch.Generator().manual_seed(seed)
    with quiet_forward_mode():
        value = function(theta)
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} is not finite at theta")
        eps = 1e-6 * (1.0 + float(theta.abs().max()))
        for _ in range(directions):
            v = torch.randn(theta.numel(), generator=gen, dtype=theta.dtype)
            v = v / v.norm()
            _, derivative = torch.func.jvp(function, (theta,), (v,))  # type: ignore[misc]
            if not bool(torch.isfinite(derivative).all()):
                raise ValueError(f"{name} is not differentiable at theta: its derivative is not finite there")
            gap = float(((function(theta + eps * v) - value) - (value - function(theta - eps * v))).abs().max()) / eps
            if gap > 1e-3 * (1.0 + float(derivative.abs().max())):
                raise ValueError(f"{name} is not differentiable at theta: its one-sided derivatives differ by "
                                 f"{gap:.3g} along a random direction (a kink, e.g. a ReLU at 0); "
                                 "choose a generic theta")


@dataclass(frozen=True)
class VectorFields:
    """A finite family of vector fields on R^D, θ ↦ a (K, D) matrix whose rows are the fields.

    For a model these are the ∇φ_i ([`vector_fields`][]); any other family (e.g. random
    polynomial fields) can be given directly. ``function`` is what is checked for
    differentiability: φ for a model, the fields themselves otherwise.
    """

    fields: Field
    D: int
    variables: tuple[str, ...]
    description: str
    function: Callable[[Tensor], Tensor] | None = None
    #: weights (K, fields) ↦ the K combined fields θ ↦ weights @ fields(θ), when that has a
    #: cheaper form (for a model, the gradient fields of the combined cotangents)
    combination: Callable[[Tensor], Field] | None = None

    def combine(self, weights: Tensor) -> Field:
        """θ ↦ ``weights`` @ fields(θ): K linear combinations of the fields."""
        if self.combination is not None:
            return self.combination(weights)
        return lambda theta: weights @ self.fields(theta)

    def random_point(self, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        return torch.randn(self.D, generator=generator, dtype=dtype)

    def check(self, theta: Tensor) -> Tensor:
        """θ as a flat float64 vector of the right size, at which the fields are differentiable."""
        if not isinstance(theta, Tensor) or theta.ndim != 1 or theta.numel() != self.D:
            shape = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
            raise ValueError(f"theta must be a flat tensor of D = {self.D} parameters ({self.description}), "
                             f"got shape {shape}")
        if not bool(torch.isfinite(theta).all()):
            raise ValueError("theta contains NaN or infinity")
        theta = theta.to(torch.float64)
        if self.function is not None:
            check_differentiable(self.function, theta, "phi")
        else:
            check_differentiable(lambda t: self.fields(t).reshape(-1), theta, "the vector fields")
        return theta


def output_fields(model, example_input, loss: str | None = None) -> VectorFields:
    """Any ``nn.Module`` as a family of fields: the gradients ∇_θ f_o(x_n; θ) of every output entry on the example
    input (the log-softmax of the output for ``loss="cross_entropy"``), in ``named_parameters()`` order.

    A law of every loss on these inputs is orthogonal to all of them (and their brackets), so ALGO 2 on this family
    counts the laws of the module on ``example_input``; enough inputs make it the laws of the architecture. The
    count takes nested forward-mode derivatives: an operation torch has no forward-mode rule for is refused there.
    The model runs with ``scaled_dot_product_attention`` on its math backend (``sdpa_kernel(SDPBackend.MATH)``):
    torch's fused attention kernels have neither second derivatives nor forward-mode rules.
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if loss not in (None, "cross_entropy"):
        raise ValueError(f"loss must be None or 'cross_entropy', got {loss!r}")
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    named = [(n, p.detach()) for n, p in model.named_parameters()]
    names = tuple(n for n, _ in named)
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]

    def f(theta: Tensor) -> Tensor:
        params = {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        with math_attention():  # nested derivatives: attention on its math backend
            out = torch.func.functional_call(model, params, inputs)
        if loss == "cross_entropy":
            out = torch.log_softmax(out, dim=-1)
        return out.reshape(-1)

    return VectorFields(lambda theta: torch.func.jacrev(f)(theta), sum(sizes), names,
                        f"the outputs of {type(model).__name__} on an input of shape "
                        f"{tuple(inputs[0].shape)}", function=f)


def vector_fields(model: Factorization | VectorFields, seed: int = 0) -> VectorFields:
    """The fields ∇φ_i of a model (as a [`VectorFields`][]); a VectorFields is returned as is.

    If φ has more outputs N than parameters D (deep ReLU nets: one output per path), the
    fields are D fixed random combinations ∂φᵀc instead, which span the same W_φ(θ) at every
    generic θ and keep the cost of a field independent of N.
    """
    if isinstance(model, VectorFields):
        return model
    if not isinstance(model, Factorization):
        raise TypeError(f"model must be a Factorization or VectorFields, got {type(model).__name__}")
    gen = torch.Generator().manual_seed(seed)
    N = model.phi(model.random_point(gen)).numel()
    cotangents = torch.eye(N, dtype=torch.float64) if N <= model.D else torch.randn(model.D, N, generator=gen,
                                                                                  dtype=torch.float64)
    return VectorFields(gradient_fields(model, cotangents), model.D, tuple(model.variable_names()),
                        model.description, model.phi, lambda weights: gradient_fields(model, weights @ cotangents))


def gradient_fields(fact: Factorization, cotangents: Tensor) -> Field:
    """θ ↦ the matrix whose rows are the fields ∂φ(θ)ᵀc for the rows c of ``cotangents``.

    With one-hot rows these are the ∇φ_i; with random rows they are random combinations,
    which span the same W_φ(θ) at a generic θ once there are rank ∂φ(θ) of them.
    """
    def fields(theta: Tensor) -> Tensor:
        _, pullback = torch.func.vjp(fact.phi, theta)  # type: ignore[misc]
        return torch.func.vmap(lambda c: pullback(c)[0])(cotangents)
    return fields


def lie_bracket(w1: Field, w2: Field) -> Field:
    """`[w₁, w₂](θ) = ∂w₁(θ) w₂(θ) − ∂w₂(θ) w₁(θ)` (slides, "Lie brackets"), by two JVPs."""
    def bracket(theta: Tensor) -> Tensor:
        a, da = torch.func.jvp(w1, (theta,), (w2(theta),))  # type: ignore[misc]
        _, db = torch.func.jvp(w2, (theta,), (a,))  # type: ignore[misc]
        return da - db
    return bracket
