"""The paper's groups on a tuple model's parameters, each a [`Symmetry`][symmetry.groups.Symmetry].

A tuple model (``symmetry.models``: ``TwoLayerNet``, ``MLP``, ``TwoLayerRadialNet``) keeps no parameters: θ is a
tuple, read in the multilayer convention W_1 … W_L (W_i: h_i × h_{i−1}; a ``TwoLayerNet``'s (U, V) is
(W_1, W_2) = (Vᵀ, U)). A group has one factor per hidden layer, keyed ``"hidden i"``; ``bind(model, params)``
gives it the model, the widths, dtype and device (and, for Prop. 8, the batch X). Every linear action is
[`symmetry.actions.multilayer_action`][] (Eq. 17), the data-dependent one
[`symmetry.actions.multilayer_nonlinear_action`][] (Prop. 8).

- [`GeneralLinear`][]: GL(h_i) on a linear net (Example 2, Eq. 17); Q_i = W_{i+1}ᵀW_{i+1} − W_iW_iᵀ (Example 7).
- [`PositiveScaling`][]: (R_{>0})^{h_i} on α-homogeneous activations (Example 3); Q_ij = α_i‖W_{i+1}[:, j]‖² −
  ‖W_i[j, :]‖² (Example 9).
- [`NonlinearGL`][]: the data-dependent GL of Prop. 8 in the identity-preserving form; for a two-layer net on
  whitened input (X = I) its per-neuron Q is Eq. 48, ½‖u_j‖² − Σ_a ∫₀^{V_aj} σ/σ'.
- [`Orthogonal`][]: O(h) on a radial net (Example 5): compact, so no quantity (⟨θ, Mθ⟩ = 0 for antisymmetric M).
- [`NeuronScaling`][]: per-neuron scaling of Prop. 14's radial net; λ_j = ‖u_j‖² + ‖v_j‖² (Eq. 65).

``quantities`` and ``balance`` follow the module blocks' convention ("outer minus inner"): B(θ, θ) = Q, and
one GD step θ − ηd, d = ∇L, changes Q by exactly η²B(d, d). What a group does not have is refused by name
([`NotSupportedError`][symmetry.groups.NotSupportedError]).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import torch

from ..actions import multilayer_action, multilayer_nonlinear_action, orthogonal_action
from ..activations import Activation
from ..conserved import Q_terms, balance_matrix, conserved_Q, neuron_balance
from ..validation import check_choice, check_tensors
from ..errors import NotSupportedError
from ..models import MLP, TwoLayerNet
from ..types import Params

Tensor = torch.Tensor

__all__ = ["Group", "GeneralLinear", "PositiveScaling", "NonlinearGL", "Orthogonal", "NeuronScaling",
           "PAPER_GROUPS", "make_group", "layout"]


def layout(model, params: Params) -> tuple[Params, list[Any], Any]:
    """(weights W_1 … W_L in the multilayer convention, hidden activations, back-conversion) of a tuple model.

    A ``TwoLayerNet``'s (U, V) is (W_1, W_2) = (Vᵀ, U), so one multilayer code serves both."""
    if isinstance(model, TwoLayerNet):
        if len(params) != 2:
            raise ValueError(f"a TwoLayerNet has parameters (U, V); got {len(params)} tensors")
        return (params[1].mT, params[0]), [model.activation], lambda w: (w[1], w[0].mT)
    if isinstance(model, MLP) and type(model).__name__ in ("MLP", "MLPClassifier"):
        return tuple(params), list(model.hidden_activations(len(params))), tuple
    raise NotSupportedError(f"this group acts on symmetry.models.TwoLayerNet or MLP (tuple models); got {model!r}. "
                            "For an nn.Module, its symmetries are symmetry.module_symmetries(model)")


