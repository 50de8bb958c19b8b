"""The paper's models, with the loss as a pure function of the parameters.

Parameters are plain tuples of tensors so that ``torch.func`` (Hessians, Jacobians) and
the batched training loop see the same function. Every tensor may carry leading batch
dimensions: configuration b of a batched run is ``tuple(p[b] for p in params)``.

Notation (the paper's experiments, App. D Eq. 44; the Conventions page): F(X) = U σ(VᵀX) with U ∈ R^{m×h},
V ∈ R^{n×h}, X ∈ R^{n×k}, Y ∈ R^{m×k}.
The paper's appendix writes V ∈ R^{h×n}; its group actions V ↦ gV read V ↦ V gᵀ here.
``X=None`` means whitened input X = I_n (the setting of Eq. 48 and Figs. 3–9).
"""
from __future__ import annotations

from typing import Callable

import torch

from .activations import Activation, ActivationLike, get_activation, inverse_square, radial_rescaling, swish
from .threads import computation_threads, torch_threads  # noqa: F401  (as before: symmetry.models.torch_threads)
from .tuples import flatten, jvp, quiet_forward_mode, unflatten  # noqa: F401  (as before: symmetry.models.flatten)
from .types import Params
from .validation import check_choice, check_number

Tensor = torch.Tensor

#: How the squared error is reduced over the output entries of one configuration.
REDUCTIONS = {
    "mean": None,  # mean over the m·k entries (the training loss of Figs. 3, 6, 7, 9)
    "sum": 2.0,  # ‖Y − F‖²_F (the Hessian loss of Fig. 9)
    "half_sum": 1.0,  # ½‖Y − F‖²_F (Prop. 14–16, App. G.1)
}


def squared_error(F: Tensor, Y: Tensor, reduction: str) -> Tensor:
    """Squared error reduced over the last two dimensions (one value per configuration)."""
    sq = (F - Y) ** 2
    if reduction == "mean":
        return sq.mean(dim=(-2, -1))
    total = sq.sum(dim=(-2, -1))
    return total if reduction == "sum" else 0.5 * total


def residual_scale(reduction: str, F: Tensor) -> float:
    """The scale c of d(loss)/dF = c · (F − Y) for the squared error of ``reduction`` (a key of ``REDUCTIONS``):
    2/(m·k) for the mean over F's m·k entries, 2 for the sum, 1 for half the sum."""
    scale = REDUCTIONS[reduction]
    return 2.0 / (F.shape[-2] * F.shape[-1]) if scale is None else scale


class Model:
    """A loss that is a pure function of a parameter tuple; subclasses define ``forward``."""

    n_params: int | None  # tensors in the parameter tuple (None: any)

    def __init__(self, reduction: str = "mean"):
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def forward(self, params: Params, X: Tensor | None) -> Tensor:
        raise NotImplementedError

    def __call__(self, params: Params, X: Tensor | None = None) -> Tensor:
        return self.forward(params, X)

    def loss(self, params: Params, X: Tensor | None, Y: Tensor) -> Tensor:
        """Loss of each configuration: shape = the parameters' batch shape."""
        return self._loss_of_output(self.forward(params, X), Y)

    def _loss_of_output(self, F: Tensor, Y: Tensor) -> Tensor:
        """The reduced squared error of the model's output F (shapes checked)."""
        if F.shape[-2:] != Y.shape[-2:]:
            raise ValueError(f"Y has shape {tuple(Y.shape)} but the model outputs {tuple(F.shape)}")
        return squared_error(F, Y, self.reduction)

    def loss_and_grad(self, params: Params, X: Tensor | None, Y: Tensor) -> tuple[Tensor, Params]:
        """(loss per configuration, gradient tuple): the one gradient path of the dynamics engine.

        Configurations are independent, so the gradient of the summed loss is each one's own.
        Plain reverse-mode autograd (1.9–2.4× less time per call than ``torch.func.grad`` on
        G&U's small problems: benchmarks/bench_grad.py). It nests: parameters that already require grad keep their graph
        (``create_graph``), and inside a ``torch.func`` transform (vmap, jacrev of a step) it
        takes ``torch.func.grad``, which composes with the transform. Subclasses with a closed
        form override it.
        """
        params = tuple(params)
        if any(torch._C._functorch.is_functorch_wrapped_tensor(p) for p in params):
            def total(p):
                loss = self.loss(p, X, Y)
                return loss.sum(), loss

            grads, loss = torch.func.grad(total, has_aux=True)(params)
            return loss, grads
        nested = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        with torch.enable_grad():
            leaves = params if nested else tuple(p.detach().requires_grad_(True) for p in params)
            loss = self.loss(leaves, X, Y)
            grads = torch.autograd.grad(loss.sum(), leaves, create_graph=nested)
        return (loss if nested else loss.detach()), grads

    def loss_function(self, X: Tensor | None, Y: Tensor) -> Callable[[Params], Tensor]:
        """θ ↦ L(θ) on fixed data: the pure function that ``hessian`` and ``torch.func`` take."""
        return lambda params: self.loss(params, X, Y)


