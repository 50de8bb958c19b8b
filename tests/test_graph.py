"""The symmetries read off a traced graph (symmetry/graph.py through module_symmetries), block by block.

Oracles independent of the walker: the output itself (a random element keeps it; leaving one parameter out of
the action breaks it), gradient flow integrated by the engine's ODE solver (each quantity constant), one GD
step (quadratic quantities move by exactly η²B(∇L, ∇L), translation laws not at all), the quantities written by
hand from the papers (attention biases: Marcotte et al. 2025 §3.4; MoE gates: Tran et al. Thms 4.5, 4.7;
RoPE pairs: Tran et al. Thm 4.4) with their non-conserved controls, and the
drift ratio between lr and lr/10 at equal time (≈ 10 for a law: O(η) per unit time; ≈ 1 for a non-law).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symmetry as S
from symmetry import dynamics as D
from symmetry.groups.blocks import LinearBlock, RotationBlock, ScalingBlock, TranslationBlock
from symmetry.nets import GPT, CausalSelfAttention, GPTBlock, SwiGLU, ViT

Tensor = torch.Tensor
DT = torch.float64
TINY = 1e-300  # normalization ε for the exact checks: the scale symmetries are exact only at ε = 0


def tiny_eps(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "eps") and isinstance(m.eps, float):
            m.eps = TINY
    return model


# ----------------------------------------------------------------------------------------------- test models
class Skip(nn.Sequential):
    """A residual Sequential subclass: x + f(x) (the issue's wrong answer 1)."""

    def forward(self, x):
        return x + super().forward(x)


class InnerSkip(nn.Sequential):
    """relu(l0 x) = h, then l3(h + relu(l2 h)): the skip straddles layer 2's units and layer 0's."""

    def forward(self, x):
        h = self[1](self[0](x))
        return self[4](h + self[3](self[2](h)))


class MHA(nn.Module):
    def __init__(self, d=6, heads=2, bias=True):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, bias=bias, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class MoE(nn.Module):
    """A dense mixture of ReLU experts, gate softmax(Wx) or the normalized sigmoid σ(Wx)/Σσ (Tran et al. Thms 4.5, 4.7)."""

    def __init__(self, d=3, experts=2, hidden=4, gate="softmax", act=F.relu):
        super().__init__()
        self.kind, self.act = gate, act
        self.gate = nn.Linear(d, experts, bias=False)
        self.up = nn.ModuleList([nn.Linear(d, hidden, bias=False) for _ in range(experts)])
        self.down = nn.ModuleList([nn.Linear(hidden, d, bias=False) for _ in range(experts)])

    def forward(self, x):
        logits = self.gate(x)
        if self.kind == "softmax":
            g = logits.softmax(-1)
        else:
            s = torch.sigmoid(logits)
            g = s / s.sum(-1, keepdim=True)
        out = 0
        for i, (up, down) in enumerate(zip(self.up, self.down)):
            out = out + g[..., i:i + 1] * down(self.act(up(x)))
        return out


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def zoo():
    """(id, factory → (model, input, loss)) for every family of blocks; float64, ε tiny."""
    g = _gen(1)

    def rn(*shape):
        return torch.randn(*shape, generator=g, dtype=DT)

    return [
        ("mlp_relu_leaky", lambda: (nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.LeakyReLU(0.1),
                                                   nn.Linear(4, 2)), rn(7, 3), None)),
        ("linear_gl", lambda: (nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4, bias=False), nn.Linear(4, 2)),
                               rn(7, 3), None)),
        ("cnn_pool", lambda: (nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                            nn.Linear(4, 3)), rn(3, 2, 6, 6), None)),
        ("grouped_conv1d", lambda: (nn.Sequential(nn.Conv1d(4, 6, 3, groups=2), nn.ReLU(),
                                                  nn.Conv1d(6, 4, 1, groups=2), nn.Flatten(), nn.Linear(20, 2)),
                                    rn(3, 4, 7), None)),
        ("batchnorm", lambda: (nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                             nn.Linear(64, 2)), rn(5, 2, 6, 6), None)),
        ("layernorm", lambda: (nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2)),
                               rn(7, 3), None)),
        ("softmax_head", lambda: (nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4)), rn(8, 3),
                                  "cross_entropy")),
        ("mha_bias", lambda: (MHA(), rn(2, 4, 6), None)),
        ("attention_rope", lambda: (CausalSelfAttention(8, 2), rn(2, 5, 8), None)),
        ("swiglu", lambda: (SwiGLU(4, 6), rn(2, 3, 4), None)),
        ("moe_softmax", lambda: (MoE(), rn(6, 3), None)),
        ("gpt_block", lambda: (GPTBlock(8, 2, 12), rn(2, 5, 8), None)),
        ("gpt_ce", lambda: (GPT(7, dim=8, heads=2, hidden=12, layers=1),
                            torch.randint(0, 7, (2, 5), generator=g), "cross_entropy")),
        ("vit_ce", lambda: (ViT(image_size=8, patch=4, classes=3, dim=8, heads=2, hidden=12, layers=1),
                            torch.randn(3, 3, 8, 8, generator=_gen(21), dtype=DT), "cross_entropy")),  # not g: the others keep their inputs
        ("skip_outer", lambda: (Skip(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.Linear(5, 4)), rn(7, 4), None)),
    ]


