"""Input checks shared by every public entry point: one wording for every error."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterable, Iterator, Sequence

import torch

# Set by the dynamics engine around its own calls of conserved quantities: their tensors come from the
# engine's state, which it has checked (once per evaluation). The per-call checks of a parameter tuple
# (types, alike, one sync per tensor for finiteness) were a large share of an ODE evaluation of G&U's nets.
_CHECKED_BY_CALLER = contextvars.ContextVar("checked_by_caller", default=False)


@contextlib.contextmanager
def checked_by_caller() -> Iterator[None]:
    """Inside, [`check_params`][] and [`check_finite`][] pass their input through unchecked: for the
    engine's hot loops, whose tensors it has checked itself."""
    token = _CHECKED_BY_CALLER.set(True)
    try:
        yield
    finally:
        _CHECKED_BY_CALLER.reset(token)


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
    """Raise a ValueError if any entry holds NaN or infinity (one device sync: keep out of hot loops).
    Skipped inside [`checked_by_caller`][]."""
    if _CHECKED_BY_CALLER.get():
        return
    for i, t in enumerate(tensors):
        if not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(torch.isnan(t).any()) else "infinity"
            raise ValueError(f"{argument}[{i}] (shape {tuple(t.shape)}) contains {bad}")


def check_params(argument: str, params: Sequence, count: int | None = None) -> tuple[torch.Tensor, ...]:
    """Type, count and finiteness of a parameter tuple such as (U, V) (none inside [`checked_by_caller`][])."""
    if _CHECKED_BY_CALLER.get():
        return tuple(params)
    params = check_tensors(argument, params)
    if count is not None and len(params) != count:
        raise ValueError(f"{argument} must hold {count} tensors, got {len(params)}")
    if params:
        check_alike(argument, params)
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


def _is_number(value) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_number(argument: str, value, *, minimum: float | None = None, exclusive: bool = False,
                 finite: bool = True) -> float:
    """A real number (not a bool): TypeError otherwise; ValueError if NaN, infinite (unless ``finite=False``)
    or below ``minimum`` (at or below it with ``exclusive=True``)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    if not _is_number(value):
        raise TypeError(f"{argument}={value!r} must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value or (finite and value in (float("inf"), float("-inf"))):
        raise ValueError(f"{argument}={value!r} must be a finite number")
    if minimum is not None and (value < minimum or (exclusive and value == minimum)):
        raise ValueError(f"{argument}={value!r} must be {'>' if exclusive else '>='} {minimum:g}")
    return value


def check_count(argument: str, value, minimum: int = 0) -> int:
    """An integer count ≥ ``minimum``; booleans and floats are refused (TypeError)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument}={value!r} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argument}={value!r} must be an integer >= {minimum}")
    return int(value)


