"""What the tools on a user's model share (the monitor, teleport, the Hessian, the law count): attention on a
backend that has second derivatives, and the rule for frozen parameters."""
from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["math_attention"]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run ``scaled_dot_product_attention`` on its math backend (plain matmul, softmax, matmul) inside the block.

    torch's fused kernels (CPU flash attention; CUDA flash and memory-efficient attention) have a first
    derivative only: no double backward and no forward-mode rule, which a Hessian, a teleport objective (a
    gradient of ‖∇L‖²) and the law count's nested derivatives need. The math backend computes the same function
    (to round-off) with every derivative torch has for its parts."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield
