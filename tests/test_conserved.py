"""Conserved quantities (App. C–G): conserved under gradient flow, drifting under GD as Prop. 13 says."""
import math

import pytest
import torch

import symmetry as S
from symmetry.actions import random_lie_algebra_element
from symmetry.conserved import Q_terms

from conftest import DTYPE, SHAPES, generator, grad_of, randn, two_layer_problem

GF_TOL = 1e-6  # relative change allowed under gradient flow (the bound)


def relative_drift(values: torch.Tensor, scale) -> float:
    """max_t |q(t) − q(0)| / scale."""
    return float((values - values[0]).abs().max() / scale)


def q_scale(params, activation) -> float:
    """|½Tr U₀ᵀU₀| + |ΣA(V₀)|: the normaliser of Q̃ (App. D.2)."""
    u, v = (float(t.sum()) for t in Q_terms(params, activation))
    return abs(u) + abs(v)


@pytest.mark.parametrize("name", S.ACTIVATIONS)
@pytest.mark.parametrize("m,h,n", SHAPES[:3])
def test_eq48_Q_conserved_by_gradient_flow_and_drifts_under_gd(name, m, h, n):
    """Prop. 12 / Eq. 48 for every table entry: GF keeps Q (and each neuron's Q_i); GD at η = 0.1 does not."""
    net = S.TwoLayerNet(name)
    params, X, Y = two_layer_problem(m, h, n, seed=5)
    obs = {"Q": lambda p: S.conserved_Q(p, name), "Q_i": lambda p: S.conserved_Q(p, name, per_neuron=True)}
    scale = q_scale(params, name)
    flow = S.gradient_flow(net, params, X, Y, [0.0, 50.0, 200.0, 400.0], lr=0.1, observables=obs)
    assert flow.loss[-1] < 0.9 * flow.loss[0]  # it trained
    assert relative_drift(flow.observables["Q"], scale) < GF_TOL
    assert relative_drift(flow.observables["Q_i"], scale) < GF_TOL
    descent = S.gradient_descent(net, params, X, Y, 0.1, 400, record_every=400, observables=obs)
    gd_drift = relative_drift(descent.observables["Q"], scale)
    assert gd_drift > 1e-5 and gd_drift > 100 * relative_drift(flow.observables["Q"], scale)


@pytest.mark.parametrize("m,h,n", SHAPES)
def test_prop12_Q_M_for_symmetric_M(m, h, n):
    """Q_M = ⟨θ, M·θ⟩ is conserved for symmetric M ∈ gl_h (linear net, any data); = −⟨UᵀU − VᵀV, M⟩; 0 if M = −Mᵀ."""
    net = S.TwoLayerNet("identity")
    params, X, Y = two_layer_problem(m, h, n, seed=6, k=7)
    A = random_lie_algebra_element("gl", h, generator(7))
    M = A + A.mT

    def Q_M(p):
        return S.conserved_Q_M(p, S.linear_infinitesimal_action(M, p))

    torch.testing.assert_close(Q_M(params), -(S.imbalance_matrix(params) * M).sum())
    assert abs(float(S.conserved_Q_M(params, S.linear_infinitesimal_action(A - A.mT, params)))) < 1e-12
    flow = S.gradient_flow(net, params, X, Y, [0.0, 2.0, 5.0], observables={"Q_M": Q_M, "imbalance": S.imbalance_matrix})
    scale = float(sum((p * p).sum() for p in params)) * float(M.abs().max())
    assert relative_drift(flow.observables["Q_M"], scale) < GF_TOL
    assert relative_drift(flow.observables["imbalance"], scale) < GF_TOL  # Example 7, every entry


def test_example7_layer_imbalances_of_a_deep_linear_net():
    model = S.MLP("identity")
    Ws = tuple(0.6 * randn(w_out, w_in, seed=i) for i, (w_in, w_out) in enumerate([(4, 5), (5, 3), (3, 6), (6, 2)]))
    X, Y = randn(4, 8, seed=10), randn(2, 8, seed=11)
    flow = S.gradient_flow(model, Ws, X, Y, [0.0, 3.0, 6.0], observables={
        f"Q{i}": (lambda p, i=i: S.layer_imbalances(p)[i]) for i in range(3)})
    for i in range(3):
        assert relative_drift(flow.observables[f"Q{i}"], 1.0) < GF_TOL


HOMOGENEOUS = [("relu", 1.0), ("leaky_relu", 1.0), ("repu", 2.0), ("repu", 3.0)]


def homogeneous(name, alpha):
    return S.get_activation(name, **({"power": alpha} if name == "repu" else {}))