def check_learning_rate(argument: str, lr):
    """A positive finite learning rate: a number, or a tensor of them (one per configuration)."""
    if isinstance(lr, torch.Tensor) and lr.ndim != 0:
        if lr.dtype == torch.bool or not (lr.is_floating_point() or lr.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{argument} must hold real numbers, got dtype {lr.dtype}")
        if not bool(torch.isfinite(lr).all()) or not bool((lr > 0).all()):
            raise ValueError(f"{argument}={lr.tolist()} must hold positive finite numbers")
        return lr
    if isinstance(lr, (list, tuple)):
        return check_learning_rate(argument, torch.as_tensor([check_number(f"{argument}[{i}]", v, minimum=0,
                                                                          exclusive=True)
                                                             for i, v in enumerate(lr)], dtype=torch.float64))
    return check_number(argument, lr, minimum=0, exclusive=True)


def check_times(argument: str, times) -> torch.Tensor:
    """Recording times: a non-empty, non-decreasing sequence of finite non-negative numbers (float64)."""
    if isinstance(times, (str, bytes)) or (not isinstance(times, torch.Tensor) and not hasattr(times, "__len__")):
        raise TypeError(f"{argument} must be a sequence of numbers, got {type(times).__name__}")
    if not isinstance(times, torch.Tensor):
        times = [check_number(f"{argument}[{i}]", t, finite=False) for i, t in enumerate(times)]
    elif times.dtype == torch.bool or times.is_complex():
        raise TypeError(f"{argument} must hold real numbers, got dtype {times.dtype}")
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if times.numel() == 0:
        raise ValueError(f"{argument} must not be empty")
    if not bool(torch.isfinite(times).all()):
        raise ValueError(f"{argument} must be finite numbers (no NaN or infinity), got {times.tolist()}")
    if bool((times < 0).any()) or bool((times[1:] < times[:-1]).any()):
        raise ValueError(f"{argument} must be a non-decreasing sequence of non-negative numbers")
    return times


def check_finite_tensor(argument: str, tensor) -> torch.Tensor:
    """A floating-point tensor without NaN or infinity."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{argument} must be a floating-point tensor, got dtype {tensor.dtype}")
    if not bool(torch.isfinite(tensor).all()):
        bad = "NaN" if bool(torch.isnan(tensor).any()) else "infinity"
        raise ValueError(f"{argument} (shape {tuple(tensor.shape)}) contains {bad}")
    return tensor


def check_data(X, Y) -> None:
    """The data of a run, checked before any step: a batch with samples, finite inputs and targets (a NaN or an
    infinity there is a data problem, not a divergence of the run)."""
    for name, t in (("X", X), ("Y", Y)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.numel() == 0:
            raise ValueError(f"{name} holds no samples (shape {tuple(t.shape)}): the data is empty")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(torch.isnan(t).any()) else "infinity"
            raise ValueError(f"{name} (shape {tuple(t.shape)}) contains {bad}: a problem of the data, before any step")


def cast_exactly(argument: str, t: torch.Tensor, dtype: torch.dtype, reference: str, advice: str) -> torch.Tensor:
    """``t`` in ``dtype`` where that is exact (float32 → float64); a TypeError naming both (``reference``: what has
    ``dtype``) where the cast would round."""
    if t.dtype == dtype:
        return t
    if torch.promote_types(t.dtype, dtype) == dtype:
        return t.to(dtype)
    raise TypeError(f"{argument} has dtype {t.dtype} but {reference} have {dtype}: {advice}")


def check_alike(argument: str, tensors: Sequence[torch.Tensor] | torch.Tensor, reference: torch.Tensor | None = None,
                reference_name: str | None = None) -> None:
    """All tensors share one dtype and one device (that of ``reference`` if given)."""
    single = isinstance(tensors, torch.Tensor)
    tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
    ref = tensors[0] if reference is None else reference
    ref_name = f"{argument}[0]" if reference is None else reference_name
    for i, t in enumerate(tensors):
        name = argument if single else f"{argument}[{i}]"
        if t.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}: "
                            f"convert them to one dtype")
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}: "
                             f"move them to one device")


def check_two_layer(argument: str, params: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V) of a two-layer net F = Uσ(Vᵀ): U (..., m, h), V (..., n, h), one hidden width h,
    the same batch shape, dtype and device."""
    U, V = check_params(argument, params, 2)
    if U.ndim < 2 or V.ndim < 2:
        raise ValueError(f"{argument} must be (U (..., m, h), V (..., n, h)), got shapes "
                         f"{tuple(U.shape)} and {tuple(V.shape)}")
    if U.shape[-1] != V.shape[-1] or U.shape[:-2] != V.shape[:-2]:
        raise ValueError(f"{argument}: U {tuple(U.shape)} and V {tuple(V.shape)} must share the hidden width "
                         f"(last dimension) and the batch shape: U is (..., m, h), V is (..., n, h)")
    return U, V


def check_group_element(argument: str, g, params: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """``params`` = (U, V) of a two-layer net and ``g`` a finite square matrix of its hidden width, of
    the parameters' dtype and device; returns (U, V)."""
    U, V = check_two_layer("params", params)
    check_finite_tensor(argument, g)
    check_square(argument, g, U.shape[-1])
    check_alike(argument, g, U, "params[0]")
    return U, V
