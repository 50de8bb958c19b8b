"""What the tools on a user's model share (the monitor, teleport, the Hessian, the law count): attention on a
backend that has second derivatives, and the rule for frozen parameters."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .groups import NotSupportedError
from .tuples import jvp, quiet_forward_mode

__all__ = ["frozen_parameters", "math_attention", "moved_parameters", "without_frozen"]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run ``scaled_dot_product_attention`` on its math backend (plain matmul, softmax, matmul) inside the block.

    torch's fused kernels (CPU flash attention; CUDA flash and memory-efficient attention) have a first
    derivative only: no double backward and no forward-mode rule, which a Hessian, a teleport objective (a
    gradient of ‖∇L‖²) and the law count's nested derivatives need. The math backend computes the same function
    (to round-off) with every derivative torch has for its parts."""
    with sdpa_kernel(SDPBackend.MATH):
        yield


def frozen_parameters(model) -> list[str]:
    """The names of ``model``'s parameters that do not train (``requires_grad=False``), in its order."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def without_frozen(symmetry, model) -> tuple[Any, str | None]:
    """``symmetry`` restricted to what trains in ``model``, and a note saying what was left out (None: nothing).

    The one rule of the monitor, teleport and the Hessian: a frozen parameter (``requires_grad=False``) never moves,
    so a block whose action moves it is no symmetry of the training that happens, its quantity is not watched, its
    orbit is not followed and its tangents are not deflated. A symmetry made of blocks (``module_symmetries``) loses
    those blocks (its ``describe()`` says which and why); any other symmetry that moves a frozen parameter (found
    from its orbit's tangents) is refused by name."""
    frozen = frozen_parameters(model)
    if not frozen:
        return symmetry, None
    blocks = getattr(symmetry, "blocks", None)
    if blocks is not None and dataclasses.is_dataclass(symmetry) and not isinstance(symmetry, type):
        dropped = [b for b in blocks if set(b.parameters()) & set(frozen)]
        if not dropped:
            return symmetry, f"frozen parameters {frozen} (requires_grad=False): no block acts on them"
        names = [b.name for b in dropped]
        note = (f"frozen parameters {frozen} (requires_grad=False) never move: the blocks acting on them, {names}, "
                "are left out")
        coverage = {}
        for param, covered in dict(getattr(symmetry, "coverage", {}) or {}).items():
            kept = [c for c in covered if c not in names]
            if param in frozen:
                kept = ["none — frozen (requires_grad=False)" + (f"; blocks {[c for c in covered if c in names]} "
                                                                  "left out" if covered != kept else "")]
            elif not kept:
                kept = [f"none — its blocks {covered} act on frozen parameters and are left out"]
            coverage[param] = kept
        changes: dict[str, Any] = {"blocks": tuple(b for b in blocks if b.name not in names)}
        if hasattr(symmetry, "coverage"):
            changes["coverage"] = coverage
        model_name = getattr(symmetry, "model_name", None)
        if isinstance(model_name, str):
            changes["model_name"] = f"{model_name} ({note})"
        return dataclasses.replace(symmetry, **changes), note
    moved = moved_parameters(symmetry, {n: p.detach() for n, p in model.named_parameters()})
    touched = [n for n in frozen if n in moved]
    if touched:
        raise NotSupportedError(f"symmetry ({type(symmetry).__name__}) moves the frozen parameters {touched} "
                                "(requires_grad=False), which never move in training: pass a symmetry that leaves "
                                "them alone (module_symmetries(model) drops its blocks on them), or unfreeze them")
    return symmetry, f"frozen parameters {frozen} (requires_grad=False): the symmetry leaves them alone"


def moved_parameters(symmetry, params: dict) -> list[str]:
    """The names in ``params`` that the symmetry's orbit moves: the infinitesimal action (Eq. 9) along one random
    direction ξ of the algebra is nonzero on them (a random ξ moves, almost surely, whatever some ξ moves)."""
    zero = symmetry.algebra_zero()
    keys = list(zero)
    gen = torch.Generator().manual_seed(0)
    direction = tuple(torch.randn(z.shape, generator=gen, dtype=torch.float64).to(z) for z in zero.values())

    def moved(*xi):
        out = symmetry.act_params(params, symmetry.exp(dict(zip(keys, xi))), check=False)
        return tuple(out[n] for n in params)

    with quiet_forward_mode():
        tangent = jvp(moved, tuple(zero.values()), direction)[1]
    return [n for n, t in zip(params, tangent) if bool((t != 0).any())]