ZOO = zoo()
IDS = [z[0] for z in ZOO]


def build(factory):
    torch.manual_seed(0)
    model, x, loss = factory()
    model = tiny_eps(model.to(DT))
    with torch.no_grad():  # zero biases and unit γ would make some of the controls below hold by accident
        for p in model.parameters():
            if p.ndim == 1 and (p.numel() == 1 or float(p.std()) == 0):
                p.add_(0.3 * torch.randn(p.shape, generator=_gen(13), dtype=p.dtype))
    return model, x, loss


def out_of(model, params, x, loss):
    out = torch.func.functional_call(model, params, (x,))
    return F.log_softmax(out, -1) if loss == "cross_entropy" else out


def target(model, x, loss):
    with torch.no_grad():
        out = model(x)
    g = _gen(2)
    if loss == "cross_entropy":
        return torch.randint(0, out.shape[-1], out.shape[:-1], generator=g)
    return torch.randn(out.shape, generator=g, dtype=DT)


def loss_fn(loss):
    if loss == "cross_entropy":
        return lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.mse_loss


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def only(sym, name: str, element: dict) -> dict:
    out = sym.identity()
    out[name] = element[name]
    return out


# ------------------------------------------------------------------------------ per block: invariance + control
@pytest.mark.parametrize("name,factory", ZOO, ids=IDS)
def test_each_block_keeps_the_output_and_breaks_with_a_parameter_left_out(name, factory):
    model, x, loss = build(factory)
    sym = S.module_symmetries(model, x, loss)
    assert sym.blocks, name
    params = {k: v.detach() for k, v in model.named_parameters()}
    with torch.no_grad():
        ref = out_of(model, params, x, loss)
        element = sym.random_element(0.5, _gen(3), params=params)
        controls = 0
        for b in sym.blocks:
            moved = sym.act_params(params, only(sym, b.name, element))
            assert rel(out_of(model, moved, x, loss), ref) < 1e-10, b.name
            if isinstance(b, TranslationBlock):
                continue  # each leg of a translation is a symmetry alone (softmax and centring see no shift)
            # leaving out a side of the action (its incoming legs, or its outgoing ones) breaks it; a block with no
            # outgoing legs (scale invariance before a normalization) has no such control: the ε test is its control
            for sign in (1, -1):
                side = [leg for leg in b.legs if leg.exponent * sign > 0]
                if not side or len(side) == len(b.legs):
                    continue
                partial = dict(moved)
                for leg in side:
                    leg.write(partial, leg.values(params))
                assert rel(out_of(model, partial, x, loss), ref) > 1e-6, (b.name, [leg.param for leg in side])
                controls += 1
        assert controls, f"{name}: no block had a control"


@pytest.mark.parametrize("name,factory", ZOO, ids=IDS)
def test_strided_reads_of_the_legs_equal_the_gather(name, factory):
    """The monitor reads legs through strided views (no copy); the oracle is the plain gather of the index table."""
    model, x, loss = build(factory)
    sym = S.module_symmetries(model, x, loss)
    p = {k: v.detach() for k, v in model.named_parameters()}
    q = {k: torch.randn_like(v) for k, v in p.items()}
    strided = 0
    for b in sym.blocks:
        for leg in b.legs:
            gathered = p[leg.param].reshape(-1)[leg.index]
            assert torch.equal(leg.values(p), gathered)
            assert torch.allclose(leg.row_dot(p, p), (gathered ** 2).sum(1), rtol=1e-14, atol=0)
            assert torch.allclose(leg.row_dot(p, q), (gathered * q[leg.param].reshape(-1)[leg.index]).sum(1),
                                  rtol=1e-12, atol=1e-14)
            strided += leg.__dict__["_plan"] is not None
    assert strided, "no leg was read as a strided view"


def test_a_misread_block_is_refused_by_name(monkeypatch):
    """The check is a guard: a block read wrongly (here: one layer's outgoing exponent flipped) raises, naming it,
    although the product of all blocks is checked first."""
    from symmetry import modules as M
    from symmetry.groups.blocks import Leg

    original = M._blocks_of

    def misread(p):
        blocks = original(p)
        if p.name == "2":
            b = blocks[0]
            b.legs = tuple(Leg(leg.param, leg.index, abs(leg.exponent), leg.units) for leg in b.legs)
        return blocks

    monkeypatch.setattr(M, "_blocks_of", misread)
    model, x, _ = build(ZOO[0][1])
    with pytest.raises(S.SymmetryCheckError, match=r"block '2' \(scaling.*changes the output"):
        S.module_symmetries(model, x)


