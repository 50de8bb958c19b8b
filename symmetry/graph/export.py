"""The one frontend: the model's computation as ``torch.export`` records it (non-strict: the model's own Python
runs on fake tensors), an ATen graph in which every node carries the submodule it came from
(``nn_module_stack``). Wrappers are taken off first (``torch.compile``'s, ``DataParallel``'s, DDP's);
``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` are recorded through their slow path written with the
ops the walker reads (the packed in_proj weight sliced into Q, K, V). A failure names the submodule where
recording stopped and what the user can do."""
from __future__ import annotations

import contextlib
import math
import sys
from typing import Any, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..groups import NotSupportedError

Tensor = torch.Tensor

__all__ = ["unwrap", "trace"]


def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The module a wrapper runs and the prefix its parameter names carry in the wrapper
    (``torch.compile``: ``_orig_mod.``; ``DataParallel``/``DistributedDataParallel``: ``module.``)."""
    prefix = ""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
            model, prefix = inner, prefix + "_orig_mod."
            continue
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model, prefix = model.module, prefix + "module."
            continue
        return model, prefix


# ------------------------------------------------------------------------------------------------------------
# nn.MultiheadAttention and nn.TransformerEncoderLayer, opened
# ------------------------------------------------------------------------------------------------------------
def _attention_forward(m: nn.MultiheadAttention, query, key, value, key_padding_mask=None, need_weights=True,
                       attn_mask=None, average_attn_weights=True, is_causal=False):
    """nn.MultiheadAttention's computation written with separate Q, K, V projections (slices of the packed
    in_proj weight); the options it does not open run torch's own forward."""
    if m.bias_k is not None or m.add_zero_attn or key_padding_mask is not None:
        return _ORIGINAL["mha"](m, query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
    E, H = m.embed_dim, m.num_heads
    d = E // H
    if m._qkv_same_embed_dim:
        W = m.in_proj_weight
        Wq, Wk, Wv = W[:E], W[E:2 * E], W[2 * E:]
    else:
        Wq, Wk, Wv = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
    if m.in_proj_bias is not None:
        b = m.in_proj_bias
        bq, bk, bv = b[:E], b[E:2 * E], b[2 * E:]
    else:
        bq = bk = bv = None
    if not m.batch_first:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    q, k, v = F.linear(query, Wq, bq), F.linear(key, Wk, bk), F.linear(value, Wv, bv)
    N, L, S = q.shape[0], q.shape[1], k.shape[1]
    q = q.reshape(N, L, H, d).transpose(1, 2)  # (N, H, L, d)
    k = k.reshape(N, S, H, d).transpose(1, 2)
    v = v.reshape(N, S, H, d).transpose(1, 2)
    dropout = m.dropout if m.training else 0.0
    weights = None
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask.to(q.dtype)
    if need_weights:
        scores = torch.matmul(q * (1.0 / math.sqrt(d)), k.transpose(-2, -1))  # (N, H, L, S)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
        attention = F.dropout(F.softmax(scores, dim=-1), p=dropout, training=dropout > 0)
        out = torch.matmul(attention, v)
        weights = attention.mean(dim=1) if average_attn_weights else attention
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout,
                                             is_causal=is_causal and attn_mask is None)
    out = F.linear(out.transpose(1, 2).reshape(N, L, E), m.out_proj.weight, m.out_proj.bias)
    if not m.batch_first:
        out = out.transpose(0, 1)
    return out, weights


def _encoder_layer_forward(m: nn.TransformerEncoderLayer, src, src_mask=None, src_key_padding_mask=None,
                           is_causal=False):
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


_ORIGINAL: dict[str, Any] = {}


@contextlib.contextmanager
def _opened():
    _ORIGINAL["mha"] = nn.MultiheadAttention.forward
    _ORIGINAL["tel"] = nn.TransformerEncoderLayer.forward
    nn.MultiheadAttention.forward = _attention_forward
    nn.TransformerEncoderLayer.forward = _encoder_layer_forward
    try:
        yield
    finally:
        nn.MultiheadAttention.forward = _ORIGINAL["mha"]
        nn.TransformerEncoderLayer.forward = _ORIGINAL["tel"]


# ------------------------------------------------------------------------------------------------------------
# leaves: submodules kept opaque (one custom op per call, run eagerly by the walker)
# ------------------------------------------------------------------------------------------------------------
_LEAF_MODULES: dict[int, nn.Module] = {}
_LEAF_SHAPES: dict[int, list[tuple[tuple[int, ...], torch.dtype]]] = {}


