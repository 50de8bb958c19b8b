"""What a teleport optimises: an [`Objective`][symmetry.teleport.Objective] J(θ), maximised or minimised on
the orbit. ‖∇L‖² (NeurIPS 2022, Algorithm 1), the top Hessian eigenvalue or its trace (ICLR 2024), a target
value of a conserved quantity (Figs. 6, 7, 9), or any callable."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..hessian import top_hessian_eigenvalues
from ..tuples import unflatten
from ..types import LossFn, Params
from ..validation import check_choice

Tensor = torch.Tensor

__all__ = ["OBJECTIVES", "Objective", "conserved_target", "curvature_along", "grad_norm", "gradient_norm_squared",
           "make_objective", "sharpness"]


@dataclass
class Objective:
    """J(θ) = ``fn(loss_fn, params)``, a differentiable scalar; teleport maximises it (or minimises)."""

    name: str
    fn: Callable[[LossFn, Params], Tensor]
    maximize: bool = True


def _grad(loss_fn: LossFn, params: Params, create_graph: bool = True) -> Params:
    loss = loss_fn(params)
    return torch.autograd.grad(loss, params, create_graph=create_graph)


def _detached_leaves(params: Params) -> Params:
    return tuple(p.detach().requires_grad_(True) for p in params)


def gradient_norm_squared(loss_fn: LossFn, params: Params) -> Tensor:
    """‖∇L(θ)‖² summed over all parameter tensors (= −dL/dt under gradient flow at η = 1)."""
    return torch.stack([(g * g).sum() for g in _grad(loss_fn, params)]).sum()


def grad_norm() -> Objective:
    """Maximise ‖∇L‖² on the orbit: the NeurIPS 2022 objective (Algorithm 1)."""
    return Objective("squared gradient norm", gradient_norm_squared, True)


def _inner(a: Params, b: Params) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


def curvature_along(loss_fn: LossFn, params: Params, directions: Sequence[Params]) -> Tensor:
    """Σ_v vᵀH(θ)v over ``directions`` (tuples shaped like ``params``), differentiable in θ.

    [`symmetry.hessian.hessian_vector_product`][] gives values of Hv at a fixed point; an objective needs
    vᵀH(g·θ)v as a differentiable function of the group element, hence this double backward pass."""
    grads = _grad(loss_fn, params, create_graph=True)
    total = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
    for v in directions:
        hv = torch.autograd.grad(_inner(grads, v), params, create_graph=True, allow_unused=True)
        total = total + _inner(tuple(torch.zeros_like(p) if h is None else h for h, p in zip(hv, params)), v)
    return total


def _top_eigenvector(loss_fn: LossFn, params: Params, seed: int = 0) -> Params:
    """The unit eigenvector of the Hessian's largest (algebraic) eigenvalue, shaped like ``params``
    ([`symmetry.hessian.top_hessian_eigenvalues`][]: Lanczos on Hessian-vector products)."""
    params = tuple(p.detach() for p in params)
    pairs = top_hessian_eigenvalues(loss_fn, params, k=1, seed=seed, return_eigenvectors=True)
    return unflatten(pairs.vectors[:, 0], params)


def sharpness(method: str = "lanczos", samples: int = 10, seed: int = 0) -> Objective:
    """Minimise sharpness (ICLR 2024): ``lanczos`` = the top Hessian eigenvalue λ_max, as vᵀH(θ)v with v
    the top eigenvector found by Lanczos at the current iterate and held fixed (Hellmann–Feynman: this has
    the gradient of λ_max); ``hutchinson`` = the trace estimate mean zᵀHz over ``samples`` Rademacher
    vectors z, fixed across steps so that the objective is one smooth function of ξ."""
    check_choice("method", method, ("lanczos", "hutchinson"))
    state: dict[str, Any] = {}

    def top(loss_fn, params):
        v = _top_eigenvector(loss_fn, params, seed)
        return curvature_along(loss_fn, params, [v])

    def hutchinson(loss_fn, params):
        if "z" not in state:
            gen = torch.Generator().manual_seed(seed)
            state["z"] = [tuple((torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params)
                          for _ in range(samples)]
        return curvature_along(loss_fn, params, state["z"]) / samples

    name = "top Hessian eigenvalue (Lanczos)" if method == "lanczos" else "Hessian trace (Hutchinson)"
    return Objective(name, top if method == "lanczos" else hutchinson, False)


def conserved_target(quantity: Callable[[Params], Tensor], target: float | Tensor, name: str = "Q") -> Objective:
    """Reach ``quantity(θ) = target`` on the orbit: minimise ‖quantity(θ) − target‖²."""
    def fn(loss_fn, params):
        q = quantity(tuple(params))
        return ((q - torch.as_tensor(target, dtype=q.dtype, device=q.device)) ** 2).sum()

    return Objective(f"‖{name} − target‖²", fn, False)


OBJECTIVES = {"grad_norm": grad_norm, "sharpness": sharpness, "trace": lambda: sharpness("hutchinson")}


def make_objective(objective: str | Objective | Callable[[Params], Tensor], maximize: bool = True) -> Objective:
    """An [`Objective`][] by name (``grad_norm``, ``sharpness``, ``trace``), as given, or from a
    callable θ ↦ scalar (maximised unless ``maximize=False``)."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        check_choice("objective", objective, OBJECTIVES)
        return OBJECTIVES[objective]()
    if callable(objective):
        name = getattr(objective, "__name__", "callable")
        return Objective(name, lambda loss_fn, params: objective(tuple(params)), maximize)
    raise TypeError(f"objective must be one of {sorted(OBJECTIVES)}, an Objective or a callable; got {objective!r}")

