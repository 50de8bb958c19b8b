"""A user's ``nn.Module`` read from what it computes: its torch.fx graph, run on an example input, with every value
tagged by the hidden units it carries. The one module walker of the library.

A *producer* is an operation linear in a parameter that writes units: ``Linear``/``F.linear``/``x @ W`` (units =
output features), ``Conv1d/2d/3d`` (output channels, grouped too), ``Embedding`` (embedding coordinates), the
affine part of BatchNorm/LayerNorm/RMSNorm, ``γ * x`` with a parameter γ. Its units are followed, as integer
labels laid out like the value itself, through the graph:

- shape operations (view, reshape, flatten, permute, transpose, slicing, chunk, cat, …) move the labels exactly
  as they move the numbers, so a pooling axis, a reshape into heads or a ``Flatten`` after a 3-D ``Linear`` is
  read from the labels, never assumed;
- positively homogeneous maps (ReLU, LeakyReLU, RePU, max-pooling over positions only) keep a positive
  rescaling, with degrees multiplying; a product with a tensor the units do not reach (SwiGLU's gate, RoPE's
  cos/sin, a softmax gate) keeps a rescaling, not GL; sums that mix two units tie them to one scale (RoPE's
  rotated pairs); reductions over units tie them (hand-written norms), degrees add in products;
- a *consumer* absorbs the units: the next parameter-linear operation reading them along its contracted axis
  (its columns become the outgoing weights, with the degree as exponent), the key projection they are
  contracted with in an attention score (Marcotte et al. Cor. 3.9), or a normalization they are invariant under
  (BatchNorm per channel, LayerNorm/RMSNorm for the whole layer: degree 0, Kunin et al.'s scale law).

Anything else a unit reaches breaks its producer's symmetry, with the reason recorded: a non-homogeneous
activation (GELU, SiLU, tanh: Tran et al. Thm 4.1, no law), a residual sum with another tensor (Marcotte et al.
Thm 4.7: no law across a skip), the model's output, an operation not in the tables (named). Translations
(softmax heads and gates, LayerNorm's centring, BatchNorm's bias) are followed the same way. Each symmetry found
is then checked on the example input ([`module_symmetries`][symmetry.modules.module_symmetries]).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, cast

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .groups import NotSupportedError
from .groups.blocks import Block, Leg, LinearBlock, ScalingBlock, TranslationBlock

Tensor = torch.Tensor

__all__ = ["trace", "SymmetryCheckError"]


class SymmetryCheckError(RuntimeError):
    """A symmetry read from the graph does not keep the model's output on the example input (a misread graph)."""


# ------------------------------------------------------------------------------------------------------------
# tracing
# ------------------------------------------------------------------------------------------------------------
_LEAF_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.modules.batchnorm._BatchNorm,
                                 nn.LayerNorm, nn.Dropout, nn.Flatten, nn.Identity, nn.Unflatten)
_RMSNorm = getattr(nn, "RMSNorm", None)


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with torch.nn layers as leaves, attention opened into its operations, and a module stack
    so that a failure names the module being traced."""

    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves
        self.stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaves:
            return True
        if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return m.__module__.startswith("torch.nn") or type(m).__name__ == "Elementwise"

    def call_module(self, m, forward, args, kwargs):
        qualname = self.path_of_module(m)
        self.stack.append(f"{qualname} ({type(m).__name__})")
        try:
            if qualname not in self.leaves and isinstance(m, nn.MultiheadAttention):
                opened = _open_attention(self, m, qualname, *args, **kwargs)
                if opened is not None:
                    return opened
            if qualname not in self.leaves and isinstance(m, nn.TransformerEncoderLayer):
                return _open_encoder_layer(m, *args, **kwargs)
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.stack.pop()


def _param_proxy(tracer: _Tracer, qualname: str, name: str):
    return tracer.create_proxy("get_attr", f"{qualname}.{name}" if qualname else name, (), {})


def _open_attention(tracer, m: nn.MultiheadAttention, qualname, query, key, value, key_padding_mask=None,
                    need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False):
    """nn.MultiheadAttention's computation written with the operations the walker reads (its packed in_proj
    sliced into Q, K, V). None (kept as an opaque leaf) for the options this does not open."""
    if m.bias_k is not None or m.add_zero_attn or key_padding_mask is not None:
        return None
    E, H = m.embed_dim, m.num_heads
    d = E // H
    P = lambda n: _param_proxy(tracer, qualname, n)  # noqa: E731
    if m._qkv_same_embed_dim:
        W = P("in_proj_weight")
        Wq, Wk, Wv = W[:E], W[E:2 * E], W[2 * E:]
    else:
        Wq, Wk, Wv = P("q_proj_weight"), P("k_proj_weight"), P("v_proj_weight")
    if m.in_proj_bias is not None:
        b = P("in_proj_bias")
        bq, bk, bv = b[:E], b[E:2 * E], b[2 * E:]
    else:
        bq = bk = bv = None
    if not m.batch_first:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    q = F.linear(query, Wq, bq)
    k = F.linear(key, Wk, bk)
    v = F.linear(value, Wv, bv)
    for proxy, role in ((q, "q"), (k, "k"), (v, "v")):
        cast(Any, proxy).node.meta["symmetry_name"] = f"{qualname}.{role}" if qualname else role
    N, L, S = q.shape[0], q.shape[1], k.shape[1]
    q = q.reshape(N, L, H, d).transpose(1, 2)  # (N, H, L, d)
    k = k.reshape(N, S, H, d).transpose(1, 2)
    v = v.reshape(N, S, H, d).transpose(1, 2)
    dropout = m.dropout if m.training else 0.0
    weights = None
    if need_weights:
        scores = torch.matmul(q * (1.0 / math.sqrt(d)), k.transpose(-2, -1))  # (N, H, L, S)
        if attn_mask is not None:
            scores = _masked(scores, attn_mask)
        attention = F.softmax(scores, dim=-1)
        attention = F.dropout(attention, p=dropout, training=dropout > 0)
        out = torch.matmul(attention, v)
        weights = attention.mean(dim=1) if average_attn_weights else attention
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout,
                                             is_causal=is_causal and attn_mask is None)
    out = out.transpose(1, 2).reshape(N, L, E)
    out = F.linear(out, P("out_proj.weight"), P("out_proj.bias") if m.out_proj.bias is not None else None)
    cast(Any, out).node.meta["symmetry_name"] = f"{qualname}.out_proj" if qualname else "out_proj"
    if not m.batch_first:
        out = out.transpose(0, 1)
    return out, weights


def _masked(scores, mask):
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask


def _open_encoder_layer(m: nn.TransformerEncoderLayer, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
    """nn.TransformerEncoderLayer's slow path (the one taken in training), calling its submodules."""

    def attention(x):
        return m.dropout1(m.self_attn(x, x, x, attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
                                      need_weights=False, is_causal=is_causal)[0])

    def feed_forward(x):
        return m.dropout2(m.linear2(m.dropout(m.activation(m.linear1(x)))))

    x = src
    if m.norm_first:
        x = x + attention(m.norm1(x))
        return x + feed_forward(m.norm2(x))
    x = m.norm1(x + attention(x))
    return m.norm2(x + feed_forward(x))


