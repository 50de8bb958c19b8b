"""The one symmetry protocol (symmetry/groups/): the paper's groups and a module's blocks keep the loss, have an
identity that is the identity, conserve their quantities along gradient flow, and change them by exactly
η²B(∇L, ∇L) in one GD step; what a group does not have is refused by name."""
import pytest
import torch

import symmetry as S
from symmetry.groups import NotSupportedError, Symmetry
from symmetry.groups import paper as P

D = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, g):
    return torch.randn(*shape, generator=g, dtype=D)


def two_layer(activation, seed=0, m=3, n=4, h=6):
    g = gen(seed)
    return S.TwoLayerNet(activation), (randn(m, h, g=g), randn(n, h, g=g)), None, randn(m, n, g=g)


def mlp(activation, seed=0, dims=(5, 6, 7, 4), k=4):
    g = gen(seed)
    W = tuple(0.5 * randn(dims[i + 1], dims[i], g=g) for i in range(len(dims) - 1))
    return S.MLP(activation), W, randn(dims[0], k, g=g), randn(dims[-1], k, g=g)


def radial(over, seed=0):
    g = gen(seed)
    return S.TwoLayerRadialNet(over=over), (randn(3, 5, g=g), randn(4, 5, g=g)), None, randn(3, 4, g=g)


#: (group name, problem, whether quantities exist and are quadratic, i.e. balance is defined)
CASES = {
    "gl/two-layer linear": ("gl", lambda: two_layer("identity"), "quadratic"),
    "gl/MLP linear": ("gl", lambda: mlp("identity"), "quadratic"),
    "scaling/two-layer relu": ("scaling", lambda: two_layer("relu"), "quadratic"),
    "scaling/two-layer repu": ("scaling", lambda: two_layer("repu"), "quadratic"),
    "scaling/MLP leaky_relu": ("scaling", lambda: mlp(S.activations.leaky_relu(0.1)), "quadratic"),
    "nonlinear/two-layer tanh, X = I": ("nonlinear", lambda: two_layer("tanh"), "Eq. 48"),
    "nonlinear/MLP sigmoid": ("nonlinear", lambda: mlp("sigmoid"), None),
    "orthogonal/radial hidden": ("orthogonal", lambda: radial("hidden"), None),
    "neuron_scaling/radial neuron": ("neuron_scaling", lambda: radial("neuron"), "quadratic"),
}


def bound(case):
    name, make, kind = CASES[case]
    model, params, X, Y = make()
    return P.make_group(name).bind(model, params, X), model, params, X, Y, kind


def loss(model, params, X, Y):
    return model.loss(tuple(params), X, Y)


def gradient(model, params, X, Y):
    leaves = tuple(p.detach().requires_grad_(True) for p in params)
    return tuple(torch.autograd.grad(loss(model, leaves, X, Y), leaves))


@pytest.mark.parametrize("case", list(CASES))
def test_a_random_element_keeps_the_loss_and_the_identity_is_the_identity(case):
    group, model, params, X, Y, _ = bound(case)
    assert isinstance(group, Symmetry) and group.keys()[0] == "hidden 1"
    before = float(loss(model, params, X, Y))
    moved = group.act_params(params, group.random_element(0.5, gen(1)))
    assert abs(float(loss(model, moved, X, Y)) - before) <= 1e-10 * before
    assert max(float((a - b).abs().max()) for a, b in zip(moved, params)) > 1e-2  # it moved
    identity = group.act(params, group.exp(group.algebra_zero()))
    assert all(torch.equal(a, b) for a, b in zip(identity, params))
    # the control: drop the compensating factor on one tensor (a perturbed element) and the loss changes
    broken = list(moved)
    broken[0] = params[0]
    assert abs(float(loss(model, broken, X, Y)) - before) > 1e-3 * before


@pytest.mark.parametrize("case", [c for c, (_, _, kind) in CASES.items() if kind])
def test_quantities_are_constant_along_gradient_flow(case):
    """dQ/dt = ⟨∇Q, −∇L⟩ = 0 for every entry of Q, at a random point (the flow's derivative, exactly)."""
    group, model, params, X, Y, _ = bound(case)
    grad = gradient(model, params, X, Y)
    leaves = tuple(p.detach().requires_grad_(True) for p in params)
    for key, Q in group.quantities(leaves).items():
        for q in Q.reshape(-1):
            dq = torch.autograd.grad(q, leaves, retain_graph=True, allow_unused=True)
            rate = sum(float((d * g).sum()) for d, g in zip(dq, grad) if d is not None)
            scale = sum(float(d.norm() * g.norm()) for d, g in zip(dq, grad) if d is not None)
            assert abs(rate) <= 1e-12 * max(scale, 1.0), key


