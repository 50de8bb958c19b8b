"""The one table of activations shared by models, conserved quantities, actions and tests.

An elementwise entry carries σ, σ' and A(x) = ∫₀ˣ σ(t)/σ'(t) dt, the V-term of the
conserved quantity Q = ½Tr[UᵀU] − Σ A(V_aj) of Eq. 48 (where σ' = 0, e.g. ReLU for
x < 0, σ/σ' is taken as 0: those entries never move under gradient flow).
Adding an activation is one entry in ``_REGISTRY``; every test iterates over it.

The radial rescaling activation σ(z) = f(‖z‖) z (Example 5, Prop. 15) acts on whole
vectors, not entries, and lives in [`radial_rescaling`][].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union, cast

import torch

from .validation import check_choice

Tensor = torch.Tensor


@dataclass(frozen=True)
class Activation:
    """An elementwise activation with what Eq. 48 and Eq. 47 need of it."""

    name: str
    sigma: Callable[[Tensor], Tensor]
    dsigma: Callable[[Tensor], Tensor]  # σ'
    integral: Callable[[Tensor], Tensor] | None  # A(x) = ∫₀ˣ σ/σ' dt (Eq. 48); None where it has no closed form
    homogeneity: float | None = None  # α with σ(cx) = c^α σ(x), c > 0 (Example 3); None if not homogeneous
    gaussian_mean_integral: Callable[[float], float] | None = None  # E[A(x)] for x ~ N(0, s²), argument s²
    dsigma_from_output: Callable[[Tensor], Tensor] | None = None  # σ' written in s = σ(z), when cheaper
    # (z, s, d) ↦ None: writes σ(z) into s and σ'(z) into d in place, with no allocation (the
    # preallocated training step of dynamics.TwoLayerGD); a constant σ' is written once, not per step
    into: Callable[[Tensor, Tensor, Tensor], object] | None = None
    constant_dsigma: bool = False
    # (g, z, s = σ(z)) ↦ g·σ'(z) with the arithmetic autograd does through ``sigma``, bit for bit
    # (tests/test_models.py): MLP's gradient without an autograd graph; None: MLP uses autograd
    autograd_vjp: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None

    def __call__(self, z: Tensor) -> Tensor:
        return self.sigma(z)

    def sigma_and_dsigma(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(σ(z), σ'(z)) in one pass, reusing σ(z) where the table says how (the training loop's hot path)."""
        s = self.sigma(z)
        return s, (self.dsigma(z) if self.dsigma_from_output is None else self.dsigma_from_output(s))

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


_ONE = torch.ones(())  # a 0-dim 1 for in-place 1 − s² (0-dim tensors take the other operands' dtype and device)


def _relu_backward(g: Tensor, s: Tensor) -> Tensor:
    """autograd's ReLU backward (threshold_backward on the output): 0 where s ≤ 0, else g."""
    return torch.where(s <= 0, 0.0, g)


def _pow_backward(g: Tensor, x: Tensor, power: float) -> Tensor:
    """autograd's backward of x ** power: g · (power · x^(power − 1))."""
    return g * (power * x.pow(power - 1))


def _repu_backward(g: Tensor, r: Tensor, power: float) -> Tensor:
    """autograd's backward through relu(z) ** power, given r = relu(z): pow's, then ReLU's on r."""
    return _relu_backward(_pow_backward(g, r, power), r)


def identity() -> Activation:
    """σ(x) = x: linear nets (Example 2); σ/σ' = x, A = x²/2."""
    return Activation("identity", lambda z: z, torch.ones_like, lambda z: 0.5 * z * z,
                      homogeneity=1.0, gaussian_mean_integral=lambda s2: 0.5 * s2,
                      into=lambda z, s, d: s.copy_(z), constant_dsigma=True, autograd_vjp=lambda g, z, s: g)


def relu() -> Activation:
    """σ(x) = max(x, 0); σ/σ' = x on x > 0, A = relu(x)²/2."""
    return Activation("relu", torch.relu, lambda z: (z > 0).to(z.dtype),
                      lambda z: 0.5 * torch.relu(z) ** 2,
                      homogeneity=1.0, gaussian_mean_integral=lambda s2: 0.25 * s2,
                      dsigma_from_output=torch.sign,  # s = relu(z) ≥ 0: sign(s) = 1 exactly where z > 0
                      into=lambda z, s, d: torch.sign(torch.clamp(z, min=0, out=s), out=d),
                      autograd_vjp=lambda g, z, s: _relu_backward(g, s))


