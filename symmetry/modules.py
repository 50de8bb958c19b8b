"""A user's ``nn.Module``: its symmetries found from its layers, their conserved quantities, the action.

The groups (App. B, Examples 2–3, Eq. 17, with biases): between a layer that *produces* a hidden
neuron or channel (``Linear``/``Conv2d``, rows of the weight and the bias = the *incoming* weights I_i)
and the next one that *consumes* it (its columns = the *outgoing* weights O_i),
- an α-homogeneous activation (ReLU, LeakyReLU, RePU of the table; MaxPool passes a positive
  scaling through) gives the positive rescaling I_i ↦ g_i I_i, O_i ↦ g_i^{−α} O_i per neuron/channel;
- no nonlinearity (Identity, Flatten, AvgPool only) gives GL of the hidden width: I ↦ G I, O ↦ G^{−T} O.

Conserved by gradient flow (Example 9, Eq. 25 with biases; sign "outer minus inner" as in
:func:`symmetry.conserved.homogeneous_imbalance`):
    scaling:  Q_i = α‖O_i‖² − ‖I_i‖²   (I_i = (w_i, b_i): the bias is part of the incoming weights)
    GL:       Q   = O Oᵀ − I Iᵀ         (C × C; its diagonal is the α = 1 rescaling quantity)
One GD step θ' = θ − η∇L changes them by exactly η²·B(∇L, ∇L), B the bilinear form of
:meth:`ModuleSymmetries.balance`, because B(θ, ∇L) = 0 (for GL: its symmetric part) is the symmetry's
infinitesimal invariance.

Group elements and Lie-algebra coordinates are dicts keyed by the producing layer's name
(``"0"``, ``"features.3"``): a positive vector g (C,) for a scaling (algebra: log g), an invertible
matrix G (C, C) for GL (algebra: A, G = matrix_exp(A)).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Mapping, cast

import torch
from torch import nn

from .activations import ActivationLike, get_activation
from .conserved import homogeneous_imbalance, imbalance_matrix

Tensor = torch.Tensor
ParamDict = dict[str, Tensor]

__all__ = ["Elementwise", "ModuleSymmetries", "ConservationMonitor", "module_symmetries", "SUPPORTED_LAYERS"]


class Elementwise(nn.Module):
    """An activation of the table (:mod:`symmetry.activations`) as a layer, e.g. ``Elementwise("repu", power=2)``."""

    def __init__(self, activation: ActivationLike, **options):
        super().__init__()
        self.activation = get_activation(activation, **options)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation.sigma(x)

    def extra_repr(self) -> str:
        return self.activation.name


_AFFINE = (nn.Linear, nn.Conv2d)
_POOL_MAX = (nn.MaxPool1d, nn.MaxPool2d)
_POOL_AVG = (nn.AvgPool1d, nn.AvgPool2d)
#: Layers :func:`module_symmetries` understands (nested in any depth of ``nn.Sequential``).
SUPPORTED_LAYERS = ("Sequential", "Linear", "Conv2d", "ReLU", "LeakyReLU", "Identity", "Elementwise (table: "
                    "identity, relu, leaky_relu, repu)", "Flatten", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d")


def _unsupported(name: str, layer: nn.Module, why: str = "") -> TypeError:
    where = f"layer {name!r}" if name else "the model"
    return TypeError(f"{where} is a {type(layer).__name__}{why}, which module_symmetries does not support; "
                     f"supported layers: {', '.join(SUPPORTED_LAYERS)}")


def _degree(name: str, layer: nn.Module) -> float | None:
    """Homogeneity degree of a between-layer: None = linear (keeps GL), a number = positively homogeneous only."""
    if isinstance(layer, (nn.Identity, nn.Flatten) + _POOL_AVG):
        return None
    if isinstance(layer, (nn.ReLU, nn.LeakyReLU) + _POOL_MAX):
        return 1.0  # σ(cx) = cσ(x) for c > 0, any negative slope
    if isinstance(layer, Elementwise):
        act = layer.activation
        if act.name == "identity":
            return None
        if act.homogeneity is None:
            raise _unsupported(name, layer, f" ({act.name}: not positively homogeneous, so no rescaling symmetry)")
        return float(act.homogeneity)
    raise _unsupported(name, layer)


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        out = []
        for child_name, child in module.named_children():
            out += _leaves(child, f"{prefix}.{child_name}" if prefix else child_name)
        return out
    return [(prefix, module)]


def _param_name(layer: str, what: str) -> str:
    return f"{layer}.{what}" if layer else what


@dataclass(frozen=True)
class _Group:
    """One hidden layer's symmetry: ``producer`` writes C neurons/channels that ``consumer`` reads."""

    name: str  # the producing layer: key of quantities, elements and algebra coordinates
    kind: str  # "scaling" or "GL"
    alpha: float  # homogeneity degree (1 for GL)
    channels: int
    producer_weight: str
    producer_bias: str | None
    consumer_weight: str
    consumer: str
    between: tuple[str, ...]

    def incoming(self, p: Mapping[str, Tensor]) -> Tensor:
        """I (C, K_in): each neuron's incoming weights, its bias as the last column."""
        W = p[self.producer_weight].reshape(self.channels, -1)
        return W if self.producer_bias is None else torch.cat([W, p[self.producer_bias].reshape(-1, 1)], dim=1)

    def outgoing(self, p: Mapping[str, Tensor]) -> Tensor:
        """O (C, K_out): each neuron's outgoing weights (over output units and, after Flatten/conv, positions)."""
        W = p[self.consumer_weight]
        return W.reshape(W.shape[0], self.channels, -1).transpose(0, 1).reshape(self.channels, -1)