def _check_two_layer(U: Tensor, V: Tensor, X: Tensor | None) -> None:
    if U.ndim < 2 or V.ndim < 2:
        raise ValueError(f"U and V must be matrices (..., m, h) and (..., n, h); got {tuple(U.shape)}, {tuple(V.shape)}")
    if U.shape[-1] != V.shape[-1]:
        raise ValueError(f"hidden widths differ: U is {tuple(U.shape)} (h={U.shape[-1]}) "
                         f"but V is {tuple(V.shape)} (h={V.shape[-1]}); expected U (..., m, h), V (..., n, h)")
    if X is not None and X.dtype != V.dtype:
        raise TypeError(f"X has dtype {X.dtype} but the parameters are {V.dtype}: pass X as a floating-point tensor "
                        f"of the parameters' dtype")
    if X is not None and X.shape[-2] != V.shape[-2]:
        raise ValueError(f"X has {X.shape[-2]} rows but V is {tuple(V.shape)}: X must be (n, k) with n={V.shape[-2]}")


class TwoLayerNet(Model):
    """F(X) = U σ(VᵀX) with an elementwise σ from the activation table (Example 1).

    ``activation`` may be a list: one activation per configuration of a batched run.
    """

    n_params = 2

    def __init__(self, activation: ActivationLike = "identity", reduction: str = "mean"):
        super().__init__(reduction)
        self.activation = get_activation(activation)

    def __repr__(self) -> str:
        return f"TwoLayerNet(activation={self.activation.name!r}, reduction={self.reduction!r})"

    def preactivation(self, params: Params, X: Tensor | None) -> Tensor:
        """Z = VᵀX, shape (..., h, k)."""
        U, V = params
        _check_two_layer(U, V, X)
        return V.mT if X is None else V.mT @ X

    def forward(self, params: Params, X: Tensor | None = None) -> Tensor:
        return params[0] @ self.activation.sigma(self.preactivation(params, X))  # (..., m, k)

    def loss_and_grad(self, params: Params, X: Tensor | None, Y: Tensor) -> tuple[Tensor, Params]:
        """Closed-form gradient: ∂L/∂U = G σ(Z)ᵀ, ∂L/∂V = X [(UᵀG) ⊙ σ'(Z)]ᵀ, G = ∂L/∂F."""
        U, V = params
        Z = self.preactivation(params, X)  # (..., h, k)
        S = self.activation.sigma(Z)
        F = U @ S  # (..., m, k)
        loss = self._loss_of_output(F, Y)
        R = F - Y
        G = residual_scale(self.reduction, F) * R
        grad_U = G @ S.mT  # (..., m, h)
        grad_Z = (U.mT @ G) * self.activation.dsigma(Z)  # (..., h, k)
        grad_V = grad_Z.mT if X is None else X @ grad_Z.mT  # (..., n, h)
        return loss, (grad_U, grad_V)


RADIAL_AXES = {"neuron": -1, "hidden": -2}


