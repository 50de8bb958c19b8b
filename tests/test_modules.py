"""symmetry.modules: symmetries of nn.Modules with biases, checked against the loss itself (invariance),
gradient flow (scipy ODE), one GD step (exact η² identity), the tuple-model quantities, and a plain user loop."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import symmetry as S
from symmetry.conserved import balance_matrix, homogeneous_imbalance, imbalance_matrix

ROOT = Path(__file__).resolve().parents[1]


def mlp(widths, act=nn.ReLU, bias=True):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def cnn_pool(c=4):
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c * 16, 5))


def cnn_deep():
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.LeakyReLU(0.2), nn.Sequential(nn.Conv2d(3, 4, 2, padding=1), nn.ReLU()),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 9, 6), S.Elementwise("repu", power=2), nn.Linear(6, 2))


# (name, model factory, input shape)
MODELS = [
    ("relu-mlp", lambda: mlp((5, 7, 3)), (11, 5)),
    ("relu-mlp-deep", lambda: mlp((4, 6, 5, 2)), (9, 4)),
    ("leaky-mlp", lambda: mlp((6, 8, 4, 3), lambda: nn.LeakyReLU(0.1)), (10, 6)),
    ("identity-mlp", lambda: mlp((4, 5, 3, 2), nn.Identity), (8, 4)),
    ("repu-mlp", lambda: nn.Sequential(nn.Linear(3, 5), S.Elementwise("repu", power=2), nn.Linear(5, 2)), (7, 3)),
    ("cnn-maxpool", cnn_pool, (3, 3, 8, 8)),
    ("cnn-deep", cnn_deep, (2, 2, 8, 8)),
]


def build(factory, seed=0):
    torch.manual_seed(seed)
    return factory().double()


def data(shape, out, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape[0], out, generator=g, dtype=torch.float64)


def out_dim(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def loss_at(model, params, x, y):
    return ((functional_call(model, params, (x,)) - y) ** 2).mean()


@pytest.mark.parametrize("name,factory,shape", MODELS, ids=[m[0] for m in MODELS])
def test_action_leaves_loss_unchanged_and_biases_matter(name, factory, shape):
    model = build(factory)
    x, y = data(shape, out_dim(model))
    sym = S.module_symmetries(model, x)
    before = loss_at(model, dict(model.named_parameters()), x, y)
    g = sym.random_element(0.7, torch.Generator().manual_seed(3))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    moved = sym.act_params(params, g)
    assert max(float((moved[k] - params[k]).abs().max()) for k in params) > 1e-2  # the element really moves θ
    assert S.modules.ModuleSymmetries.act(sym, model, g) is model
    after = loss_at(model, dict(model.named_parameters()), x, y)
    assert abs(float(after - before)) <= 1e-10 * float(before)
    for k in params:  # act in place == act_params
        assert torch.allclose(dict(model.named_parameters())[k], moved[k], rtol=0, atol=1e-13)
    # control: the same element with one producer bias left unscaled changes the loss
    group = sym.groups[0]
    bias = next(leg.param for leg in group.legs if leg.exponent > 0 and leg.param.endswith("bias"))
    broken = dict(moved)
    broken[bias] = params[bias]
    assert abs(float(loss_at(model, broken, x, y) - before)) > 1e-6 * float(before)


def test_scale_zero_is_identity_and_exp_of_zero():
    model = build(MODELS[1][1])
    sym = S.module_symmetries(model)
    for element in (sym.random_element(0.0), sym.exp(sym.algebra_zero())):
        moved = sym.act_params(model, element)
        assert all(torch.equal(moved[k], v) for k, v in model.named_parameters())


def test_act_params_differentiable_in_the_algebra():
    """d/dξ L(exp(ξ)·θ) = 0 at ξ = 0 (invariance), while d/dξ ‖θ‖² ≠ 0: the functional API for teleportation."""
    model = build(MODELS[5][1])
    x, y = data(MODELS[5][2], out_dim(model))
    sym = S.module_symmetries(model, x)
    params = {k: v.detach() for k, v in model.named_parameters()}
    xi = sym.algebra_zero(requires_grad=True)
    moved = sym.act_params(params, sym.exp(xi))
    loss = loss_at(model, moved, x, y)
    grads = torch.autograd.grad(loss, list(xi.values()))
    assert max(float(g.abs().max()) for g in grads) < 1e-12
    xi = sym.algebra_zero(requires_grad=True)
    norm = sum((t * t).sum() for t in sym.act_params(params, sym.exp(xi)).values())
    assert max(float(g.abs().max()) for g in torch.autograd.grad(norm, list(xi.values()))) > 1e-3
    # and in the parameters
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    torch.autograd.grad(loss_at(model, sym.act_params(p, sym.random_element(0.3)), x, y), list(p.values()))


def flat(params):
    return torch.cat([v.reshape(-1) for v in params.values()])


def unflat(vector, like):
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vector[i:i + v.numel()].reshape(v.shape)
        i += v.numel()
    return out


def with_margin(model, x, margin=0.5):
    """Shift each hidden bias so every preactivation is ≥ margin away from the kink (half the units on, half off):
    a short flow then never crosses a ReLU kink, where the field is discontinuous and adaptive ODE solvers stall."""
    layers = list(model)
    with torch.no_grad():
        h = x
        for i, layer in enumerate(layers):
            h_pre = layer(h)
            if isinstance(layer, nn.Linear) and i + 1 < len(layers) and not isinstance(layers[i + 1], nn.Identity):
                low, high = h_pre.amin(0), h_pre.amax(0)
                on = torch.arange(len(low)) % 2 == 0
                layer.bias += torch.where(on, margin - low, -margin - high)
                h_pre = layer(h)
            h = h_pre


FLOW_MODELS = [MODELS[0], MODELS[2], MODELS[3]]  # ReLU, LeakyReLU, identity


@pytest.mark.parametrize("name,factory,shape", FLOW_MODELS, ids=[m[0] for m in FLOW_MODELS])
def test_quantities_constant_along_gradient_flow(name, factory, shape):
    from scipy.integrate import solve_ivp

    model = build(factory)
    x, y = data(shape, out_dim(model))
    with_margin(model, x)
    sym = S.module_symmetries(model, x)
    like = {k: v.detach().clone() for k, v in model.named_parameters()}

    def velocity(_t, state):
        p = {k: v.requires_grad_() for k, v in unflat(torch.from_numpy(state).clone(), like).items()}
        grads = torch.autograd.grad(loss_at(model, p, x, y), list(p.values()))
        return -torch.cat([g.reshape(-1) for g in grads]).numpy()

    sol = solve_ivp(velocity, (0, 0.5), flat(like).numpy(), method="DOP853", rtol=1e-12, atol=1e-12, t_eval=[0, 0.5])
    assert sol.success
    start = unflat(torch.from_numpy(sol.y[:, 0].copy()), like)
    end = unflat(torch.from_numpy(sol.y[:, -1].copy()), like)
    assert float((flat(end) - flat(start)).abs().max()) > 1e-3  # the flow moved
    assert float(loss_at(model, end, x, y)) < float(loss_at(model, start, x, y))
    q0, q1, scale = sym.quantities(start), sym.quantities(end), sym.magnitudes(start)
    for k in q0:
        assert float((q1[k] - q0[k]).abs().max() / scale[k].max()) < 1e-8, k


def gradients(model, params, x, y):
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    grads = torch.autograd.grad(loss_at(model, p, x, y), list(p.values()))
    return dict(zip(p, grads))


@pytest.mark.parametrize("name,factory,shape", MODELS, ids=[m[0] for m in MODELS])
def test_one_gd_step_changes_Q_by_eta_squared_formula(name, factory, shape):
    """θ' = θ − η∇L ⇒ Q(θ') − Q(θ) = η²(α‖∇_O‖² − ‖∇_I‖²) exactly (per neuron; matrix form for GL)."""
    model = build(factory)
    x, y = data(shape, out_dim(model))
    sym = S.module_symmetries(model, x)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    eta = 0.3
    grad = gradients(model, params, x, y)
    stepped = {k: params[k] - eta * grad[k] for k in params}
    q0, q1, scale = sym.quantities(params), sym.quantities(stepped), sym.magnitudes(params)
    predicted = sym.balance(grad)
    for k in q0:
        change = q1[k] - q0[k]
        assert float(change.abs().max()) > 1e-9 * float(scale[k].max())  # there is a change to predict
        assert float((change - eta ** 2 * predicted[k]).abs().max()) < 1e-12 * float(scale[k].max()), k
        # without the symmetry's first-order cancellation the change would be −2ηB(θ, ∇L) = 0: check it is
        first_order = sym.balance(params, grad)[k]
        if first_order.ndim == 2:  # GL: only the symmetric part enters Q' − Q (the antisymmetric one is Eq. 30's J)
            first_order = first_order + first_order.mT
        assert float(first_order.abs().max()) < 1e-12 * float(scale[k].max())


def test_weight_decay_and_momentum_steps_with_torch_optim():
    """torch.optim.SGD: with weight decay λ, Q' = (1 − ηλ)²Q + η²B(g, g); with momentum β (buffer v),
    Q_{k+1} = Q_k − 2ηc_k + η²B(v_{k+1}, v_{k+1}), c_k = β(c_{k−1} − ηB(v_k, v_k)), c_0 = 0 (derived from B(θ, g) = 0)."""
    model = build(MODELS[1][1])
    x, y = data(MODELS[1][2], out_dim(model))
    sym = S.module_symmetries(model, x)
    eta, lam = 0.2, 0.05
    opt = torch.optim.SGD(model.parameters(), lr=eta, weight_decay=lam)
    for _ in range(5):
        q0 = sym.quantities(model)
        grad = gradients(model, dict(model.named_parameters()), x, y)
        opt.zero_grad()
        loss_at(model, dict(model.named_parameters()), x, y).backward()
        opt.step()
        q1, b, scale = sym.quantities(model), sym.balance(grad), sym.magnitudes(model)
        for k in q0:
            assert float((q1[k] - (1 - eta * lam) ** 2 * q0[k] - eta ** 2 * b[k]).abs().max()) < 1e-12 * float(scale[k].max())
    model = build(MODELS[1][1])
    beta = 0.9
    opt = torch.optim.SGD(model.parameters(), lr=eta, momentum=beta)
    names = [n for n, _ in model.named_parameters()]
    c = {k: torch.zeros_like(v) for k, v in sym.quantities(model).items()}
    s_prev = None
    for step in range(6):
        q0 = sym.quantities(model)
        opt.zero_grad()
        loss_at(model, dict(model.named_parameters()), x, y).backward()
        opt.step()
        v = {n: opt.state[p]["momentum_buffer"] for n, p in zip(names, model.parameters())}
        s = sym.balance(v)
        if step > 0:
            c = {k: beta * (c[k] - eta * s_prev[k]) for k in c}
        q1, scale = sym.quantities(model), sym.magnitudes(model)
        for k in q0:
            assert float((q1[k] - q0[k] + 2 * eta * c[k] - eta ** 2 * s[k]).abs().max()) < 1e-12 * float(scale[k].max())
        s_prev = s


def test_bias_free_quantities_equal_tuple_model():
    for act, alpha in ((nn.ReLU, 1.0), (lambda: S.Elementwise("repu", power=3), 3.0)):
        model = build(lambda: nn.Sequential(nn.Linear(6, 4, bias=False), act(), nn.Linear(4, 3, bias=False)))
        W1, W2 = model[0].weight.detach(), model[2].weight.detach()
        q = S.module_symmetries(model).quantities(model)["0"]
        assert torch.allclose(q, homogeneous_imbalance((W2, W1.mT), alpha), rtol=1e-14, atol=0)
    model = build(lambda: mlp((5, 4, 3), nn.Identity, bias=False))
    W1, W2 = model[0].weight.detach(), model[2].weight.detach()
    assert torch.allclose(S.module_symmetries(model).quantities(model)["0"], imbalance_matrix((W2, W1.mT)), rtol=1e-14, atol=0)
    model = build(lambda: nn.Sequential(nn.Linear(6, 5, bias=False), nn.Linear(5, 4, bias=False), nn.Linear(4, 2, bias=False)))
    weights = tuple(m.weight.detach() for m in model)
    q = S.module_symmetries(model).quantities(model)
    for got, want in zip(q.values(), balance_matrix(weights)):
        assert torch.allclose(got, want, rtol=1e-14, atol=0)
    model = build(lambda: mlp((6, 5, 4, 2), bias=False))
    weights = tuple(m.weight.detach() for m in model if isinstance(m, nn.Linear))
    per_layer = torch.stack([v.sum() for v in S.module_symmetries(model).quantities(model).values()])
    assert torch.allclose(per_layer, S.layer_balance(weights), rtol=1e-13, atol=0)


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_monitor_in_a_plain_loop(optimizer):
    model = build(MODELS[5][1])
    x, y = data(MODELS[5][2], out_dim(model))
    opt = torch.optim.SGD(model.parameters(), lr=0.05) if optimizer == "SGD" else torch.optim.Adam(model.parameters(), lr=0.01)
    monitor = S.ConservationMonitor(model, x, every=3)
    sym = S.module_symmetries(model, x)
    expected = {}
    magnitude0 = sym.magnitudes(model)
    monitor.record(0)
    expected[0] = sym.quantities(model)
    for step in range(1, 11):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        if monitor.record(step):
            expected[step] = {k: v.detach().clone() for k, v in sym.quantities(model).items()}
    assert monitor.steps == [0, 3, 6, 9]
    stacked = monitor.stacked()
    for k in stacked:
        assert stacked[k].shape == (4, 4)
        for i, step in enumerate(monitor.steps):
            # the record is one fused pass (symmetry._fused): the blocks' own quantities to round-off
            assert torch.allclose(stacked[k][i], expected[step][k], rtol=1e-13, atol=0)
    drift = monitor.drift()
    for k, d in drift.items():
        assert d.shape == (4,) and float(d[0]) == 0.0
        assert torch.all(d[1:] > 0)
    per_neuron = monitor.drift(reduce=None)["0"]
    assert torch.allclose(per_neuron.amax(1), drift["0"])
    record = monitor.to_json()
    assert record["steps"] == [0, 3, 6, 9] and len(record["max_relative_drift"]["0"]) == 4
    want = (expected[9]["0"] - expected[0]["0"]).abs() / magnitude0["0"]
    assert torch.allclose(per_neuron[-1], want, rtol=1e-12, atol=0)


def test_errors_name_the_problem():
    shared = nn.Linear(3, 3).double()  # a layer used twice, and a weight tied: read, the tie reported by name
    twice = S.module_symmetries(nn.Sequential(shared, nn.ReLU(), shared))
    assert twice.blocks == () and "tied: read at 2 places" in twice.coverage["0.weight"][0]
    tied = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3)).double()
    tied[2].weight = tied[0].weight
    assert "tied" in S.module_symmetries(tied).coverage["0.weight"][0]
    integer = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    integer[0].weight = nn.Parameter(torch.ones(3, 2, dtype=torch.int64), requires_grad=False)
    with pytest.raises(TypeError, match=r"'0.weight' has dtype torch.int64"):
        S.module_symmetries(integer)
    with pytest.raises(TypeError, match="example_input is needed"):
        S.module_symmetries(nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Conv2d(4, 1, 1)))
    with pytest.raises(ValueError, match="loss='mae' is not allowed"):
        S.module_symmetries(nn.Sequential(nn.Linear(2, 3)), loss="mae")
    with pytest.raises(TypeError, match="dtype torch.float32 but the model's parameters are torch.float64"):
        S.module_symmetries(build(MODELS[0][1]), torch.randn(4, 5))

    model = build(MODELS[0][1])
    sym = S.module_symmetries(model)
    good = sym.random_element(0.1)
    with pytest.raises(ValueError, match=r"keys \['1'\].*groups are \['0'\]"):
        sym.act(model, {"1": good["0"]})
    with pytest.raises(ValueError, match=r"shape \(7,\).*got \(6,\)"):
        sym.act(model, {"0": good["0"][:6]})
    negative = good["0"].clone()
    negative[2] = -1.0
    with pytest.raises(ValueError, match="must be positive"):
        sym.act(model, {"0": negative})
    with pytest.raises(ValueError, match="scale"):
        sym.random_element(-1.0)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with pytest.raises(ValueError):
        sym.act(model, {"0": negative})
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())  # nothing written on error
    linear = build(MODELS[3][1])
    lsym = S.module_symmetries(linear)
    element = lsym.random_element(0.1)
    singular = element["0"].clone()
    singular[1] = singular[0]
    with pytest.raises(ValueError, match="singular"):
        lsym.act(linear, {**element, "0": singular})
    with pytest.raises(TypeError, match="floating-point"):
        sym.quantities({k: v.detach().to(torch.int64) for k, v in model.named_parameters()})
    with pytest.raises(ValueError, match="every"):
        S.ConservationMonitor(model, every=0)


def test_unsupported_layers_are_reported_by_name_not_refused():
    """A Tanh or GELU between two layers: no symmetry there (Tran et al. Thm 4.1), the reason printed per parameter;
    the rest of the model keeps its laws."""
    model = build(lambda: nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)))
    sym = S.module_symmetries(model)
    assert sym.keys() == ["2"]
    text = sym.describe()
    assert re.search(r"0.weight: none — 0: its output passes through 1 \(Tanh\), which is not positively homogeneous", text)
    assert "2.weight: 2" in text and "4.weight: 2" in text


def test_describe_is_readable():
    text = S.module_symmetries(build(cnn_deep), torch.randn(2, 2, 8, 8, dtype=torch.float64)).describe()
    assert "GL" not in text and "outgoing degree 2" in text and "'2.0'" in text
    assert "GL(3)" in S.module_symmetries(build(MODELS[3][1])).describe()



@pytest.mark.parametrize("page, heading", [("README.md", "## Your own model"),
                                           ("docs/your-own-model.md", "## A GPT block, and the monitor"),
                                           ("docs/your-own-model.md", "## The paper's own models")])
def test_shown_examples_run_as_written(page, heading):
    """Every python block of the section runs; where a text block follows one, it is what the block prints."""
    import contextlib
    import io

    text = (ROOT / page).read_text(encoding="utf-8")
    section = re.search(rf"^{re.escape(heading)}.*?\n(.*?)(?=^## |\Z)", text, re.S | re.M).group(1)
    pairs = re.findall(r"```python\n(.*?)```(?:\s*```text\n(.*?)```)?", section, re.S)
    assert pairs and any(shown for _, shown in pairs)
    namespace: dict = {}
    for code, shown in pairs:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, page, "exec"), namespace)
        if shown:
            assert printed.getvalue() == shown, f"{page} shows an output the code no longer prints"


def test_docs_resnet18_describe_is_what_the_code_prints():
    """docs/your-own-model.md shows resnet18's describe(): the same text, the measured ε effects to 2 digits
    (their last digit may move with the machine's round-off: compared at 10 %)."""
    import contextlib
    import io

    pytest.importorskip("torchvision")
    text = (ROOT / "docs" / "your-own-model.md").read_text()
    code, shown = re.search(r"```python\n(.*?)```\s*```text\n(.*?)```", text, re.S).groups()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "your-own-model.md", "exec"), {})
    number = r"\d+\.\d+(?:e-?\d+)?|\d+e-?\d+"
    assert re.sub(number, "#", printed.getvalue()) == re.sub(number, "#", shown)
    for got, want in zip(re.findall(number, printed.getvalue()), re.findall(number, shown), strict=True):
        assert abs(float(got) - float(want)) <= 0.1 * abs(float(want)), (got, want)


@pytest.mark.parametrize("parametrization", ["weight_norm", "orthogonal"])
def test_a_parametrised_layer_gets_no_block_and_the_reason_is_named(parametrization):
    """A layer under ``parametrizations.weight_norm``/``orthogonal`` trains the parametrisation's tensors: no block
    is claimed on them, and the coverage says why for each (the op without a rule, or a weight that is not a
    parameter)."""
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    getattr(parametrizations, parametrization)(net[0])
    sym = S.module_symmetries(net, torch.randn(6, 3, dtype=torch.float64))
    originals = [name for name in sym.coverage if ".parametrizations.weight.original" in name]
    assert sym.keys() == [] and originals
    assert all(sym.coverage[name] and sym.coverage[name][0].startswith("none") for name in originals)