def trace(model: nn.Module, leaves: Sequence[str] = (), inputs: int = 1) -> fx.GraphModule:
    """The fx graph of ``model`` called with ``inputs`` positional tensors (the forward's later arguments keep their
    defaults); submodules named in ``leaves`` stay opaque calls (their parameters uncovered)."""
    import inspect

    signature = inspect.signature(type(model).forward)
    later = list(signature.parameters.values())[1 + inputs:]
    concrete = {p.name: p.default for p in later if p.default is not inspect.Parameter.empty}
    tracer = _Tracer(set(leaves))
    cls = type(model)
    if isinstance(model, (nn.MultiheadAttention, nn.TransformerEncoderLayer)):
        # fx traces a root through type(root).forward: open these two through a subclass for the trace only
        if isinstance(model, nn.MultiheadAttention):
            def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                        average_attn_weights=True, is_causal=False):
                return _open_attention(tracer, self, "", query, key, value, key_padding_mask, need_weights,
                                       attn_mask, average_attn_weights, is_causal)
        else:
            def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):  # type: ignore[misc]
                return _open_encoder_layer(self, src, src_mask, src_key_padding_mask, is_causal)
        model.__class__ = type(cls.__name__, (cls,), {"forward": forward})
    try:
        graph = tracer.trace(model, concrete_args=concrete or None)
    except Exception as error:  # noqa: BLE001  fx raises TraceError, TypeError, … from user code
        where = tracer.stack[-1] if tracer.stack else f"the model's own forward ({type(model).__name__})"
        name = where.split(" (")[0]
        hint = (f"mark it as a leaf: module_symmetries(model, example_input, leaves=[{name!r}]) (its parameters are "
                "then reported as not covered)") if tracer.stack else "trace a model whose forward has no data-dependent control flow"
        model.__class__ = cls
        raise NotSupportedError(f"cannot trace the model's computation: {type(error).__name__}: "
                                f"{str(error).splitlines()[0] if str(error) else ''} — while tracing {where}; {hint}") from None
    model.__class__ = cls
    return fx.GraphModule(tracer.root, graph, cls.__name__)


# ------------------------------------------------------------------------------------------------------------
# the walker's state
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Tag:
    """One producer's units in a value: ``labels`` (the value's shape) holds a unit or −1; scaling degree."""

    labels: Tensor
    degree: float = 1.0


@dataclass
class PRef:
    """A value that is a parameter moved by shape operations only: ``index`` holds each entry's flat position."""

    param: str
    index: Tensor


@dataclass
class PRefSpec:
    """A weight given as an index table already (``x @ W``: W's columns are the output units)."""

    index: Tensor
    param: str