class TwoLayerRadialNet(Model):
    """F(X) = U σ(VᵀX) with the radial rescaling σ(z) = f(‖z‖) z, default f(r) = r⁻².

    ``over="neuron"`` rescales each row of VᵀX (for X = I: each neuron's incoming weights),
    the g of Prop. 14–16 and Fig. 7, whose symmetry is the per-neuron rescaling (U, V) ↦ (Uc, Vc).
    ``over="hidden"`` rescales each sample's hidden vector (each column of VᵀX), the
    radial activation of Example 5, which commutes with O(h) (Example 10, Eq. 22, Eq. 30).
    """

    n_params = 2

    def __init__(self, f: Callable[[Tensor], Tensor] = inverse_square, over: str = "neuron",
                 reduction: str = "half_sum"):
        super().__init__(reduction)
        self.over = check_choice("over", over, RADIAL_AXES)
        self.f = f

    def __repr__(self) -> str:
        return f"TwoLayerRadialNet(over={self.over!r}, reduction={self.reduction!r})"

    def forward(self, params: Params, X: Tensor | None = None) -> Tensor:
        U, V = params
        _check_two_layer(U, V, X)
        Z = V.mT if X is None else V.mT @ X
        return U @ radial_rescaling(Z, self.f, dim=RADIAL_AXES[self.over])

    def loss_and_grad(self, params: Params, X: Tensor | None, Y: Tensor) -> tuple[Tensor, Params]:
        """Closed form for f(r) = r⁻²: ∂σ/∂z = I/r² − 2zzᵀ/r⁴ along the rescaled axis; autograd otherwise."""
        if self.f is not inverse_square:
            return super().loss_and_grad(params, X, Y)
        U, V = params
        _check_two_layer(U, V, X)
        dim = RADIAL_AXES[self.over]
        Z = V.mT if X is None else V.mT @ X  # (..., h, k)
        inv_r2 = 1 / (Z * Z).sum(dim=dim, keepdim=True)
        S = Z * inv_r2
        F = U @ S
        loss = self._loss_of_output(F, Y)
        G = residual_scale(self.reduction, F) * (F - Y)
        grad_S = U.mT @ G  # (..., h, k)
        grad_Z = grad_S * inv_r2 - 2 * Z * inv_r2 ** 2 * (Z * grad_S).sum(dim=dim, keepdim=True)
        grad_V = grad_Z.mT if X is None else X @ grad_Z.mT
        return loss, (G @ S.mT, grad_V)


class SpectralModes(Model):
    """Prop. 14's decoupled system of the radial net on the spectral manifold: per mode i the product
    σᵢˣ = ūᵢ/v̄ᵢ, loss ``scale``·Σᵢ(σᵢʸ − ūᵢ/v̄ᵢ)² (``scale`` = 1/(mn): the full model's MSE, with
    h = rank Y nothing else is left of Y). Parameters (ū, v̄) of shape (…, 1, h); targets Y = σʸ of shape (1, h).
    λᵢ = ūᵢ² + v̄ᵢ² is conserved under its gradient flow (Prop. 15)."""

    n_params = 2

    def __init__(self, scale: float = 1.0):
        super().__init__("sum")
        self.scale = check_number("scale", scale, minimum=0, exclusive=True)

    def __repr__(self) -> str:
        return f"SpectralModes(scale={self.scale:g})"

    def forward(self, params: Params, X: Tensor | None = None) -> Tensor:
        u, v = params
        return u / v

    def loss(self, params: Params, X: Tensor | None, Y: Tensor) -> Tensor:
        return self.scale * ((Y - self.forward(params)) ** 2).sum(dim=(-2, -1))

    def loss_and_grad(self, params: Params, X: Tensor | None, Y: Tensor) -> tuple[Tensor, Params]:
        """Closed form: ∂L/∂ū = −2·scale·(σʸ − q)/v̄, ∂L/∂v̄ = −q ∂L/∂ū, q = ū/v̄."""
        u, v = params
        q = u / v
        r = Y - q
        g = (-2 * self.scale) * r / v
        return self.scale * (r ** 2).sum(dim=(-2, -1)), (g, -g * q)