def dQ_dt(Q, model, params, X, Y) -> torch.Tensor:
    """d/dt Q(θ(t)) = ⟨∇Q, θ̇⟩ = −⟨∇Q, ∇L⟩ under gradient flow, by autograd (pointwise)."""
    grad_L = grad_of(model, params, X, Y)
    theta = tuple(p.detach().clone().requires_grad_(True) for p in params)
    values = Q(theta).reshape(-1)
    rows = [torch.autograd.grad(q, theta, retain_graph=True) for q in values]
    return torch.stack([-sum((a * b).sum() for a, b in zip(row, grad_L)) for row in rows])


@pytest.mark.parametrize("name,alpha", HOMOGENEOUS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_example9_homogeneous_imbalance_pointwise(name, alpha, seed):
    """d/dt diag[αUᵀU − VᵀV] = 0 at any point and for any data; with the wrong α it is not zero."""
    net = S.TwoLayerNet(homogeneous(name, alpha))
    params, X, Y = two_layer_problem(3, 5, 4, seed=seed, k=6, std=0.6)
    right = dQ_dt(lambda p: S.homogeneous_imbalance(p, alpha), net, params, X, Y)
    wrong = dQ_dt(lambda p: S.homogeneous_imbalance(p, alpha + 1), net, params, X, Y)
    scale = float(wrong.abs().max())
    assert scale > 1e-3
    assert float(right.abs().max()) < 1e-12 * max(1.0, scale)


@pytest.mark.parametrize("name,alpha", HOMOGENEOUS)
def test_example9_homogeneous_imbalance_along_gradient_flow(name, alpha):
    """The same along an integrated GF trajectory. ReLU-type σ use whitened input: on general
    data their GF slides along the kinks (a Filippov system) and adaptive ODE solvers stall."""
    act = homogeneous(name, alpha)
    smooth = name == "repu" and alpha >= 2
    params, X, Y = two_layer_problem(3, 5, 4, seed=8, k=6 if smooth else None, std=0.6)
    obs = {"right": lambda p: S.homogeneous_imbalance(p, alpha), "wrong": lambda p: S.homogeneous_imbalance(p, alpha + 1)}
    flow = S.gradient_flow(S.TwoLayerNet(act), params, X, Y, [0.0, 1.0, 3.0], observables=obs)
    assert relative_drift(flow.observables["right"], 1.0) < GF_TOL
    assert relative_drift(flow.observables["wrong"], 1.0) > 1e-3


@pytest.mark.parametrize("name,alpha", [("relu", 1.0), ("leaky_relu", 1.0), ("repu", 2.0)])
def test_example9_deep_net_neuron_balances(name, alpha):
    """Each hidden neuron j of layer i in a homogeneous MLP: α‖W_{i+1}[:, j]‖² − ‖W_i[j, :]‖² (Eq. 17–18)."""
    model = S.MLP(homogeneous(name, alpha))
    Ws = tuple(0.8 * randn(w_out, w_in, seed=20 + i) for i, (w_in, w_out) in enumerate([(4, 6), (6, 5), (5, 3)]))
    X, Y = randn(4, 9, seed=30), randn(3, 9, seed=31)

    def balances(p, a=alpha):
        return torch.cat([a * (p[i + 1] ** 2).sum(dim=0) - (p[i] ** 2).sum(dim=1) for i in range(len(p) - 1)])

    right = dQ_dt(balances, model, Ws, X, Y)
    wrong = dQ_dt(lambda p: balances(p, alpha + 1), model, Ws, X, Y)
    assert float(wrong.abs().max()) > 1e-3
    assert float(right.abs().max()) < 1e-12 * float(wrong.abs().max())
    if alpha == 1.0:  # α = 1: the diagonal of Example 7's imbalance W_{i+1}ᵀW_{i+1} − W_i W_iᵀ (one sign)
        torch.testing.assert_close(balances(Ws), torch.cat([torch.diagonal(Q) for Q in S.layer_imbalances(Ws)]))


def test_prop15_radial_lambda_conserved():
    """λ_i = ‖u_i‖² + ‖v_i‖² under gradient flow of Prop. 14's radial net, from a generic init."""
    net = S.TwoLayerRadialNet()
    params, X, Y = two_layer_problem(4, 3, 5, seed=9, std=1.0)
    flow = S.gradient_flow(net, params, X, Y, [0.0, 1.0, 3.0], observables={"lambda": S.radial_lambda})
    assert relative_drift(flow.observables["lambda"], float(S.radial_lambda(params).max())) < GF_TOL
    assert flow.loss[-1] < 0.9 * flow.loss[0]


def test_eq30_angular_momentum_vanishes_for_radial_nets():
    """Eq. 29–30: with θ̇ = −∇L, J = A(UᵀU̇ + VᵀV̇) = 0 for the O(h)-symmetric radial net, not for tanh."""
    params, X, Y = two_layer_problem(3, 5, 4, seed=10, k=6)
    radial = S.TwoLayerRadialNet(over="hidden")
    velocity = tuple(-g for g in grad_of(radial, params, X, Y))
    scale = float(sum(p.norm() * v.norm() for p, v in zip(params, velocity)))
    assert float(S.angular_momentum(params, velocity).abs().max()) < 1e-12 * scale
    tanh_velocity = tuple(-g for g in grad_of(S.TwoLayerNet("tanh"), params, X, Y))
    assert float(S.angular_momentum(params, tanh_velocity).abs().max()) > 1e-3 * scale


@pytest.mark.parametrize("m,h,n", SHAPES)
@pytest.mark.parametrize("lr", [0.3, 0.01])
def test_prop13_one_gd_step(m, h, n, lr):
    """Prop. 13 (Eq. 41–42) for Q = Tr[UᵀU − VᵀV]: ΔQ = η²(‖∂L/∂U‖² − ‖∂L/∂V‖²) ≤ η²|dL/dt|."""
    net = S.TwoLayerNet("identity")
    params, X, Y = two_layer_problem(m, h, n, seed=11, k=6)
    loss, (gU, gV) = net.loss_and_grad(params, X, Y)
    step = S.gradient_descent(net, params, X, Y, lr, 1).params
    dQ = torch.trace(S.imbalance_matrix(step)) - torch.trace(S.imbalance_matrix(params))
    predicted = lr ** 2 * ((gU ** 2).sum() - (gV ** 2).sum())
    bound = lr ** 2 * ((gU ** 2).sum() + (gV ** 2).sum())  # η²|dL/dt|, dL/dt = −‖∇L‖² under GF
    round_off = 100 * torch.finfo(DTYPE).eps * float(sum((p * p).sum() for p in params))  # Q is a difference of O(‖θ‖²) terms
    assert round_off < 1e-6 * abs(float(predicted))  # so the check below resolves the η² term
    assert abs(float(dQ - predicted)) < round_off
    assert abs(float(dQ)) <= float(bound)
    # the matrix form of Eq. 41 holds entrywise too
    dQ_matrix = S.imbalance_matrix(step) - S.imbalance_matrix(params)
    torch.testing.assert_close(dQ_matrix, lr ** 2 * (gU.mT @ gU - gV.mT @ gV), rtol=0, atol=round_off)


@pytest.mark.parametrize("name", S.ACTIVATIONS)
def test_eq47_mean_of_Q_under_xavier(name):
    """E[Q] for Xavier init (Eq. 46) within 4 standard errors over 1000 draws, m = h = n = 100 (Fig. 5)."""
    m = h = n = 100
    Q = torch.cat([S.conserved_Q(S.xavier_init(m, h, n, batch=(200,), seed=100 + c, dtype=DTYPE), name)
                   for c in range(5)])
    se = float(Q.std()) / math.sqrt(Q.numel())
    assert abs(float(Q.mean()) - S.expected_Q_xavier(m, h, n, name)) < 4 * se


@pytest.mark.parametrize("m,h,n", [(100, 100, 100), (100, 200, 100), (200, 100, 100)])
def test_eq47_linear_shapes_of_fig4(m, h, n):
    """Linear net: E[Q] = (m − h)/2 with our ½; the paper's m − h is the mean of 2Q = Tr[UᵀU − VᵀV]."""
    Q = torch.cat([S.conserved_Q(S.xavier_init(m, h, n, batch=(100,), seed=c, dtype=DTYPE), "identity")
                   for c in range(10)])
    se = float(Q.std()) / math.sqrt(Q.numel())
    assert S.expected_Q_xavier(m, h, n) == (m - h) / 2
    assert abs(float(Q.mean()) - (m - h) / 2) < 4 * se
    assert abs(float(2 * Q.mean()) - (m - h)) < 8 * se


@pytest.mark.parametrize("u0,v0", [(0.3, 0.2), (1.5, 0.1), (0.1, 2.0), (-0.5, -1.2), (2.0, 1.0)])
def test_eq77_hessian_at_the_end_of_gradient_flow(u0, v0):
    """App. G.1: L = ½(1 − UV)²; GF ends where the Hessian eigenvalues are 0 and √(Q²+4), Q = U² − V².

    Eq. 77 prints 2√(Q²+4): that is the value for L = (1 − UV)², without the ½ (checked too).
    """
    Y = torch.ones(1, 1, dtype=DTYPE)
    params = (torch.tensor([[u0]], dtype=DTYPE), torch.tensor([[v0]], dtype=DTYPE))
    Q = u0 ** 2 - v0 ** 2
    for reduction, factor in (("half_sum", 1.0), ("sum", 2.0)):
        net = S.TwoLayerNet("identity", reduction=reduction)
        end = S.gradient_flow(net, params, None, Y, [0.0, 60.0]).params
        assert abs(float(end[0] * end[1]) - 1) < 1e-9  # on the valley UV = 1
        assert abs(float(end[0] ** 2 - end[1] ** 2) - Q) < 1e-8  # same Q as at the start
        eigs = S.hessian_eigenvalues(net.loss_function(None, Y), end)
        torch.testing.assert_close(eigs, torch.tensor([0.0, factor * math.sqrt(Q ** 2 + 4)], dtype=DTYPE),
                                   rtol=1e-7, atol=1e-7)


def test_prop16_singular_value_gap_bound():
    """Prop. 16: |σ_i^X(t) − σ_i^Y| ≤ |σ_i^X(0) − σ_i^Y| e^{−t/λ_i} along GF from spectral init (Fig. 7's net)."""
    m, h, n = 3, 3, 5
    Y = randn(m, n, seed=12)
    Y = Y / torch.linalg.matrix_norm(Y, ord=2)  # singular values ≤ 1
    net = S.TwoLayerRadialNet(reduction="half_sum")
    params = S.spectral_init(Y, h, mean=1.0, std=0.3, seed=13)
    Phi, sigma_Y, PsiT = torch.linalg.svd(Y)

    def sigma_X(p):  # diag(Φᵀ U g(Vᵀ) Ψ): the signed singular values of Prop. 15
        return torch.diagonal(Phi.mT @ net(p) @ PsiT.mT)[:h]

    times = torch.linspace(0, 12, 61, dtype=DTYPE)
    flow = S.gradient_flow(net, params, None, Y, times, observables={"sigma_X": sigma_X, "lambda": S.radial_lambda})
    lam = S.radial_lambda(params)[:h]
    gap = (flow.observables["sigma_X"] - sigma_Y[:h]).abs()  # (T, h)
    bound = gap[0] * torch.exp(-times[:, None] / lam)
    assert bool((gap <= bound + 1e-9).all())
    assert relative_drift(flow.observables["lambda"], float(lam.max())) < GF_TOL
    # the bound is not loose by an arbitrary factor: a rate (σ²+1)²_max/λ too fast is violated
    worst = float(flow.observables["sigma_X"].abs().max())
    too_fast = gap[0] * torch.exp(-2 * (worst ** 2 + 1) ** 2 * times[:, None] / lam)
    assert bool((gap > too_fast + 1e-9).any())


def test_normalized_Q_in_the_authors_convention():
    """Q̃ with the reference code's terms (Tr UᵀU − Σcosh²V for tanh, ½Tr UᵀU − Σ(V + eⱽ) for sigmoid,
    Tr UᵀU − Tr VᵀV for identity), written out here, equals normalized_Q(convention="authors")."""
    gen = torch.Generator().manual_seed(3)
    init = (0.3 * torch.randn(4, 6, generator=gen, dtype=torch.float64),
            0.3 * torch.randn(5, 6, generator=gen, dtype=torch.float64))
    moved = (init[0] * 1.1, init[1] * 0.9)
    terms = {"tanh": (lambda U: (U * U).sum(), lambda V: torch.cosh(V).pow(2).sum()),
             "sigmoid": (lambda U: 0.5 * (U * U).sum(), lambda V: (V + torch.exp(V)).sum()),
             "identity": (lambda U: (U * U).sum(), lambda V: (V * V).sum())}
    for name, (fu, fv) in terms.items():
        expected = (fu(moved[0]) - fv(moved[1])).abs() / (fu(init[0]).abs() + fv(init[1]).abs())
        got = S.normalized_Q(moved, name, init, convention="authors")
        assert torch.allclose(got, expected, rtol=1e-12), name
        ours = S.normalized_Q(moved, name, init)
        assert name == "identity" or not torch.allclose(ours, expected, rtol=1e-3)  # the constant matters
    with pytest.raises(ValueError, match="convention"):
        S.normalized_Q(moved, "tanh", init, convention="paper")