# ------------------------------------------------------------------------------ gradient flow, the engine's ODE
def flow(model, x, y, loss, T, observables=None, rtol=1e-11):
    engine = D.ModuleModel(model, loss_fn(loss))
    p0 = engine.parameters()
    tr = D.integrate(engine, p0, x, y, [0.0, T], "gf", rtol=rtol, atol=1e-13, observables=observables)
    return engine.names, p0, tr.params, tr


# ReLU and max-pool kinks: the flow of these two reaches a kink it slides along (the solver stalls) soon after
FLOW_TIME = {"cnn_pool": 0.01, "batchnorm": 0.003}


@pytest.mark.parametrize("name,factory", ZOO, ids=IDS)
def test_each_quantity_is_constant_along_gradient_flow(name, factory):
    model, x, loss = build(factory)
    sym = S.module_symmetries(model, x, loss)
    y = target(model, x, loss)
    names, p0, p1, tr = flow(model, x, y, loss, FLOW_TIME.get(name, 0.05))
    start, end = dict(zip(names, p0)), dict(zip(names, p1))
    assert max(float((a - b).abs().max()) for a, b in zip(p0, p1)) > 1e-4, "the flow did not move"
    assert float(tr.loss[-1]) < float(tr.loss[0])
    q0, q1, scale = sym.quantities(start), sym.quantities(end), sym.magnitudes(start)
    for k in q0:
        assert float((q1[k] - q0[k]).abs().max() / scale[k].max()) < 1e-8, k


# ------------------------------------------------------------------------------ one GD step: exactly η²B(∇L, ∇L)
def grad(model, params, x, y, loss):
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    value = loss_fn(loss)(torch.func.functional_call(model, p, (x,)), y)
    return dict(zip(p, torch.autograd.grad(value, list(p.values()))))


@pytest.mark.parametrize("name,factory", ZOO, ids=IDS)
def test_one_gd_step_moves_quadratic_laws_by_eta_squared_B_and_translations_not_at_all(name, factory):
    model, x, loss = build(factory)
    sym = S.module_symmetries(model, x, loss)
    y = target(model, x, loss)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    eta = 0.1
    g = grad(model, params, x, y, loss)
    stepped = {k: params[k] - eta * g[k] for k in params}
    q0, q1, scale, B = sym.quantities(params), sym.quantities(stepped), sym.magnitudes(params), sym.balance(g)
    for b in sym.blocks:
        change, s = q1[b.name] - q0[b.name], float(scale[b.name].max())
        if isinstance(b, (TranslationBlock, RotationBlock)):  # linear laws, or RoPE's identically-0 quantities
            assert float(change.abs().max()) < 1e-13 * s, b.name
        else:
            assert float(change.abs().max()) > 1e-10 * s, b.name  # a change to predict
            assert float((change - eta ** 2 * B[b.name]).abs().max()) < 1e-12 * s, b.name


