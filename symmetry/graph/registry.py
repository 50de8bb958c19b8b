"""The table of rules, keyed by ATen op: what each operation does to the units it reads.

A rule is ``rule(walker, node, args, result)``: ``args`` holds the op's arguments by their schema names
(``args["input"]`` the graph value, ``args.value("input")`` what it held on the example input), ``result`` the
op's output on the example input. It returns the output's annotation: ``{producer id: Tag}`` for a tensor, a tuple
of those for a tuple of tensors, or a [`PRef`][symmetry.graph.state.PRef] for a parameter moved by shape
operations. An op without a rule breaks every symmetry whose units reach it, naming the op (never assumed to be
elementwise or linear).

Translation rules (``shift=True``) say what the op does to a translation's shift: the labels after it, True if
the op absorbs it, None if it ends there.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["register_rule", "rule_for", "Args", "op_key"]

Rule = Callable[..., Any]
_RULES: dict[Any, Rule] = {}
_SHIFT_RULES: dict[Any, Rule] = {}


def op_key(op) -> Any:
    """The table's key for an op: an ATen overload's packet (``aten.linear.default`` → ``aten.linear``), the
    out-of-place op for an in-place one (``aten.relu_`` → ``aten.relu``), a Python callable as itself."""
    packet = getattr(op, "overloadpacket", op)
    name = getattr(packet, "__name__", "")
    if isinstance(packet, torch._ops.OpOverloadPacket) and name.endswith("_") and not name.endswith("__"):
        out_of_place = getattr(torch.ops.aten, name[:-1], None) if packet._qualified_op_name.startswith("aten::") else None
        if out_of_place is not None:
            return out_of_place
    return packet


def register_rule(op, rule: Rule, *, shift: bool = False) -> None:
    """Teach the walker an op: ``op`` an ATen op (``torch.ops.aten.hardtanh`` or one overload of it), a custom
    op (``torch.ops.mylib.myop``) or a Python callable that appears in exported graphs (``operator.getitem``);
    ``rule(walker, node, args, result)`` as described in this module. With ``shift=True`` the rule is the op's
    translation rule instead. Replaces any rule the op had.

    Example: an activation that is positively homogeneous of degree 1 (a custom op ``mylib.prelu_fixed``):

    ```python
    from symmetry.graph import register_rule
    from symmetry.graph.rules.elementwise import homogeneous
    register_rule(torch.ops.mylib.prelu_fixed, lambda w, n, a, r: homogeneous(w, a["input"], 1.0))
    ```

    A whole example that runs: [your own model](../your-own-model.md#teaching-the-reader-an-op).
    """
    if not callable(rule):
        raise TypeError(f"rule must be callable as rule(walker, node, args, result), got {type(rule).__name__}")
    key = op_key(op)
    if not (isinstance(key, torch._ops.OpOverloadPacket) or callable(key)):
        raise TypeError(f"op must be an ATen/custom op (torch.ops.aten.relu) or a callable, got {op!r}")
    (_SHIFT_RULES if shift else _RULES)[key] = rule


def rule_for(op, shift: bool = False) -> Rule | None:
    table = _SHIFT_RULES if shift else _RULES
    rule = table.get(op)
    if rule is None:
        key = op_key(op)
        rule = table.get(key)
        if rule is not None:
            table[op] = rule
    return rule


def on(*ops, shift: bool = False):
    """Decorator registering one rule for several ops (the families in ``symmetry.graph.rules`` use it)."""
    def decorate(fn: Rule) -> Rule:
        for op in ops:
            if op is not None:
                register_rule(op, fn, shift=shift)
        return fn
    return decorate


class Args:
    """An op's arguments by schema name: the graph values and their example values."""

    __slots__ = ("nodes", "values")

    def __init__(self, target, args: tuple, kwargs: dict, values: tuple, value_kwargs: dict):
        schema = getattr(target, "_schema", None)
        self.nodes: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        if schema is None:
            for i, (a, v) in enumerate(zip(args, values)):
                self.nodes[i], self.values[i] = a, v  # type: ignore[index]
            self.nodes.update(kwargs)
            self.values.update(value_kwargs)
            return
        positional = 0
        for arg in schema.arguments:
            if not arg.kwarg_only and positional < len(args):
                self.nodes[arg.name], self.values[arg.name] = args[positional], values[positional]
                positional += 1
            elif arg.name in kwargs:
                self.nodes[arg.name], self.values[arg.name] = kwargs[arg.name], value_kwargs[arg.name]
            else:
                default = arg.default_value if arg.has_default_value() else None
                self.nodes[arg.name] = self.values[arg.name] = default

    def __getitem__(self, name):
        return self.nodes.get(name)

    def value(self, name):
        return self.values.get(name)

    def __contains__(self, name) -> bool:
        return name in self.nodes
