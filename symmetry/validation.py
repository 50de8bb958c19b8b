"""Input checks shared by every public entry point: one wording for every error."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch


def check_choice(argument: str, value, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError naming both."""
    allowed = sorted(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{argument}={value!r} is not allowed; choose one of {', '.join(allowed)}")
    return value


def check_tensors(argument: str, tensors: Sequence) -> tuple[torch.Tensor, ...]:
    """Every entry is a floating-point tensor (TypeError otherwise)."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, (tuple, list)):
        raise TypeError(f"{argument} must be a tuple of tensors, got {type(tensors).__name__}")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{argument}[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{argument}[{i}] must be a floating-point tensor, got dtype {t.dtype}")
    return tuple(tensors)


def check_finite(argument: str, tensors: Sequence[torch.Tensor]) -> None:
    """Raise a ValueError if any entry holds NaN or infinity (one device sync: keep out of hot loops)."""
    for i, t in enumerate(tensors):
        if not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(torch.isnan(t).any()) else "infinity"
            raise ValueError(f"{argument}[{i}] (shape {tuple(t.shape)}) contains {bad}")


def check_params(argument: str, params: Sequence, count: int | None = None) -> tuple[torch.Tensor, ...]:
    """Type, count and finiteness of a parameter tuple such as (U, V)."""
    params = check_tensors(argument, params)
    if count is not None and len(params) != count:
        raise ValueError(f"{argument} must hold {count} tensors, got {len(params)}")
    check_finite(argument, params)
    return params


def check_square(argument: str, g: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """A (batch of) square matrices, optionally of a given size."""
    if not isinstance(g, torch.Tensor) or g.ndim < 2 or g.shape[-1] != g.shape[-2]:
        shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(f"{argument} must be a square matrix (..., h, h), got {shape}")
    if size is not None and g.shape[-1] != size:
        raise ValueError(f"{argument} must be {size}x{size} to act on a hidden layer of width {size}, "
                         f"got {g.shape[-2]}x{g.shape[-1]}")
    return g