# ------------------------------------------------------------------------------ the three wrong answers
def drift_at_equal_time(model, x, y, quantity, magnitude, lr, steps):
    """max_k |h(θ_k) − h(θ_0)| / magnitude(θ_0) over ``steps`` GD steps at ``lr`` (MSE, full batch)."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    h0, m0, worst = quantity(params), magnitude(params), 0.0
    for _ in range(steps):
        g = grad(model, params, x, y, None)
        params = {k: params[k] - lr * g[k] for k in params}
        worst = max(worst, float((quantity(params) - h0).abs().max() / m0))
    return worst


def ratio_lr_over_lr10(model, x, quantity, magnitude, lr=0.05, steps=40):
    y = target(model, x, None)
    big = drift_at_equal_time(model, x, y, quantity, magnitude, lr, steps)
    small = drift_at_equal_time(model, x, y, quantity, magnitude, lr / 10, 10 * steps)
    return big / small, big


def library_quantity(sym):
    def q(p):
        return torch.cat([v.reshape(-1) for v in sym.quantities(p).values()])

    def m(p):
        return float(max(float(v.max()) for v in sym.magnitudes(p).values()))

    return q, m


def neuron_balance(w_in: str, w_out: str, b_in: str | None = None, columns=None):
    """Per hidden unit ‖incoming row (and bias)‖² − ‖outgoing columns‖² (``columns[u]``: unit u's columns)."""

    def q(p):
        inner = (p[w_in] ** 2).sum(1) + ((p[b_in] ** 2) if b_in else 0)
        W = p[w_out]
        outer = (W ** 2).sum(0) if columns is None else torch.stack([(W[:, c] ** 2).sum() for c in columns])
        return inner - outer

    def m(p):
        return float(((p[w_in] ** 2).sum() + (p[w_out] ** 2).sum()))

    return q, m


def test_wrong_answer_1_a_residual_sequential_subclass():
    torch.manual_seed(0)
    g = _gen(4)
    x = torch.randn(20, 4, generator=g, dtype=DT)
    outer = Skip(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.Linear(5, 4)).to(DT)
    sym = S.module_symmetries(outer, x)
    # the skip is outside the chain: the hidden ReLU layer's rescaling and the GL between layers 2 and 3 hold
    assert sorted(type(b).__name__ for b in sym.blocks) == ["LinearBlock", "ScalingBlock"], sym.describe()
    ratio, big = ratio_lr_over_lr10(outer, x, *library_quantity(sym))
    assert big > 1e-6 and 5 < ratio < 20, (ratio, big)
    # a skip that straddles layers 0 and 2: the chain reading's laws are not laws, and none is reported
    torch.manual_seed(0)
    inner = InnerSkip(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)).to(DT)
    sym = S.module_symmetries(inner, x)
    covered = {p for b in sym.blocks for p in b.parameters()}
    assert not covered & {"0.weight", "2.weight"}, sym.describe()
    assert "skip" in " ".join(sym.coverage["0.weight"] + sym.coverage["2.weight"])
    for w_in, b_in, w_out in [("0.weight", "0.bias", "2.weight"), ("2.weight", "2.bias", "4.weight")]:
        ratio, big = ratio_lr_over_lr10(inner, x, *neuron_balance(w_in, w_out, b_in))
        assert big > 1e-4 and ratio < 2, (w_in, ratio, big)  # a chain reading's "law" drifts at any lr


def test_wrong_answer_2_a_width_keeping_pool_after_a_linear_pools_across_neurons():
    torch.manual_seed(0)
    x = torch.randn(20, 4, generator=_gen(5), dtype=DT)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.MaxPool1d(3, stride=1, padding=1), nn.Linear(8, 2)).to(DT)
    sym = S.module_symmetries(model, x)
    # max over neighbouring neurons commutes with one common scale only: at most one class for layer 0
    for b in sym.blocks:
        if "0.weight" in b.parameters():
            assert isinstance(b, ScalingBlock) and b.n_classes == 1, sym.describe()
    if sym.blocks:
        ratio, big = ratio_lr_over_lr10(model, x, *library_quantity(sym))
        assert big > 1e-6 and 5 < ratio < 20, (ratio, big)
    # the per-neuron reading (scaling(8)) is not conserved
    ratio, big = ratio_lr_over_lr10(model, x, *neuron_balance("0.weight", "3.weight", "0.bias"))
    assert big > 1e-4 and ratio < 2, (ratio, big)


def test_wrong_answer_3_a_linear_on_tokens_then_flatten_has_strided_outgoing_columns():
    torch.manual_seed(0)
    T, F_in, F_out = 5, 3, 4
    x = torch.randn(20, T, F_in, generator=_gen(6), dtype=DT)
    model = nn.Sequential(nn.Linear(F_in, F_out), nn.ReLU(), nn.Flatten(), nn.Linear(T * F_out, 2)).to(DT)
    sym = S.module_symmetries(model, x)
    strided = [[t * F_out + f for t in range(T)] for f in range(F_out)]
    by_hand, mag = neuron_balance("0.weight", "3.weight", "0.bias", strided)
    (block,) = [b for b in sym.blocks if "0.weight" in b.parameters()]
    p = dict(model.named_parameters())
    with torch.no_grad():
        assert torch.allclose(sym.quantities(p)[block.name], -by_hand(p), rtol=0, atol=1e-12)  # outer − inner
    ratio, big = ratio_lr_over_lr10(model, x, by_hand, mag)
    assert big > 1e-6 and 5 < ratio < 20, (ratio, big)
    contiguous = [list(range(f * T, (f + 1) * T)) for f in range(F_out)]  # what a layer-list reading takes
    ratio, big = ratio_lr_over_lr10(model, x, *neuron_balance("0.weight", "3.weight", "0.bias", contiguous))
    assert big > 1e-4 and ratio < 2, (ratio, big)


# ------------------------------------------------------------------------------ the papers' controls: not conserved
def flow_drift(model, x, loss, quantities: dict, T=0.3):
    """Relative change of each hand-written quantity over gradient flow to time T."""
    y = target(model, x, loss)
    names, p0, p1, _ = flow(model, x, y, loss, T)
    a, b = dict(zip(names, p0)), dict(zip(names, p1))
    out = {}
    for k, (q, m) in quantities.items():
        out[k] = float((q(b) - q(a)).abs().max() / m(a))
    return out


