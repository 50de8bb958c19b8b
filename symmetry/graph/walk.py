"""The walk: the exported graph run on the example input, every value annotated by the rule of its op
([`symmetry.graph.registry`][]): the producers' units it carries ({producer: Tag}), or the parameter it is
(PRef), and the translation shifts it carries ([`symmetry.graph.shifts`][])."""
from __future__ import annotations

import operator
from typing import Any, Sequence

import torch
import torch.fx as fx

from ..groups.blocks import Leg
from .registry import Args, rule_for
from .state import PRef, Producer, Tag

Tensor = torch.Tensor


def op_name(node: fx.Node) -> str:
    """A short readable name of a node's op: ``linear``, ``relu``, ``getitem``."""
    target = node.target
    name = getattr(getattr(target, "overloadpacket", target), "__name__", str(target))
    return name


class Walker(fx.Interpreter):
    """Runs the graph on the example input; beside every value, its tags (producer → labels), its parameter
    reference, the producers it depends on, and the translation shifts it carries."""

    def __init__(self, gm: fx.GraphModule, loss: str | None, module_types: dict[str, str] | None = None):
        super().__init__(gm)
        self.gm = gm
        self.loss = loss
        self.params = dict(gm.named_parameters(remove_duplicate=False))
        first: dict[int, str] = {}
        #: every name of a parameter → its first name (a tied tensor is one parameter, named as the model names it)
        self.canonical = {name: first.setdefault(id(t), name) for name, t in self.params.items()}
        self.module_types = module_types or {}
        self.producers: list[Producer] = []
        self.ann: dict[fx.Node, Any] = {}
        self.shift: dict[fx.Node, Any] = {}
        self.const: set[fx.Node] = set()  # values that depend on no input and no parameter
        self.pairs: list[tuple[int, int, dict[int, int]]] = []
        self.notes: dict[str, list[str]] = {}  # parameter → why no group acts on it
        self.uses: dict[str, list[tuple[Tensor, str]]] = {}  # parameter → (entries, where) per use
        self.eps_sites: list[tuple[fx.Node, str, float]] = []  # (node, argument, ε)
        self._sites = 0
        self._names: set[str] = set()
        self.created: dict[fx.Node | None, list[int]] = {}
        self.current: fx.Node | None = None
        self.args_of: dict[fx.Node, Args] = {}

    # --- helpers ------------------------------------------------------------------------------------------
    def note(self, param: str, why: str) -> None:
        self.notes.setdefault(param, [])
        if why not in self.notes[param]:
            self.notes[param].append(why)

    def use(self, ref: PRef, where: str) -> None:
        """Record that the entries ``ref`` holds are read by one operation (tied weights: read by several)."""
        self.uses.setdefault(ref.param, []).append((ref.index.reshape(-1), where))

    def unique_name(self, name: str) -> str:
        base, k = name, 2
        while name in self._names:
            name, k = f"{base}#{k}", k + 1
        self._names.add(name)
        return name

    def new_producer(self, name, units, incoming, where, out: Tensor, axis: int, kind="GL",
                     translation: Sequence[str] = ("row",)) -> dict[int, Tag]:
        p = Producer(len(self.producers), self.unique_name(name), units, incoming, where, kind=kind)
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

    def is_const(self, a) -> bool:
        """A number, or a value computed from neither the input nor a parameter (``torch.ones(t, t)``)."""
        return not isinstance(a, fx.Node) or a in self.const

    @staticmethod
    def nodes_in(args) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg(args, lambda n: found.append(n))
        return found

    def value(self, a):
        return self.env[a] if isinstance(a, fx.Node) else a

    def module_of(self, n: fx.Node) -> str:
        """The submodule a node came from (its innermost ``nn_module_stack`` entry), with its class."""
        stack = n.meta.get("nn_module_stack") or {}
        if not stack:
            return f"the model's own forward (node {n.name!r})"
        path, cls = list(stack.values())[-1]
        cls = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        return f"{path or 'the model'} ({cls.rsplit('.', 1)[-1]})"

    def module_path(self, n: fx.Node) -> tuple[str, str]:
        """(qualified name, full class name) of the submodule a node came from; ("", "") at the top."""
        stack = n.meta.get("nn_module_stack") or {}
        if not stack:
            return "", ""
        path, cls = list(stack.values())[-1]
        cls = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
        return path, cls

    def where(self, n: fx.Node) -> str:
        """The node's place in the model's words: ``1 (Tanh)`` for a torch.nn layer's own op, else the op in
        the submodule that called it (``mul in norm1 (RMSNorm)``)."""
        path, cls = self.module_path(n)
        if path and cls.startswith("torch.nn.modules."):
            return f"{path} ({cls.rsplit('.', 1)[-1]})"
        return f"{op_name(n)} in {self.module_of(n)}"

    def unknown(self, n: fx.Node, what: str | None = None, why: str | None = None) -> None:
        what = what or f"{op_name(n)} (an op without a rule, in {self.module_of(n)})"
        for a in self.nodes_in((n.args, n.kwargs)):
            self.break_all(self.tags(a), why or f"reaches {what}: no group is assumed to pass it; teach the walker "
                                                 "with symmetry.graph.register_rule if it should")
            r = self.pref(a)
            if r is not None:
                self.note(r.param, f"used by {what}, which the walker does not read")

    # --- the run ------------------------------------------------------------------------------------------
    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        self.current = n
        inputs = self.nodes_in((n.args, n.kwargs))
        if n.op == "call_function" and all(a in self.const for a in inputs):
            self.const.add(n)
        elif n.op == "get_attr" and str(n.target) not in self.params:
            self.const.add(n)
        self.ann[n] = self.annotate(n, result)
        return result

    def annotate(self, n: fx.Node, result):
        if n.op == "placeholder":
            return {}
        if n.op == "get_attr":
            if n.target in self.params:
                return PRef(self.canonical[str(n.target)], torch.arange(result.numel()).reshape(result.shape))
            return {}
        if n.op == "output":
            self.at_output(n)
            return None
        if n.op != "call_function":
            return None  # the exported module's guard check
        if n in self.const:
            return {} if isinstance(result, Tensor) else tuple({} for _ in result) if isinstance(result, (tuple, list)) else None
        args = self.args(n)
        rule = rule_for(n.target)
        if rule is None:
            if not isinstance(result, (Tensor, tuple, list)):
                return None
            self.unknown(n)
            return {} if isinstance(result, Tensor) else tuple({} for _ in result)
        return rule(self, n, args, result)

    def args(self, n: fx.Node) -> Args:
        if n not in self.args_of:
            values, value_kwargs = self.fetch_args_kwargs_from_env(n)
            self.args_of[n] = Args(n.target, n.args, dict(n.kwargs), values, value_kwargs)
        return self.args_of[n]

    def at_output(self, n):
        for a in self.nodes_in(n.args):
            self.break_all(self.tags(a), "reaches the model's output: no later layer undoes the action")
            v = self.ann.get(a)
            if isinstance(v, tuple):
                for t in v:
                    self.break_all(t if isinstance(t, dict) else {}, "reaches the model's output")

    # --- parameters -----------------------------------------------------------------------------------------
    def param_ref(self, a, where: str) -> PRef | None:
        """The parameter an argument is (moved by shape operations), its use recorded; None if it is none."""
        if a is None:
            return None
        if isinstance(a, PRef):
            self.use(a, where)
            return a
        r = self.pref(a)
        if r is not None:
            self.use(r, where)
        return r

    def producer_name(self, ref: PRef) -> str:
        """A producer named by the module whose weight it is (``layer1.0.conv1``); a slice of a packed weight
        by its part (``attn.q`` for nn.MultiheadAttention's in_proj_weight), else the slice."""
        param = ref.param
        numel = self.params[param].numel() if param in self.params else ref.index.numel()
        owner, _, leaf = param.rpartition(".")
        if ref.index.numel() == numel:
            return owner if leaf == "weight" and owner else param
        rows = ref.index.reshape(ref.index.shape[0], -1)[:, 0] // max(1, numel // self.params[param].shape[0])
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if leaf == "in_proj_weight" and self.params[param].shape[0] % 3 == 0:
            E = self.params[param].shape[0] // 3
            if hi - lo == E and lo % E == 0:
                return f"{owner}.{'qkv'[lo // E]}" if owner else "qkv"[lo // E]
        return f"{param}[{lo}:{hi}]"


def getitem_rule(w: Walker, n: fx.Node, a: Args, result):
    """``operator.getitem`` on a tuple an op returned (split, chunk, unbind, …)."""
    src = n.args[0]
    v = w.ann.get(src) if isinstance(src, fx.Node) else None
    if isinstance(v, tuple):
        return v[int(n.args[1])]  # type: ignore[arg-type]
    if v is None:
        return {} if isinstance(result, Tensor) else None
    w.unknown(n)
    return {}


_ = Leg, operator