class MLP(Model):
    """Bias-free multilayer perceptron F(X) = W_L σ(W_{L−1} ⋯ σ(W_1 X)) (App. B.1).

    Parameters are (W_1, …, W_L) with W_i ∈ R^{n_i × n_{i−1}} (the paper's multilayer
    convention); ``activations`` is one name for every hidden layer or one per hidden layer.
    Note the two-layer special case reads (V ᵀ, U) = (W_1, W_2).
    """

    n_params = None

    def __init__(self, activations: ActivationLike = "relu", reduction: str = "mean"):
        super().__init__(reduction)
        if isinstance(activations, (str, Activation)):
            self._shared = get_activation(activations)
            self.activations = None
        else:
            self._shared = None  # type: ignore[assignment]
            self.activations = tuple(get_activation(a) for a in activations)  # type: ignore[union-attr]

    def __repr__(self) -> str:
        names = self._shared.name if self._shared else [a.name for a in self.activations]  # type: ignore[union-attr]
        return f"MLP(activations={names!r}, reduction={self.reduction!r})"

    def hidden_activations(self, depth: int):
        """The activation after each of the first ``depth − 1`` layers."""
        if self._shared is not None:
            return (self._shared,) * (depth - 1)
        if len(self.activations) != depth - 1:
            raise ValueError(f"{depth} weight matrices need {depth - 1} hidden activations, "
                             f"got {len(self.activations)}")
        return self.activations

    @staticmethod
    def _check_shapes(params: Params, X: Tensor | None) -> None:
        if len(params) < 1:
            raise ValueError("an MLP needs at least one weight matrix")
        for i in range(1, len(params)):
            if params[i].shape[-1] != params[i - 1].shape[-2]:
                raise ValueError(f"W_{i + 1} is {tuple(params[i].shape)} but W_{i} is {tuple(params[i - 1].shape)}: "
                                 f"W_i must be (n_i, n_(i-1))")
        if X is not None and X.shape[-2] != params[0].shape[-1]:
            raise ValueError(f"X has {X.shape[-2]} rows but W_1 is {tuple(params[0].shape)}")

    def forward(self, params: Params, X: Tensor | None = None) -> Tensor:
        self._check_shapes(params, X)
        H = params[0] if X is None else params[0] @ X
        for W, act in zip(params[1:], self.hidden_activations(len(params))):
            H = W @ act.sigma(H)
        return H

    def loss_and_grad(self, params: Params, X: Tensor | None, Y: Tensor) -> tuple[Tensor, Params]:
        """Backpropagation written out for one unbatched configuration (2-D weights and data) whose
        activations have an ``autograd_vjp``: the same operations as autograd's backward, so the same
        bits (tests/test_models.py), without building a graph (1.8× and 2.7× less time per call on G&U's
        ReLU and linear nets: benchmarks/bench_grad.py). Anything else (batched, a subclass's forward or
        loss, nested or transformed calls) takes [`Model.loss_and_grad`][]."""
        params = tuple(params)
        acts = self.hidden_activations(len(params)) if len(params) > 0 else ()
        if not (type(self).loss is Model.loss and type(self).forward is MLP.forward
                and all(p.ndim == 2 for p in params) and Y.ndim == 2
                and (X is None or X.ndim == 2) and not any(p.requires_grad for p in params)
                and all(getattr(a, "autograd_vjp", None) is not None for a in acts)
                and not any(torch._C._functorch.is_functorch_wrapped_tensor(p) for p in params)):
            return super().loss_and_grad(params, X, Y)
        self._check_shapes(params, X)
        H = params[0] if X is None else params[0] @ X
        inputs: list[Tensor | None] = [X]  # each layer's input: X, then σ(H)
        pre = []  # the hidden pre-activations H
        for W, act in zip(params[1:], acts):
            pre.append(H)
            A = act.sigma(H)
            inputs.append(A)
            H = W @ A
        loss = self._loss_of_output(H, Y)
        # d/dF of the reduced (F − Y)²: autograd's (upstream · 2(F − Y)), upstream ½, 1 or 1/(m·k)
        r = H - Y
        if self.reduction == "mean":
            upstream = r.new_ones(()) / (r.shape[-2] * r.shape[-1])
        else:
            upstream = r.new_full((), 0.5 if self.reduction == "half_sum" else 1.0)
        g = upstream * (2.0 * r.pow(1.0))
        grads: list[Tensor] = [g] * len(params)
        for i in range(len(params) - 1, -1, -1):
            A = inputs[i]
            if A is None:  # H = W_1 (no data): the gradient passes through
                grads[i] = g
                break
            if i == 0:  # the data need no gradient
                grads[0] = _mm_backward(g, params[0], A, data=True)[0]
                break
            grads[i], dA = _mm_backward(g, params[i], A)
            vjp = getattr(acts[i - 1], "autograd_vjp")  # not None: checked above
            g = vjp(dA, pre[i - 1], A)
        return loss, tuple(grads)


