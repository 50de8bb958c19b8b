"""Models for the engine: a model's one gradient path, and any ``torch.nn.Module`` as a tuple model."""
from __future__ import annotations

from typing import Callable

import torch

from ..models import Model
from ..types import Params
from .state import GradFn

Tensor = torch.Tensor


def gradient_fn(model, X: Tensor | None, Y: Tensor | None) -> GradFn:
    """params ↦ (loss per configuration, ∇L): the model's one gradient path (``loss_and_grad``)."""
    return lambda params: model.loss_and_grad(params, X, Y)


class ModuleModel(Model):
    """A ``torch.nn.Module`` as a tuple model: loss(params, X, Y) = ``loss_fn(functional_call(module, params, X), Y)``.

    ``params`` is the tuple of the module's parameters in ``named_parameters()`` order (tied
    parameters once): [`parameters`][] reads it, [`load`][] writes a tuple back into the module.
    ``loss_fn`` defaults to the mean squared error. Not batched: one configuration per module.
    """

    n_params = None

    def __init__(self, module: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None):
        super().__init__("mean")
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.names = tuple(name for name, _ in module.named_parameters())
        self.loss_fn = loss_fn if loss_fn is not None else torch.nn.functional.mse_loss

    def __repr__(self) -> str:
        return f"ModuleModel({type(self.module).__name__}, {len(self.names)} parameter tensors)"

    def parameters(self) -> Params:
        """The module's parameters as a detached tuple (copies)."""
        return tuple(p.detach().clone() for _, p in self.module.named_parameters())

    def load(self, params: Params) -> torch.nn.Module:
        """Copy ``params`` into the module's parameters in place; returns the module."""
        with torch.no_grad():
            for (_, p), q in zip(self.module.named_parameters(), params, strict=True):
                p.copy_(q)
        return self.module

    def forward(self, params: Params, X: Tensor | None) -> Tensor:
        return torch.func.functional_call(self.module, dict(zip(self.names, params, strict=True)), (X,))

    def loss(self, params: Params, X: Tensor | None, Y: Tensor) -> Tensor:
        return self.loss_fn(self.forward(params, X), Y)