def test_attention_biases_the_augmented_qk_law_holds_the_plain_one_drifts():
    """Attention with biases (Marcotte et al. 2025 §3.4, derived here): the law is M_q M_qᵀ − M_k M_kᵀ with M = [W_h | b_h]; W_qW_qᵀ − W_kW_kᵀ drifts."""
    torch.manual_seed(0)
    d, H = 6, 2
    h = d // H
    model = MHA(d, H).to(DT)
    with torch.no_grad():  # torch starts the biases at zero, where the two laws agree
        model.attn.in_proj_bias.normal_(0, 0.5, generator=_gen(14))
    x = torch.randn(3, 5, d, generator=_gen(7), dtype=DT)
    sym = S.module_symmetries(model, x)
    assert any("attn.in_proj_bias" in b.parameters() and isinstance(b, LinearBlock) for b in sym.blocks)

    def qk(head, augmented):
        rows = slice(head * h, (head + 1) * h)

        def q(p):
            W, b = p["attn.in_proj_weight"], p["attn.in_proj_bias"]
            Mq, Mk = W[:d][rows], W[d:2 * d][rows]
            if augmented:
                Mq, Mk = torch.cat([Mq, b[:d][rows, None]], 1), torch.cat([Mk, b[d:2 * d][rows, None]], 1)
            return Mq @ Mq.T - Mk @ Mk.T

        def m(p):
            return float((p["attn.in_proj_weight"][:2 * d] ** 2).sum())

        return q, m

    drift = flow_drift(model, x, None, {f"{kind}{hd}": qk(hd, kind == "aug") for hd in range(H)
                                        for kind in ("aug", "plain")})
    for hd in range(H):
        assert drift[f"aug{hd}"] < 1e-8, drift
        assert drift[f"plain{hd}"] > 1e-5, drift