@torch.library.custom_op("symmetry::leaf", mutates_args=())
def _leaf(inputs: list[Tensor], key: int) -> list[Tensor]:
    out = _LEAF_MODULES[key](*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o.clone() for o in outs]


@_leaf.register_fake
def _(inputs, key):
    return [inputs[0].new_empty(shape, dtype=dtype) for shape, dtype in _LEAF_SHAPES[key]]


@contextlib.contextmanager
def _leaves(model: nn.Module, names: Sequence[str], inputs: tuple):
    """Each named submodule called through ``symmetry::leaf`` while recording (its outputs' shapes read from one
    eager run): the walker meets an op it has no rule for and breaks what reaches it by name."""
    if not names:
        yield
        return
    known = dict(model.named_modules())
    for name in names:
        if name not in known or not name:
            close = [k for k in known if k and k.split(".")[-1] == str(name).split(".")[-1]][:3]
            raise ValueError(f"leaves: {name!r} is not a submodule of {type(model).__name__}"
                             + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    records: dict[int, list] = {}
    hooks = []
    for name in names:
        m = known[name]

        def record(mod, args, out, key=id(known[name])):
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if not all(isinstance(o, Tensor) for o in outs) or not all(isinstance(x, Tensor) for x in args):
                raise NotSupportedError(f"leaves: {names} — a leaf must take and return tensors only")
            records[key] = [(tuple(o.shape), o.dtype) for o in outs]
        hooks.append(m.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    saved = {}
    for name in names:
        m = known[name]
        key = id(m)
        _LEAF_MODULES[key], _LEAF_SHAPES[key] = m, records[key]
        single = len(records[key]) == 1

        def forward(*args, key=key, single=single):
            outs = torch.ops.symmetry.leaf(list(args), key)
            return outs[0] if single else tuple(outs)
        saved[name] = m.__dict__.get("forward")
        m.forward = forward
    try:
        yield
    finally:
        for name in names:
            m = known[name]
            if saved[name] is None:
                del m.forward
            else:
                m.forward = saved[name]


# ------------------------------------------------------------------------------------------------------------
# the export
# ------------------------------------------------------------------------------------------------------------
def _failing_module(model: nn.Module, tb) -> tuple[str, str] | None:
    """The innermost submodule of ``model`` whose code is on the traceback: (description, qualified name)."""
    names = {id(m): n for n, m in model.named_modules()}
    found = None
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            found = (f"{names[id(owner)] or 'the model'} ({type(owner).__name__})", names[id(owner)])
        tb = tb.tb_next
    return found


def _runs_eagerly(model: nn.Module, inputs: tuple) -> None:
    """Raise ValueError naming the input when the model itself cannot run on it (its buffers left as they were)."""
    saved = {n: b.clone() for n, b in model.named_buffers()}
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(*inputs)
    except Exception as error:  # noqa: BLE001  the model's own error, reported with its first line
        shapes = [tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__ for x in inputs]
        raise ValueError(f"{type(model).__name__} cannot run on example_input "
                         f"{shapes[0] if len(shapes) == 1 else shapes}: {str(error).splitlines()[0]}; pass one batch "
                         "the model takes") from None
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in saved:
                    b.copy_(saved[n])


def trace(model: nn.Module, example_inputs: tuple, leaves: Sequence[str] = ()) -> fx.GraphModule:
    """The ATen graph of ``model`` called with ``example_inputs`` (``torch.export.export(model, example_inputs,
    strict=False).module()``); submodules named in ``leaves`` stay opaque calls (their parameters uncovered)."""
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    try:
        with _opened(), _leaves(model, tuple(leaves), example_inputs):
            ep = torch.export.export(model, example_inputs, strict=False)
    except (ValueError, NotSupportedError):
        raise
    except Exception as error:  # noqa: BLE001  export raises many kinds from the model's own code
        tb = sys.exc_info()[2]
        _runs_eagerly(model, example_inputs)  # the input itself wrong: said as such
        where = _failing_module(model, tb)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if where is not None and where[1]:
            text, name = where
            hint = (f"keep it opaque: module_symmetries(model, example_input, leaves=[{name!r}]) (its parameters are "
                    "then reported as not covered), or wrap the model so that this code is not called")
        else:
            text = where[0] if where else f"the model's own forward ({type(model).__name__})"
            hint = ("remove data-dependent Python control flow from the forward (torch.export must record one "
                    "graph), or wrap the model in a module whose forward takes and returns tensors")
        raise NotSupportedError(f"cannot record the model's computation with torch.export: {type(error).__name__}: "
                                f"{first} — while recording {text}; {hint}") from None
    return ep.module()