def _column_major(x: Tensor) -> bool:
    return x.stride(0) == 1 and x.stride(1) == x.shape[0]


def _mm_backward(g: Tensor, W: Tensor, A: Tensor, data: bool = False) -> tuple[Tensor, Tensor | None]:
    """(∂/∂W, ∂/∂A) of ⟨g, W A⟩ as autograd's mm backward computes them, including its transposed
    products for column-major operands (mm_mat1_backward / mm_mat2_backward); ∂/∂A is None for ``data``."""
    dW = A.mm(g.t()).t() if _column_major(W) else g.mm(A.t())
    if data:
        return dW, None
    return dW, (g.t().mm(W).t() if _column_major(A) else W.t().mm(g))


class MLPClassifier(MLP):
    """[`MLP`][] trained with the mean negative log-likelihood of a softmax over its outputs.

    The loss of Gluch & Urbanke's experiments (Sec. 4.1). F(X) is (..., C, k) for C classes
    and k samples; ``Y`` holds the k integer labels.
    """

    def loss(self, params: Params, X: Tensor | None, Y: Tensor) -> Tensor:
        F = self.forward(params, X)  # (..., C, k)
        if Y.dtype not in (torch.int64, torch.int32) or Y.shape[-1] != F.shape[-1]:
            raise ValueError(f"Y must hold {F.shape[-1]} integer labels, got shape {tuple(Y.shape)}, dtype {Y.dtype}")
        log_p = torch.log_softmax(F, dim=-2)
        labels = Y.to(torch.int64).expand(*F.shape[:-2], F.shape[-1]).unsqueeze(-2)  # (..., 1, k)
        return -log_p.gather(-2, labels).squeeze(-2).mean(dim=-1)

    def accuracy(self, params: Params, X: Tensor, Y: Tensor) -> Tensor:
        """Fraction of samples whose largest output is the label."""
        return (self.forward(params, X).argmax(dim=-2) == Y).to(X.dtype).mean(dim=-1)


class SwishMLP(Model):
    """Bias-free MLP with Swish σ_β(x) = x·sigmoid(βx) and one trainable β per hidden neuron (G&U Sec. 4.3).

    Parameters are (W_1, β_1, W_2, β_2, …, W_L): W_i ∈ R^{n_i × n_{i−1}}, β_i ∈ R^{n_i × 1}
    (a column, so every parameter is a matrix). Its symmetry: neuron j of layer i scaled by c,
    (w_j, β_j, u_j) ↦ (c w_j, β_j / c, u_j / c) with u_j column j of W_{i+1}.
    """

    n_params = None

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction)

    def __repr__(self) -> str:
        return f"SwishMLP(reduction={self.reduction!r})"

    def forward(self, params: Params, X: Tensor | None = None) -> Tensor:
        if len(params) % 2 != 1:
            raise ValueError(f"SwishMLP parameters are (W_1, β_1, …, W_L): an odd count, got {len(params)}")
        H = params[0] if X is None else params[0] @ X
        for beta, W in zip(params[1::2], params[2::2]):
            if beta.shape[-2:] != (H.shape[-2], 1):
                raise ValueError(f"β must be ({H.shape[-2]}, 1) for a layer of width {H.shape[-2]}, got {tuple(beta.shape)}")
            H = W @ swish(H, beta)
        return H


class PotentialModel(Model):
    """A loss given as a plain function of the parameters (the data are inside it; X and Y are ignored).

    For losses that are not a network's error on a finite sample, e.g. the rotation-invariant
    losses of Gluch & Urbanke Sec. 6.
    """

    n_params = None

    def __init__(self, potential: Callable[[Params], Tensor], name: str = "potential"):
        super().__init__("mean")
        self.potential, self.name = potential, name

    def __repr__(self) -> str:
        return f"PotentialModel({self.name})"

    def loss(self, params: Params, X: Tensor | None = None, Y: Tensor | None = None) -> Tensor:
        return self.potential(tuple(params))
