"""Initialisations: Gaussian, Xavier (Eq. 46), spectral (Prop. 14), and at a chosen Q.

Random draws happen on the CPU from a seeded generator and are then moved to ``device``,
so a seed gives the same numbers on CPU and CUDA.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .activations import ActivationLike, get_activation
from .conserved import Q_terms
from .errors import NotSupportedError
from .types import Params
from .validation import check_params

Tensor = torch.Tensor


def make_generator(seed: int | torch.Generator) -> torch.Generator:
    """A CPU generator from a seed (or the generator itself)."""
    if isinstance(seed, torch.Generator):
        return seed
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _check_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype (torch.float32, torch.float64), got {dtype!r}")


def _normal(shape, std, generator, dtype, device) -> Tensor:
    _check_dtype(dtype)
    std = torch.as_tensor(std, dtype=dtype)
    return (torch.randn(*shape, generator=generator, dtype=dtype) * std).to(device)


def _std_per_config(std, batch: tuple[int, ...], dtype) -> Tensor:
    """A number, or one std per configuration (shape ``batch``), broadcast over matrices."""
    std = torch.as_tensor(std, dtype=dtype)
    if std.ndim == 0:
        return std
    if tuple(std.shape) != tuple(batch):
        raise ValueError(f"std must be a number or have the batch shape {tuple(batch)}, got {tuple(std.shape)}")
    return std.reshape(*batch, 1, 1)


def gaussian_init(m: int, h: int, n: int, std: float | Sequence[float] = 0.1, batch: tuple[int, ...] = (),
                  seed: int | torch.Generator = 0, dtype=torch.float32, device="cpu") -> Params:
    """U ∈ R^{m×h}, V ∈ R^{n×h} with i.i.d. N(0, std²) entries (Figs. 3, 6, 9).

    ``std`` may give one value per configuration (shape ``batch``).
    """
    for name, value in (("m", m), ("h", h), ("n", n)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    _check_dtype(dtype)
    generator = make_generator(seed)
    batch = tuple(batch)
    s = _std_per_config(std, batch, dtype)
    U = _normal((*batch, m, h), s, generator, dtype, device)
    V = _normal((*batch, n, h), s, generator, dtype, device)
    return U, V


def xavier_init(m: int, h: int, n: int, batch: tuple[int, ...] = (), seed: int | torch.Generator = 0,
                dtype=torch.float32, device="cpu") -> Params:
    """Eq. 46: U_ij ~ N(0, 1/h), V_ij ~ N(0, 1/n) (variance = 1 / the layer's input width)."""
    generator = make_generator(seed)
    batch = tuple(batch)
    U = _normal((*batch, m, h), 1 / math.sqrt(h), generator, dtype, device)
    V = _normal((*batch, n, h), 1 / math.sqrt(n), generator, dtype, device)
    return U, V


def expected_Q_xavier(m: int, h: int, n: int, activation: ActivationLike = "identity") -> float:
    """E[Q] under Xavier init for Q = ½Tr[UᵀU] − Σ A(V) (Eq. 47, with our ½).

    E[½Tr UᵀU] = ½ m h (1/h) = m/2 and E[Σ A(V)] = n h E[A(x)], x ~ N(0, 1/n). For the
    linear net this is (m − h)/2; the paper's Eq. 47 writes m − h, the mean of 2Q.
    """
    act = get_activation(activation)
    if act.gaussian_mean_integral is None:
        raise NotSupportedError(f"no closed form for E[A(x)] is known for activation {act.name!r}")
    return m / 2 - n * h * act.gaussian_mean_integral(1.0 / n)


def spectral_init(Y: Tensor, h: int, mean: float, std: float, seed: int | torch.Generator = 0,
                  batch: tuple[int, ...] = ()) -> Params:
    """Prop. 14: SVD Y = Φ Σ Ψᵀ, U = Φ Ū, V = Ψ V̄ with Ū (m×h), V̄ (n×h) zero off the diagonal.

    The r = min(m, n, h) diagonal entries of Ū and V̄ are i.i.d. N(mean, std²) (Fig. 7 uses
    mean = std). Then U g(Vᵀ) = Φ diag(ū_i / v̄_i) Ψᵀ for the radial g of Prop. 15.
    """
    if Y.ndim != 2:
        raise ValueError(f"Y must be a matrix (m, n), got shape {tuple(Y.shape)}")
    m, n = Y.shape
    generator = make_generator(seed)
    Phi, _, PsiT = torch.linalg.svd(Y)  # Φ (m, m), Ψᵀ (n, n)
    r = min(m, n, h)
    batch = tuple(batch)
    ubar = mean + std * torch.randn(*batch, r, generator=generator, dtype=Y.dtype)
    vbar = mean + std * torch.randn(*batch, r, generator=generator, dtype=Y.dtype)
    Ubar = torch.zeros(*batch, m, h, dtype=Y.dtype)
    Vbar = torch.zeros(*batch, n, h, dtype=Y.dtype)
    idx = torch.arange(r)
    Ubar[..., idx, idx] = ubar
    Vbar[..., idx, idx] = vbar
    return (Phi.cpu() @ Ubar).to(Y.device), (PsiT.mT.cpu() @ Vbar).to(Y.device)


def init_at_Q(params: Params, Q: float, activation: ActivationLike) -> Params:
    """Rescale (U, V) so that the Eq. 48 quantity equals ``Q`` exactly.

    Q(cU, V) = ½c²‖U‖² − ΣA(V) covers [−ΣA(V), ∞) as c ≥ 0 grows, so U is rescaled when
    that suffices; otherwise V is scaled up, V ↦ tV with t > 1, until ½‖U‖² − ΣA(tV) = Q.
    """
    from scipy.optimize import brentq

    U, V = check_params("params", params, 2)
    if U.ndim != 2:
        raise ValueError("init_at_Q takes one configuration (U, V) without batch dimensions")
    act = get_activation(activation)
    u_term, v_term = (float(t.sum()) for t in Q_terms((U, V), act))
    if Q >= -v_term:
        if u_term == 0:
            raise ValueError("U is zero: cannot rescale it to reach Q")
        return U * math.sqrt((Q + v_term) / u_term), V

    def gap(t):
        return u_term - float(act.integral(t * V).sum()) - Q

    t_high = 2.0
    while gap(t_high) > 0:
        t_high *= 2
        if t_high > 2.0 ** 40:
            raise ValueError(f"Q={Q!r} cannot be reached by rescaling V for activation {act.name!r}")
    return U, V * brentq(gap, 1.0, t_high, xtol=1e-15, rtol=8.9e-16)