@pytest.mark.parametrize("case", [c for c, (_, _, kind) in CASES.items() if kind == "quadratic"])
def test_one_gd_step_changes_the_quantities_by_eta_squared_balance(case):
    group, model, params, X, Y, _ = bound(case)
    eta = 0.05
    grad = gradient(model, params, X, Y)
    stepped = tuple(p - eta * d for p, d in zip(params, grad))
    before, after = group.quantities(params), group.quantities(stepped)
    B = group.balance(grad)
    assert all(torch.equal(v, group.balance(params)[k]) for k, v in before.items())  # B(θ, θ) = Q
    for k in before:
        change = after[k] - before[k]
        assert torch.allclose(change, eta ** 2 * B[k], rtol=1e-9, atol=1e-12 * float(before[k].abs().max()))
        assert float((eta ** 2 * B[k]).abs().max()) > 1e-8  # not trivially zero


def test_the_quantities_are_the_papers():
    """Example 7, Example 9, Eq. 48 and Eq. 65 of symmetry.conserved, through the groups."""
    group, _, params, *_ = bound("gl/two-layer linear")
    assert torch.equal(group.quantities(params)["hidden 1"], S.imbalance_matrix(params))
    group, _, params, *_ = bound("scaling/two-layer repu")
    assert torch.allclose(group.quantities(params)["hidden 1"], S.homogeneous_imbalance(params, 2.0), rtol=1e-14)
    group, _, params, *_ = bound("nonlinear/two-layer tanh, X = I")
    assert torch.equal(group.quantities(params)["hidden 1"], S.conserved_Q(params, "tanh", per_neuron=True))
    group, _, params, *_ = bound("neuron_scaling/radial neuron")
    assert torch.allclose(group.quantities(params)["hidden 1"], S.radial_lambda(params), rtol=1e-14)
    group, _, params, *_ = bound("gl/MLP linear")
    mats = group.quantities(params)
    assert all(torch.allclose(mats[f"hidden {i + 1}"], M, rtol=1e-14)
               for i, M in enumerate(S.layer_imbalances(params)))


def test_what_a_group_does_not_have_is_refused_by_name():
    group, _, params, *_ = bound("orthogonal/radial hidden")
    with pytest.raises(NotSupportedError, match=r"O\(h\).*compact"):
        group.quantities(params)
    group, _, params, *_ = bound("nonlinear/MLP sigmoid")
    with pytest.raises(NotSupportedError, match="Prop. 8.*Eq. 48"):
        group.quantities(params)
    group, _, params, *_ = bound("nonlinear/two-layer tanh, X = I")
    with pytest.raises(NotSupportedError, match="not quadratic"):
        group.balance(params)
    model, params, X, Y = two_layer("relu")
    with pytest.raises(NotSupportedError, match="not a symmetry"):
        P.GeneralLinear().bind(model, params)
    with pytest.raises(NotSupportedError, match="homogeneous"):
        P.PositiveScaling().bind(*two_layer("tanh")[:2])
    with pytest.raises(NotSupportedError, match="tuple models"):
        P.GeneralLinear().bind(torch.nn.Linear(2, 2), params)


def test_bad_input_names_the_argument():
    with pytest.raises(RuntimeError, match="not bound"):
        P.GeneralLinear().algebra_zero()
    group, model, params, X, Y, _ = bound("scaling/two-layer relu")
    with pytest.raises(ValueError, match="element.*positive"):
        group.act_params(params, {"hidden 1": -torch.ones(6, dtype=D)})
    with pytest.raises(ValueError, match="keys"):
        group.exp({"layer": torch.zeros(6, dtype=D)})
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        group.exp({"hidden 1": torch.zeros(5, dtype=D)})
    with pytest.raises(ValueError, match="widths"):
        group.act_params((params[0][:, :4], params[1][:, :4]), group.random_element(0.1))
    with pytest.raises(ValueError, match="scale"):
        group.random_element(-1.0)
    gl, _, lp, *_ = bound("gl/two-layer linear")
    with pytest.raises(ValueError, match="singular"):
        gl.act_params(lp, {"hidden 1": torch.zeros(6, 6, dtype=D)})
    with pytest.raises(ValueError, match="batch"):
        P.NonlinearGL().bind(*mlp("tanh", k=7)[:3])  # 7 samples > hidden width 6


@pytest.mark.parametrize("k", [3, 6, 9])
def test_nonlinear_pi_has_the_papers_form_and_the_identity_form(k):
    """Prop. 8: both forms solve π σ(gZ) = σ(Z) for k ≤ h; at g = I the identity form is I exactly, the paper's
    σ(Z)σ(Z)⁺ a projection of rank min(k, h); for k > h they agree."""
    g = gen(k)
    h, Z = 6, randn(6, k, g=g)
    G = torch.linalg.matrix_exp(0.3 * randn(h, h, g=g))
    paper, ident = (S.nonlinear_pi(G, Z, "tanh", form=f) for f in ("paper", "identity"))
    if k <= h:
        for pi in (paper, ident):
            assert torch.allclose(pi @ torch.tanh(G @ Z), torch.tanh(Z), atol=1e-12)
    else:
        assert torch.allclose(paper, ident, atol=1e-12)
    eye = torch.eye(h, dtype=D)
    assert torch.equal(S.nonlinear_pi(eye, Z, "tanh", form="identity"), eye)
    P0 = S.nonlinear_pi(eye, Z, "tanh", form="paper")
    assert int(torch.linalg.matrix_rank(P0)) == min(k, h) and torch.allclose(P0 @ P0, P0, atol=1e-12)
    with pytest.raises(ValueError, match="form"):
        S.nonlinear_pi(G, Z, "tanh", form="other")


