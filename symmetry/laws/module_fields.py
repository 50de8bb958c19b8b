"""The law count of any ``nn.Module`` (residual blocks, attention, anything that is not a chain), by the route of
Marcotte et al.: the fields are the gradients ∇_θ f_o(x_n; θ) of the module's outputs on example inputs
([`output_fields`][symmetry.laws.fields.output_fields]); the number of laws is D − dim Lie(fields)(θ) at generic θ
(ALGO 2, [`lie_algebra_dimension`][symmetry.laws.dimension.lie_algebra_dimension]).

These fields span W_φ on the inputs given, so the count is that of the laws of gradient flow on *those* inputs; it
is the architecture's count once the batch is large enough that another input adds no direction. Here that is
checked, not assumed: the count is taken on the first half of the batch and on all of it, and a difference is
refused naming both counts (pass a larger batch). Chains of ``Linear`` layers and ReLUs are counted over every
input by the path factorisation instead ([`symmetry.laws.chain`][]); this route is used where that one refuses."""
from __future__ import annotations

from typing import Any, Callable

import torch

from .fields import VectorFields, output_fields

Tensor = torch.Tensor

__all__ = ["module_law_dimension"]


def _halves(example_input) -> tuple[tuple, tuple, int]:
    """The first half of the batch and the whole batch, as tuples of the forward's arguments (every tensor
    argument split along its first axis; other arguments passed as they are)."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    sizes = {int(x.shape[0]) for x in inputs if isinstance(x, Tensor) and x.ndim}
    if len(sizes) != 1:
        raise ValueError(f"example_input: its tensors must share one batch size (the first axis), got "
                         f"{sorted(sizes) or 'no batched tensor'}")
    n = sizes.pop()
    if n < 2:
        raise ValueError(f"example_input has a batch of {n}: the count is checked to saturate (the first half of the "
                         "batch against all of it), which needs at least 2 samples")
    half = tuple(x[: n // 2] if isinstance(x, Tensor) and x.ndim else x for x in inputs)
    return half, inputs, n


def module_law_dimension(model, example_input, loss: str | None, count: Callable[[VectorFields], Any]):
    """ALGO 2 (``count``: [`lie_algebra_dimension`][symmetry.laws.dimension.lie_algebra_dimension] with its
    options) on the output fields of ``model`` on ``example_input``, after the same count on the first half of the
    batch agreed with it.

    Returns ``count``'s result for the whole batch. Raises ValueError when the two counts differ (the batch has not
    saturated W_φ: the number would depend on it)."""
    half, whole, n = _halves(example_input)
    found = count(output_fields(model, whole, loss))
    fewer = count(output_fields(model, half, loss))
    if fewer.laws != found.laws:
        raise ValueError(f"the law count of {type(model).__name__} depends on the batch: {fewer.laws} laws on the "
                         f"first {n // 2} samples of example_input, {found.laws} on all {n}; pass a larger batch (the count is exact once more samples add "
                         "no gradient direction)")
    return found
