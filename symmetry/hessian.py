"""Hessians of a loss given as a pure function of a parameter tuple (App. G).

``loss_fn`` maps a parameter tuple to a scalar, e.g. ``model.loss_function(X, Y)``.
The full matrix comes from ``torch.func.hessian`` (forward-over-reverse); models too large
for it use Hessian-vector products and scipy's Lanczos solver (ARPACK ``eigsh``).
"""
from __future__ import annotations

from typing import Callable

import torch

from .models import flatten, jvp, quiet_forward_mode, unflatten
from .validation import check_choice, check_params

Tensor = torch.Tensor
Params = tuple[Tensor, ...]
LossFn = Callable[[Params], Tensor]


def _flat_loss(loss_fn: LossFn, params: Params) -> Callable[[Tensor], Tensor]:
    def f(vector: Tensor) -> Tensor:
        value = loss_fn(unflatten(vector, params))
        if value.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(value.shape)} "
                             f"(a batched loss? take one configuration)")
        return value

    return f


def loss_hessian(loss_fn: LossFn, params: Params) -> Tensor:
    """The exact (D, D) Hessian of L with respect to all parameters, flattened in tuple order."""
    params = check_params("params", params)
    with quiet_forward_mode():
        H = torch.func.hessian(_flat_loss(loss_fn, params))(flatten(params))
    return 0.5 * (H + H.mT)  # symmetric up to round-off; make it exactly so for eigvalsh


def hessian_eigenvalues(loss_fn: LossFn, params: Params) -> Tensor:
    """All D eigenvalues of the Hessian, ascending (symmetric solver ``eigvalsh``)."""
    return torch.linalg.eigvalsh(loss_hessian(loss_fn, params))


def hessian_vector_product(loss_fn: LossFn, params: Params) -> Callable[[Tensor], Tensor]:
    """v ↦ H v at ``params`` (flattened v), without forming H: forward-mode over ∇L."""
    params = check_params("params", params)
    grad = torch.func.grad(_flat_loss(loss_fn, params))
    x = flatten(params).detach()

    def hvp(v: Tensor) -> Tensor:
        return jvp(grad, (x,), (v.to(x),))[1]

    return hvp


LANCZOS_WHICH = ("LA", "SA", "LM")


def top_hessian_eigenvalues(loss_fn: LossFn, params: Params, k: int = 6, which: str = "LA",
                            seed: int = 0, tol: float = 0.0) -> Tensor:
    """k extreme Hessian eigenvalues by Lanczos on Hessian-vector products (scipy ``eigsh``).

    ``which``: "LA" largest algebraic, "SA" smallest, "LM" largest magnitude. The start
    vector comes from ``seed`` so the result is deterministic. Returned descending for
    "LA"/"LM", ascending for "SA".
    """
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    check_choice("which", which, LANCZOS_WHICH)
    hvp = hessian_vector_product(loss_fn, params)
    D = sum(p.numel() for p in params)
    if not (isinstance(k, int) and 1 <= k < D):
        raise ValueError(f"k={k!r} must be an integer with 1 <= k < D={D} (use hessian_eigenvalues for all)")
    dtype = params[0].dtype

    def matvec(v):
        v = torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(-1))
        return hvp(v.to(dtype)).detach().cpu().to(torch.float64).numpy()

    operator = LinearOperator((D, D), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(D)
    values = eigsh(operator, k=k, which=which, v0=v0, tol=tol, return_eigenvectors=False)
    values = np.sort(values)
    return torch.from_numpy(values if which == "SA" else values[::-1].copy())