def test_rope_the_rotated_pair_law_holds_a_mixed_pair_drifts():
    """RoPE (Tran et al. Thm 4.4): per head and rotated pair (i, i + d_h/2), ‖Q^(j)‖² − ‖K^(j)‖² is conserved; pairs (i, i + 1) drift."""
    torch.manual_seed(0)
    d, H = 8, 2
    h = d // H
    model = CausalSelfAttention(d, H).to(DT)
    x = torch.randn(2, 6, d, generator=_gen(8), dtype=DT)

    def pair(rows):
        def q(p):
            return (p["q.weight"][rows] ** 2).sum() - (p["k.weight"][rows] ** 2).sum()

        def m(p):
            return float((p["q.weight"] ** 2).sum() + (p["k.weight"] ** 2).sum())

        return q, m

    rotated = {f"rot{hd}.{i}": pair([hd * h + i, hd * h + i + h // 2]) for hd in range(H) for i in range(h // 2)}
    mixed = {f"mix{hd}": pair([hd * h, hd * h + 1]) for hd in range(H)}
    drift = flow_drift(model, x, None, {**rotated, **mixed})
    assert max(drift[k] for k in rotated) < 1e-8, drift
    assert min(drift[k] for k in mixed) > 1e-5, drift
    sym = S.module_symmetries(model, x)
    (qk,) = [b for b in sym.blocks if "q.weight" in b.parameters() and not isinstance(b, RotationBlock)]
    assert isinstance(qk, ScalingBlock) and qk.n_classes == H * h // 2  # one scale per rotated pair
    # and one rotation per pair: in the group's dimension, no law (its quantity is identically 0)
    (rotation,) = [b for b in sym.blocks if isinstance(b, RotationBlock)]
    assert rotation.element_shape() == (H * h // 2,) and rotation.laws() == 0
    params = {k: v.detach() for k, v in model.named_parameters()}
    assert float(rotation.quantity(params).abs().max()) < 1e-12
    turned = only(sym, rotation.name, {rotation.name: torch.full((H * h // 2,), 0.7, dtype=DT)})
    assert rel(torch.func.functional_call(model, sym.act_params(params, turned), (x,)), model(x)) < 1e-12
    assert sym.dimension() == sum(b.element_shape()[0] if b.kind != "GL" else b.units ** 2 for b in sym.blocks)


def test_moe_the_softmax_gate_sum_holds_the_normalized_sigmoid_one_drifts():
    """A softmax MoE gate (Tran et al. Thm 4.5): Σ_i W_i (per input coordinate) is a law; not of σ(W_i x)/Σσ (the
    law Tran et al. Thm 4.7 states for the normalized-sigmoid gate drifts here)."""
    x = torch.randn(8, 3, generator=_gen(9), dtype=DT)

    def gate_sum(p):
        return p["gate.weight"].sum(0)

    def gate_mag(p):
        return float(p["gate.weight"].abs().sum())

    drifts = {}
    for kind in ("softmax", "sigmoid"):
        torch.manual_seed(0)
        model = MoE(gate=kind, act=lambda h: h).to(DT)  # linear experts: a smooth flow (a derived case of Thm 4.5)
        drifts[kind] = flow_drift(model, x, None, {"sum": (gate_sum, gate_mag)})["sum"]
        sym = S.module_symmetries(model, x)
        has_gate_law = any(isinstance(b, TranslationBlock) and "gate.weight" in b.parameters() for b in sym.blocks)
        assert has_gate_law == (kind == "softmax"), sym.describe()
    assert drifts["softmax"] < 1e-8 and drifts["sigmoid"] > 1e-4, drifts


# ------------------------------------------------------------------------------ normalization's ε
def test_batchnorm_scale_law_drift_shrinks_with_eps_and_is_exact_at_1e_12():
    """‖conv filter c‖² (with its bias) before BatchNorm is conserved at ε = 0 (degree 0, Kunin et al.); at ε > 0
    d/dt‖W_c‖² = O(ε/σ²)."""
    x = torch.randn(6, 2, 5, 5, generator=_gen(10), dtype=DT)
    drift = {}
    for eps in (1e-2, 1e-4, 1e-6, 1e-12):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, eps=eps), nn.Flatten(), nn.Linear(27, 2)).to(DT)
        sym = S.module_symmetries(model, x, approximate=True)  # kept although inexact at the model's ε
        left_out = S.module_symmetries(model, x)  # by default: reported with its error, not returned
        assert (eps >= 1e-6) == ("exact only at normalization's ε = 0" in left_out.coverage["0.weight"][0]), eps
        (b,) = [b for b in sym.blocks if "0.weight" in b.parameters() and isinstance(b, ScalingBlock)
                and "1.weight" not in b.parameters()]
        assert "APPROXIMATE: exact at ε = 0" in sym.describe()

        def q(p, name=b.name, sym=sym):
            return sym.quantities(p)[name]

        def m(p, name=b.name, sym=sym):
            return float(sym.magnitudes(p)[name].max())

        drift[eps] = flow_drift(model, x, None, {"bn": (q, m)}, T=0.5)["bn"]
    values = [drift[e] for e in (1e-2, 1e-4, 1e-6)]
    assert values[0] > 10 * values[1] > 100 * values[2], drift
    assert drift[1e-12] < 1e-8, drift


# ------------------------------------------------------------------------------ the two models the README shows
def test_gpt_style_model_every_parameter_accounted_for():
    torch.manual_seed(0)
    model = tiny_eps(GPT(11, dim=8, heads=2, hidden=12, layers=2).to(DT))
    tokens = torch.randint(0, 11, (2, 6), generator=_gen(11))
    sym = S.module_symmetries(model, tokens, "cross_entropy")
    names = [n for n, _ in model.named_parameters()]
    assert set(sym.coverage) == set(names)
    text = sym.describe()
    for n in names:
        assert f"    {n}: " in text
    assert sym.coverage["embed.weight"][0].startswith("none") and "residual" in sym.coverage["embed.weight"][0]
    kinds = {b.name: b for b in sym.blocks}
    for layer in range(2):
        assert isinstance(kinds[f"blocks.{layer}.attn.v[0]"], LinearBlock)
        assert isinstance(kinds[f"blocks.{layer}.mlp.up"], ScalingBlock)
    assert isinstance(kinds["head:translation"], TranslationBlock)


@pytest.mark.slow  # a full-size resnet18 traced and run along the flow: pytest -m slow
def test_resnet18_described_and_its_laws_conserved_along_the_flow():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tiny_eps(torchvision.models.resnet18(num_classes=3).to(DT))
    x = torch.randn(4, 3, 32, 32, generator=_gen(12), dtype=DT)  # smaller: BatchNorm at 1×1 over 2 samples is ±1
    y = torch.tensor([0, 2, 1, 1])
    sym = S.module_symmetries(model, x, "cross_entropy")
    names = [n for n, _ in model.named_parameters()]
    assert set(sym.coverage) == set(names)
    assert any(isinstance(b, TranslationBlock) and "fc.weight" in b.parameters() for b in sym.blocks)
    convs = [n for n in names if "conv" in n or "downsample.0" in n]
    assert len(convs) == 20 and all(sym.coverage[n][0] != "none" for n in convs)  # BatchNorm's scale law, each
    # per residual block, bn1's (γ, β) rescale with conv2's input channels; bn2 and the stem's bn1 feed a skip
    assert sorted(b.name for b in sym.blocks if "(affine)" in b.name) == sorted(
        f"layer{i}.{j}.bn1 (affine)" for i in range(1, 5) for j in range(2))
    assert any("residual" in c for n in names for c in sym.coverage[n])
    # Gradient flow through 8 residual blocks of ReLUs crosses kinks at every step: the adaptive solver crawls
    # (t = 0.05 not reached in 15 min here), and the flow starts with a stiff transient (‖∇L‖ falls from ~300 to
    # ~10 by t = 1e-3), so a drift ratio between step sizes is not yet O(η) at any step we can afford. What
    # conservation under gradient flow means is dQ/dt = −2B(θ, ∇L) = 0 along the path: checked at every point of a
    # short GD path, with each step's change of Q equal to η²B(∇L, ∇L) (exactly, no first-order term).
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    eta = 1e-4
    for _ in range(3):
        g = grad(model, params, x, y, "cross_entropy")
        stepped = {k: params[k] - eta * g[k] for k in params}
        q0, q1, scale = sym.quantities(params), sym.quantities(stepped), sym.magnitudes(params)
        rate, second = sym.balance(params, g), sym.balance(g)
        for k in q0:
            s = float(scale[k].max())
            first = rate[k] + rate[k].mT if rate[k].ndim == 2 else rate[k]  # Q' − Q sees B's symmetric part
            gsize = math.sqrt(s * sum(float((g[leg.param] ** 2).sum()) for leg in sym.block(k).legs))
            assert float(first.abs().max()) < 1e-12 * max(gsize, 1e-300), k
            assert float((q1[k] - q0[k] - eta ** 2 * second[k]).abs().max()) < 1e-12 * s, k
        params = stepped
    assert float(sum((g[k] ** 2).sum() for k in g)) > 1.0  # the path is not at a critical point


# ------------------------------------------------------------------------------ property: random graphs
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from symmetry import laws as L  # noqa: E402

ACTIVATIONS = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.2), "identity": nn.Identity, "tanh": nn.Tanh,
               "gelu": nn.GELU}


class Residual(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


@st.composite
def random_graphs(draw):
    """A model from the supported pieces: Linear (bias or not), the activations above, LayerNorm, a residual
    Linear–ReLU–Linear block, on (N, F) or (N, T, F) input, ending in Flatten + Linear for 3-D input."""
    tokens = draw(st.booleans())
    width = draw(st.integers(2, 4))
    first = width
    layers: list[nn.Module] = []
    chain = True  # Linear and ReLU/LeakyReLU/Identity only: the chain oracle applies
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["linear", "linear", "act", "norm", "residual"]))
        if kind == "linear":
            out = draw(st.integers(2, 5))
            layers.append(nn.Linear(width, out, bias=draw(st.booleans())))
            width = out
        elif kind == "act":
            act = draw(st.sampled_from(sorted(ACTIVATIONS)))
            chain &= act in ("relu", "leaky", "identity")
            layers.append(ACTIVATIONS[act]())
        elif kind == "norm":
            layers.append(nn.LayerNorm(width, eps=TINY))
            chain = False
        else:
            hidden = draw(st.integers(2, 4))
            layers.append(Residual(nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, width))))
            chain = False
    T = draw(st.integers(2, 3)) if tokens else None
    if tokens:
        layers += [nn.Flatten(), nn.Linear(T * width, 2)]
        chain = False
    else:
        layers.append(nn.Linear(width, 2))
    seed = draw(st.integers(0, 2 ** 16))
    return layers, first, T, chain, seed


@pytest.mark.slow  # 120 random graphs, each traced, checked and stepped: pytest -m slow
@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_random_graphs_blocks_keep_the_output_and_obey_the_step_identity(case):
    layers, first, T, chain, seed = case
    torch.manual_seed(seed)
    model = nn.Sequential(*layers).to(DT)
    g = _gen(seed)
    x = torch.randn(*((6, T, first) if T else (6, first)), generator=g, dtype=DT)
    sym = S.module_symmetries(model, x)  # its own check passed
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert set(sym.coverage) == set(params)
    with torch.no_grad():
        ref = model(x)
        element = sym.random_element(0.4, _gen(seed + 1), params=params)
        assert rel(torch.func.functional_call(model, sym.act_params(params, element), (x,)), ref) < 1e-9
    y = torch.randn(ref.shape, generator=g, dtype=DT)
    grads = grad(model, params, x, y, None)
    eta = 0.05
    stepped = {k: params[k] - eta * grads[k] for k in params}
    q0, q1, scale, B = sym.quantities(params), sym.quantities(stepped), sym.magnitudes(params), sym.balance(grads)
    for k in q0:
        assert float((q1[k] - q0[k] - eta ** 2 * B[k]).abs().max()) < 1e-11 * float(scale[k].max()), k
    if chain:  # the paper's count for a chain: one law per ReLU neuron, n(n+1)/2 per identity layer
        assert sym.law_count() == L._module_chain(model).known_law_rows(), sym.describe()


# ------------------------------------------------------------------------------ are these all the laws? (ALGO 2)
class HandAttention(nn.Module):
    """Causal multi-head attention with matmul and softmax (torch has no forward-mode rule for CPU SDPA, which
    ALGO 2's brackets need), RoPE optional."""

    def __init__(self, d, heads, rope=False):
        super().__init__()
        self.heads, self.rope = heads, rope
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x):
        B, T, D = x.shape
        h = D // self.heads
        q, k, v = (m(x).view(B, T, self.heads, h).transpose(1, 2) for m in (self.q, self.k, self.v))
        if self.rope:
            inv = 10000.0 ** (-torch.arange(0, h, 2, dtype=x.dtype) / h)
            angle = torch.outer(torch.arange(T, dtype=x.dtype), inv)
            angle = torch.cat((angle, angle), -1)

            def rotate(z):
                a, b = z.chunk(2, -1)
                return torch.cat((-b, a), -1)

            q, k = q * angle.cos() + rotate(q) * angle.sin(), k * angle.cos() + rotate(k) * angle.sin()
        scores = q @ k.transpose(-2, -1)
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        return self.o((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D))


