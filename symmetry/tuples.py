"""Parameter tuples as one vector and forward-mode derivatives over them: [`flatten`][] / [`unflatten`][] (the
Hessian, the ODE integrator and the Lanczos iterations see θ as one vector) and [`jvp`][] (``torch.func.jvp``
under [`quiet_forward_mode`][], which silences torch's own warning on first use)."""
from __future__ import annotations

import contextlib
import warnings

import torch

from .types import Params, Tensor

__all__ = ["flatten", "jvp", "quiet_forward_mode", "unflatten"]


def flatten(params: Params) -> Tensor:
    """Concatenate a parameter tuple into one vector."""
    return torch.cat([p.reshape(-1) for p in params])


def unflatten(vector: Tensor, like: Params) -> Params:
    """Inverse of [`flatten`][]: split a vector into tensors shaped like ``like``."""
    sizes = [p.numel() for p in like]
    if vector.numel() != sum(sizes):
        raise ValueError(f"vector has {vector.numel()} entries but the parameters need {sum(sizes)}")
    out, start = [], 0
    for p, size in zip(like, sizes):  # slices, not torch.split: this runs in every ODE evaluation
        out.append(vector[start:start + size].reshape(p.shape))
        start += size
    return tuple(out)


@contextlib.contextmanager
def quiet_forward_mode():
    """Silence the FutureWarning that torch's own forward-mode decompositions print on first use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        yield


def jvp(f, primals: tuple, tangents: tuple):
    """``torch.func.jvp`` under [`quiet_forward_mode`][]."""
    with quiet_forward_mode():
        return torch.func.jvp(f, primals, tangents)