def test_the_identity_form_is_differentiable_in_g():
    g = gen(3)
    Z = randn(4, 3, g=g)
    xi = (0.2 * randn(4, 4, g=g)).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: S.nonlinear_pi(torch.linalg.matrix_exp(x), Z, "tanh", on_rank_deficient="ignore", form="identity"),
        (xi,))


def module_problem(layers):
    torch.manual_seed(3)
    hidden = [torch.nn.ReLU()] if layers == "relu" else []
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), *hidden, torch.nn.Linear(6, 3)).double()
    X, Y = torch.randn(10, 4, dtype=D), torch.randn(10, 3, dtype=D)
    return net, X, Y


@pytest.mark.parametrize("layers", ["relu", "linear"])
def test_a_modules_symmetry_keeps_the_same_promises(layers):
    """The same protocol test on a user's module (ModuleSymmetries, the blocks of symmetry.groups.blocks)."""
    net, X, Y = module_problem(layers)
    sym = S.module_symmetries(net)
    assert isinstance(sym, Symmetry)
    params = {n: p.detach() for n, p in net.named_parameters()}

    def L(p):
        return torch.nn.functional.mse_loss(torch.func.functional_call(net, p, (X,)), Y)

    before = float(L(params))
    moved = sym.act_params(params, sym.random_element(0.5, gen(2), params))
    assert abs(float(L(moved)) - before) <= 1e-10 * before
    identity = sym.act_params(params, sym.exp(sym.algebra_zero()))
    assert all(torch.equal(identity[n], params[n]) for n in params)
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    grads = dict(zip(leaves, torch.autograd.grad(L(leaves), list(leaves.values()))))
    eta = 0.05
    after = sym.quantities({n: params[n] - eta * grads[n] for n in params})
    for k, q in sym.quantities(params).items():
        assert torch.allclose(after[k] - q, eta ** 2 * sym.balance(grads)[k], rtol=1e-9, atol=1e-13)


def test_the_monitor_takes_a_paper_group():
    """ConservationMonitor on a tuple model: its record is the group's Q at each step, and under GD each step adds
    exactly η²B(∇L, ∇L) to it (so the drift is that sum, relative to the magnitudes at the first record)."""
    group, model, params, X, Y, _ = bound("scaling/MLP leaky_relu")
    monitor = S.ConservationMonitor(symmetries=group)
    eta, expected = 0.05, {k: torch.zeros_like(v) for k, v in group.quantities(params).items()}
    for step in range(4):
        monitor.record(step, params)
        grad = gradient(model, params, X, Y)
        for k, b in group.balance(grad).items():
            expected[k] = expected[k] + eta ** 2 * b
        params = tuple(p - eta * d for p, d in zip(params, grad))
    monitor.record(4, params)
    stacked, first = monitor.stacked(), monitor.reference_magnitudes
    for k, Q in stacked.items():
        assert torch.allclose(Q[-1] - Q[0], expected[k], rtol=1e-9, atol=1e-14)
        assert torch.allclose(monitor.drift(None)[k][-1], expected[k].abs() / first[k], rtol=1e-9)
    assert "positive scaling" in monitor.to_json()["groups"]
    with pytest.raises(ValueError, match="params"):
        monitor.record(5)
    with pytest.raises(TypeError, match="symmetries"):
        S.ConservationMonitor(symmetries=object())
    with pytest.raises(ValueError, match="model=None"):
        S.ConservationMonitor()


def test_every_not_supported_case_is_one_exception_type():
    """NotSupportedError (a TypeError and a ValueError) for what the library does not treat, wherever it is."""
    sine = S.activations.Activation("sine", torch.sin, torch.cos, None)
    _, params, _, _ = two_layer("identity")
    with pytest.raises(NotSupportedError, match="Eq. 48"):
        S.conserved_Q(params, sine)
    with pytest.raises(NotSupportedError, match="E\\[A\\(x\\)\\]"):
        S.expected_Q_xavier(3, 6, 4, sine)
    net, X, Y = module_problem("relu")
    with pytest.raises(NotSupportedError, match="module_symmetries"):
        S.teleport_to(net, None, (X, Y), "scaling", loss_fn=torch.nn.functional.mse_loss)
    assert issubclass(NotSupportedError, TypeError) and issubclass(NotSupportedError, ValueError)