class HandLayerNorm(nn.Module):
    """LayerNorm at ε = 0 from means (what a user may write instead of nn.LayerNorm)."""

    def __init__(self, n):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(n)), nn.Parameter(torch.randn(n))

    def forward(self, z):
        z = z - z.mean(-1, keepdim=True)
        return z / z.pow(2).mean(-1, keepdim=True).sqrt() * self.weight + self.bias


def count_cases():
    g = _gen(20)

    def rn(*shape):
        return torch.randn(*shape, generator=g, dtype=DT)

    return [
        ("relu_mlp", lambda: (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), rn(40, 3), None)),
        ("linear_gl", lambda: (nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 2, bias=False)), rn(40, 3), None)),
        ("softmax_head", lambda: (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)), rn(40, 3), "cross_entropy")),
        ("attention_2_heads", lambda: (HandAttention(4, 2), rn(6, 4, 4), None)),
        ("attention_rope", lambda: (HandAttention(4, 1, rope=True), rn(6, 5, 4), None)),
        ("swiglu", lambda: (SwiGLU(3, 3), rn(30, 3), None)),
        ("moe_softmax_gate", lambda: (MoE(d=3, experts=2, hidden=2), rn(40, 3), None)),
        ("conv_channels", lambda: (nn.Sequential(nn.Conv1d(2, 3, 2), nn.ReLU(), nn.Conv1d(3, 1, 2)), rn(40, 2, 5), None)),
        ("layernorm_torch", lambda: (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)), rn(40, 3), None)),
        ("layernorm_by_hand", lambda: (nn.Sequential(nn.Linear(3, 4), HandLayerNorm(4), nn.Linear(4, 2)), rn(40, 3), None)),
    ]