@dataclass
class ModuleSymmetries:
    """The symmetry groups of a module's hidden layers (see the module docstring). Build with :func:`module_symmetries`."""

    groups: tuple[_Group, ...]
    parameter_names: tuple[str, ...]
    dtype: torch.dtype
    device: torch.device
    model_name: str = field(default="model")

    # --- names and readable summary ------------------------------------------------------------
    def keys(self) -> list[str]:
        return [g.name for g in self.groups]

    def describe(self) -> str:
        if not self.groups:
            return f"{self.model_name}: no hidden layers, no symmetry found"
        lines = [f"{self.model_name}: {len(self.groups)} hidden layer(s), group dimension {self.dimension()}"]
        for g in self.groups:
            via = " → ".join(g.between) or "nothing"
            if g.kind == "scaling":
                group = f"positive rescaling (R_{{>0}})^{g.channels}, degree α = {g.alpha:g}"
                q = f"Q_i = {g.alpha:g}‖outgoing_i‖² − ‖incoming_i" + (", bias_i" if g.producer_bias else "") + "‖²"
            else:
                group = f"GL({g.channels})"
                q = "Q = O Oᵀ − I Iᵀ (" + ("incoming with bias" if g.producer_bias else "incoming") + f", {g.channels}×{g.channels})"
            lines.append(f"  [{g.name!r}] {g.producer_weight} → ({via}) → {g.consumer_weight}: {group}; {q}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ModuleSymmetries({', '.join(f'{g.name}: {g.kind}({g.channels})' for g in self.groups)})"

    def dimension(self) -> int:
        """Dimension of the group: C per rescaling, C² per GL."""
        return sum(g.channels if g.kind == "scaling" else g.channels ** 2 for g in self.groups)

    # --- parameters: a module or a name → tensor dict ----------------------------------------
    def _params(self, model_or_params, argument: str = "model") -> Mapping[str, Tensor]:
        if isinstance(model_or_params, nn.Module):
            params: Mapping[str, Tensor] = dict(model_or_params.named_parameters())
        elif isinstance(model_or_params, Mapping):
            params = model_or_params
        else:
            raise TypeError(f"{argument} must be an nn.Module or a dict of named parameters "
                            f"(dict(model.named_parameters())), got {type(model_or_params).__name__}")
        needed = {n for g in self.groups for n in (g.producer_weight, g.producer_bias, g.consumer_weight) if n}
        missing = sorted(needed - set(params))
        if missing:
            raise KeyError(f"{argument} lacks the parameters {missing} of the model these symmetries were found in")
        for n in needed:
            t = params[n]
            if not isinstance(t, Tensor) or not t.is_floating_point():
                kind = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(f"{argument}[{n!r}] must be a floating-point tensor, got {kind}")
        return params

    # --- conserved quantities ---------------------------------------------------------------
    def quantities(self, model) -> dict[str, Tensor]:
        """Per hidden layer: Q_i = α‖O_i‖² − ‖I_i‖² (C,) for a rescaling, O Oᵀ − I Iᵀ (C, C) for GL.

        ``model``: the module, or a dict of its named parameters. Conserved by gradient flow.
        """
        p = self._params(model)
        out = {}
        for g in self.groups:
            # the tuple-model functions with U = Oᵀ, V = Iᵀ (Example 9 / Example 7)
            U, V = g.outgoing(p).mT, g.incoming(p).mT
            out[g.name] = homogeneous_imbalance((U, V), g.alpha) if g.kind == "scaling" else imbalance_matrix((U, V))
        return out

    def magnitudes(self, model) -> dict[str, Tensor]:
        """The size of each quantity's two terms: α‖O_i‖² + ‖I_i‖² (C,), or ‖O Oᵀ‖_F + ‖I Iᵀ‖_F (scalar) for GL."""
        p = self._params(model)
        out = {}
        for g in self.groups:
            O, I = g.outgoing(p), g.incoming(p)
            if g.kind == "scaling":
                out[g.name] = g.alpha * (O * O).sum(1) + (I * I).sum(1)
            else:
                out[g.name] = torch.linalg.matrix_norm(O @ O.mT) + torch.linalg.matrix_norm(I @ I.mT)
        return out

    def balance(self, a, b=None) -> dict[str, Tensor]:
        """The bilinear form B(a, b) with B(θ, θ) = :meth:`quantities`: α⟨O_a,i, O_b,i⟩ − ⟨I_a,i, I_b,i⟩, or
        O_a O_bᵀ − I_a I_bᵀ for GL. ``a``, ``b``: modules or parameter dicts (gradients, updates, …).

        B(θ, ∇L) = 0 (the symmetry's invariance; for GL its symmetric part), so a step θ − ηd changes Q by
        −2ηB(θ, d) + η²B(d, d) (for GL: −η(B(θ, d) + B(θ, d)ᵀ) + η²B(d, d)).
        """
        pa = self._params(a, "a")
        pb = pa if b is None else self._params(b, "b")
        out = {}
        for g in self.groups:
            Oa, Ia, Ob, Ib = g.outgoing(pa), g.incoming(pa), g.outgoing(pb), g.incoming(pb)
            if g.kind == "scaling":
                out[g.name] = g.alpha * (Oa * Ob).sum(1) - (Ia * Ib).sum(1)
            else:
                out[g.name] = Oa @ Ob.mT - Ia @ Ib.mT
        return out

    # --- group elements and Lie algebra -------------------------------------------------------
    def _check_keys(self, argument: str, element: Mapping[str, Tensor]) -> None:
        if not isinstance(element, Mapping):
            raise TypeError(f"{argument} must be a dict {{layer name: tensor}} with keys {self.keys()}, "
                            f"got {type(element).__name__}")
        if set(element) != set(self.keys()):
            raise ValueError(f"{argument} has keys {sorted(element)}, but this model's groups are {self.keys()}")

    def _check_shapes(self, argument: str, element: Mapping[str, Tensor]) -> None:
        for g in self.groups:
            t = element[g.name]
            shape = (g.channels,) if g.kind == "scaling" else (g.channels, g.channels)
            if not isinstance(t, Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                what = "a positive vector" if g.kind == "scaling" else "an invertible matrix"
                raise ValueError(f"{argument}[{g.name!r}] must be {what} of shape {shape} "
                                 f"({g.kind} on {g.channels} channels), got {got}")
            if not t.is_floating_point():
                raise TypeError(f"{argument}[{g.name!r}] must be a floating-point tensor, got dtype {t.dtype}")

    def check_element(self, element: Mapping[str, Tensor]) -> None:
        """Raise a clear error unless ``element`` belongs to this model's group (keys, shapes, g > 0, G invertible)."""
        self._check_keys("element", element)
        self._check_shapes("element", element)
        with torch.no_grad():
            for g in self.groups:
                t = element[g.name]
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"element[{g.name!r}] contains NaN or infinity")
                if g.kind == "scaling":
                    if not bool((t > 0).all()):
                        raise ValueError(f"element[{g.name!r}] must be positive: the rescaling group of a "
                                         f"{g.alpha:g}-homogeneous activation is (R_>0)^{g.channels}; "
                                         f"got min {float(t.min()):.3g}")
                else:
                    s = torch.linalg.svdvals(t.detach())
                    if float(s[-1]) <= float(s[0]) * torch.finfo(t.dtype).eps * g.channels:
                        raise ValueError(f"element[{g.name!r}] is singular (condition number "
                                         f"{float(s[0] / s[-1]) if float(s[-1]) > 0 else math.inf:.3g}): GL({g.channels}) needs an invertible matrix")

    def algebra_zero(self, requires_grad: bool = False) -> dict[str, Tensor]:
        """Lie-algebra coordinates of the identity: log g = 0 (C,) per rescaling, A = 0 (C, C) per GL."""
        out = {}
        for g in self.groups:
            shape = (g.channels,) if g.kind == "scaling" else (g.channels, g.channels)
            out[g.name] = torch.zeros(shape, dtype=self.dtype, device=self.device, requires_grad=requires_grad)
        return out

    def exp(self, xi: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Algebra → group: g = exp(ξ) elementwise, G = matrix_exp(A). Differentiable."""
        self._check_keys("xi", xi)
        self._check_shapes("xi", xi)
        return {g.name: torch.exp(xi[g.name]) if g.kind == "scaling" else torch.linalg.matrix_exp(xi[g.name])
                for g in self.groups}

    def random_element(self, scale: float, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """exp(scale·ξ), ξ standard normal (A/√C for GL): the identity at scale 0."""
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scale={scale!r} must be a finite number >= 0")
        xi = {}
        for g in self.groups:
            shape = (g.channels,) if g.kind == "scaling" else (g.channels, g.channels)
            draw = torch.randn(shape, generator=generator, dtype=torch.float64)
            xi[g.name] = (scale * draw / (1 if g.kind == "scaling" else math.sqrt(g.channels))).to(self.dtype).to(self.device)
        return self.exp(xi)

    # --- the action -----------------------------------------------------------------------------
    def act_params(self, params, element: Mapping[str, Tensor], check: bool = True) -> dict[str, Tensor]:
        """The action on a dict of named parameters (or a module's): a new dict, differentiable in both.

        Rescaling: rows of the producer's weight and its bias × g, the consumer's columns × g^{−α};
        GL: rows and bias ← G·, columns ← ·G⁻¹. Parameters of no group are passed through.
        """
        p = dict(self._params(params, "params"))
        if check:
            self.check_element(element)
        for g in self.groups:
            t = element[g.name]
            C = g.channels
            W = p[g.producer_weight]
            if g.kind == "scaling":
                p[g.producer_weight] = W * t.reshape(C, *([1] * (W.ndim - 1)))
                if g.producer_bias:
                    p[g.producer_bias] = p[g.producer_bias] * t
                inverse = t ** (-g.alpha)
                Wc = p[g.consumer_weight]
                p[g.consumer_weight] = (Wc.reshape(Wc.shape[0], C, -1) * inverse.reshape(1, C, 1)).reshape(Wc.shape)
            else:
                p[g.producer_weight] = (t @ W.reshape(C, -1)).reshape(W.shape)
                if g.producer_bias:
                    p[g.producer_bias] = t @ p[g.producer_bias]
                Wc = p[g.consumer_weight]
                W3 = Wc.reshape(Wc.shape[0], C, -1)  # (out, C, positions)
                # (W3 G⁻¹ along C) = solve(Gᵀ, ·): no explicit inverse
                moved = torch.linalg.solve(t.mT, W3.transpose(0, 1).reshape(C, -1))
                p[g.consumer_weight] = moved.reshape(C, Wc.shape[0], -1).transpose(0, 1).reshape(Wc.shape)
        return p

    def act(self, model: nn.Module, element: Mapping[str, Tensor]) -> nn.Module:
        """Apply ``element`` to ``model`` in place (biases included); returns ``model``."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (use act_params for a parameter dict), got {type(model).__name__}")
        params = dict(model.named_parameters())
        with torch.no_grad():
            moved = self.act_params(params, element)
            for name, t in moved.items():
                if t is not params[name]:
                    params[name].copy_(t)
        return model


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            raise ValueError(f"parameter {name!r} is the same tensor as {seen[id(p)]!r} (shared/tied weights): "
                             f"the per-layer symmetries assume each layer owns its weights")
        seen[id(p)] = name
        if not p.is_floating_point():
            raise TypeError(f"parameter {name!r} has dtype {p.dtype}; symmetries act on floating-point weights")


def module_symmetries(model: nn.Module) -> ModuleSymmetries:
    """Find the symmetry groups of ``model`` from its layers (module docstring); clear errors for the rest.

    ``model``: an ``nn.Sequential`` (nested at any depth) of the :data:`SUPPORTED_LAYERS`, or a single one.
    """
    _check_model(model)
    leaves = _leaves(model)
    affine_ids: dict[int, str] = {}
    groups: list[_Group] = []
    producer: tuple[str, nn.Module] | None = None
    between: list[tuple[str, nn.Module]] = []
    for name, layer in leaves:
        if isinstance(layer, _AFFINE):
            if id(layer) in affine_ids:
                raise ValueError(f"layer {name!r} is the same module as layer {affine_ids[id(layer)]!r} "
                                 f"(shared/tied weights): the per-layer symmetries assume each layer owns its weights")
            affine_ids[id(layer)] = name
            if isinstance(layer, nn.Conv2d) and layer.groups != 1:
                raise _unsupported(name, layer, f" with groups={layer.groups} (grouped convolution)")
            if producer is not None:
                groups.append(_make_group(producer, between, (name, layer)))
            producer, between = (name, layer), []
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise _unsupported(name, layer, f"(start_dim={layer.start_dim}, end_dim={layer.end_dim}): "
                                               f"only Flatten(1, -1) keeps channels contiguous")
            between.append((name, layer))
        else:
            _degree(name, layer)  # raises for an unsupported layer
            between.append((name, layer))
    params = [p for p in model.parameters()]
    dtype = params[0].dtype if params else torch.get_default_dtype()
    device = params[0].device if params else torch.device("cpu")
    return ModuleSymmetries(tuple(groups), tuple(n for n, _ in model.named_parameters()), dtype, device,
                            type(model).__name__)


def _make_group(producer: tuple[str, nn.Module], between: list[tuple[str, nn.Module]],
                consumer: tuple[str, nn.Module]) -> _Group:
    pname, player = producer
    cname, clayer = consumer
    C = cast(int, player.out_features if isinstance(player, nn.Linear) else player.out_channels)
    flattened = any(isinstance(layer, nn.Flatten) for _, layer in between)
    if isinstance(clayer, nn.Conv2d):
        if flattened or clayer.in_channels != C:
            raise ValueError(f"layer {cname!r} (Conv2d, {clayer.in_channels} input channels) cannot follow layer "
                             f"{pname!r} ({C} channels)" + (" after a Flatten" if flattened else ""))
    else:
        n_in = cast(int, clayer.in_features)
        if (flattened and n_in % C) or (not flattened and n_in != C):
            raise ValueError(f"layer {cname!r} (Linear, {n_in} inputs) does not read the {C} "
                             f"{'channels' if isinstance(player, nn.Conv2d) else 'outputs'} of layer {pname!r}"
                             + (" as contiguous blocks after Flatten" if flattened else ""))
        if isinstance(player, nn.Conv2d) and not flattened:
            raise ValueError(f"layer {cname!r} (Linear) follows the Conv2d {pname!r} without a Flatten")
    degrees = [_degree(n, layer) for n, layer in between]
    nonlinear = [d for d in degrees if d is not None]
    kind = "scaling" if nonlinear else "GL"
    alpha = math.prod(nonlinear) if nonlinear else 1.0  # composed homogeneous maps: degrees multiply
    return _Group(name=pname, kind=kind, alpha=float(alpha), channels=C,
                  producer_weight=_param_name(pname, "weight"),
                  producer_bias=_param_name(pname, "bias") if player.bias is not None else None,
                  consumer_weight=_param_name(cname, "weight"), consumer=cname,
                  between=tuple(f"Elementwise({layer.activation.name})" if isinstance(layer, Elementwise)
                                else type(layer).__name__ for _, layer in between))


class ConservationMonitor:
    """Watch a module's conserved quantities in any training loop: ``monitor.record(step)`` after ``optimizer.step()``.

    Keeps the quantities at every ``every``-th recorded step (on the CPU, detached). ``drift()`` gives the
    relative drift |Q(t) − Q(0)| / (α‖O(0)‖² + ‖I(0)‖²) per neuron/channel (Frobenius norms for GL).
    """

    def __init__(self, model: nn.Module, every: int = 1):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer")
        self.model = model
        self.every = every
        self.symmetries = module_symmetries(model)
        self.steps: list[int] = []
        self.history: dict[str, list[Tensor]] = {k: [] for k in self.symmetries.keys()}
        self.reference_magnitudes: dict[str, Tensor] | None = None
        self._calls = 0
        self.record_seconds = 0.0  # total time spent inside record (for the overhead benchmark)

    def record(self, step: int | None = None) -> bool:
        """Record the quantities now (at ``step``, default: a running count); returns whether it recorded."""
        start = time.perf_counter()
        step = self._calls if step is None else step
        self._calls += 1
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step={step!r} must be a non-negative integer")
        if step % self.every:
            return False
        with torch.no_grad():
            q = self.symmetries.quantities(self.model)
            if self.reference_magnitudes is None:
                self.reference_magnitudes = {k: v.detach().cpu().clone() for k, v in self.symmetries.magnitudes(self.model).items()}
            for k, v in q.items():
                self.history[k].append(v.detach().cpu().clone())
        self.steps.append(step)
        self.record_seconds += time.perf_counter() - start
        return True

    def stacked(self) -> dict[str, Tensor]:
        """Each quantity over the recorded steps: (T, C) or (T, C, C)."""
        if not self.steps:
            raise RuntimeError("nothing recorded yet: call record(step) after optimizer.step()")
        return {k: torch.stack(v) for k, v in self.history.items()}

    def drift(self, reduce: str | None = "max") -> dict[str, Tensor]:
        """Relative drift per quantity at each recorded step: (T,) reduced over neurons by ``reduce``
        ('max' or 'mean'), or (T, C) per neuron with ``reduce=None``. GL quantities: (T,) Frobenius."""
        if reduce not in ("max", "mean", None):
            raise ValueError(f"reduce={reduce!r} is not allowed; choose one of 'max', 'mean', None")
        out = {}
        for k, Q in self.stacked().items():
            assert self.reference_magnitudes is not None  # set by the first record(), which stacked() requires
            scale = self.reference_magnitudes[k]
            change = Q - Q[0]
            if Q.ndim == 3:
                out[k] = torch.linalg.matrix_norm(change) / scale
                continue
            rel = change.abs() / scale.clamp_min(torch.finfo(scale.dtype).tiny)
            out[k] = rel if reduce is None else (rel.amax(1) if reduce == "max" else rel.mean(1))
        return out

    def to_json(self) -> dict:
        """The record as plain lists: steps, quantities, reference magnitudes, max and mean drift, groups."""
        stacked = self.stacked() if self.steps else {k: torch.empty(0) for k in self.history}
        payload = {
            "groups": self.symmetries.describe(), "every": self.every, "steps": list(self.steps),
            "quantities": {k: v.tolist() for k, v in stacked.items()},
            "reference_magnitudes": {k: v.tolist() for k, v in (self.reference_magnitudes or {}).items()},
            "max_relative_drift": {k: v.tolist() for k, v in self.drift("max").items()} if self.steps else {},
            "mean_relative_drift": {k: v.tolist() for k, v in self.drift("mean").items()} if self.steps else {},
            "record_seconds_total": self.record_seconds,
        }
        json.dumps(payload)  # fail here, not in the caller's writer, if anything is not JSON
        return payload
