"""Symmetry teleportation: move the parameters along a group orbit, where the loss does not change,
to the point that is best for what comes next (Zhao, Dehmamy, Walters & Yu, NeurIPS 2022;
Zhao, Gower, Walters & Yu, ICLR 2024).

The paper's conserved quantities are coordinates along the orbit (Figs. 6, 7, 9; App. G.1):
gradient flow cannot change them, a group element can. ``teleport`` optimises one group element

    g = exp(ξ),  ξ ∈ Lie algebra  (matrix_exp for GL / O, entrywise exp for positive scalings),

by gradient ascent on an objective J(g·θ) and applies it. Why this parametrisation: ξ = 0 is the
identity, every ξ gives a group element of the identity component (no step can leave the group or
reach a singular matrix, which g = I + T of the reference code can), and the action is exactly
loss-preserving for every ξ, so ΔL measures only round-off (the reference code's first-order
inverse (I + T)⁻¹ ≈ I − T changes the loss at O(‖T‖²), SPEC-extensions A1.3).

Groups (each a :class:`Group`: ``algebra_zero(params)``, ``exp(ξ)``, ``act(element, params, X)``):

- :class:`GeneralLinear`: GL on each hidden layer of a linear net (Eq. 17, Example 2)
- :class:`PositiveScaling`: per-neuron positive scaling of a homogeneous net (Example 3)
- :class:`NonlinearGL`: the data-dependent action of Prop. 8, layer pair by layer pair with each
  pair's input recomputed (exact on the batch X when the batch is no larger than every hidden width)
- :class:`Orthogonal`, :class:`NeuronScaling`: the radial nets' O(h) and per-neuron scalings
- :class:`ModuleGroup`: adapter for ``symmetry.modules.ModuleSymmetries`` (a user's ``nn.Module``)

Objectives: :func:`grad_norm` (maximise ‖∇L‖², NeurIPS 2022), :func:`sharpness` (minimise the top
Hessian eigenvalue by Lanczos on Hessian-vector products, or Hutchinson's trace estimate,
ICLR 2024), :func:`conserved_target` (reach a target value of a conserved quantity), or any callable.

Inside training: :func:`train` runs GD, SGD, momentum, AdaGrad or Adam (``torch.optim``) through
:class:`OptimizerStepper` and teleports at the steps of a :class:`TeleportSchedule` via
:class:`Teleporting`, a wrapper around any object with the small stepper protocol documented there;
:class:`TeleportingStepper` wraps a stepper of the engine's protocol (``init_state``/``step(state, grad)``).
"""
from __future__ import annotations

import functools
import math
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from .actions import multilayer_action, neuron_scaling_action, orthogonal_action
from .activations import ActivationLike, get_activation
from .validation import check_choice, check_finite, check_tensors

Tensor = torch.Tensor
Params = tuple[Tensor, ...]
Algebra = tuple[Tensor, ...]
Element = tuple[Tensor, ...]
LossFn = Callable[[Params], Tensor]


class TeleportWarning(UserWarning):
    """A teleport changed the loss by more than the tolerance (``on_loss_change="warn"``)."""


# ---------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------