# Where the library's count and ALGO 2's differ, and why (each measured below):
# - layernorm_torch: ALGO 2 finds 5, below the library's 9 laws, which are verified (every field orthogonal to all
#   9 gradients, of rank 9): the brackets through torch's native layer_norm are wrong; through the same
#   normalization by hand ALGO 2 finds 9.
# - layernorm_by_hand: the library finds 5 of the 9: the walker reads the scale invariance and the affine
#   rescaling of a hand-written normalization, not the translation that its explicit mean subtraction absorbs.
DISAGREE = {"layernorm_torch": (9, 5)}


# ALGO 2 on the two LayerNorm nets and RoPE attention (the most brackets) is slow: pytest -m slow
SLOW_COUNTS = {"layernorm_torch", "layernorm_by_hand", "attention_rope"}


@pytest.mark.parametrize("name,factory", [pytest.param(*c, marks=pytest.mark.slow if c[0] in SLOW_COUNTS else (),
                                                       id=c[0]) for c in count_cases()])
def test_law_count_per_block_matches_algo_2(name, factory):
    model, x, loss = build(factory)
    sym = S.module_symmetries(model, x, loss)
    fields = L.output_fields(model, x, loss)
    names = [n for n, _ in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    sizes, shapes = [p.numel() for p in model.parameters()], [p.shape for p in model.parameters()]

    def quantities(t):
        p = {n: a.reshape(s) for n, a, s in zip(names, torch.split(t, sizes), shapes)}
        return torch.cat([v.reshape(-1) for v in sym.quantities(p).values()])

    # the library's quantities are laws (orthogonal to every field) and independent (their gradients' rank)
    J, G = fields.fields(theta), torch.func.jacrev(quantities)(theta)
    assert float((J @ G.T).abs().max()) < 1e-10 * float(J.abs().max() * G.abs().max())
    independent = int(torch.linalg.matrix_rank(G))
    if sym.blocks and any(isinstance(b, LinearBlock) for b in sym.blocks):
        independent = L.independent_count(quantities, theta)
    assert independent == sym.law_count(), name
    algo2 = L.count_conservation_laws(fields)  # at random generic θ (no dead unit)
    assert (sym.law_count(), algo2) == DISAGREE.get(name, (algo2, algo2)), (name, sym.law_count(), algo2)
