"""A ``torch.nn.Module`` (Linear, ReLU, LeakyReLU, Identity in nested ``nn.Sequential``) read as a chain of layers,
counted in its path factorisation without listing the paths."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .factorisations import _upper_triangle

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# torch.nn.Module input: the path factorisation without listing the paths
# ---------------------------------------------------------------------------------------------

#: The layers a module may be built from (nested ``nn.Sequential`` allowed).
SUPPORTED_LAYERS = ("Linear", "ReLU", "LeakyReLU", "Identity", "Sequential")

#: Extra random fields beyond the most that can be independent (a safety margin for the rank).
_OVERSAMPLE = 8

#: Fixed cost of a count besides its big tensors (torch.func transforms, small buffers), bytes;
#: measured as the peak over the tensors for the smallest nets (benchmarks/bench_laws.py).
_OVERHEAD_BYTES = 16 * 2**20


@dataclass(frozen=True)
class _Chain:
    """A module read as a chain of linear layers: widths n_0 … n_q, which layers have a bias,
    and for each hidden layer whether its activation is *free* (ReLU, LeakyReLU: on an activation
    region any 0/1 or {α, 1} diagonal, whose span is every diagonal) or the identity (a GL symmetry)."""

    widths: tuple[int, ...]
    bias: tuple[bool, ...]
    free: tuple[bool, ...]
    description: str

    @property
    def q(self) -> int:
        return len(self.widths) - 1

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """θ's blocks in the order of ``model.parameters()``: W_1, b_1, W_2, b_2, …"""
        out: list[tuple[int, ...]] = []
        for l in range(self.q):
            out.append((self.widths[l + 1], self.widths[l]))
            if self.bias[l]:
                out.append((self.widths[l + 1],))
        return out

    @property
    def D(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def hidden(self) -> int:
        return sum(self.widths[1:-1])

    def blocks(self, theta: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """θ (flat, or a batch of them along dim 0 … −1) as weights W_l and biases b_l (empty without)."""
        sizes = [math.prod(s) for s in self.shapes]
        chunks = iter(torch.split(theta, sizes, dim=-1))
        Ws, bs = [], []
        for l in range(self.q):
            Ws.append(next(chunks).reshape(*theta.shape[:-1], self.widths[l + 1], self.widths[l]))
            bs.append(next(chunks) if self.bias[l] else theta.new_zeros(*theta.shape[:-1], 0))
        return Ws, bs

    def random_point(self, gen: torch.Generator) -> Tensor:
        """A generic θ: Gaussian entries of variance 1/n_(l−1) in layer l (keeps path products O(1))."""
        parts = []
        for l in range(self.q):
            scale = 1.0 / math.sqrt(self.widths[l])
            parts.append(scale * torch.randn(self.widths[l + 1] * self.widths[l], generator=gen, dtype=torch.float64))
            if self.bias[l]:
                parts.append(scale * torch.randn(self.widths[l + 1], generator=gen, dtype=torch.float64))
        return torch.cat(parts)

    def known_laws(self, theta: Tensor) -> Tensor:
        """Per free hidden neuron ‖incoming weights and bias‖² − ‖outgoing weights‖² (Du et al.);
        per identity hidden layer the entries of [W_l b_l][W_l b_l]ᵀ − W_(l+1)ᵀW_(l+1) (Arora et al.)."""
        Ws, bs = self.blocks(theta)
        laws = []
        for l in range(self.q - 1):
            incoming = torch.cat([Ws[l], bs[l][:, None]], dim=1) if self.bias[l] else Ws[l]
            if self.free[l]:
                laws.append((incoming ** 2).sum(1) - (Ws[l + 1] ** 2).sum(0))
            else:
                laws.append(_upper_triangle(incoming @ incoming.T - Ws[l + 1].T @ Ws[l + 1]))
        return torch.cat(laws) if laws else theta.new_zeros(0)

    def known_law_rows(self) -> int:
        return sum(n if f else n * (n + 1) // 2 for n, f in zip(self.widths[1:-1], self.free))


def _module_chain(model) -> _Chain:
    """Read what ``model`` computes (its ``torch.export`` graph, [`symmetry.graph.trace`][], the one module
    reader) as a chain of linear layers and activations, each node fed by the one before; any other node (a skip
    connection, a reshape, another op) is refused by name."""
    from torch import nn

    from ..graph import trace, unwrap
    from ..graph.walk import op_name
    from ..groups import NotSupportedError

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model, _ = unwrap(model)
    supported = ", ".join(SUPPORTED_LAYERS)
    first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise NotSupportedError(f"model has no Linear layer; supported layers: {supported}")
    if isinstance(model, nn.Sequential):  # a width mismatch would stop the recording itself: name it here
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        for (_, before), (name, layer) in zip(linears, linears[1:]):
            if layer.in_features != before.out_features:
                raise NotSupportedError(f"layer {name} ({layer}) takes {layer.in_features} inputs but the layer "
                                        f"before gives {before.out_features}")
    p0 = next(iter(model.parameters()))
    graph = trace(model, (torch.zeros(2, first.in_features, dtype=p0.dtype, device=p0.device),))
    params = dict(graph.named_parameters(remove_duplicate=False))
    layer_of = {f"{name}.weight": m for name, m in model.named_modules(remove_duplicate=False)
                if isinstance(m, nn.Linear)}
    widths: list[int] = []
    bias: list[bool] = []
    free: list[bool] = []
    seen: set[int] = set()
    pending_free = False
    previous = None
    for node in graph.graph.nodes:
        if node.op == "get_attr" or (node.op == "call_module" and node.target == "_guards_fn"):
            continue
        if node.op == "placeholder":
            if previous is not None:
                raise NotSupportedError(f"model takes more than one input ({node.name!r}); count_conservation_laws "
                                        "counts a chain with one input")
            previous = node
            continue
        if node.op == "output":
            if node.args[0] not in (previous, (previous,), [previous]):
                raise NotSupportedError(f"the model's output is not its last layer's ({node.args[0]!r})")
            break
        feeds = [a for a in node.all_input_nodes if a.op != "get_attr"]
        if feeds != [previous] or len([u for u in node.users if u.op != "output" or True]) != 1:
            raise NotSupportedError(f"node {node.name!r} ({op_name(node)}) is not fed by the layer before it alone, "
                                    "or feeds more than the layer after it: a skip connection or a branch is not a "
                                    f"chain; count_conservation_laws counts chains of {supported}")
        name = op_name(node)
        slope = node.args[1] if name == "leaky_relu" and len(node.args) > 1 else 0.01
        if name in ("relu", "relu_") or (name in ("leaky_relu", "leaky_relu_") and slope != 1):
            pending_free = True  # positively homogeneous: a diagonal on each activation region
            previous = node
            continue
        if name in ("leaky_relu", "leaky_relu_"):  # slope 1: the identity
            previous = node
            continue
        weight = node.args[1] if name == "linear" and len(node.args) > 1 else None
        target = getattr(weight, "target", None)
        if name != "linear" or getattr(weight, "op", None) != "get_attr" or target not in layer_of:
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            what = f"layer {stack[-1][0]} ({str(stack[-1][1]).rsplit('.', 1)[-1].rstrip(chr(39) + '>')})" if stack \
                else f"node {node.name!r} ({name})"
            raise NotSupportedError(f"{what} is not supported by count_conservation_laws; supported layers: "
                                    f"{supported}")
        layer = layer_of[target]
        lname = target.rpartition(".")[0]
        if id(params[target]) in seen:
            raise NotSupportedError(f"layer {lname} ({layer}) reuses the weights of an earlier layer: shared (tied) "
                                    "weights are not supported by count_conservation_laws")
        seen.add(id(params[target]))
        if not layer.in_features or not layer.out_features:
            raise NotSupportedError(f"layer {lname} ({layer}) has no units (a zero-width layer): nothing to count")
        if widths and layer.in_features != widths[-1]:
            raise NotSupportedError(f"layer {lname} ({layer}) takes {layer.in_features} inputs but the layer "
                                    f"before gives {widths[-1]}")
        if widths:
            free.append(pending_free)
        else:
            widths.append(layer.in_features)
        widths.append(layer.out_features)
        bias.append(layer.bias is not None)
        pending_free = False
        previous = node
    if not widths:
        raise NotSupportedError(f"model has no Linear layer; supported layers: {supported}")
    acts = ["free" if f else "identity" for f in free]
    return _Chain(tuple(widths), tuple(bias), tuple(free),
                  f"module, widths {tuple(widths)}, biases {tuple(bias)}, hidden activations {acts}")


def _masked_output(chain: _Chain, first: Tensor, rest: tuple[Tensor, ...], masks: Tensor, a: Tensor,
                   s: Tensor) -> Tensor:
    """aᵀ W_q M_(q−1)(⋯ M_1(first + s_1 b_1) ⋯) with W_1x = ``first`` and the other blocks in ``rest``:
    the net on one activation region with diagonal masks M_l (rows of ``masks``, zero-padded), its
    biases scaled by s_l. ⟨c, φ⟩ for a product-form cotangent c of the path factorisation."""
    return a @ _through_layers(chain, iter(rest), first, 0, chain.q, masks, s, weighted_first=False)


def _through_layers(chain: _Chain, blocks, h: Tensor, start: int, stop: int, masks: Tensor, s: Tensor,
                    weighted_first: bool = True) -> Tensor:
    """Layers ``start``…``stop − 1`` of the masked net on h: W_l h (skipped at ``start`` when the weight is
    already applied), + s_l b_l, then the diagonal mask M_l below the output layer; W and b come from ``blocks``."""
    for l in range(start, stop):
        if l > start or weighted_first:
            h = next(blocks) @ h
        if chain.bias[l]:
            h = h + s[l] * next(blocks)
        if l < chain.q - 1:
            h = masks[l, : chain.widths[l + 1]] * h
    return h


def _random_factors(chain: _Chain, rows: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Masks (free layers Gaussian, identity layers ones), output weights a and bias scales s."""
    width = max(chain.widths[1:-1], default=1)
    masks = torch.randn(rows, max(chain.q - 1, 1), width, generator=gen, dtype=torch.float64)
    for l, f in enumerate(chain.free):
        if not f:
            masks[:, l] = 1.0
    a = torch.randn(rows, chain.widths[-1], generator=gen, dtype=torch.float64)
    s = torch.randn(rows, chain.q, generator=gen, dtype=torch.float64)
    return masks, a, s
