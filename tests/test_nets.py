"""symmetry/nets.py's small ViT: its laws read off the graph, written again by hand from the papers, conserved along
gradient flow (the engine's ODE solver), and the papers' non-conserved controls drifting.

Oracles independent of the walker: the per-head Gram differences of Marcotte et al. Cor. 3.10 and the SwiGLU
balance of Tran et al. Thm 4.2, written from the weights; the non-causal attention against softmax(q kᵀ/√d) v by
hand. Controls (Tran et al. App. E, Marcotte et al. Thm 4.7): the ReLU-style balance of the SiLU gate, and the
balance of the patch embedding with the first block across the residual stream.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import symmetry as S
from symmetry import dynamics as D
from symmetry.groups.blocks import LinearBlock, ScalingBlock, TranslationBlock
from symmetry.nets import CausalSelfAttention, ViT

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_vit(layers: int = 2) -> ViT:
    torch.manual_seed(0)
    model = ViT(image_size=8, patch=4, classes=3, dim=8, heads=2, hidden=6, layers=layers).to(DT)
    for m in model.modules():  # the scale symmetries of RMSNorm are exact at ε = 0 only
        if hasattr(m, "eps"):
            m.eps = 1e-300
    with torch.no_grad():  # unit γ would make the γ-based balances hold by accident
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.add_(0.3 * torch.randn(p.shape, generator=_gen(5), dtype=DT))
    return model


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=_gen(1), dtype=DT)


def test_non_causal_attention_is_plain_softmax_attention_and_the_flag_matters():
    torch.manual_seed(0)
    attn = CausalSelfAttention(8, 2, rope=False, causal=False).to(DT)
    x = torch.randn(2, 5, 8, generator=_gen(2), dtype=DT)
    B, T, D_ = x.shape
    q, k, v = (m(x).view(B, T, 2, 4).transpose(1, 2) for m in (attn.q, attn.k, attn.v))
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), -1) @ v  # every token sees every token
    expected = attn.o(by_hand.transpose(1, 2).reshape(B, T, D_))
    assert torch.allclose(attn(x).detach(), expected.detach(), rtol=0, atol=1e-13)
    attn.causal = True
    assert float((attn(x) - expected).detach().abs().max()) > 1e-3  # the mask changes the output: the flag is used


def test_vit_refuses_a_patch_that_does_not_tile_the_image():
    with pytest.raises(ValueError, match="image_size=10 must be a multiple of patch=4"):
        ViT(image_size=10, patch=4)


def test_vit_laws_found_every_parameter_accounted_for():
    model = small_vit()
    sym = S.module_symmetries(model, images(), "cross_entropy")
    names = [n for n, _ in model.named_parameters()]
    assert set(sym.coverage) == set(names)
    kinds = {b.name: b for b in sym.blocks}
    for layer in range(2):
        for head in range(2):  # no RoPE: the full GL(d_h) per head on Q–K and on V–O (Cor. 3.10)
            qk = kinds[f"blocks.{layer}.attn.q–blocks.{layer}.attn.k[{head}]"]
            vo = kinds[f"blocks.{layer}.attn.v[{head}]"]
            assert isinstance(qk, LinearBlock) and isinstance(vo, LinearBlock) and qk.units == vo.units == 4
        assert isinstance(kinds[f"blocks.{layer}.mlp.up"], ScalingBlock)  # SwiGLU (Thm 4.2), not the gate
        assert not any(f"blocks.{layer}.mlp.gate.weight" in b.parameters() and f"blocks.{layer}.mlp.down.weight"
                       in b.parameters() for b in sym.blocks)
    assert isinstance(kinds["head:translation"], TranslationBlock)
    for n in ("patch.weight", "patch.bias", "pos"):  # the residual stream carries no law (Thm 4.7)
        assert sym.coverage[n][0].startswith("none") and "residual" in sym.coverage[n][0], sym.coverage[n]


def _hand_laws(p: dict, layers: int = 2, heads: int = 2, d_h: int = 4) -> dict[str, torch.Tensor]:
    """The laws written from the papers, not from the walker's legs."""
    out = {}
    for layer in range(layers):
        a = f"blocks.{layer}."
        for h in range(heads):
            rows = slice(h * d_h, (h + 1) * d_h)
            Wq, Wk = p[a + "attn.q.weight"][rows], p[a + "attn.k.weight"][rows]
            Wv, Wo = p[a + "attn.v.weight"][rows], p[a + "attn.o.weight"][:, rows]
            out[f"{layer}.qk{h}"] = Wq @ Wq.T - Wk @ Wk.T
            out[f"{layer}.vo{h}"] = Wv @ Wv.T - Wo.T @ Wo
        out[f"{layer}.swiglu"] = (p[a + "mlp.down.weight"] ** 2).sum(0) - (p[a + "mlp.up.weight"] ** 2).sum(1)
    out["head"] = p["head.weight"].sum(0)
    return out


def _controls(p: dict) -> dict[str, torch.Tensor]:
    a = "blocks.0."
    relu_style = (p[a + "mlp.down.weight"] ** 2).sum(0) - (p[a + "mlp.gate.weight"] ** 2).sum(1)  # SiLU layer
    across = sum((p[a + f"attn.{m}.weight"] ** 2).sum(0) for m in "qkv") - (p["patch.weight"] ** 2).flatten(1).sum(1)
    return {"gate (SiLU) balance": relu_style, "across the skip": across}


def test_vit_laws_conserved_along_gradient_flow_and_the_controls_drift():
    model = small_vit()
    x = images()
    y = torch.tensor([0, 2, 1, 1])
    sym = S.module_symmetries(model, x, "cross_entropy")
    engine = D.ModuleModel(model, lambda out, t: F.cross_entropy(out, t))
    p0 = engine.parameters()
    tr = D.integrate(engine, p0, x, y, [0.0, 0.3], "gf", rtol=1e-11, atol=1e-13)
    a, b = dict(zip(engine.names, p0)), dict(zip(engine.names, tr.params))
    assert float(tr.loss[-1]) < float(tr.loss[0]) - 1e-3, "the flow did not move"
    size = max(float(v.abs().max()) for v in a.values()) ** 2
    hand0, hand1 = _hand_laws(a), _hand_laws(b)
    for k in hand0:
        assert float((hand1[k] - hand0[k]).abs().max()) < 1e-9 * size, k
    q0, q1, scale = sym.quantities(a), sym.quantities(b), sym.magnitudes(a)
    for k in q0:
        assert float((q1[k] - q0[k]).abs().max() / scale[k].max()) < 1e-9, k
    c0, c1 = _controls(a), _controls(b)
    for k in c0:
        assert float((c1[k] - c0[k]).abs().max()) > 1e-5 * size, k