class Group:
    """A Lie group acting on a parameter tuple: the protocol ``teleport`` needs.

    ``algebra_zero(params)`` gives Lie-algebra coordinates ξ (a tuple of tensors; zeros = identity),
    ``exp(ξ)`` the group element, ``act(element, params, X)`` the transformed parameters; ``act`` must
    be differentiable in the element. ``X`` is the batch for data-dependent actions (ignored otherwise).
    """

    name = "group"
    data_dependent = False

    def algebra_zero(self, params: Params) -> Algebra:
        raise NotImplementedError

    def exp(self, xi: Algebra) -> Element:
        raise NotImplementedError

    def act(self, element: Element, params: Params, X: Tensor | None) -> Params:
        raise NotImplementedError

    def check(self, model, params: Params, X: Tensor | None) -> None:
        """Raise a ValueError if the group cannot act on these parameters (shapes, batch size)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def condition_number(element: Element | Mapping[str, Tensor]) -> float:
    """Largest condition number over the element's factors: ‖g‖‖g⁻¹‖ (2-norm) for a matrix,
    max|c|/min|c| for a diagonal given as a vector. inf for a singular (or non-finite) element."""
    parts = element.values() if isinstance(element, Mapping) else element
    worst = 1.0
    for g in parts:
        g = g.detach()
        if not bool(torch.isfinite(g).all()):
            return math.inf
        if g.ndim >= 2:
            s = torch.linalg.svdvals(g.to(torch.float64))
            c = float(s[..., 0].max() / s[..., -1].min()) if float(s[..., -1].min()) > 0 else math.inf
        else:
            a = g.abs().to(torch.float64)
            c = float(a.max() / a.min()) if float(a.min()) > 0 else math.inf
        worst = max(worst, c)
    return worst


def _layout(model, params: Params) -> tuple[Params, list, Callable[[Params], Params]]:
    """(weights W_1 … W_L in the multilayer convention, hidden activations, back-conversion).

    A TwoLayerNet's (U, V) is (W_1, W_2) = (Vᵀ, U), so one multilayer code serves both.
    """
    from .models import MLP, TwoLayerNet

    if isinstance(model, TwoLayerNet):
        if len(params) != 2:
            raise ValueError(f"a TwoLayerNet has parameters (U, V); got {len(params)} tensors")
        return (params[1].mT, params[0]), [model.activation], lambda w: (w[1], w[0].mT)
    if isinstance(model, MLP) and type(model).__name__ in ("MLP", "MLPClassifier"):
        return tuple(params), list(model.hidden_activations(len(params))), tuple
    raise TypeError(f"this group acts on symmetry.models.TwoLayerNet or MLP (tuple models); got {model!r}. "
                    f"For an nn.Module use ModuleGroup(module_symmetries(model))")


class _Layered(Group):
    """Groups acting on every hidden layer of a two-layer net or an MLP: one factor per hidden layer."""

    def __init__(self):
        self._model = None

    def bind(self, model) -> "_Layered":
        self._model = model
        return self

    def _split(self, params: Params):
        if self._model is None:
            raise RuntimeError(f"{self!r} is not bound to a model: teleport() binds it, or call .bind(model)")
        return _layout(self._model, params)

    def check(self, model, params, X):
        self.bind(model)
        _layout(model, params)


class GeneralLinear(_Layered):
    """GL(h_i) on every hidden layer: W_i ↦ g_i W_i g_{i−1}⁻¹ (Eq. 17; Example 2 for two layers).

    A symmetry only where every hidden activation is linear. ξ_i ∈ gl(h_i), g_i = matrix_exp(ξ_i).
    """

    name = "GL (linear layers)"

    def algebra_zero(self, params):
        weights, _, _ = self._split(params)
        return tuple(torch.zeros(W.shape[-2], W.shape[-2], dtype=W.dtype, device=W.device) for W in weights[:-1])

    def exp(self, xi):
        return tuple(torch.linalg.matrix_exp(x) for x in xi)

    def act(self, element, params, X=None):
        weights, _, back = self._split(params)
        return back(multilayer_action(element, weights, 1.0))


class PositiveScaling(_Layered):
    """Per-neuron positive scaling of α-homogeneous activations: W_i ↦ c_i W_i c_{i−1}^{−α} (Example 3).

    ξ_i ∈ R^{h_i}, c_i = exp(ξ_i) > 0; α is each activation's homogeneity from the activation table.
    """

    name = "positive scaling (homogeneous activations)"

    def algebra_zero(self, params):
        weights, _, _ = self._split(params)
        return tuple(torch.zeros(W.shape[-2], dtype=W.dtype, device=W.device) for W in weights[:-1])

    def exp(self, xi):
        return tuple(torch.exp(x) for x in xi)

    def act(self, element, params, X=None):
        weights, acts, back = self._split(params)
        out = []
        for i, W in enumerate(weights):
            if i < len(weights) - 1:
                W = element[i].unsqueeze(-1) * W
            if i > 0:
                W = W * element[i - 1] ** (-acts[i - 1].homogeneity)
            out.append(W)
        return back(tuple(out))

    def check(self, model, params, X):
        super().check(model, params, X)
        _, acts, _ = _layout(model, params)
        bad = [a.name for a in acts if a.homogeneity is None]
        if bad:
            raise ValueError(f"group=PositiveScaling needs homogeneous activations (relu, leaky_relu, identity, "
                             f"repu); this model has {bad}")


class NonlinearGL(_Layered):
    """The data-dependent GL action of Prop. 8 on every hidden layer, bottom to top:

    Z_i = W_i H_{i−1},  W_i ↦ g_i W_i,  W_{i+1} ↦ W_{i+1} σ(Z_i) σ(g_i Z_i)⁺,  H_i = σ(g_i Z_i),

    with each pair's input H_{i−1} recomputed from the already transformed lower layers (the reference
    codes use the stale one, which breaks exactness; SPEC-extensions A1.3(d)). It keeps the network's
    output on the batch X exactly iff σ(g_i Z_i) has full column rank, which needs the batch size k to
    be at most every hidden width; on other data the loss changes. ``X=None`` means X = I_n.
    """

    name = "GL, data-dependent (Prop. 8)"
    data_dependent = True

    def algebra_zero(self, params):
        return GeneralLinear.algebra_zero(self, params)

    def exp(self, xi):
        return tuple(torch.linalg.matrix_exp(x) for x in xi)

    def act(self, element, params, X):
        weights, acts, back = self._split(params)
        H = None if X is None else X.to(weights[0])
        out, right = [], None
        for i, W in enumerate(weights):
            if right is not None:
                W = W @ right
            if i == len(weights) - 1:
                out.append(W)
                break
            Z = W if H is None else W @ H  # (h_i, k), unchanged by the lower layers' transformation
            g = element[i]
            A = acts[i].sigma(g @ Z)  # σ(gZ), (h_i, k), k ≤ h_i
            # π = σ(Z)σ(gZ)⁺ with σ(gZ)⁺ = (AᵀA)⁻¹Aᵀ (full column rank): a differentiable solve
            right = acts[i].sigma(Z) @ torch.linalg.solve(A.mT @ A, A.mT)  # (h_i, h_i)
            out.append(g @ W)
            H = A
        return back(tuple(out))

    def check(self, model, params, X):
        super().check(model, params, X)
        weights, _, _ = _layout(model, params)
        k = weights[0].shape[-1] if X is None else X.shape[-1]
        widths = [W.shape[-2] for W in weights[:-1]]
        if k > min(widths):
            raise ValueError(f"group=NonlinearGL (Prop. 8) keeps the loss only on a batch no larger than every "
                             f"hidden width: the batch has k={k} samples, the hidden widths are {widths}. Teleport "
                             f"on a batch of at most {min(widths)} samples (SPEC-extensions A1.3(c))")


class Orthogonal(Group):
    """O(h) on a radial net (TwoLayerRadialNet, over="hidden"): (U, V) ↦ (U gᵀ, V gᵀ) (Example 5).

    g = matrix_exp(ξ − ξᵀ): an unconstrained ξ ∈ R^{h×h} mapped onto so(h), so g ∈ SO(h).
    """

    name = "O(h) (radial activation)"

    def algebra_zero(self, params):
        h = params[0].shape[-1]
        return (torch.zeros(h, h, dtype=params[0].dtype, device=params[0].device),)

    def exp(self, xi):
        return (torch.linalg.matrix_exp(xi[0] - xi[0].mT),)

    def act(self, element, params, X=None):
        return orthogonal_action(element[0], tuple(params))


class NeuronScaling(Group):
    """(U, V) ↦ (U c, V c), c = exp(ξ) > 0: the radial net of Prop. 14 (over="neuron")."""

    name = "per-neuron scaling (radial net, Prop. 14)"

    def algebra_zero(self, params):
        h = params[0].shape[-1]
        return (torch.zeros(h, dtype=params[0].dtype, device=params[0].device),)

    def exp(self, xi):
        return (torch.exp(xi[0]),)

    def act(self, element, params, X=None):
        return neuron_scaling_action(torch.diag_embed(element[0]), tuple(params))


class ModuleGroup(Group):
    """Adapter: ``symmetry.modules.ModuleSymmetries`` (a user's nn.Module) as a :class:`Group`.

    Uses only its functional API: ``algebra_zero() -> {name: ξ}``, ``exp(ξ) -> element``,
    ``act_params(params: {name: tensor}, element) -> {name: tensor}``. Parameters travel as a tuple in
    the order of ``names`` (the module's ``named_parameters()``).
    """

    name = "module symmetries"

    def __init__(self, symmetries, names: Sequence[str]):
        for attr in ("algebra_zero", "exp", "act_params"):
            if not callable(getattr(symmetries, attr, None)):
                raise TypeError(f"symmetries must provide .{attr}() (symmetry.modules.ModuleSymmetries); "
                                f"got {type(symmetries).__name__}")
        self.symmetries, self.names = symmetries, list(names)
        self._keys: list[str] = []
        describe = getattr(symmetries, "describe", None)
        self.name = describe() if callable(describe) else "module symmetries"

    def algebra_zero(self, params):
        zero = self.symmetries.algebra_zero()
        self._keys = list(zero)
        return tuple(v.to(params[0]) for v in zero.values())

    def exp(self, xi):
        return self.symmetries.exp(dict(zip(self._keys, xi)))

    def act(self, element, params, X=None):
        out = self.symmetries.act_params(dict(zip(self.names, params)), element)
        return tuple(out[n] for n in self.names)


GROUPS = {"gl": GeneralLinear, "scaling": PositiveScaling, "nonlinear": NonlinearGL, "orthogonal": Orthogonal,
          "neuron_scaling": NeuronScaling}


def make_group(group: str | Group) -> Group:
    """A group by name (``gl``, ``scaling``, ``nonlinear``, ``orthogonal``, ``neuron_scaling``) or as given."""
    if isinstance(group, Group):
        return group
    if hasattr(group, "act_params"):
        raise TypeError("a ModuleSymmetries needs the parameter names: pass it with an nn.Module model "
                        "(teleport wraps it) or wrap it yourself as ModuleGroup(symmetries, names)")
    check_choice("group", group, GROUPS)
    return GROUPS[group]()


# ---------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------

@dataclass
class Objective:
    """J(θ) = ``fn(loss_fn, params)``, a differentiable scalar; teleport maximises it (or minimises)."""

    name: str
    fn: Callable[[LossFn, Params], Tensor]
    maximize: bool = True


def _grad(loss_fn: LossFn, params: Params, create_graph: bool = True) -> Params:
    loss = loss_fn(params)
    return torch.autograd.grad(loss, params, create_graph=create_graph)


def _detached_leaves(params: Params) -> Params:
    return tuple(p.detach().requires_grad_(True) for p in params)


def gradient_norm_squared(loss_fn: LossFn, params: Params) -> Tensor:
    """‖∇L(θ)‖² summed over all parameter tensors (= −dL/dt under gradient flow at η = 1)."""
    return torch.stack([(g * g).sum() for g in _grad(loss_fn, params)]).sum()


def grad_norm() -> Objective:
    """Maximise ‖∇L‖² on the orbit: the NeurIPS 2022 objective (Algorithm 1)."""
    return Objective("squared gradient norm", gradient_norm_squared, True)


def _hvp(loss_fn: LossFn, params: Params, create_graph: bool):
    grads = _grad(loss_fn, params, create_graph=True)

    def hvp(v: Params) -> Params:
        return torch.autograd.grad(_inner(grads, v), params,
                                   retain_graph=True, create_graph=create_graph)

    return hvp


def _inner(a: Params, b: Params) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


def top_hessian_eigenpair(loss_fn: LossFn, params: Params, start: Params | None = None, seed: int = 0,
                          tol: float = 1e-10) -> tuple[Tensor, Params]:
    """(vᵀH(θ)v, v) with v the unit eigenvector of the Hessian's largest (algebraic) eigenvalue, found by
    Lanczos (scipy ``eigsh``, warm-started at ``start``) on Hessian-vector products; small problems
    (D ≤ 32) take the dense H from D products. With v held fixed, vᵀH(θ)v has the gradient of λ_max in θ
    (Hellmann–Feynman), so the returned value is differentiable the right way."""
    import numpy as np

    params = tuple(params)
    hvp = _hvp(loss_fn, params, create_graph=False)
    sizes = [p.numel() for p in params]
    D = sum(sizes)

    def unflat(x: Tensor) -> Params:
        return tuple(c.reshape(p.shape) for c, p in zip(torch.split(x, sizes), params))

    def matvec(x) -> np.ndarray:
        x = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1)).to(params[0])
        return torch.cat([h.reshape(-1) for h in hvp(unflat(x))]).detach().cpu().to(torch.float64).numpy()

    if D <= 32:
        H = np.stack([matvec(e) for e in np.eye(D)], axis=1)
        _, vecs = np.linalg.eigh(0.5 * (H + H.T))
        top = vecs[:, -1]
    else:
        from scipy.sparse.linalg import LinearOperator, eigsh

        v0 = (np.random.default_rng(seed).standard_normal(D) if start is None
              else torch.cat([x.reshape(-1) for x in start]).cpu().to(torch.float64).numpy())
        _, vecs = eigsh(LinearOperator((D, D), matvec=matvec, dtype=np.float64), k=1, which="LA", v0=v0, tol=tol)
        top = vecs[:, 0]
    v = unflat(torch.as_tensor(top).to(params[0]))
    value = _inner(v, _hvp(loss_fn, params, create_graph=True)(v))
    return value, v


def lambda_max(loss_fn: LossFn, params: Params) -> float:
    """The Hessian's largest eigenvalue at ``params`` (:func:`top_hessian_eigenpair`, reverse-mode HVPs)."""
    return float(top_hessian_eigenpair(loss_fn, _detached_leaves(params))[0].detach())


def sharpness(method: str = "lanczos", samples: int = 10, seed: int = 0) -> Objective:
    """Minimise sharpness (ICLR 2024): ``lanczos`` = the top Hessian eigenvalue λ_max by Lanczos on
    Hessian-vector products (warm-started from the previous ascent step's eigenvector);
    ``hutchinson`` = the trace estimate mean zᵀHz over ``samples`` Rademacher vectors z, fixed across
    steps so that the objective is one smooth function of ξ."""
    check_choice("method", method, ("lanczos", "hutchinson"))
    state: dict[str, Any] = {}

    def lanczos(loss_fn, params):
        value, state["v"] = top_hessian_eigenpair(loss_fn, params, state.get("v"), seed)
        return value

    def hutchinson(loss_fn, params):
        if "z" not in state:
            gen = torch.Generator().manual_seed(seed)
            state["z"] = [tuple((torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params)
                          for _ in range(samples)]
        hvp = _hvp(loss_fn, params, create_graph=True)
        return sum(_inner(z, hvp(z)) for z in state["z"]) / samples

    name = "top Hessian eigenvalue (Lanczos)" if method == "lanczos" else "Hessian trace (Hutchinson)"
    return Objective(name, lanczos if method == "lanczos" else hutchinson, False)


def conserved_target(quantity: Callable[[Params], Tensor], target: float | Tensor, name: str = "Q") -> Objective:
    """Reach ``quantity(θ) = target`` on the orbit: minimise ‖quantity(θ) − target‖²."""
    def fn(loss_fn, params):
        q = quantity(tuple(params))
        return ((q - torch.as_tensor(target, dtype=q.dtype, device=q.device)) ** 2).sum()

    return Objective(f"‖{name} − target‖²", fn, False)


OBJECTIVES = {"grad_norm": grad_norm, "sharpness": sharpness, "trace": lambda: sharpness("hutchinson")}


def make_objective(objective: str | Objective | Callable[[Params], Tensor], maximize: bool = True) -> Objective:
    """An :class:`Objective` by name (``grad_norm``, ``sharpness``, ``trace``), as given, or from a
    callable θ ↦ scalar (maximised unless ``maximize=False``)."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        check_choice("objective", objective, OBJECTIVES)
        return OBJECTIVES[objective]()
    if callable(objective):
        name = getattr(objective, "__name__", "callable")
        return Objective(name, lambda loss_fn, params: objective(tuple(params)), maximize)
    raise TypeError(f"objective must be one of {sorted(OBJECTIVES)}, an Objective or a callable; got {objective!r}")


# ---------------------------------------------------------------------------------------
# teleport
# ---------------------------------------------------------------------------------------

@dataclass
class TeleportReport:
    """What one teleport did. ``relative_loss_change`` = |L(g·θ) − L(θ)| / |L(θ)| on the teleport batch."""

    group: str
    objective: str
    maximize: bool
    objective_before: float
    objective_after: float
    loss_before: float
    loss_after: float
    relative_loss_change: float
    condition_number: float
    xi_norm: float
    ascent_steps: int
    best_step: int
    seconds: float
    history: list[float] = field(default_factory=list)  # objective at each ascent iterate
    stopped: str | None = None  # why the ascent stopped early (on_loss_change="stop"), if it did
    halvings: int = 0  # backtracking halvings of the step

    @property
    def improved(self) -> bool:
        d = self.objective_after - self.objective_before
        return d > 0 if self.maximize else d < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "improved": self.improved}


def _default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    return (1e-9, 1e-12) if dtype == torch.float64 else (1e-4, 1e-6)


def _module_problem(model, params, loss_fn, X, Y, group):
    names = [n for n, _ in model.named_parameters()]
    current = tuple(p for _, p in model.named_parameters())
    if params is None:
        params = current
    elif isinstance(params, Mapping):
        params = tuple(params[n] for n in names)
    if loss_fn is None:
        raise ValueError("an nn.Module needs loss_fn(output, target), e.g. torch.nn.functional.mse_loss")

    def loss(p):
        return loss_fn(torch.func.functional_call(model, dict(zip(names, p)), (X,)), Y)

    if not isinstance(group, Group):
        group = ModuleGroup(group, names)
    return tuple(params), loss, group, names


def _norm(tensors: Sequence[Tensor]) -> float:
    """Euclidean norm of a tuple of tensors taken as one vector."""
    return float(torch.sqrt(torch.stack([(t * t).sum() for t in tensors]).sum())) if len(tensors) else 0.0


def _with_grad(function):
    """Run with autograd on, even when called inside a ``torch.no_grad`` training loop."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with torch.enable_grad():
            return function(*args, **kwargs)

    return wrapped


@_with_grad
def teleport(model, params, data: tuple, group: str | Group, objective: str | Objective | Callable = "grad_norm", *,
             lr: float = 0.1, steps: int = 10, max_step: float | None = None, loss_fn: Callable | None = None,
             loss_rtol: float | None = None, loss_atol: float | None = None, on_loss_change: str = "stop",
             check_symmetry: bool = True, max_condition: float = 1e8, max_halvings: int = 30,
             backtrack: bool = True, objective_limit: float | None = None, max_ratio: float | None = None,
             seed: int = 0) -> tuple[Any, TeleportReport]:
    """Teleport θ to g*·θ, g* = exp(ξ*) ≈ argmax_g J(g·θ) (or argmin), found by ``steps`` gradient steps
    on ξ from ξ = 0 (the identity) with step size ``lr`` (each step's norm capped at ``max_step``).

    ``model``: a tuple model (``TwoLayerNet``, ``MLP``, radial nets) with ``params`` a tuple, or an
    ``nn.Module`` with ``loss_fn(output, target)`` (``params=None``: its current parameters; the result
    is also written into the module). ``data`` = (X, Y): the batch the loss (and a data-dependent
    action) uses. ``group``: a :class:`Group`, a name in ``GROUPS``, or for a module its
    ``ModuleSymmetries``. The best iterate (largest J, or smallest) is applied.

    On a non-compact group (GL, scalings) ‖∇L‖² has no maximum on the orbit: ``lr`` × ``steps`` and the
    caps below decide how far a teleport goes (the papers take a few small steps).
    ``objective_limit``: steps past this value of J are refused like invalid ones (the ICLR 2024 code
    stops the ascent at ‖∇L‖² > 100: a very large gradient can make the next optimiser step diverge);
    ``max_ratio``: likewise for |J| above ``max_ratio`` × |J| at the start (a scale-free cap).

    Checks, each a ValueError naming the argument: non-finite parameters; ``check_symmetry``: a random
    element exp(ξ), ‖ξ‖ ~ 1e-2, must keep the loss within ``loss_atol + loss_rtol·|L|`` (defaults 1e-12 +
    1e-9 in float64, 1e-6 + 1e-4 otherwise), else the group is not a symmetry of this model; a NaN
    objective; an element with condition number above ``max_condition`` (singular); and the applied
    teleport's loss change. ``on_loss_change``: ``stop`` (default) refuses every ascent iterate whose
    loss change or condition number is above tolerance: the step is halved (backtracking; with ``backtrack=True``,
    also every step that does not improve J), up to ``max_halvings`` times in all, then the ascent stops at the
    last valid iterate (``report.stopped`` says why; ``report.halvings`` counts them); ``raise`` raises a ValueError if the chosen point breaks them;
    ``warn`` applies it with a :class:`TeleportWarning`. The input is never modified when a check fails. Returns (new parameters, :class:`TeleportReport`).
    """
    check_choice("on_loss_change", on_loss_change, ("stop", "raise", "warn"))
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps={steps!r} must be a non-negative integer")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr={lr!r} must be a positive number")
    X, Y = data
    start = time.perf_counter()
    module = isinstance(model, torch.nn.Module)
    if module:
        params, loss_of, grp, names = _module_problem(model, params, loss_fn, X, Y, group)
    else:
        params = check_tensors("params", tuple(params))  # a group acts on floating-point parameters
        grp = make_group(group)
        grp.check(model, params, X)

        def loss_of(p):
            value = model.loss(p, X, Y) if loss_fn is None else loss_fn(model, p, X, Y)
            if value.ndim != 0:
                raise ValueError(f"the loss must be a scalar (one configuration), got shape {tuple(value.shape)}")
            return value
    check_finite("params", params)
    obj = make_objective(objective)
    rtol, atol = _default_tolerances(params[0].dtype)
    rtol = rtol if loss_rtol is None else loss_rtol
    atol = atol if loss_atol is None else loss_atol
    base = tuple(p.detach() for p in params)

    with torch.no_grad():
        loss0 = float(loss_of(base))
    if not math.isfinite(loss0):
        raise ValueError(f"the loss at params is {loss0}: teleport needs a finite loss")

    def apply(xi: Algebra) -> Params:
        return tuple(grp.act(grp.exp(xi), base, X))

    zero = grp.algebra_zero(base)
    if check_symmetry:
        gen = torch.Generator().manual_seed(seed + 7919)
        probe = tuple(1e-2 * torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device) for z in zero)
        try:
            with torch.no_grad():
                moved = float(loss_of(apply(probe)))
        except KeyError as error:  # a ModuleSymmetries found in another model
            raise ValueError(f"group does not act on this model's parameters: {error}") from None
        if not abs(moved - loss0) <= atol + rtol * abs(loss0):
            raise ValueError(f"group={grp.name!r} is not a symmetry of {model!r} here: a random element "
                             f"exp(ξ) with ‖ξ‖ ≈ {_norm(probe):.2g} changed "
                             f"the loss from {loss0:.6g} to {moved:.6g} (relative {abs(moved - loss0) / max(abs(loss0), atol):.2g}, "
                             f"tolerance {rtol:g}). Pick the group of this model's activation (GROUPS: {sorted(GROUPS)})")

    sign = 1.0 if obj.maximize else -1.0
    xi = tuple(z.clone() for z in zero)
    history: list[float] = []
    best = (-math.inf, 0, xi)
    stopped = None

    def keeps_loss(value: float) -> bool:  # noqa: E306
        return abs(value - loss0) <= atol + rtol * abs(loss0)

    def invalid(element) -> str | None:
        """Why an iterate is refused (on_loss_change="stop"), or None."""
        cond = condition_number(element)
        if not cond <= max_condition:
            return f"condition number {cond:.3g} > max_condition={max_condition:g}"
        try:
            with torch.no_grad():
                here = float(loss_of(tuple(t.detach() for t in grp.act(element, base, X))))
        except torch.linalg.LinAlgError:  # e.g. σ(gZ) lost rank in the data-dependent action
            here = math.nan
        if not keeps_loss(here):
            return f"loss {here:.10g} vs {loss0:.10g} (relative {abs(here - loss0) / max(abs(loss0), atol):.3g})"
        return None

    def evaluate(leaves: Algebra) -> tuple[Tensor, float]:
        # a tensor the group leaves alone is still differentiated by the objective
        moved = tuple(p if p.requires_grad else p.detach().requires_grad_(True)
                      for p in grp.act(grp.exp(leaves), base, X))
        value = obj.fn(loss_of, moved)
        if value.ndim != 0:
            raise ValueError(f"objective {obj.name!r} must return a scalar, got shape {tuple(value.shape)}")
        return value, float(value.detach())

    leaves = tuple(x.detach().requires_grad_(True) for x in xi)
    value, v = evaluate(leaves)
    if not math.isfinite(v):
        raise ValueError(f"objective {obj.name!r} is {v} at the starting parameters")
    history.append(v)
    best = (sign * v, 0, tuple(x.detach() for x in leaves))
    scale, halvings, k = 1.0, 0, 0
    while k < steps:
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        step = [sign * lr * (g if g is not None else torch.zeros_like(x)) for g, x in zip(grads, leaves)]
        if max_step is not None:
            norm = _norm(step)
            if norm > max_step:
                step = [s * (max_step / norm) for s in step]
        while True:  # backtracking: halve a step that is refused, or (backtrack=True) does not improve J
            candidate = tuple((x.detach() + scale * s).requires_grad_(True) for x, s in zip(leaves, step))
            why = invalid(grp.exp(candidate)) if on_loss_change == "stop" else None
            if why is None:
                new_value, new_v = evaluate(candidate)
                if not math.isfinite(new_v):
                    why = f"objective is {new_v}"
                elif backtrack and not sign * new_v > sign * v:
                    why = "the objective did not improve"
                elif objective_limit is not None and sign * new_v > sign * objective_limit:
                    why = f"the objective {new_v:.4g} passed objective_limit={objective_limit:g}"
                elif max_ratio is not None and abs(new_v) > max_ratio * abs(history[0]):
                    why = f"the objective {new_v:.4g} passed max_ratio={max_ratio:g} × its start {history[0]:.4g}"
            if why is None:
                break
            halvings += 1
            scale *= 0.5
            if halvings > max_halvings:
                stopped = f"step {k + 1}: {why} after {max_halvings} halvings of the step"
                break
        if stopped:
            break
        leaves, value, v, k = candidate, new_value, new_v, k + 1
        scale = min(1.0, 2 * scale)  # let the step grow back after a success
        history.append(v)
        if sign * v > best[0]:
            best = (sign * v, k, tuple(x.detach() for x in leaves))

    _, best_step, xi_best = best
    element = grp.exp(xi_best)
    cond = condition_number(element)
    if not cond <= max_condition:
        raise ValueError(f"the teleport's group element is singular or ill-conditioned (condition number {cond:.3g} > "
                         f"max_condition={max_condition:g}); lower lr or steps, set max_step, or use "
                         f"on_loss_change='stop'; params were left unchanged")
    with torch.no_grad():
        new = tuple(t.detach() for t in grp.act(element, base, X))
        check_finite("teleported params", new)
        loss1 = float(loss_of(new))
    rel = abs(loss1 - loss0) / max(abs(loss0), atol)
    if not keeps_loss(loss1):
        msg = (f"the teleport changed the loss from {loss0:.10g} to {loss1:.10g} (relative {rel:.3g} > loss_rtol={rtol:g}); "
               f"the group does not keep this loss (a data-dependent action on a batch larger than the hidden width?)")
        if on_loss_change == "warn":
            warnings.warn(msg, TeleportWarning, stacklevel=2)
        else:
            raise ValueError(msg + "; params were left unchanged")
    xi_norm = _norm(xi_best)
    report = TeleportReport(grp.name, obj.name, obj.maximize, history[0], history[best_step], loss0, loss1, rel,
                            cond, xi_norm, k, best_step, time.perf_counter() - start, history, stopped, halvings)
    if module:
        with torch.no_grad():
            for p, q in zip(params, new):
                p.copy_(q)
        return dict(zip(names, new)), report
    return new, report


# ---------------------------------------------------------------------------------------
# Teleporting inside training
# ---------------------------------------------------------------------------------------

class TeleportingStepper:
    """A stepper of the engine's protocol (``symmetry.dynamics.Stepper``: ``init_state(params, velocity)
    -> State``, ``step(state, grad) -> State``) that teleports before the scheduled steps.

    Written against that protocol by duck typing: before ``stepper.step`` at a scheduled ``state.step``,
    ``teleport`` moves ``state.params`` on ``data`` ((X, Y), or a function step ↦ (X, Y) for mini-batches)
    and hands the inner stepper ``dataclasses.replace(state, params=new)``: its memory (momentum, Adam's
    moments, AdaGrad's sum) is kept, not transported (``state="keep"``, as NeurIPS 2022 keeps AdaGrad's
    accumulator); ``state="reset"`` restarts it with ``init_state(new)`` (as the ICLR 2024 code rebuilds
    its optimiser). ``events`` lists (step, report).
    """

    def __init__(self, stepper, model, data, schedule: TeleportSchedule, *, state: str = "keep",
                 **teleport_kwargs):
        self.stepper, self.model, self.data, self.schedule = stepper, model, data, schedule
        self.state = check_choice("state", state, ("keep", "reset"))
        self.kwargs = teleport_kwargs
        self.name = f"{getattr(stepper, 'name', 'stepper')}+teleport"
        self.dt = getattr(stepper, "dt", 1.0)
        self.events: list[dict] = []

    def __repr__(self) -> str:
        return f"TeleportingStepper({self.stepper!r}, {self.schedule})"

    def init_state(self, params: Params, velocity: Params | None = None):
        return self.stepper.init_state(params, velocity)

    def step(self, state, grad):
        import dataclasses

        if self.schedule.due(state.step):
            data = self.data(state.step) if callable(self.data) else self.data
            new, report = teleport(self.model, tuple(state.params), data, **self.kwargs)
            if self.state == "reset":
                state = dataclasses.replace(self.stepper.init_state(new), time=state.time, step=state.step)
            else:
                state = dataclasses.replace(state, params=new)
            self.events.append({"step": state.step, "report": report})
        return self.stepper.step(state, grad)


class Stepper(Protocol):
    """The minimal stepper protocol that :class:`Teleporting` wraps.

    ``params``: the live parameter tensors the stepper updates in place; ``step(batch) -> loss``: one
    update on a batch (X, Y), returning the loss before it; ``reset_state()``: forget the optimiser's
    state (moments, accumulators). A teleport writes g·θ into ``params`` between two steps, in place.
    """

    params: Params

    def step(self, batch: tuple) -> Tensor: ...

    def reset_state(self) -> None: ...


#: optimiser name → (torch.optim class, fixed keyword arguments)
OPTIMIZERS: dict[str, tuple[type, dict]] = {
    "gd": (torch.optim.SGD, {}),  # full batch when batch_size is None
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "adagrad": (torch.optim.Adagrad, {"eps": 1e-10}),
    "adam": (torch.optim.Adam, {}),
}


class OptimizerStepper:
    """A ``torch.optim`` optimiser on a loss of a parameter tuple, with the :class:`Stepper` protocol."""

    def __init__(self, loss_fn: Callable[[Params, tuple], Tensor], params: Params, optimizer: str, lr: float,
                 **kwargs):
        check_choice("optimizer", optimizer, OPTIMIZERS)
        self.loss_fn, self.name = loss_fn, optimizer
        self.params = tuple(p.detach().clone().requires_grad_(True) for p in params)
        cls, fixed = OPTIMIZERS[optimizer]
        self._make = lambda: cls(self.params, lr=lr, **{**fixed, **kwargs})
        self.optimizer = self._make()

    def step(self, batch: tuple) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.params, batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def reset_state(self) -> None:
        self.optimizer = self._make()


@dataclass
class TeleportSchedule:
    """Teleport before the steps in ``at`` and, if ``every`` is set, before every ``every``-th step
    (0, every, 2·every, …) up to ``until``; each teleport uses ``batches`` consecutive batches
    (NeurIPS Algorithm 2: one teleport per mini-batch)."""

    at: tuple[int, ...] = (0,)
    every: int | None = None
    until: int | None = None
    batches: int = 1

    def __post_init__(self):
        if self.every is not None and not (isinstance(self.every, int) and self.every > 0):
            raise ValueError(f"every={self.every!r} must be a positive integer or None")
        if not (isinstance(self.batches, int) and self.batches >= 1):
            raise ValueError(f"batches={self.batches!r} must be a positive integer")
        self.at = tuple(int(a) for a in self.at)

    def due(self, step: int) -> bool:
        if step in self.at:
            return True
        if self.every is None or (self.until is not None and step > self.until):
            return False
        return step % self.every == 0


class Teleporting:
    """Wrap a :class:`Stepper`: before each scheduled step, teleport its parameters on the step's batch.

    ``teleport_kwargs`` go to :func:`teleport` (group, objective, lr, steps, …). ``state``: what happens
    to the optimiser state at a teleport: ``keep`` (NeurIPS 2022 keeps AdaGrad's accumulator; the state
    then belongs to the old point of the orbit) or ``reset`` (ICLR 2024 rebuilds the optimiser).
    """

    def __init__(self, stepper, model, schedule: TeleportSchedule, *, state: str = "keep",
                 loss_fn: Callable | None = None, **teleport_kwargs):
        self.stepper, self.model, self.schedule = stepper, model, schedule
        self.state = check_choice("state", state, ("keep", "reset"))
        self.loss_fn, self.kwargs = loss_fn, teleport_kwargs
        self.events: list[dict] = []
        self.t = 0

    @property
    def params(self) -> Params:
        return self.stepper.params

    def teleport_now(self, batch: tuple) -> TeleportReport:
        new, report = teleport(self.model, tuple(p.detach() for p in self.stepper.params), batch,
                               loss_fn=self.loss_fn, **self.kwargs)
        with torch.no_grad():
            for p, q in zip(self.stepper.params, new):
                p.copy_(q)
        if self.state == "reset":
            self.stepper.reset_state()
        return report

    def step(self, batch: tuple, teleport_batches: Sequence[tuple] | None = None) -> Tensor:
        if self.schedule.due(self.t):
            for b in teleport_batches or [batch]:
                self.events.append({"step": self.t, "report": self.teleport_now(b)})
        self.t += 1
        return self.stepper.step(batch)

    def reset_state(self) -> None:
        self.stepper.reset_state()


@dataclass
class TrainRecord:
    """``steps``/``loss``/``seconds``: the loss on the evaluation data at the recorded steps and the
    training wall time spent so far (steps and teleports; evaluation excluded). ``teleports``: one row
    per teleport with the evaluation loss just before and after it and the teleport's report."""

    steps: list[int]
    loss: list[float]
    seconds: list[float]
    teleports: list[dict]
    params: Params

    def to_dict(self) -> dict:
        return {"steps": self.steps, "loss": self.loss, "seconds": self.seconds, "teleports": self.teleports}


def _columns(data: tuple, index: Tensor) -> tuple:
    X, Y = data
    return X[..., index], (Y[..., index] if Y.ndim >= 1 else Y)


def train(model, params: Params, data: tuple, optimizer: str, lr: float, steps: int, *,
          batch_size: int | None = None, schedule: TeleportSchedule | None = None, teleport_batch_size: int | None = None,
          state: str = "keep", record_every: int = 1, eval_data: tuple | None = None, seed: int = 0,
          optimizer_kwargs: dict | None = None, **teleport_kwargs) -> TrainRecord:
    """Train a tuple model with a ``torch.optim`` optimiser (``OPTIMIZERS``), teleporting per ``schedule``.

    ``data`` = (X, Y) with samples as columns (the repository's convention). ``batch_size=None``: full
    batch (GD); otherwise mini-batches of shuffled columns (seeded, reshuffled every epoch). A teleport
    uses its own random ``teleport_batch_size`` columns (default: the step's batch). ``teleport_kwargs``
    (group, objective, lr → ``teleport_lr``, steps → ``teleport_steps``, …) go to :func:`teleport`.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps={steps!r} must be a non-negative integer")
    X, Y = data
    N = X.shape[-1]
    eval_data = data if eval_data is None else eval_data
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(p, batch):
        return model.loss(p, *batch)

    inner = OptimizerStepper(loss_fn, params, optimizer, lr, **(optimizer_kwargs or {}))
    tkw = dict(teleport_kwargs)
    for short in ("lr", "steps"):
        if f"teleport_{short}" in tkw:
            tkw[short] = tkw.pop(f"teleport_{short}")
    teleporter = None if schedule is None else Teleporting(inner, model, schedule, state=state, **tkw)

    order, pos = torch.randperm(N, generator=gen), 0

    def next_batch(size):
        nonlocal order, pos
        if size is None or size >= N:
            return data
        if pos + size > N:
            order, pos = torch.randperm(N, generator=gen), 0
        idx = order[pos:pos + size]
        pos += size
        return _columns(data, idx)

    def evaluate() -> float:
        with torch.no_grad():
            return float(model.loss(tuple(p.detach() for p in inner.params), *eval_data))

    record = TrainRecord([], [], [], [], ())
    spent = 0.0
    for t in range(steps + 1):
        if t % record_every == 0 or t == steps:
            record.steps.append(t)
            record.loss.append(evaluate())
            record.seconds.append(spent)
        if t == steps:
            break
        batch = next_batch(batch_size)
        if schedule is not None and schedule.due(t):
            before = evaluate()
            tel_batches = [next_batch(teleport_batch_size) if teleport_batch_size else batch
                           for _ in range(schedule.batches)]
            tic = time.perf_counter()
            for b in tel_batches:
                assert teleporter is not None
                report = teleporter.teleport_now(b)
                record.teleports.append({"step": t, "report": report.to_dict()})
            spent += time.perf_counter() - tic
            after = evaluate()
            record.teleports[-1].update(eval_loss_before=before, eval_loss_after=after)
        tic = time.perf_counter()
        loss = inner.step(batch)
        spent += time.perf_counter() - tic
        if not bool(torch.isfinite(loss)):
            from .dynamics import DivergenceError

            raise DivergenceError(f"loss became {float(loss)} at step {t} of {optimizer} (lr={lr:g})")
    record.params = tuple(p.detach() for p in inner.params)
    return record


class _CallableModule(types.ModuleType):
    """``symmetry.teleport(...)`` calls :func:`teleport`; ``symmetry.teleport.X`` is the rest of this module."""

    def __call__(self, *args, **kwargs):
        return teleport(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