@dataclass
class Producer:
    pid: int
    name: str
    units: int
    incoming: list[Leg]
    where: str
    kind: str = "GL"  # "GL" or "scaling"
    positive: bool = False
    broken: str | None = None
    outgoing: list[Leg] = field(default_factory=list)
    invariant: list[str] = field(default_factory=list)  # normalizations that absorb the units at degree 0
    consumers: list[str] = field(default_factory=list)
    eps: list[tuple[str, float]] = field(default_factory=list)
    translation: dict[str, bool] = field(default_factory=dict)  # mode -> still valid (absorbed somewhere)
    translation_absorbed: dict[str, list[str]] = field(default_factory=dict)
    paired_with: int | None = None  # a key projection paired to this query projection (or the reverse)

    def __post_init__(self):
        self.parent = list(range(self.units))
        self.signature: list[list[tuple[int, int]]] = [[] for _ in range(self.units)]

    def find(self, u: int) -> int:
        while self.parent[u] != u:
            self.parent[u] = self.parent[self.parent[u]]
            u = self.parent[u]
        return u

    def tie(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def tie_where(self, la: Tensor, lb: Tensor, mask: Tensor) -> None:
        """Tie unit la[i] to lb[i] wherever ``mask`` holds (one scale for both)."""
        a, b = la[mask].long(), lb[mask].long()
        if not a.numel():
            return
        width = int(b.max()) + 1
        pairs = (a * width + b).unique()  # one int per pair: a 1-D unique, far cheaper than unique(dim=0)
        for u, v in zip((pairs // width).tolist(), (pairs % width).tolist()):
            self.tie(u, v)

    def restrict(self, positive: bool = False) -> None:
        self.kind = "scaling"
        self.positive = self.positive or positive

    def site(self, key: int, groups: list[Tensor]) -> None:
        """Units contracted together: a linear map may mix units only within one group of each site."""
        for gi, units in enumerate(groups):
            for u in units.unique().tolist():
                if u >= 0:
                    self.signature[u].append((key, gi))

    def break_(self, why: str) -> None:
        if self.broken is None:
            self.broken = why


_SHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "permute", "transpose", "swapaxes", "swapdims", "t",
                  "unsqueeze", "squeeze", "expand", "expand_as", "view_as", "reshape_as", "repeat", "narrow", "flip",
                  "roll", "movedim", "moveaxis", "select", "index_select", "repeat_interleave"}
_SHAPE_SPLITS = {"chunk", "split", "unbind", "tensor_split"}
_IDENTITY = {"contiguous", "clone", "to", "float", "double", "half", "bfloat16", "type_as", "detach", "cpu", "cuda",
             "identity", "Identity"}
_HOMOGENEOUS = {"relu", "relu_", "leaky_relu", "leaky_relu_", "ReLU", "LeakyReLU"}
_NOT_HOMOGENEOUS = {"gelu", "silu", "tanh", "sigmoid", "softplus", "elu", "selu", "celu", "mish", "hardswish",
                    "hardsigmoid", "hardtanh", "relu6", "exp", "log", "sin", "cos", "erf", "softmax", "log_softmax",
                    "logsigmoid", "softsign", "tanhshrink", "glu", "softmin", "log1p", "expm1", "GELU", "SiLU", "Tanh",
                    "Sigmoid", "Softplus", "ELU", "SELU", "CELU", "Mish", "Hardswish", "Hardsigmoid", "Hardtanh",
                    "ReLU6", "Softmax", "LogSoftmax", "LogSigmoid", "Softsign", "GLU"}
_POWERS = {"square": 2.0, "sqrt": 0.5, "rsqrt": -0.5, "reciprocal": -1.0}
_REDUCE = {"sum": 1.0, "mean": 1.0, "var": 2.0, "std": 1.0, "norm": 1.0, "vector_norm": 1.0, "amax": 1.0}


def _name(node: fx.Node) -> str:
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _constant_along_last(L: Tensor) -> bool:
    return bool((L == L[..., :1]).all())


class _Walker(fx.Interpreter):
    """Runs the graph on the example input; beside every value, its tags (producer → labels), its parameter
    reference, the producers it depends on, and the translation shifts it carries."""

    def __init__(self, gm: fx.GraphModule, loss: str | None):
        super().__init__(gm)
        self.gm = gm
        self.loss = loss
        self.params = dict(gm.named_parameters())
        self.producers: list[Producer] = []
        self.ann: dict[fx.Node, Any] = {}
        self.shift: dict[fx.Node, Any] = {}
        self.pairs: list[tuple[int, int, dict[int, int]]] = []
        self.notes: dict[str, list[str]] = {}  # parameter → why no group acts on it
        self.eps_sites: list[tuple[str, Any, Any, float]] = []  # (kind, owner, slot, ε)
        self._sites = 0
        self.created: dict[fx.Node | None, list[int]] = {}
        self.current: fx.Node | None = None

    # --- helpers ------------------------------------------------------------------------------------------
    def note(self, param: str, why: str) -> None:
        self.notes.setdefault(param, [])
        if why not in self.notes[param]:
            self.notes[param].append(why)

    def new_producer(self, name, units, incoming, where, out: Tensor, axis: int, kind="GL",
                     translation: Sequence[str] = ("row",)) -> dict[int, Tag]:
        p = Producer(len(self.producers), name, units, incoming, where, kind=kind)
        self.created.setdefault(self.current, []).append(p.pid)
        for mode in translation:
            p.translation[mode] = True
        self.producers.append(p)
        shape = [1] * out.ndim
        shape[axis] = units
        labels = torch.arange(units).reshape(shape).expand(out.shape)
        return {p.pid: Tag(labels)}

    def site_key(self) -> int:
        self._sites += 1
        return self._sites

    def break_all(self, tags: dict[int, Tag] | None, why: str) -> None:
        for pid in (tags or {}):
            self.producers[pid].break_(why)

    def tags(self, a) -> dict[int, Tag]:
        return self.ann.get(a, {}) if isinstance(a, fx.Node) and isinstance(self.ann.get(a), dict) else {}

    def pref(self, a) -> PRef | None:
        v = self.ann.get(a) if isinstance(a, fx.Node) else None
        return v if isinstance(v, PRef) else None

    def nodes_in(self, args) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg(args, lambda n: found.append(n))
        return found

    # --- the run ------------------------------------------------------------------------------------------
    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        self.current = n
        self.ann[n] = self.annotate(n, args, kwargs, result)
        self.shift[n] = self.follow_shifts(n, args, kwargs, result)
        return result

    def where(self, n: fx.Node) -> str:
        stack = n.meta.get("nn_module_stack")
        return f"{_name(n)} (node {n.name!r})" if not stack else f"{_name(n)} in {list(stack)[-1]!r}"

    def unknown(self, n: fx.Node, what: str, why: str | None = None) -> None:
        for a in self.nodes_in((n.args, n.kwargs)):
            self.break_all(self.tags(a), why or f"reaches {what}, an operation the walker does not read "
                                                 f"(node {n.name!r}): no group is assumed to pass it")
            r = self.pref(a)
            if r is not None:
                self.note(r.param, f"used by {what} (node {n.name!r}), which the walker does not read")

    def annotate(self, n: fx.Node, args, kwargs, result):
        if n.op == "placeholder":
            return {}
        if n.op == "get_attr":
            if n.target in self.params:
                return PRef(n.target, torch.arange(result.numel()).reshape(result.shape))
            return {}
        if n.op == "output":
            self.at_output(n, args)
            return None
        name = _name(n)
        if n.op == "call_module":
            return self.module_rule(n, self.gm.get_submodule(str(n.target)), args, kwargs, result)
        return self.function_rule(n, name, args, kwargs, result)

    # --- rules ---------------------------------------------------------------------------------------------
    def function_rule(self, n, name, args, kwargs, result):
        a0 = n.args[0] if n.args else None
        if not isinstance(result, Tensor) and not (isinstance(result, (tuple, list)) and result
                                                   and all(isinstance(r, Tensor) for r in result)):
            if name in ("size", "dim", "getattr") and not isinstance(result, Tensor):
                return None
            if self.nodes_in((n.args, n.kwargs)) and not isinstance(result, (int, float, torch.Size, tuple, type(None))):
                self.unknown(n, name)
            return None
        if name == "getattr":  # x.T, x.mT
            return self.shape_op(n, lambda t: getattr(t, n.args[1]), a0, result)
        if name in _IDENTITY:
            return self.ann.get(a0, {}) if isinstance(a0, fx.Node) else {}
        if name in _SHAPE_METHODS or name in _SHAPE_SPLITS or name == "getitem":
            if name == "getitem" and isinstance(self.ann.get(a0), tuple):
                return self.ann[a0][n.args[1]]
            return self.shape_op(n, lambda t: self.call_again(n, name, t, args, kwargs), a0, result)
        if name in ("cat", "stack", "concat", "concatenate"):
            return self.cat(n, name, args, kwargs, result)
        if name in ("add", "sub", "iadd", "isub", "__add__", "__sub__", "__radd__"):
            return self.add(n, args, result)
        if name in ("mul", "imul", "__mul__", "__rmul__"):
            return self.mul(n, args[0], args[1], n.args[0], n.args[1], result, False)
        if name in ("truediv", "div", "itruediv", "__truediv__"):
            return self.mul(n, args[0], args[1], n.args[0], n.args[1], result, True)
        if name in ("neg", "negative"):
            return self.tags(a0)
        if name in _HOMOGENEOUS:
            return self.homogeneous(a0, 1.0)
        if name == "abs":
            return self.homogeneous(a0, 1.0)
        if name in _POWERS or name == "pow":
            exponent = _POWERS.get(name, args[1] if len(args) > 1 else None)
            if not _is_number(exponent):
                self.unknown(n, name)
                return {}
            integer = float(exponent).is_integer()
            return self.homogeneous(a0, float(exponent), positive=not integer)
        if name in _REDUCE:
            return self.reduce(n, name, args, kwargs, result)
        if name in ("dropout", "dropout1d", "dropout2d", "dropout3d"):
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            return self.dropout(a0, bool(training) and p > 0)
        if name in ("linear",):
            return self.linear(n, a0, n.args[1], n.args[2] if len(n.args) > 2 else n.kwargs.get("bias"), result,
                               f"F.linear (node {n.name!r})", n.name)
        if name in ("matmul", "bmm", "__matmul__"):
            return self.matmul(n, n.args[0], n.args[1], result)
        if name in ("conv1d", "conv2d", "conv3d"):
            groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
            return self.conv(n, a0, n.args[1], n.args[2] if len(n.args) > 2 else n.kwargs.get("bias"), groups,
                             result, n.name)
        if name == "embedding":
            return self.embedding(n, n.args[1], result, n.name)
        if name in ("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
                    "adaptive_max_pool2d", "adaptive_max_pool3d"):
            return self.pool(n, name, a0, args, kwargs, result)
        if name == "scaled_dot_product_attention":
            return self.attention(n, n.args[0], n.args[1], n.args[2], result)
        if name in ("layer_norm", "rms_norm"):
            shape = args[1]
            w = n.args[2] if len(n.args) > 2 else n.kwargs.get("weight")
            b = n.args[3] if len(n.args) > 3 else n.kwargs.get("bias") if name == "layer_norm" else None
            eps = kwargs.get("eps", args[4] if len(args) > 4 else (1e-5 if name == "layer_norm" else None))
            slot = ("node", n, 4 if len(n.args) > 4 else "eps")
            return self.layer_norm(n, a0, tuple(shape) if not isinstance(shape, int) else (shape,), w, b, eps, slot,
                                   result, name, n.name)
        if name == "batch_norm":
            training = kwargs.get("training", args[5] if len(args) > 5 else False)
            running = args[1] if len(args) > 1 else None
            w = n.args[3] if len(n.args) > 3 else n.kwargs.get("weight")
            b = n.args[4] if len(n.args) > 4 else n.kwargs.get("bias")
            eps = kwargs.get("eps", args[7] if len(args) > 7 else 1e-5)
            return self.batch_norm(n, a0, bool(training) or running is None, w, b, eps,
                                   ("node", n, 7 if len(n.args) > 7 else "eps"), result, n.name)
        if name == "topk":
            self.unknown(n, name, f"reaches topk (node {n.name!r}), which does not commute with a rescaling")
            return ({}, {})
        if name in ("masked_fill", "where", "softmax", "log_softmax", "cross_entropy") and not any(
                self.tags(a) for a in self.nodes_in((n.args, n.kwargs))):
            return {}
        if name in _NOT_HOMOGENEOUS:
            for a in self.nodes_in((n.args, n.kwargs)):
                self.break_all(self.tags(a), f"passes through {name} (node {n.name!r}), which is not positively "
                                             "homogeneous: no rescaling or GL commutes with it (Tran et al. Thm 4.1)")
            return {}
        self.unknown(n, name)
        return {} if isinstance(result, Tensor) else tuple({} for _ in result)

    def call_again(self, n, name, t, args, kwargs):
        if n.op == "call_method":
            return getattr(t, name)(*args[1:], **kwargs)
        return n.target(t, *args[1:], **kwargs)

    def module_rule(self, n, m: nn.Module, args, kwargs, result):
        a0 = n.args[0] if n.args else None
        name = type(m).__name__
        qual = str(n.target)
        if isinstance(m, nn.Linear):
            return self.linear(n, a0, ("param", f"{qual}.weight"), ("param", f"{qual}.bias") if m.bias is not None
                               else None, result, f"{qual} (Linear)", qual)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return self.conv(n, a0, ("param", f"{qual}.weight"), ("param", f"{qual}.bias") if m.bias is not None
                             else None, m.groups, result, qual)
        if isinstance(m, nn.Embedding):
            return self.embedding(n, ("param", f"{qual}.weight"), result, qual)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            batch_stats = m.training or not m.track_running_stats
            return self.batch_norm(n, a0, batch_stats, ("param", f"{qual}.weight") if m.affine else None,
                                   ("param", f"{qual}.bias") if m.affine else None, m.eps, ("module", m, "eps"),
                                   result, qual)
        if isinstance(m, nn.LayerNorm):
            affine = m.elementwise_affine
            bias = affine and getattr(m, "bias", None) is not None
            return self.layer_norm(n, a0, tuple(m.normalized_shape), ("param", f"{qual}.weight") if affine else None,
                                   ("param", f"{qual}.bias") if bias else None, m.eps, ("module", m, "eps"), result,
                                   "layer_norm", qual)
        if _RMSNorm is not None and isinstance(m, _RMSNorm):
            affine = m.elementwise_affine
            return self.layer_norm(n, a0, tuple(m.normalized_shape), ("param", f"{qual}.weight") if affine else None,
                                   None, m.eps, ("module", m, "eps"), result, "rms_norm", qual)
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            return self.homogeneous(a0, 1.0)
        if name == "Elementwise":
            act: Any = m.activation
            if act.name == "identity":
                return self.tags(a0)
            if act.homogeneity is None:
                self.break_all(self.tags(a0), f"passes through {qual} ({act.name}), which is not positively homogeneous")
                return {}
            return self.homogeneous(a0, float(act.homogeneity))
        if isinstance(m, (nn.Identity,)):
            return self.tags(a0)
        if isinstance(m, nn.Dropout):
            return self.dropout(a0, m.training and m.p > 0)
        if isinstance(m, (nn.Flatten, nn.Unflatten)):
            return self.shape_op(n, lambda t: m(t), a0, result)
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                          nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
            return self.pool_module(n, m, a0, result)
        if name in _NOT_HOMOGENEOUS:
            self.break_all(self.tags(a0), f"passes through {qual} ({name}), which is not positively homogeneous: "
                                          "no rescaling or GL commutes with it (Tran et al. Thm 4.1)")
            return {} if isinstance(result, Tensor) else tuple({} for _ in result)
        # an opaque leaf: whatever enters it is broken, its own parameters are not covered
        for pname, _ in m.named_parameters():
            self.note(f"{qual}.{pname}", f"inside {qual} ({name}), a module the walker does not read")
        self.unknown(n, f"{qual} ({name})")
        return {} if isinstance(result, Tensor) else tuple({} for _ in result) if isinstance(result, tuple) else None

    # --- shape operations ---------------------------------------------------------------------------------
    def shape_op(self, n, fn: Callable[[Tensor], Any], a0, result):
        r = self.pref(a0)
        if r is not None:
            moved = fn(r.index)
            if isinstance(moved, (tuple, list)):
                return tuple(PRef(r.param, t) for t in moved)
            return PRef(r.param, moved)
        tags = self.tags(a0)
        if isinstance(result, (tuple, list)):
            parts: list[dict[int, Tag]] = [{} for _ in result]
            for pid, tag in tags.items():
                for i, t in enumerate(fn(tag.labels)):
                    parts[i][pid] = Tag(t, tag.degree)
            return tuple(parts)
        return {pid: Tag(fn(tag.labels), tag.degree) for pid, tag in tags.items()}

    def cat(self, n, name, args, kwargs, result):
        nodes = n.args[0]
        pids = {pid for a in nodes for pid in self.tags(a)}
        for a in nodes:
            r = self.pref(a)
            if r is not None:
                self.note(r.param, f"concatenated with other tensors (node {n.name!r}), which the walker does not read")
        out = {}
        for pid in pids:
            degrees = {self.tags(a)[pid].degree for a in nodes if pid in self.tags(a)}
            if len(degrees) > 1:
                self.producers[pid].break_(f"joined at different degrees by {name} (node {n.name!r})")
                continue
            parts = [self.tags(a)[pid].labels if pid in self.tags(a) else torch.full(v.shape, -1, dtype=torch.long)
                     for a, v in zip(nodes, args[0])]
            out[pid] = Tag(n.target(parts, *args[1:], **kwargs), degrees.pop())
        return out

    # --- elementwise ----------------------------------------------------------------------------------------
    def homogeneous(self, a0, degree: float, positive: bool = True):
        out = {}
        for pid, tag in self.tags(a0).items():
            p = self.producers[pid]
            p.restrict(positive)
            out[pid] = Tag(tag.labels, tag.degree * degree)
        return out

    def dropout(self, a0, active: bool):
        if not active:
            return self.tags(a0)
        for pid in self.tags(a0):
            self.producers[pid].restrict()  # a random mask per entry: a product with an independent tensor
        return self.tags(a0)

    def add(self, n, args, result):
        a, b = n.args[0], n.args[1]
        if len(n.args) > 2 or "alpha" in n.kwargs:
            self.unknown(n, "add with alpha")
            return {}
        A, B = self.tags(a), self.tags(b)
        for side, other, other_val in ((a, b, args[1]), (b, a, args[0])):
            if not isinstance(side, fx.Node) or not self.tags(side):
                continue
            if _is_number(other) or (isinstance(other_val, Tensor) and other_val.ndim == 0 and not isinstance(other, fx.Node)):
                value = float(other)
                for pid, tag in self.tags(side).items():
                    if value == 0:
                        continue
                    if 0 < value <= 1e-2 and tag.degree > 0 and tag.degree % 2 == 0:
                        # a normalization's ε under a root: exact only at ε = 0 (checked there, measured here)
                        self.producers[pid].eps.append((f"node {n.name!r}", value))
                        self.eps_sites.append(("node", n, 1 if side is a else 0, value))
                    else:
                        self.producers[pid].break_(f"a constant {value:g} is added to it (node {n.name!r}): "
                                                   "no rescaling passes an affine map")
                return self.tags(side)
        out: dict[int, Tag] = {}
        rb = self.pref(b)
        ra = self.pref(a)
        if rb is not None or ra is not None:
            data, ref = (a, rb) if rb is not None else (b, ra)
            tags = self.tags(data)
            if not tags:
                self.note(ref.param, f"added to a tensor no group acts on (node {n.name!r})")
                return {}
            expanded = ref.index.expand(result.shape)
            for pid, tag in tags.items():
                if not self.absorb_bias(pid, tag, ref, expanded, n):
                    continue
                out[pid] = Tag(tag.labels.expand(result.shape), tag.degree)
            return out
        for pid in set(A) | set(B):
            p = self.producers[pid]
            if pid in A and pid in B:
                ta, tb = A[pid], B[pid]
                la, lb = ta.labels.expand(result.shape), tb.labels.expand(result.shape)
                if ta.degree != tb.degree or bool(((la >= 0) != (lb >= 0)).any()):
                    p.break_(f"added to a different function of its units (node {n.name!r})")
                    continue
                differ = (la != lb) & (la >= 0)
                if bool(differ.any()):
                    p.restrict()
                    p.tie_where(la, lb, differ)
                out[pid] = Tag(la, ta.degree)
            else:
                p.break_(f"added to a tensor its units do not reach (node {n.name!r}): a residual or skip "
                         "connection; no law crosses it (Marcotte et al. Thm 4.7)")
        return out

    def absorb_bias(self, pid: int, tag: Tag, ref: PRef, expanded: Tensor, n) -> bool:
        """``y + b`` with a parameter b: b's entries join the producer's incoming weights (exponent = degree)."""
        p = self.producers[pid]
        labels = tag.labels.expand(expanded.shape)
        pairs = torch.stack([expanded.reshape(-1), labels.reshape(-1)], 1).unique(dim=0)
        entries, units = pairs[:, 0], pairs[:, 1]
        if bool((units < 0).any()) or entries.unique().numel() != entries.numel():
            p.break_(f"a parameter {ref.param!r} is added across its units unevenly (node {n.name!r})")
            self.note(ref.param, f"added across the units of {p.name} unevenly (node {n.name!r})")
            return False
        order = torch.argsort(units)
        units, entries = units[order], entries[order]
        counts = torch.bincount(units, minlength=p.units)
        present = counts > 0
        if counts[present].unique().numel() != 1:
            p.break_(f"a parameter {ref.param!r} is added to its units a different number of times (node {n.name!r})")
            return False
        K = int(counts[present][0])
        p.incoming.append(Leg(ref.param, entries.reshape(-1, K), tag.degree, units=units.reshape(-1, K)[:, 0]))
        if tag.degree != 1 or p.kind != "GL":
            p.restrict()
        return True

    def mul(self, n, va, vb, a, b, result, divide: bool):
        A, B = self.tags(a), self.tags(b)
        for side, other, other_val in ((a, b, vb), (b, a, va)):
            if not (isinstance(other, fx.Node)) or (isinstance(other_val, Tensor) and other_val.ndim == 0
                                                     and not self.tags(other) and self.pref(other) is None):
                if divide and side is b:
                    self.break_all(self.tags(side), f"divides a constant (node {n.name!r})")
                    return {}
                return self.tags(side) if isinstance(side, fx.Node) else {}
        ra, rb = self.pref(a), self.pref(b)
        if ra is not None and rb is not None:
            self.note(ra.param, f"multiplied by another parameter (node {n.name!r})")
            self.note(rb.param, f"multiplied by another parameter (node {n.name!r})")
            return {}
        ref, data = (rb, a) if rb is not None else (ra, b) if ra is not None else (None, None)
        out: dict[int, Tag] = {}
        if ref is not None:
            if divide and ref is rb:
                self.note(ref.param, f"divides a tensor (node {n.name!r}), which the walker does not read")
                return self.restrict_each(self.tags(data))
            if divide:
                self.note(ref.param, f"divided by a tensor (node {n.name!r})")
                self.break_all(self.tags(data), f"divides a parameter (node {n.name!r})")
                return {}
            out.update(self.restrict_each(self.tags(data)))
            # γ ⊙ x: a producer whose units are γ's entries (the affine of a hand-written norm)
            index = ref.index.expand(result.shape)
            units = int(ref.index.numel())
            entries = torch.arange(units)
            p = Producer(len(self.producers), ref.param, units, [Leg(ref.param, entries[:, None], 1.0)],
                         f"{ref.param} (elementwise product, node {n.name!r})", kind="scaling")
            self.producers.append(p)
            out[p.pid] = Tag(index.clone())
            return out
        for pid in set(A) | set(B):
            p = self.producers[pid]
            if pid in A and pid in B:
                ta, tb = A[pid], B[pid]
                la, lb = ta.labels.expand(result.shape), tb.labels.expand(result.shape)
                if bool(((la >= 0) != (lb >= 0)).any()):
                    p.break_(f"multiplied by a function of its units on other entries (node {n.name!r})")
                    continue
                p.restrict()
                p.tie_where(la, lb, la >= 0)
                degree = ta.degree - tb.degree if divide else ta.degree + tb.degree
                if degree != 0:
                    out[pid] = Tag(la, degree)
                else:
                    p.invariant.append(f"normalized by a function of itself (node {n.name!r})")
            elif pid in A:
                p.restrict()
                out[pid] = Tag(A[pid].labels.expand(result.shape), A[pid].degree)
            else:
                if divide:
                    p.break_(f"divides a tensor (node {n.name!r})")
                    continue
                p.restrict()
                out[pid] = Tag(B[pid].labels.expand(result.shape), B[pid].degree)
        return out

    def restrict_each(self, tags: dict[int, Tag]) -> dict[int, Tag]:
        for pid in tags:
            self.producers[pid].restrict()
        return dict(tags)

    def reduce(self, n, name, args, kwargs, result):
        a0 = n.args[0]
        tags = self.tags(a0)
        x = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if name in ("norm", "vector_norm"):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
        dims = tuple(range(x.ndim)) if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
        dims = tuple(d % x.ndim for d in dims)
        keep = [d for d in range(x.ndim) if d not in dims]
        out = {}
        for pid, tag in tags.items():
            p = self.producers[pid]
            L = tag.labels.expand(x.shape).permute(*keep, *dims).reshape(*[x.shape[d] for d in keep], -1)
            rows = L.reshape(-1, L.shape[-1])
            labelled = rows >= 0
            if bool((labelled.any(1) & ~labelled.all(1)).any()):
                p.break_(f"summed with entries that do not carry its units ({name}, node {n.name!r})")
                continue
            p.restrict(positive=name in ("var", "std", "norm", "vector_norm", "amax"))
            for row in rows[labelled.all(1)].unique(dim=0).tolist():
                for u in row[1:]:
                    p.tie(row[0], u)
            out[pid] = Tag(rows[:, 0].reshape(result.shape), tag.degree * _REDUCE[name])
        return out

    def pool(self, n, name, a0, args, kwargs, result):
        x = args[0]
        spatial = x.ndim - int(name[-2])  # the pooled axes are the last 1, 2 or 3
        if name.startswith("adaptive"):
            size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
            fn = getattr(F, f"adaptive_max_pool{name[-2]}")
            window = lambda t: fn(t, size)  # noqa: E731
        else:
            kernel = kwargs.get("kernel_size", args[1])
            stride = kwargs.get("stride", args[2] if len(args) > 2 else None) or kernel
            padding = kwargs.get("padding", args[3] if len(args) > 3 else 0)
            ceil = kwargs.get("ceil_mode", args[5] if len(args) > 5 and name.startswith("max") else
                              args[4] if len(args) > 4 else False)
            dilation = kwargs.get("dilation", args[4] if len(args) > 4 and name.startswith("max") else 1)
            fn = getattr(F, f"max_pool{name[-2]}")
            window = lambda t: fn(t, kernel, stride, padding, dilation, ceil_mode=bool(ceil))  # noqa: E731
        return self.pooled(n, a0, window, name.split("_")[0] in ("max",) or "max" in name, spatial, result)

    def pool_module(self, n, m, a0, result):
        name = type(m).__name__
        dims = int(name[-2])
        if "Adaptive" in name:
            fn = getattr(F, f"adaptive_max_pool{dims}d")
            window = lambda t: fn(t, m.output_size)  # noqa: E731
        else:
            fn = getattr(F, f"max_pool{dims}d")
            dilation = getattr(m, "dilation", 1)
            window = lambda t: fn(t, m.kernel_size, m.stride, m.padding, dilation, ceil_mode=m.ceil_mode)  # noqa: E731
        return self.pooled(n, a0, window, "Max" in name, dims, result)

    def pooled(self, n, a0, window, is_max: bool, dims, result):
        out = {}
        for pid, tag in self.tags(a0).items():
            p = self.producers[pid]
            L = tag.labels.to(torch.float64)
            if L.ndim == dims:  # unbatched input
                L = L[None]
            hi, lo = window(L), -window(-L)
            if not bool((hi == lo).all()):
                p.break_(f"pooled across different units (node {n.name!r}): the pooling window runs over the axis "
                         "that carries them, not over positions only")
                continue
            if is_max:
                p.restrict(positive=True)
            out[pid] = Tag(hi.long().reshape(result.shape), tag.degree)
        return out

    # --- producers and consumers ---------------------------------------------------------------------------
    def param_ref(self, spec) -> PRef | None:
        if spec is None:
            return None
        if isinstance(spec, PRefSpec):
            return PRef(spec.param, spec.index)
        if isinstance(spec, tuple) and spec and spec[0] == "param":
            t = self.params[spec[1]]
            return PRef(spec[1], torch.arange(t.numel()).reshape(t.shape))
        return self.pref(spec)

    def consume(self, n, tags: dict[int, Tag], W_in: Tensor, param: str, contracted_last: Tensor, what: str,
                result) -> dict[int, Tag]:
        """Units on the last axis of the input, read by columns of W_in (out, in): absorbed; units on other
        axes (constant along the contracted one): passed through."""
        passed = {}
        for pid, tag in tags.items():
            p = self.producers[pid]
            L = tag.labels.expand(contracted_last.shape)
            rows = L.reshape(-1, L.shape[-1])
            if bool((rows == rows[:1]).all()) and bool((rows[0] >= 0).any()):
                row = rows[0]
                units = row[row >= 0].unique()
                counts = torch.stack([(row == u).sum() for u in units])
                if counts.unique().numel() != 1:
                    p.break_(f"its units appear a different number of times in the input of {what}")
                    continue
                cols = torch.stack([torch.nonzero(row == u).flatten() for u in units])  # (units, K)
                entries = W_in[:, cols].permute(1, 0, 2).reshape(len(units), -1)  # (units, out·K)
                p.outgoing.append(Leg(param, entries, -tag.degree, units=units))
                p.consumers.append(what)
                p.site(self.site_key(), [units])
            elif _constant_along_last(rows):
                passed[pid] = Tag(L[..., :1].expand(result.shape), tag.degree)
                p.site(self.site_key(), [r for r in L[..., 0].reshape(-1, 1)])
            else:
                p.break_(f"its units are mixed with other entries along the axis {what} contracts")
        return passed

    def linear(self, n, x, weight, bias, result, what: str, name: str):
        W = self.param_ref(weight)
        if W is None:
            self.unknown(n, what, f"reaches {what} with a weight that is not a parameter (node {n.name!r})")
            return {}
        b = self.param_ref(bias)
        xval = self.env[x] if isinstance(x, fx.Node) else x
        passed = self.consume(n, self.tags(x), W.index, W.param, xval, what, result)
        if passed and b is not None:
            self.break_all(passed, f"{what} adds a bias along an axis that does not carry its units")
            passed = {}
        name = n.meta.get("symmetry_name", name)
        out = self.new_producer(name, W.index.shape[0], [Leg(W.param, W.index, 1.0)] +
                                ([Leg(b.param, b.index.reshape(-1, 1), 1.0)] if b is not None else []),
                                what, result, -1, translation=("row", "bias") if b is not None else ("row",))
        out.update(passed)
        return out

    def conv(self, n, x, weight, bias, groups, result, name):
        W, b = self.param_ref(weight), self.param_ref(bias)
        what = f"{name} (convolution)"
        if W is None:
            self.unknown(n, what)
            return {}
        xval = self.env[x]
        C_out, per_group = W.index.shape[0], W.index.shape[1]
        out_per_group = C_out // groups
        for pid, tag in self.tags(x).items():
            p = self.producers[pid]
            L = tag.labels.expand(xval.shape)
            if L.ndim == W.index.ndim - 1:  # unbatched
                L = L[None]
            per_channel = L.transpose(0, 1).reshape(L.shape[1], -1)
            if not _constant_along_last(per_channel):
                p.break_(f"its units vary over the positions that {what} slides over")
                continue
            channel = per_channel[:, 0]
            units = channel[channel >= 0].unique()
            rows = []
            for u in units.tolist():
                parts = []
                for c in torch.nonzero(channel == u).flatten().tolist():
                    g, local = divmod(c, per_group)
                    parts.append(W.index[g * out_per_group:(g + 1) * out_per_group, local].reshape(-1))
                rows.append(torch.cat(parts))
            if len({r.numel() for r in rows}) != 1:
                p.break_(f"its units appear a different number of times in the input of {what}")
                continue
            p.outgoing.append(Leg(W.param, torch.stack(rows), -tag.degree, units=units))
            p.consumers.append(what)
            p.site(self.site_key(), [channel[g * per_group:(g + 1) * per_group] for g in range(groups)])
        legs = [Leg(W.param, W.index.reshape(C_out, -1), 1.0)]
        if b is not None:
            legs.append(Leg(b.param, b.index.reshape(-1, 1), 1.0))
        out = self.new_producer(name, C_out, legs, what, result, 1 if result.ndim == W.index.ndim else 0,
                                translation=("row", "bias") if b is not None and groups == 1 else
                                ("row",) if groups == 1 else ())
        if groups > 1:  # each group's filters read their own input channels: GL mixes within a group only
            self.producers[-1].site(self.site_key(), list(torch.arange(C_out).reshape(groups, -1)))
        return out

    def embedding(self, n, weight, result, name):
        W = self.param_ref(weight)
        if W is None:
            self.unknown(n, "embedding")
            return {}
        return self.new_producer(name, W.index.shape[1], [Leg(W.param, W.index.T.contiguous(), 1.0)],
                                 f"{name} (embedding)", result, -1)

    def matmul(self, n, a, b, result):
        ra, rb = self.pref(a), self.pref(b)
        va, vb = self.env[a], self.env[b]
        if rb is not None and ra is None and rb.index.ndim == 2:  # x @ W: a linear layer written out
            return self.linear(n, a, PRefSpec(rb.index.T, rb.param), None, result, f"matmul with {rb.param} "
                               f"(node {n.name!r})", n.name)
        if ra is not None or rb is not None:
            self.unknown(n, "matmul of a parameter on the left")
            return {}
        if va.ndim < 2 or vb.ndim < 2:
            self.unknown(n, "matmul of a vector")
            return {}
        A, B = self.tags(a), self.tags(b)
        out: dict[int, Tag] = {}
        shape = torch.broadcast_shapes(va.shape[:-2], vb.shape[:-2])
        for pid in set(A) | set(B):
            p = self.producers[pid]
            if pid in A and pid in B:
                p.break_(f"multiplied by a function of itself (node {n.name!r})")
                continue
            if pid in A:
                L = A[pid].labels.expand(va.shape)
                if _constant_along_last(L):  # units on the rows: passed through
                    out[pid] = Tag(L[..., :1].expand(result.shape), A[pid].degree)
                    p.site(self.site_key(), list(L[..., 0].expand(*shape, L.shape[-2]).reshape(-1, L.shape[-2])))
                    continue
                # units on the contracted axis of the left factor: paired with a key, or lost
                partner = [q for q, t in B.items() if not _constant_along_last(t.labels.expand(vb.shape).transpose(-1, -2))]
                if len(partner) == 1:
                    self.pair(n, pid, A[pid], va, partner[0], B[partner[0]], vb, transposed=True)
                else:
                    p.break_(f"contracted with a tensor that no group acts on (node {n.name!r})")
            else:
                L = B[pid].labels.expand(vb.shape)
                if _constant_along_last(L.transpose(-1, -2)):  # units on the columns: passed through
                    out[pid] = Tag(L[..., :1, :].expand(result.shape), B[pid].degree)
                    p.site(self.site_key(), list(L[..., 0, :].expand(*shape, L.shape[-1]).reshape(-1, L.shape[-1])))
                elif not any(not _constant_along_last(t.labels.expand(va.shape)) for t in A.values()):
                    p.break_(f"contracted with a tensor that no group acts on (node {n.name!r})")
        return out

    def pair(self, n, qid, qtag, qval, kid, ktag, kval, transposed: bool):
        """Scores q·k over the last axis of q and the contracted axis of k: Q → GQ, K → G⁻ᵀK (Cor. 3.9)."""
        Pq, Pk = self.producers[qid], self.producers[kid]
        Lq = qtag.labels.expand(qval.shape)  # (..., T, d)
        Lk = ktag.labels.expand(kval.shape)
        if transposed:
            Lk = Lk.transpose(-1, -2)  # (..., S, d)
        if qtag.degree != 1 or ktag.degree != 1:
            for p in (Pq, Pk):
                p.break_(f"paired in an attention score at degree ≠ 1 (node {n.name!r})")
            return
        if not (bool((Lq == Lq[..., :1, :]).all()) and bool((Lk == Lk[..., :1, :]).all())):
            for p in (Pq, Pk):
                p.break_(f"its units vary over the tokens of an attention score (node {n.name!r})")
            return
        shape = torch.broadcast_shapes(Lq.shape[:-2], Lk.shape[:-2])
        q0 = Lq[..., 0, :].expand(*shape, Lq.shape[-1]).reshape(-1, Lq.shape[-1])
        k0 = Lk[..., 0, :].expand(*shape, Lk.shape[-1]).reshape(-1, Lk.shape[-1])
        pairs = torch.stack([q0.reshape(-1), k0.reshape(-1)], 1).unique(dim=0)
        if bool(((pairs[:, 0] >= 0) != (pairs[:, 1] >= 0)).any()) or pairs[:, 0].unique().numel() != len(pairs) \
                or pairs[:, 1].unique().numel() != len(pairs) or qid == kid:
            for p in (Pq, Pk):
                p.break_(f"its units are not paired one to one in an attention score (node {n.name!r})")
            return
        key = self.site_key()
        Pq.site(key, list(q0))
        Pk.site(key, list(k0))
        self.pairs.append((qid, kid, {int(q): int(k) for q, k in pairs.tolist() if q >= 0}))
        Pq.consumers.append(f"attention scores with {Pk.name}")
        Pk.consumers.append(f"attention scores with {Pq.name}")

    def attention(self, n, q, k, v, result):
        Q, K, V = self.tags(q), self.tags(k), self.tags(v)
        for pid in set(Q) & set(K) | set(V) & (set(Q) | set(K)):
            self.producers[pid].break_(f"enters two arguments of scaled_dot_product_attention (node {n.name!r})")
        if len(Q) == 1 and len(K) == 1:
            (qid, qt), (kid, kt) = next(iter(Q.items())), next(iter(K.items()))
            self.pair(n, qid, qt, self.env[q], kid, kt, self.env[k], transposed=False)
        else:
            self.break_all(Q, f"query of scaled_dot_product_attention without one key projection (node {n.name!r})")
            self.break_all(K, f"key of scaled_dot_product_attention without one query projection (node {n.name!r})")
        out = {}
        vval = self.env[v]
        for pid, tag in V.items():
            L = tag.labels.expand(vval.shape)
            if not bool((L == L[..., :1, :]).all()):
                self.producers[pid].break_(f"its units vary over the tokens attention mixes (node {n.name!r})")
                continue
            out[pid] = Tag(L[..., :1, :].expand(result.shape), tag.degree)
            self.producers[pid].site(self.site_key(), list(L[..., 0, :].reshape(-1, L.shape[-1])))
        return out

    # --- normalization -------------------------------------------------------------------------------------
    def record_eps(self, p: Producer, where: str, eps, slot) -> None:
        value = float(eps) if eps is not None else float(torch.finfo(torch.get_default_dtype()).eps)
        p.eps.append((where, value))
        if slot is not None:
            self.eps_sites.append((slot[0], slot[1], slot[2], value))

    def batch_norm(self, n, x, batch_stats: bool, weight, bias, eps, slot, result, name):
        xval = self.env[x]
        for pid, tag in self.tags(x).items():
            p = self.producers[pid]
            if not batch_stats:
                p.break_(f"enters {name} in eval mode, an affine map with fixed running statistics")
                continue
            L = tag.labels.expand(xval.shape)
            per_channel = L.transpose(0, 1).reshape(L.shape[1], -1)
            if not _constant_along_last(per_channel) or bool((per_channel < 0).any()):
                p.break_(f"its units do not each fill one channel of {name}")
                continue
            p.restrict(positive=True)  # each channel normalized on its own: one positive scale per channel
            p.invariant.append(f"{name} (BatchNorm, per channel)")
            self.record_eps(p, name, eps, slot)
        w, b = self.param_ref(weight), self.param_ref(bias)
        if w is None:
            return {}
        legs = [Leg(w.param, w.index.reshape(-1, 1), 1.0)] + ([Leg(b.param, b.index.reshape(-1, 1), 1.0)] if b else [])
        return self.new_producer(f"{name} (affine)", w.index.numel(), legs, f"{name} (BatchNorm's γ, β)", result,
                                 1 if result.ndim > 1 else 0, kind="scaling", translation=())

    def layer_norm(self, n, x, shape: tuple, weight, bias, eps, slot, result, kind: str, name):
        xval = self.env[x]
        for pid, tag in self.tags(x).items():
            p = self.producers[pid]
            rows = tag.labels.expand(xval.shape).reshape(-1, math.prod(shape))
            if bool((rows < 0).any()):
                p.break_(f"normalized by {name} together with entries that do not carry its units")
                continue
            p.restrict(positive=True)
            for row in rows.unique(dim=0).tolist():
                for u in row[1:]:
                    p.tie(row[0], u)
            label = "LayerNorm" if kind == "layer_norm" else "RMSNorm"
            p.invariant.append(f"{name} ({label}: the whole layer scales as one)")
            self.record_eps(p, name, eps, slot)
        w, b = self.param_ref(weight), self.param_ref(bias)
        if w is None:
            return {}
        units = w.index.numel()
        legs = [Leg(w.param, w.index.reshape(-1, 1), 1.0)] + ([Leg(b.param, b.index.reshape(-1, 1), 1.0)] if b else [])
        out = {}
        p = Producer(len(self.producers), f"{name} (affine)", units, legs, f"{name} ({kind}'s γ" +
                     (", β)" if b else ")"), kind="scaling")
        self.producers.append(p)
        labels = torch.arange(units).reshape(shape).expand(result.shape)
        out[p.pid] = Tag(labels)
        return out

    # --- translations ---------------------------------------------------------------------------------------
    def follow_shifts(self, n, args, kwargs, result):
        """Translations W → W + 1vᵀ (and b → b + c1): the same shift on every unit of a sample ("row"), or
        b → b + t: a constant per unit ("bias"). Followed through shape operations and sums with tensors that do
        not depend on the producer, absorbed by softmax/log_softmax/LayerNorm over the units (row) or BatchNorm
        (bias); anything else ends them."""
        name = _name(n) if n.op != "output" else "output"
        incoming: dict[tuple[int, str], Tensor] = {}
        for a in self.nodes_in((n.args, n.kwargs)):
            for key, L in (self.shift.get(a) or {}).items():
                incoming[(key, a)] = L
        out: dict[tuple[int, str], Tensor] = {}
        for pid in self.created.get(n, []):
            p = self.producers[pid]
            tag = self.tags(n).get(pid)
            if tag is not None:
                for mode in p.translation:
                    out[(pid, mode)] = tag.labels
        if not incoming:
            return out
        module = self.gm.get_submodule(n.target) if n.op == "call_module" else None
        for ((pid, mode), a), L in incoming.items():
            p = self.producers[pid]
            kept = self.shift_rule(n, name, module, args, kwargs, result, a, L, mode, p)
            if kept is None:
                p.translation[mode] = False
            elif kept is not True:
                out[(pid, mode)] = kept
        return out

    def shift_rule(self, n, name, module, args, kwargs, result, a, L, mode, p):
        """The shift's labels after node n, True if absorbed, None if it ends here."""
        if n.op == "output":
            if self.loss == "cross_entropy" and mode == "row" and isinstance(result, Tensor) and result.ndim >= 2 \
                    and bool((L >= 0).all()) and bool((L.reshape(-1, L.shape[-1]).sort(1).values
                                                       == torch.arange(L.shape[-1])).all()):
                p.translation_absorbed.setdefault(mode, []).append("the cross-entropy loss")
                return True
            return None
        if name in _IDENTITY or (module is not None and isinstance(module, (nn.Identity,))) or \
                (module is not None and isinstance(module, nn.Dropout) and not (module.training and module.p > 0)):
            return L
        if name in _SHAPE_METHODS or name == "getitem" or (module is not None and isinstance(module, nn.Flatten)):
            if module is not None:
                return module(L)
            return self.call_again(n, name, L, args, kwargs) if name != "getitem" else operator.getitem(L, args[1])
        if name in ("sub", "isub") and mode == "row" and self._centring(n):
            p.translation_absorbed.setdefault(mode, []).append(f"the subtraction of its mean (node {n.name!r})")
            return True
        if name == "mean" and mode == "row" and n.users and all(self._centring(u) and u.args[1] is n for u in n.users) \
                and L.ndim and bool((L.reshape(-1, L.shape[-1]).sort(1).values == torch.arange(L.shape[-1])).all()):
            return L.amin(-1, keepdim=True)  # the mean of a row-shifted x is shifted alike; the sub cancels both
        if name in ("add", "sub", "iadd", "isub") and not any(p.pid in self._depends(o) for o in self.nodes_in(n.args)
                                                               if o is not a):
            return L.expand(result.shape)
        if name in ("mul", "truediv", "div") and any(_is_number(x) for x in n.args):
            return L
        absorbed = None
        if name in ("softmax", "log_softmax") or (module is not None and isinstance(module, (nn.Softmax, nn.LogSoftmax))):
            dim = module.dim if module is not None else kwargs.get("dim", args[1] if len(args) > 1 else None)
            if mode == "row" and dim is not None and bool((L >= 0).all()):
                absorbed = f"softmax (node {n.name!r})"
        if name == "cross_entropy" and mode == "row" and a is n.args[0] and bool((L >= 0).all()):
            absorbed = f"cross_entropy (node {n.name!r})"
        if (name == "layer_norm" or (module is not None and isinstance(module, nn.LayerNorm))) and mode == "row" \
                and a is n.args[0] and bool((L >= 0).all()):
            absorbed = f"LayerNorm's centring (node {n.name!r})"
        if (name == "batch_norm" or (module is not None and isinstance(module, nn.modules.batchnorm._BatchNorm))) \
                and mode == "bias" and a is n.args[0]:
            training = (module.training or not module.track_running_stats) if module is not None else \
                kwargs.get("training", args[5] if len(args) > 5 else False)
            per_channel = L.transpose(0, 1).reshape(L.shape[1], -1) if L.ndim > 1 else L[:, None]
            if training and _constant_along_last(per_channel) and bool((per_channel >= 0).all()):
                absorbed = f"BatchNorm's mean (node {n.name!r})"
        if absorbed is not None:
            p.translation_absorbed.setdefault(mode, []).append(absorbed)
            return True
        return None

    @staticmethod
    def _centring(n: fx.Node) -> bool:
        """n is x − x.mean(-1, keepdim=True) (a hand-written LayerNorm's centring over the last axis)."""
        if len(n.args) != 2 or not isinstance(n.args[0], fx.Node) or not isinstance(n.args[1], fx.Node):
            return False
        x, m = n.args[0], n.args[1]
        if _name(m) != "mean" or not m.args or m.args[0] is not x:
            return False
        dim = m.kwargs.get("dim", m.args[1] if len(m.args) > 1 else None)
        dim = dim[0] if isinstance(dim, (list, tuple)) and len(dim) == 1 else dim
        return bool(dim == -1) and bool(m.kwargs.get("keepdim", m.args[2] if len(m.args) > 2 else False))

    def _depends(self, node: fx.Node) -> set[int]:
        if not hasattr(self, "_deps"):
            self._deps: dict[fx.Node, set[int]] = {}
        if node in self._deps:
            return self._deps[node]
        deps: set[int] = set()
        tags = self.ann.get(node)
        if isinstance(tags, dict):
            deps |= set(tags)
        deps |= {key[0] for key in (self.shift.get(node) or {})}
        for a in self.nodes_in((node.args, node.kwargs)):
            deps |= self._depends(a)
        self._deps[node] = deps
        return deps

    def at_output(self, n, args):
        for a in self.nodes_in(n.args):
            self.break_all(self.tags(a), "reaches the model's output: no later layer undoes the action")
            v = self.ann.get(a)
            if isinstance(v, tuple):
                for t in v:
                    self.break_all(t if isinstance(t, dict) else {}, "reaches the model's output")