def leaky_relu(slope: float = 0.01) -> Activation:
    """σ(x) = x for x > 0, slope·x otherwise (torch's convention, Example 4); σ/σ' = x, A = x²/2."""
    if not slope > 0:
        raise ValueError(f"slope={slope!r} must be > 0 (slope 0 is 'relu')")
    return Activation(f"leaky_relu({slope:g})",
                      lambda z: torch.where(z > 0, z, slope * z),
                      lambda z: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, slope)),
                      lambda z: 0.5 * z * z,
                      homogeneity=1.0, gaussian_mean_integral=lambda s2: 0.5 * s2)


def repu(power: float = 2.0) -> Activation:
    """Rectified power unit σ(x) = relu(x)^p, p ≥ 1: α = p homogeneous; σ/σ' = x/p, A = relu(x)²/(2p)."""
    if not power >= 1:
        raise ValueError(f"power={power!r} must be >= 1")
    return Activation(f"repu({power:g})",
                      lambda z: torch.relu(z) ** power,
                      lambda z: power * torch.relu(z) ** (power - 1) * (z > 0).to(z.dtype),
                      lambda z: torch.relu(z) ** 2 / (2 * power),
                      homogeneity=float(power), gaussian_mean_integral=lambda s2: s2 / (4 * power),
                      autograd_vjp=lambda g, z, s: _repu_backward(g, torch.relu(z), power))


def tanh() -> Activation:
    """σ = tanh; σ/σ' = sinh x cosh x, A = sinh²(x)/2 (the reference uses cosh², i.e. 2A + const)."""
    return Activation("tanh", torch.tanh, lambda z: 1 - torch.tanh(z) ** 2,
                      lambda z: 0.5 * torch.sinh(z) ** 2,
                      # E[sinh² x]/2 = (E[cosh 2x] − 1)/4 = (e^{2s²} − 1)/4
                      gaussian_mean_integral=lambda s2: (math.exp(2 * s2) - 1) / 4,
                      dsigma_from_output=lambda s: 1 - s * s,
                      into=lambda z, s, d: torch.addcmul(_ONE, torch.tanh(z, out=s), s, value=-1, out=d))


def sigmoid() -> Activation:
    """σ = 1/(1+e⁻ˣ); σ/σ' = 1 + eˣ, A = x + eˣ − 1 (zero at 0)."""
    return Activation("sigmoid", torch.sigmoid,
                      lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
                      lambda z: z + torch.expm1(z),
                      gaussian_mean_integral=lambda s2: math.expm1(s2 / 2),
                      dsigma_from_output=lambda s: torch.addcmul(s, s, s, value=-1),  # s − s²
                      into=lambda z, s, d: torch.addcmul(torch.sigmoid(z, out=s), s, s, value=-1, out=d))


_REGISTRY: dict[str, Callable[..., Activation]] = {
    "identity": identity,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "repu": repu,
    "tanh": tanh,
    "sigmoid": sigmoid,
}

#: Names accepted by ``get_activation``; the paper's four (Fig. 3, 5, 6, 9) come first.
PAPER_ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid")
ACTIVATIONS = tuple(_REGISTRY)