def _is_linear(act: Activation) -> bool:
    z = torch.tensor([-3.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    return bool(torch.equal(act.sigma(z), act.sigma(torch.ones((), dtype=torch.float64)) * z))


class Group:
    """A group of the paper acting on a tuple model's parameters: one factor per hidden layer (``"hidden i"``).

    Unbound (``GeneralLinear()``, or a name of [`PAPER_GROUPS`][]) it is only a kind of group;
    ``bind(model, params, X)`` returns a copy that knows the model, the hidden widths, dtype and device and
    (data-dependent groups) the batch, and raises if the group cannot act there. ``act`` is ``act_params``:
    a tuple model keeps no parameters to change in place.
    """

    name = "group"
    data_dependent = False

    def __init__(self) -> None:
        self.model: Any = None
        self.widths: tuple[int, ...] = ()
        self.activations: list[Any] = []  # the activation table's entries, one per hidden layer
        self.dtype = torch.float64
        self.device = torch.device("cpu")
        self.X: Tensor | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # --- binding ------------------------------------------------------------------------------------------
    def bind(self, model, params: Sequence[Tensor], X: Tensor | None = None, approximate: bool = False) -> "Group":
        """This group on ``model`` at parameters of the shapes of ``params`` (and batch ``X``): a bound copy."""
        params = check_tensors("params", tuple(params))
        weights, acts, _ = self._layout(model, params)
        bound = copy.copy(self)
        bound.model, bound.activations, bound.X = model, list(acts), X
        bound.widths = tuple(W.shape[-2] for W in weights[:-1])
        bound.dtype, bound.device = params[0].dtype, params[0].device
        bound._check_model(weights, approximate)
        return bound

    def _layout(self, model, params: Params):
        return layout(model, params)

    def _check_model(self, weights: Params, approximate: bool) -> None:
        """Raise where the group is not a symmetry of the bound model (NotSupportedError) or of its batch."""

    def _require(self) -> None:
        if self.model is None:
            raise RuntimeError(f"{self!r} is not bound to a model: call .bind(model, params) (teleport binds it)")

    def _split(self, params, argument: str = "params") -> tuple[Params, Any]:
        self._require()
        params = check_tensors(argument, tuple(params))
        weights, _, back = self._layout(self.model, params)
        widths = tuple(W.shape[-2] for W in weights[:-1])
        if widths != self.widths:
            raise ValueError(f"{argument} has hidden widths {widths}, but {self.name} was bound to widths {self.widths}")
        return weights, back

    # --- one factor per hidden layer (overridden per group) ----------------------------------------------
    def _shape(self, h: int) -> tuple[int, ...]:
        return (h, h)

    def _exp(self, x: Tensor) -> Tensor:
        return torch.linalg.matrix_exp(x)

    def _random(self, h: int, scale: float, generator: torch.Generator | None) -> Tensor:
        draw = torch.randn(self._shape(h), generator=generator, dtype=torch.float64)
        return (scale * draw / math.sqrt(h) if draw.ndim == 2 else scale * draw).to(dtype=self.dtype, device=self.device)

    def _check_factor(self, argument: str, g: Tensor) -> None:
        s = torch.linalg.svdvals(g.detach())
        if not float(s[-1]) > float(s[0]) * torch.finfo(g.dtype).eps * g.shape[-1]:
            raise ValueError(f"{argument} is singular: {self.name} needs an invertible matrix")

    def _act(self, gs: list[Tensor], weights: Params, check: bool) -> Params:
        raise NotImplementedError

    def _balance(self, a: Params, b: Params) -> list[Tensor]:
        raise NotSupportedError(f"{self.name} has no quadratic conserved quantity (balance)")

    def _magnitude(self, w: Params) -> list[Tensor]:
        raise NotSupportedError(f"{self.name} has no conserved quantity to measure")

    # --- the protocol -------------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        self._require()
        return [f"hidden {i + 1}" for i in range(len(self.widths))]

    def _parts(self, argument: str, d) -> list[Tensor]:
        keys = self.keys()
        if not isinstance(d, Mapping):
            raise TypeError(f"{argument} must be a dict {{hidden layer: tensor}} with keys {keys}, got {type(d).__name__}")
        if set(d) != set(keys):
            raise ValueError(f"{argument} has keys {sorted(d)}, but {self.name} on this model has {keys}")
        for k, h in zip(keys, self.widths):
            t = d[k]
            if not isinstance(t, Tensor) or tuple(t.shape) != self._shape(h):
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{argument}[{k!r}] must have shape {self._shape(h)}, got {got}")
        return [d[k] for k in keys]

    def algebra_zero(self, requires_grad: bool = False) -> dict[str, Tensor]:
        """ξ = 0 (the identity's coordinates), one tensor per hidden layer."""
        return {k: torch.zeros(self._shape(h), dtype=self.dtype, device=self.device, requires_grad=requires_grad)
                for k, h in zip(self.keys(), self.widths)}

    def exp(self, xi: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Algebra → group, differentiable in ξ."""
        return {k: self._exp(x) for k, x in zip(self.keys(), self._parts("xi", xi))}

    def random_element(self, scale: float, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """exp(scale·ξ), ξ standard normal (A/√h for a matrix algebra); the identity at scale 0."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scale={scale!r} must be a finite number >= 0")
        return self.exp({k: self._random(h, scale, generator) for k, h in zip(self.keys(), self.widths)})

    def check_element(self, element: Mapping[str, Tensor]) -> None:
        """Raise unless ``element`` belongs to the group (keys, shapes, finite, invertible, positive, ...)."""
        with torch.no_grad():
            for k, g in zip(self.keys(), self._parts("element", element)):
                if not bool(torch.isfinite(g).all()):
                    raise ValueError(f"element[{k!r}] contains NaN or infinity")
                self._check_factor(f"element[{k!r}]", g)

    def act_params(self, params: Sequence[Tensor], element: Mapping[str, Tensor], check: bool = True) -> Params:
        """g·θ as a new tuple, differentiable in both (``check``: the element is checked first)."""
        weights, back = self._split(params)
        gs = self._parts("element", element)
        if check:
            self.check_element(element)
        return back(self._act(gs, weights, check))

    def act(self, params: Sequence[Tensor], element: Mapping[str, Tensor]) -> Params:
        """g·θ: a tuple model holds no parameters, so this returns them, as ``act_params`` does."""
        return self.act_params(params, element)

    def quantities(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """The conserved quantities per hidden layer, B(θ, θ) (see [`balance`][symmetry.groups.paper.Group.balance])."""
        weights, _ = self._split(params)
        return dict(zip(self.keys(), self._balance(weights, weights)))

    def magnitudes(self, params: Sequence[Tensor]) -> dict[str, Tensor]:
        """The size of each quantity's terms (the scale its drift is measured against)."""
        weights, _ = self._split(params)
        return dict(zip(self.keys(), self._magnitude(weights)))

    def balance(self, a: Sequence[Tensor], b: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """The bilinear form B(a, b) with B(θ, θ) = Q; a GD step θ − ηd, d = ∇L, changes Q by exactly η²B(d, d)."""
        wa, _ = self._split(a, "a")
        wb = wa if b is None else self._split(b, "b")[0]
        return dict(zip(self.keys(), self._balance(wa, wb)))

    def describe(self) -> str:
        if self.model is None:
            return f"{self.name} (not bound to a model)"
        dim = sum(self._dimension(h) for h in self.widths)
        return f"{self.name} on {self.model!r}: hidden widths {self.widths}, group dimension {dim}"

    def _dimension(self, h: int) -> int:
        return math.prod(self._shape(h))


class GeneralLinear(Group):
    """GL(h_i) on every hidden layer: W_i ↦ g_i W_i g_{i−1}⁻¹ (Eq. 17; Example 2 for two layers).

    A symmetry only where every hidden activation is linear (refused otherwise). ξ_i ∈ gl(h_i), g_i =
    matrix_exp(ξ_i). Q_i = W_{i+1}ᵀW_{i+1} − W_iW_iᵀ (for (U, V): UᵀU − VᵀV, Example 7; ½ its trace is Eq. 48
    with σ = identity); B(a, b) = b_{i+1}ᵀa_{i+1} − a_ib_iᵀ ([`symmetry.conserved.balance_matrix`][])."""

    name = "GL (linear layers)"

    def _check_model(self, weights, approximate):
        bad = [a.name for a in self.activations if not _is_linear(a)]
        if bad:
            raise NotSupportedError(f"group=GeneralLinear is not a symmetry of a net with the nonlinear hidden "
                                    f"activations {bad}: GL acts on linear layers (Example 2); pick the group of "
                                    "the activation (PositiveScaling, NonlinearGL)")

    def _act(self, gs, weights, check):
        return multilayer_action(gs, weights, 1.0)

    def _balance(self, a, b):
        return balance_matrix(a, b)

    def _magnitude(self, w):
        return [torch.linalg.matrix_norm(O.mT @ O) + torch.linalg.matrix_norm(I @ I.mT) for I, O in zip(w[:-1], w[1:])]


class _Diagonal(Group):
    """A group with one positive (or nonzero) factor per neuron: ξ ∈ R^h, c = exp(ξ)."""

    def _shape(self, h):
        return (h,)

    def _exp(self, x):
        return torch.exp(x)


class PositiveScaling(_Diagonal):
    """Per-neuron positive scaling of α-homogeneous activations: W_i ↦ c_i W_i c_{i−1}^{−α} (Example 3).

    ξ_i ∈ R^{h_i}, c_i = exp(ξ_i) > 0; α is each activation's homogeneity from the activation table.
    Q_ij = α_i‖W_{i+1}[:, j]‖² − ‖W_i[j, :]‖² (Example 9; [`symmetry.conserved.neuron_balance`][])."""

    name = "positive scaling (homogeneous activations)"

    def _check_model(self, weights, approximate):
        bad = [a.name for a in self.activations if a.homogeneity is None]
        if bad:
            raise NotSupportedError(f"group=PositiveScaling needs homogeneous activations (relu, leaky_relu, "
                                    f"identity, repu); this model has {bad}")

    def _check_factor(self, argument, g):
        if not bool((g > 0).all()):
            raise ValueError(f"{argument} must be positive (a rescaling by c > 0 per neuron); got min {float(g.min()):.3g}")

    def _alphas(self) -> list[float]:
        return [float(a.homogeneity) for a in self.activations]  # not None: checked in bind

    def _act(self, gs, weights, check):
        return multilayer_action(gs, weights, self._alphas())

    def _balance(self, a, b):
        return neuron_balance(a, b, self._alphas())

    def _magnitude(self, w):
        return [al * (O * O).sum(dim=-2) + (I * I).sum(dim=-1) for al, I, O in zip(self._alphas(), w[:-1], w[1:])]


class NonlinearGL(Group):
    """The data-dependent GL action of Prop. 8 on every hidden layer, bottom to top, in the form whose identity
    element is the identity, π_i = I + (σ(Z_i) − σ(g_iZ_i))σ(g_iZ_i)⁺ ([`symmetry.actions.nonlinear_pi`][] with
    ``form="identity"``; the paper's σ(Z)σ(gZ)⁺ at g = I projects the upper layer onto the span of the k batch
    activations). Exact on the bound batch X when it is no larger than every hidden width (``bind`` refuses a
    larger one unless ``approximate=True``: a least-squares action). ``X=None`` means X = I_n.

    Quantities: for a ``TwoLayerNet`` on whitened input (X = I) the per-neuron Q of Eq. 48,
    ½‖u_j‖² − Σ_a ∫₀^{V_aj} σ/σ' ([`symmetry.conserved.conserved_Q`][]); not quadratic, so no ``balance``.
    """

    name = "GL, data-dependent (Prop. 8)"
    data_dependent = True

    def _check_model(self, weights, approximate):
        k = weights[0].shape[-1] if self.X is None else self.X.shape[-1]
        if k > min(self.widths) and not approximate:
            raise ValueError(f"group=NonlinearGL (Prop. 8) keeps the loss only on a batch no larger than every "
                             f"hidden width: the batch has k={k} samples, the hidden widths are {list(self.widths)}. "
                             f"Teleport on a batch of at most {min(self.widths)} samples, or pass approximate=True "
                             "to teleport with a least-squares action whose loss change the report gives")

    def _act(self, gs, weights, check):
        return multilayer_nonlinear_action(gs, weights, self.X, self.activations, "identity",
                                           "warn" if check else "ignore")

    def _two_layer_whitened(self, params) -> tuple[Tensor, Tensor]:
        whitened = self.X is None or (self.X.ndim == 2 and self.X.shape[0] == self.X.shape[1] and
                                      torch.equal(self.X, torch.eye(self.X.shape[0]).to(self.X)))
        if not isinstance(self.model, TwoLayerNet) or not whitened:
            raise NotSupportedError(f"{self.name}: a closed-form conserved quantity (Eq. 48) is known for a "
                                    "TwoLayerNet on whitened input X = I only")
        self._split(params)
        return params[0], params[1]

    def quantities(self, params):
        """Eq. 48 per neuron, ½‖u_j‖² − Σ_a A(V_aj) (TwoLayerNet, X = I; refused otherwise)."""
        U, V = self._two_layer_whitened(params)
        return {"hidden 1": conserved_Q((U, V), self.activations[0], per_neuron=True)}

    def magnitudes(self, params):
        U, V = self._two_layer_whitened(params)
        u_term, v_term = Q_terms((U, V), self.activations[0])
        return {"hidden 1": u_term.abs() + v_term.abs()}

    def balance(self, a, b=None):
        raise NotSupportedError(f"{self.name}: Eq. 48's Q is not quadratic in θ (∫σ/σ'), so it has no bilinear "
                                "form B with ΔQ = η²B(∇L, ∇L)")


class _RadialPair(Group):
    """A group acting on a radial net's (U, V), (W_1, W_2) = (Vᵀ, U), whatever the model."""

    def _layout(self, model, params):
        if len(params) != 2:
            raise ValueError(f"{self.name} acts on a two-layer net's (U, V); got {len(params)} tensors")
        return (params[1].mT, params[0]), [], lambda w: (w[1], w[0].mT)


class Orthogonal(_RadialPair):
    """O(h) on a radial net (TwoLayerRadialNet, over="hidden"): (U, V) ↦ (U gᵀ, V gᵀ) (Example 5).

    g = matrix_exp(ξ − ξᵀ): an unconstrained ξ ∈ R^{h×h} mapped onto so(h), so g ∈ SO(h). O(h) is compact:
    ⟨θ, Mθ⟩ = 0 for every antisymmetric M (Prop. 12), so it has no conserved quantity of θ alone (the angular
    momenta of Eq. 30 vanish along GF; [`symmetry.conserved.angular_momentum`][]): ``quantities`` refuses."""

    name = "O(h) (radial activation)"

    def _exp(self, x):
        return torch.linalg.matrix_exp(x - x.mT)

    def _dimension(self, h):
        return h * (h - 1) // 2  # so(h); ξ has h² coordinates, of which the antisymmetric part acts

    def _check_factor(self, argument, g):
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
        if not torch.allclose(g.mT @ g, eye, atol=1e-6 if g.dtype == torch.float64 else 1e-4):
            raise ValueError(f"{argument} must be orthogonal (gᵀg = I) for O(h) (Example 5)")

    def _act(self, gs, weights, check):
        U, V = orthogonal_action(gs[0], (weights[1], weights[0].mT))
        return V.mT, U

    def _balance(self, a, b):
        raise NotSupportedError(f"{self.name} is compact: ⟨θ, Mθ⟩ = 0 for antisymmetric M (Prop. 12), so it "
                                "conserves no quantity of θ alone; see symmetry.conserved.angular_momentum")

    def _magnitude(self, w):
        return self._balance(w, w)


class NeuronScaling(_Diagonal, _RadialPair):
    """(U, V) ↦ (U c, V c), c = exp(ξ) > 0: the radial net of Prop. 14 (over="neuron"); the scaling action of
    Example 3 with π(c) = c⁻¹ (α = −1). λ_j = ‖u_j‖² + ‖v_j‖² (Eq. 65; [`symmetry.conserved.radial_lambda`][])."""

    name = "per-neuron scaling (radial net, Prop. 14)"

    def _check_factor(self, argument, g):
        if not bool((g != 0).all()):
            raise ValueError(f"{argument} must have nonzero entries (a per-neuron scaling)")

    def _act(self, gs, weights, check):
        return multilayer_action(gs, weights, -1.0)

    def _balance(self, a, b):
        return [-q for q in neuron_balance(a, b, -1.0)]  # α = −1: −(‖u‖² + ‖v‖²), turned to the paper's λ

    def _magnitude(self, w):
        return self._balance(w, w)


PAPER_GROUPS: dict[str, type[Group]] = {"gl": GeneralLinear, "scaling": PositiveScaling, "nonlinear": NonlinearGL,
                                        "orthogonal": Orthogonal, "neuron_scaling": NeuronScaling}
"""The paper's groups by name (what ``make_group`` and ``teleport_to`` accept as a string)."""


def make_group(group: str | Group) -> Group:
    """A group by name (``gl``, ``scaling``, ``nonlinear``, ``orthogonal``, ``neuron_scaling``) or as given."""
    if isinstance(group, Group):
        return group
    check_choice("group", group, PAPER_GROUPS)
    return PAPER_GROUPS[group]()