class MixedActivation:
    """One activation per configuration along the leading batch dimension.

    Lets one batched tensor hold, e.g., the 4 activations × 3 learning rates of Fig. 3:
    configuration b uses ``members[b]``. Same interface as [`Activation`][].
    """

    gaussian_mean_integral: None = None  # E[A(x)] (Eq. 47) is one per member, not one for the mix

    def __init__(self, members: Sequence[Activation]):
        self.members = tuple(members)
        names = [a.name for a in self.members]
        self.name = "mixed(" + ",".join(names) + ")"
        unique: dict[str, list[int]] = {}
        for b, a in enumerate(self.members):
            unique.setdefault(a.name, []).append(b)
        self._groups = [(self.members[idx[0]], torch.tensor(idx)) for idx in unique.values()]
        order = torch.cat([idx for _, idx in self._groups])
        self._inverse = torch.argsort(order)
        # configurations of one activation side by side: slice views instead of gathers (fewer ops per step)
        self._slices = None
        if all(idx.tolist() == list(range(idx[0], idx[0] + len(idx))) for _, idx in self._groups):
            # groups are in order of first appearance, so these ranges tile 0 … B in order
            self._slices = [(int(idx[0]), int(idx[0]) + len(idx), act) for act, idx in self._groups]
        alphas = {a.homogeneity for a in self.members}
        self.homogeneity = alphas.pop() if len(alphas) == 1 else None

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"MixedActivation({[a.name for a in self.members]})"

    def _check_batch(self, z: Tensor) -> None:
        if z.ndim == 0 or z.shape[0] != len(self.members):
            raise ValueError(f"{self.name} needs a leading batch dimension of {len(self.members)} "
                             f"configurations, got a tensor of shape {tuple(z.shape)}")

    def _apply(self, attribute: str, z: Tensor) -> Tensor:
        self._check_batch(z)
        if len(self._groups) == 1:
            return getattr(self.members[0], attribute)(z)
        if self._slices is not None:
            return torch.cat([getattr(act, attribute)(z[start:stop]) for start, stop, act in self._slices])
        parts = [getattr(act, attribute)(z[idx.to(z.device)]) for act, idx in self._groups]
        return torch.cat(parts)[self._inverse.to(z.device)]

    def sigma(self, z: Tensor) -> Tensor:
        return self._apply("sigma", z)

    def sigma_and_dsigma(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._check_batch(z)
        if len(self._groups) == 1:
            return self.members[0].sigma_and_dsigma(z)
        if self._slices is not None:
            pairs = [act.sigma_and_dsigma(z[start:stop]) for start, stop, act in self._slices]
            return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        return self.sigma(z), self.dsigma(z)

    def dsigma(self, z: Tensor) -> Tensor:
        return self._apply("dsigma", z)

    def integral(self, z: Tensor) -> Tensor:
        return self._apply("integral", z)

    __call__ = sigma


ActivationLike = Union[str, Activation, MixedActivation, Sequence[Union[str, Activation]]]


def get_activation(spec: ActivationLike, **options) -> Activation | MixedActivation:
    """Look up an activation by name (``options`` go to its factory, e.g. ``slope=0.1``).

    A sequence of names gives a [`MixedActivation`][], one per batch configuration.
    """
    if isinstance(spec, (Activation, MixedActivation)):
        return spec
    if isinstance(spec, str):
        check_choice("activation", spec, _REGISTRY)
        return _REGISTRY[spec](**options)
    if isinstance(spec, (list, tuple)) and len(spec) > 0:
        return MixedActivation([cast(Activation, get_activation(s, **options)) for s in spec])
    raise TypeError(f"activation must be a name ({', '.join(ACTIVATIONS)}), an Activation "
                    f"or a non-empty sequence of them, got {spec!r}")


def inverse_square(r: Tensor) -> Tensor:
    """f(r) = r⁻², the paper's radial rescaling example (Prop. 15): σ(z) = z/‖z‖²."""
    return r ** -2


def radial_rescaling(z: Tensor, f: Callable[[Tensor], Tensor] = inverse_square, dim: int = -2) -> Tensor:
    """σ(z) = f(‖z‖) z, the norm taken along ``dim`` (Example 5).

    With ``dim=-2`` each column of Z = VᵀX (one sample's hidden vector) is rescaled: this σ
    commutes with O(h). With ``dim=-1`` each row of Vᵀ is rescaled: the g of Prop. 14 / Fig. 7.
    """
    return f(torch.linalg.vector_norm(z, dim=dim, keepdim=True)) * z


# Not in ``_REGISTRY``: every table entry is checked by every test (Prop. 8's nonlinear action needs an
# invertible σ, which x² is not), so the two activations that only Gluch & Urbanke use live beside it.

def polynomial(power: int = 2) -> Activation:
    """σ(x) = xᵖ, integer p ≥ 1: p-homogeneous for c > 0 (Gluch & Urbanke Sec. 4.2); σ/σ' = x/p, A = x²/(2p)."""
    if not (isinstance(power, int) and power >= 1):
        raise ValueError(f"power={power!r} must be an integer >= 1")
    return Activation(f"polynomial({power})", lambda z: z ** power,
                      lambda z: power * z ** (power - 1) if power > 1 else torch.ones_like(z),
                      lambda z: z * z / (2 * power),
                      homogeneity=float(power), gaussian_mean_integral=lambda s2: s2 / (2 * power))


def swish(z: Tensor, beta: Tensor | float = 1.0) -> Tensor:
    """Swish σ_β(x) = x·sigmoid(βx) (Ramachandran et al.); σ_β(cx) = c·σ_{cβ}(x) (G&U Observation 1).

    A function rather than a table entry: with a trainable β (G&U Sec. 4.3) β is a parameter of the
    model ([`symmetry.models.SwishMLP`][]), not of the activation.
    """
    return z * torch.sigmoid(beta * z)
