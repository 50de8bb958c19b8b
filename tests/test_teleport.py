"""Teleportation (symmetry/teleport/): loss kept, objective improved, the paper's geometric facts, training, errors."""
import math

import pytest
import torch

import symmetry as S
from symmetry import teleport as T

D = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def dense_hessian(model, data, params):
    """The oracle: the full Hessian by torch.autograd.functional on the flattened parameters."""
    sizes = [p.numel() for p in params]

    def f(x):
        return model.loss(tuple(c.reshape(p.shape) for c, p in zip(torch.split(x, sizes), params)), *data)

    return torch.autograd.functional.hessian(f, torch.cat([p.detach().reshape(-1) for p in params]))


def two_layer(activation, m=3, n=4, h=6, seed=0, reduction="mean"):
    g = gen(seed)
    U, V = torch.randn(m, h, generator=g, dtype=D), torch.randn(n, h, generator=g, dtype=D)
    Y = torch.randn(m, n, generator=g, dtype=D)
    return S.TwoLayerNet(activation, reduction=reduction), (U, V), (None, Y)  # whitened X = I_n: k = n ≤ h


def mlp(activation, dims=(5, 6, 7, 8), k=4, seed=0):
    g = gen(seed)
    W = tuple(0.5 * torch.randn(dims[i + 1], dims[i], generator=g, dtype=D) for i in range(len(dims) - 1))
    X, Y = torch.randn(dims[0], k, generator=g, dtype=D), torch.randn(dims[-1], k, generator=g, dtype=D)
    return S.MLP(activation, reduction="half_sum"), W, (X, Y)


def radial(over, seed=0):
    g = gen(seed)
    U, V = torch.randn(3, 5, generator=g, dtype=D), torch.randn(4, 5, generator=g, dtype=D)
    return S.TwoLayerRadialNet(over=over), (U, V), (None, torch.randn(3, 4, generator=g, dtype=D))


CASES = {
    "gl/two-layer linear": (lambda: two_layer("identity"), "gl"),
    "gl/MLP linear": (lambda: mlp("identity"), "gl"),
    "scaling/two-layer relu": (lambda: two_layer("relu"), "scaling"),
    "scaling/MLP leaky_relu": (lambda: mlp(S.activations.leaky_relu(0.1)), "scaling"),
    "scaling/two-layer repu": (lambda: two_layer("repu"), "scaling"),
    "nonlinear/two-layer tanh": (lambda: two_layer("tanh"), "nonlinear"),
    "nonlinear/two-layer sigmoid": (lambda: two_layer("sigmoid"), "nonlinear"),
    "nonlinear/MLP leaky_relu": (lambda: mlp(S.activations.leaky_relu(0.1)), "nonlinear"),
    "neuron_scaling/radial neuron": (lambda: radial("neuron"), "neuron_scaling"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_teleport_keeps_loss_and_raises_gradient_norm(case):
    make, group = CASES[case]
    model, params, data = make()
    new, report = T.teleport_to(model, params, data, group, "grad_norm", lr=1e-2, steps=5)
    assert report.relative_loss_change < 1e-9
    # the oracle: the loss recomputed from scratch, not the report's own numbers
    assert abs(float(model.loss(new, *data)) - float(model.loss(params, *data))) < 1e-9 * float(model.loss(params, *data))
    assert report.objective_after > report.objective_before
    assert T.gradient_norm_squared(model.loss_function(*data), T._detached_leaves(new)) > \
        T.gradient_norm_squared(model.loss_function(*data), T._detached_leaves(params))
    assert max(float((a - b).abs().max()) for a, b in zip(new, params)) > 1e-4  # it moved


def test_orthogonal_group_keeps_loss_and_gradient_norm():
    """O(h) acts by isometries (U gᵀ, V gᵀ), so ‖∇L‖ is the same all along the orbit;
    a callable objective that is not invariant still moves the parameters, at the same loss."""
    model, params, data = radial("hidden")
    new, report = T.teleport_to(model, params, data, "orthogonal", lambda p: p[0][0].sum(), lr=0.1, steps=10)
    assert report.relative_loss_change < 1e-9 and report.objective_after > report.objective_before + 0.1
    norm = lambda p: float(T.gradient_norm_squared(model.loss_function(*data), T._detached_leaves(p)).detach())  # noqa: E731
    assert norm(new) == pytest.approx(norm(params), rel=1e-9)


def test_sharpness_decreases_and_hutchinson_trace_decreases():
    model, params, data = two_layer("identity", seed=3)
    exact = lambda p: float(torch.linalg.eigvalsh(dense_hessian(model, data, p))[-1])  # noqa: E731
    new, report = T.teleport_to(model, params, data, "gl", "sharpness", lr=1e-2, steps=8)
    assert report.relative_loss_change < 1e-9 and exact(new) < exact(params)
    assert report.objective_before == pytest.approx(exact(params), rel=1e-6)  # Lanczos finds λ_max
    new2, report2 = T.teleport_to(model, params, data, "gl", T.sharpness("hutchinson", samples=3), lr=1e-2, steps=4)
    trace = lambda p: float(torch.trace(dense_hessian(model, data, p)))  # noqa: E731
    assert report2.objective_after < report2.objective_before and trace(new2) < trace(params)


def test_conserved_target_reaches_the_target_Q():
    model, params, data = two_layer("identity", seed=1)
    trace_Q = lambda p: S.conserved_Q(p, "identity")  # noqa: E731  (Eq. 48, a scalar)
    target = float(trace_Q(params)) + 1.0
    new, report = T.teleport_to(model, params, data, "gl", T.conserved_target(trace_Q, target), lr=0.05, steps=200)
    assert abs(float(trace_Q(new)) - target) < 1e-3
    assert report.relative_loss_change < 1e-9


def test_any_symmetry_on_a_module_with_biases():
    """teleport takes any Symmetry directly (what it calls: algebra_zero, exp, act_params, describe), here a
    local oracle implementation of positive scaling for Linear(bias) → ReLU → Linear(bias)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).double()

    class Scaling:  # hidden neuron i: (row i of W1, b1_i) ↦ c_i ·, column i of W2 ↦ / c_i
        def algebra_zero(self):
            return {"0": torch.zeros(6, dtype=D)}

        def exp(self, xi):
            return {k: torch.exp(v) for k, v in xi.items()}

        def act_params(self, params, element, check=True):
            c = element["0"]
            out = dict(params)
            out["0.weight"], out["0.bias"] = c[:, None] * params["0.weight"], c * params["0.bias"]
            out["2.weight"] = params["2.weight"] / c
            return out

        def describe(self):
            return "positive scaling of layer 0"

    X, Y = torch.randn(10, 4, dtype=D), torch.randn(10, 3, dtype=D)
    before = torch.nn.functional.mse_loss(net(X), Y).item()
    old_w = net[0].weight.detach().clone()
    new, report = T.teleport_to(net, None, (X, Y), Scaling(), "grad_norm", loss_fn=torch.nn.functional.mse_loss,
                             lr=0.05, steps=5)
    assert set(new) == {n for n, _ in net.named_parameters()}
    assert abs(torch.nn.functional.mse_loss(net(X), Y).item() - before) < 1e-9 * before
    assert report.objective_after > report.objective_before
    assert not torch.equal(net[0].weight, old_w)  # written into the module


def test_quadratic_gradient_at_maximal_norm_is_a_hessian_eigenvector():
    """L = ½wᵀAw with G = A^{-1/2} SO(3) A^{1/2} (transitive on each level set): the point of largest
    ‖∇L‖ on the level set has ∇L = Aw along A's top eigenvector (the Newton direction, NeurIPS Sec. 5)."""
    g = gen(5)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=D))
    evals = torch.tensor([1.0, 2.0, 4.0], dtype=D)
    A = Q @ torch.diag(evals) @ Q.T
    half, inv_half = Q @ torch.diag(evals.sqrt()) @ Q.T, Q @ torch.diag(evals.rsqrt()) @ Q.T

    class Conjugated:  # a Symmetry of the protocol on a tuple model, written by a user
        name = "A^{-1/2} SO(3) A^{1/2}"

        def algebra_zero(self, requires_grad=False):
            return {"g": torch.zeros(3, 3, dtype=D, requires_grad=requires_grad)}

        def exp(self, xi):
            return {"g": torch.linalg.matrix_exp(xi["g"] - xi["g"].T)}

        def act_params(self, params, element, check=True):
            return (inv_half @ element["g"] @ half @ params[0],)

        def describe(self):
            return self.name

    model = S.PotentialModel(lambda p: 0.5 * (p[0] * (A @ p[0])).sum())
    w = torch.randn(3, 1, generator=g, dtype=D)
    new, report = T.teleport_to(model, (w,), (None, None), Conjugated(), "grad_norm", lr=0.05, steps=400)
    grad = A @ new[0]
    rayleigh = float(grad.T @ A @ grad / (grad.T @ grad))
    assert torch.linalg.norm(A @ grad - rayleigh * grad) < 1e-6 * torch.linalg.norm(A @ grad)  # eigenvector
    assert rayleigh == pytest.approx(4.0, rel=1e-6)  # the top one: the largest gradient on the level set
    assert report.relative_loss_change < 1e-9


def valley_point(Q, product):
    u = math.sqrt((Q + math.sqrt(Q * Q + 4 * product * product)) / 2)
    return (torch.tensor([[u]], dtype=D), torch.tensor([[product / u]], dtype=D))


def test_1d_valley_min_sharpness_lands_at_Q0_and_max_gradient_moves_away():
    net, data = S.TwoLayerNet("identity", reduction="half_sum"), (None, torch.ones(1, 1, dtype=D))
    new, report = T.teleport_to(net, valley_point(2.0, 1.0), data, "gl", "sharpness", lr=0.2, steps=60)
    assert abs(float(new[0] ** 2 - new[1] ** 2)) < 1e-4  # Q = U² − V² = 0
    assert float(torch.linalg.eigvalsh(dense_hessian(net, data, new))[-1]) == pytest.approx(2.0, abs=1e-6)  # √(0+4)
    start = valley_point(0.1, 0.5)  # off the valley (UV = 0.5), near Q = 0
    new, _ = T.teleport_to(net, start, data, "gl", "grad_norm", lr=0.1, steps=20)
    assert abs(float(new[0] ** 2 - new[1] ** 2)) > 0.5


def regression(seed=0):
    g = gen(seed)
    dims = (5, 6, 7, 8)
    W = tuple(torch.rand(dims[i + 1], dims[i], generator=g, dtype=D) for i in range(3))
    X, Y = torch.rand(5, 4, generator=g, dtype=D), torch.rand(8, 4, generator=g, dtype=D)
    return S.MLP(S.activations.leaky_relu(0.1), reduction="half_sum"), W, (X, Y)


def engine_run(model, W, data, stepper, steps, **kw):
    """Training with teleports is the engine's loop: symmetry.dynamics.run with a TeleportingStepper."""
    return S.run(model, W, *data, stepper, steps, **kw)


def test_training_records_teleports_and_the_loss_is_continuous():
    model, W, data = regression()
    schedule = T.TeleportSchedule(at=(0,), every=10, until=20)
    wrapped = T.TeleportingStepper(S.GD(1e-4), model, data, schedule, group="nonlinear", objective="grad_norm",
                                   lr=1e-8, steps=3)
    run = engine_run(model, W, data, wrapped, 30)
    assert [e["step"] for e in wrapped.events] == [0, 10, 20]
    for e in wrapped.events:
        assert e["report"].relative_loss_change <= 1e-9
        assert e["report"].objective_after > e["report"].objective_before
    plain = engine_run(model, W, data, S.GD(1e-4), 30)
    assert float(run.loss[0]) == float(plain.loss[0]) and float(run.loss[-1]) != float(plain.loss[-1])
    assert len(run.times) == 31


STEPPERS = {"gd": lambda: S.GD(1e-4), "sgd": lambda: S.SGD(1e-4), "momentum": lambda: S.SGD(1e-5, momentum=0.9),
            "adagrad": lambda: S.AdaGrad(1e-1), "adam": lambda: S.Adam(1e-2),
            "rmsprop": lambda: S.wrap_optimizer(torch.optim.RMSprop, lr=1e-3)}


@pytest.mark.parametrize("optimizer", list(STEPPERS))
@pytest.mark.parametrize("state", ["keep", "reset"])
def test_every_optimizer_teleports(optimizer, state):
    model, W, data = regression(1)
    X, Y = data
    batches = None if optimizer == "gd" else (lambda k: (X[:, k % 2::2], Y[:, k % 2::2]))
    wrapped = T.TeleportingStepper(STEPPERS[optimizer](), model, data, T.TeleportSchedule(at=(2, 6)), state=state,
                                   group="nonlinear", lr=1e-8, steps=2)
    run = engine_run(model, W, data, wrapped, 12, batches=batches)
    assert [e["step"] for e in wrapped.events] == [2, 6]
    assert bool(torch.isfinite(run.loss).all())
    full = lambda p: float(model.loss(p, *data))  # noqa: E731
    assert full(run.params) < full(W)


def test_null_teleport_is_plain_training_and_reset_is_not():
    """steps=0 returns the parameters unchanged (the identity is the identity), so a null teleport that keeps
    the optimiser state reproduces plain training bit for bit; resetting AdaGrad's sum alone changes the run."""
    model, W, data = regression(4)
    plain = engine_run(model, W, data, S.AdaGrad(1e-1), 12)
    null = T.TeleportingStepper(S.AdaGrad(1e-1), model, data, T.TeleportSchedule(at=(5,)), group="nonlinear", steps=0)
    run = engine_run(model, W, data, null, 12)
    assert torch.equal(run.loss, plain.loss) and null.events[0]["report"].xi_norm == 0.0
    reset = T.TeleportingStepper(S.AdaGrad(1e-1), model, data, T.TeleportSchedule(at=(5,)), state="reset",
                                 group="nonlinear", steps=0)
    assert not torch.equal(engine_run(model, W, data, reset, 12).loss, plain.loss)


def test_random_control_has_the_size_of_the_optimised_element():
    model, W, data = regression(5)
    _, tele = T.teleport_to(model, W, data, "nonlinear", "grad_norm", lr=1e-8, steps=4)
    new, rand = T.teleport_random(model, W, data, "nonlinear", tele.xi_norm, seed=3)
    assert rand.xi_norm == pytest.approx(tele.xi_norm, rel=1e-12) and tele.xi_norm > 0
    assert rand.relative_loss_change < 1e-9 and rand.kind == "random"
    assert max(float((a - b).abs().max()) for a, b in zip(new, W)) > 0
    wrapped = T.TeleportingStepper(S.GD(1e-4), model, data, T.TeleportSchedule(at=(1, 3)), random_norms=[0.1, 0.2],
                                   group="nonlinear")
    engine_run(model, W, data, wrapped, 5)
    assert [round(e["report"].xi_norm, 12) for e in wrapped.events] == [0.1, 0.2]
    with pytest.raises(ValueError, match="random_norms"):
        engine_run(model, W, data, T.TeleportingStepper(S.GD(1e-4), model, data, T.TeleportSchedule(at=(1, 3)),
                                                        random_norms=[0.1], group="nonlinear"), 5)


@pytest.mark.parametrize("k", [3, 6, 9])  # k < h, k = h, k > h (h = 6 and 7)
def test_nonlinear_identity_is_the_identity_for_every_batch_size(k):
    """π(I, Z) = I + (σ(Z) − σ(Z))σ(Z)⁺ = I exactly: the paper's σ(Z)σ(Z)⁺ would project the upper layer
    onto the span of the k batch activations when k < h (rank k)."""
    model, W, (X, Y) = mlp(S.activations.leaky_relu(0.1), k=k)
    group = T.NonlinearGL().bind(model, W, X, approximate=k > 6)
    moved = group.act(W, group.exp(group.algebra_zero()))
    assert all(torch.equal(a, b) for a, b in zip(moved, W))
    # the paper's form at g = I, for contrast: σ(Z)σ(Z)⁺ has rank min(k, h)
    Z = W[0] @ X
    paper = S.activations.leaky_relu(0.1).sigma(Z) @ torch.linalg.pinv(S.activations.leaky_relu(0.1).sigma(Z))
    assert int(torch.linalg.matrix_rank(paper)) == min(k, 6)


@pytest.mark.parametrize("k", [3, 6])
def test_nonlinear_action_keeps_the_batch_loss_exactly_when_k_at_most_h(k):
    model, W, (X, Y) = mlp(S.activations.leaky_relu(0.1), k=k)
    group = T.NonlinearGL().bind(model, W, X)
    g = gen(9)
    xi = {k: 0.3 * torch.randn(z.shape, generator=g, dtype=D) for k, z in group.algebra_zero().items()}
    moved = group.act(W, group.exp(xi))
    assert abs(float(model.loss(moved, X, Y) - model.loss(W, X, Y))) <= 1e-11 * float(model.loss(W, X, Y))
    X2 = torch.randn(X.shape[0], 20, generator=g, dtype=D)  # other samples: the action is data-dependent
    assert abs(float(model.loss(moved, X2, Y[:, :1].expand(-1, 20)) - model.loss(W, X2, Y[:, :1].expand(-1, 20)))) > 1e-6


def test_approximate_mode_is_explicit_and_reports_the_loss_change():
    model, W, (X, Y) = mlp(S.activations.leaky_relu(0.1), k=12)  # batch 12 > hidden widths 6, 7
    with pytest.raises(ValueError, match="approximate=True"):
        T.teleport_to(model, W, (X, Y), "nonlinear")
    g = gen(11)
    held = (torch.randn(5, 30, generator=g, dtype=D), torch.randn(8, 30, generator=g, dtype=D))
    new, report = T.teleport_to(model, W, (X, Y), "nonlinear", lr=1e-2, steps=3, approximate=True, holdout=held)
    assert report.approximate and report.relative_loss_change > 0 and report.holdout_relative_loss_change > 0
    assert report.relative_loss_change == pytest.approx(
        abs(float(model.loss(new, X, Y) - model.loss(W, X, Y))) / float(model.loss(W, X, Y)), rel=1e-9)
    assert report.holdout_loss_after == pytest.approx(float(model.loss(new, *held)), rel=1e-12)
    _, null = T.teleport_to(model, W, (X, Y), "nonlinear", steps=0, approximate=True, holdout=held)
    assert null.relative_loss_change == 0 and null.holdout_relative_loss_change == 0


def test_objective_before_is_taken_before_any_action():
    model, W, data = regression(6)
    _, report = T.teleport_to(model, W, data, "nonlinear", "grad_norm", lr=1e-8, steps=2)
    direct = float(T.gradient_norm_squared(model.loss_function(*data), T._detached_leaves(W)).detach())
    assert report.objective_before == direct


def test_trust_region_bounds_each_ascent_step_on_any_scale():
    """The same trust_region moves a net and a 100× larger copy of it by the same relative amount per step."""
    for scale in (1.0, 100.0):
        model, W, data = two_layer("identity", seed=2)
        W = tuple(scale * w for w in W)
        new, report = T.teleport_to(model, W, data, "gl", "grad_norm", lr=10.0, steps=1, trust_region=0.01,
                                    backtrack=False)
        change = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(new, W)))
        norm = math.sqrt(sum(float((b ** 2).sum()) for b in W))
        assert 0.002 * norm < change <= 0.01 * norm * (1 + 1e-12) and report.stopped is None
    with pytest.raises(ValueError, match="trust_region"):
        T.teleport_to(model, W, data, "gl", trust_region=-1.0)


def test_bad_input_errors():
    model, params, data = two_layer("relu")
    with pytest.raises(ValueError, match="not a symmetry"):
        T.teleport_to(model, params, data, "gl")  # GL is not a symmetry of a ReLU net
    with pytest.raises(ValueError, match="group"):
        T.teleport_to(model, params, data, "rotation")
    with pytest.raises(ValueError, match="objective"):
        T.teleport_to(model, params, data, "scaling", "flatness")
    bad = (params[0].clone(), params[1].clone())
    bad[0][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        T.teleport_to(model, bad, data, "scaling")
    wide_model, W, (X, Y) = mlp(S.activations.leaky_relu(0.1), k=7)  # batch 7 > hidden width 6
    with pytest.raises(ValueError, match="batch"):
        T.teleport_to(wide_model, W, (X, Y), "nonlinear")
    lin, lp, ld = two_layer("identity")
    with pytest.raises(ValueError, match="singular or ill-conditioned"):
        T.teleport_to(lin, lp, ld, "gl", "grad_norm", lr=1e3, steps=5, on_loss_change="raise", max_condition=10.0)
    assert T.condition_number((torch.zeros(2, 2),)) == math.inf
    with pytest.raises(ValueError, match="on_loss_change"):
        T.teleport_to(lin, lp, ld, "gl", on_loss_change="ignore")


def test_stop_refuses_iterates_that_break_the_loss():
    model, W, data = regression(1)
    new, report = T.teleport_to(model, W, data, "nonlinear", "grad_norm", lr=1e-7, steps=8)  # far too large a step
    assert report.stopped is not None and report.relative_loss_change < 1e-9
    assert report.condition_number <= 1e8


@pytest.mark.slow  # two --quick figure runs (seeds 0 and 7): pytest -m slow
def test_teleportation_figure_quick(tmp_path):
    from conftest import load_script

    script = load_script("teleportation")
    payload = script.main(["--quick", "--out", str(tmp_path)])
    for ext in ("pdf", "png", "json"):
        assert (tmp_path / f"teleportation.{ext}").stat().st_size > 0
    rows = script.claims(payload)
    assert rows and all(set(r) == {"claim", "criterion", "holds", "measured"} for r in rows)
    by_claim = {r["claim"]: r for r in rows}
    assert by_claim["a teleport keeps the loss on its batch when the batch is no larger than the hidden widths"]["holds"]
    assert by_claim["the null teleport (0 ascent steps, state kept) is plain training: the identity is the identity"]["holds"]
    for opt in ("adagrad", "momentum", "rmsprop", "adam"):  # every speed-up row names every arm and its cause
        row = by_claim[f"teleportation speeds up mnist/{opt} against the controls of its protocol (ICLR 2024)"]
        assert all(c in row["measured"] for c in ("plain", "null", "reset", "random", "Cause: "))
        assert "teleport vs reset" in row["measured"] and "teleport vs null" not in row["measured"]  # ICLR: reset family
    row = by_claim["teleportation speeds up regression/adagrad against the controls of its protocol (NeurIPS 2022)"]
    assert "teleport vs null" in row["measured"] and "teleport vs reset" not in row["measured"]  # NeurIPS: state kept
    assert by_claim["1-D valley (App. G.1): teleporting to minimum sharpness lands at Q = 0, λ_max = √(0+4) = 2"]["holds"]
    # --seed reaches the repeated runs (their seeds are offsets added to it)
    other = script.main(["--quick", "--out", str(tmp_path / "seed7"), "--seed", "7"])

    def losses(p):  # every number of the regression runs but their timings
        out = []

        def walk(x, key=""):
            if isinstance(x, dict):
                for k, v in sorted(x.items()):
                    walk(v, k)
            elif isinstance(x, list):
                for v in x:
                    walk(v, key)
            elif isinstance(x, float) and "second" not in key and "time" not in key:
                out.append(x)

        walk(p["regression"])
        return out

    assert losses(other) != losses(payload) and other["settings"]["seed"] == 7


def test_teleporting_stepper_on_the_engine_protocol():
    """TeleportingStepper against a minimal stepper of the engine's protocol (init_state/step(state, grad),
    dataclasses.replace(state, params=new)): same losses as the engine's GD with the same teleport."""
    import dataclasses

    @dataclasses.dataclass
    class State:
        params: tuple
        velocity: object = None
        time: float = 0.0
        step: int = 0
        memory: dict = dataclasses.field(default_factory=dict)

    class GD:
        name, dt = "gd", 1e-4

        def init_state(self, params, velocity=None):
            return State(tuple(p.clone() for p in params))

        def step(self, state, grad):
            _, g = grad(state.params)
            return State(tuple(p - 1e-4 * x for p, x in zip(state.params, g)), None, state.time + self.dt, state.step + 1)

    model, W, data = regression(3)
    wrapped = T.TeleportingStepper(GD(), model, data, T.TeleportSchedule(at=(4,)), group="nonlinear", lr=1e-8, steps=2)

    def grad(p):
        with torch.enable_grad():
            p = T._detached_leaves(p)
            loss = model.loss(p, *data)
            return loss.detach(), torch.autograd.grad(loss, p)

    state = wrapped.init_state(W)
    with torch.no_grad():  # the engine's loop steps under no_grad; teleport turns autograd on itself
        for _ in range(10):
            state = wrapped.step(state, grad)
    reference = T.TeleportingStepper(S.GD(1e-4), model, data, T.TeleportSchedule(at=(4,)), group="nonlinear",
                                     lr=1e-8, steps=2)
    run = engine_run(model, W, data, reference, 10)
    assert [e["step"] for e in wrapped.events] == [4]
    assert float(model.loss(state.params, *data)) == pytest.approx(float(run.loss[-1]), rel=1e-10)


@pytest.mark.parametrize("layers", ["relu", "linear"])
def test_module_symmetries_of_the_modules_helper(layers):
    """teleport takes module_symmetries(net) directly (no adapter): the loss of a Module with biases is kept."""
    from symmetry import modules
    torch.manual_seed(1)
    hidden = [torch.nn.ReLU()] if layers == "relu" else []
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), *hidden, torch.nn.Linear(6, 3)).double()
    X, Y = torch.randn(10, 4, dtype=D), torch.randn(10, 3, dtype=D)
    before = torch.nn.functional.mse_loss(net(X), Y).item()
    _, report = T.teleport_to(net, None, (X, Y), modules.module_symmetries(net), "grad_norm",
                           loss_fn=torch.nn.functional.mse_loss, lr=0.05, steps=5)
    assert abs(torch.nn.functional.mse_loss(net(X), Y).item() - before) <= 1e-9 * before
    assert report.objective_after > report.objective_before


def test_translation_blocks_teleport():
    """A cross-entropy head's translation is a shift (its identity is t = 0): the condition number is taken of the
    scaling/GL factors only. Before, the identity had condition ∞ and the 3-6-4 MLP came back unchanged."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4)).double()
    X, Y = torch.randn(20, 3, dtype=D), torch.randint(0, 4, (20,))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    results = {}
    for loss in (None, "cross_entropy"):
        net.load_state_dict(start)
        sym = S.module_symmetries(net, X, loss=loss)
        _, results[loss] = T.teleport_to(net, None, (X, Y), sym, "grad_norm", loss_fn=F.cross_entropy, lr=0.1, steps=5)
    plain, shifted = results[None], results["cross_entropy"]
    assert "2:translation" in S.module_symmetries(net, X, loss="cross_entropy").keys()
    assert shifted.stopped is None and shifted.ascent_steps == 5
    assert shifted.objective_after > shifted.objective_before * 1.005
    # the shift leaves the softmax's gradient alone: the same ascent as without the translation block
    assert shifted.objective_after == pytest.approx(plain.objective_after, rel=1e-10)
    assert math.isfinite(shifted.condition_number) and shifted.condition_number == pytest.approx(plain.condition_number)
    assert any("translation" in note and "2:translation" in note for note in shifted.notes)
    assert not plain.notes
    assert T.condition_number({"a": torch.tensor([1.0, 2.0]), "t": torch.zeros(3)}, skip=("t",)) == 2.0


def gpt_problem(dim: int):
    """A one-layer nets.GPT (attention through scaled_dot_product_attention, RoPE), tokens, targets and its
    cross-entropy over every position."""
    import torch.nn.functional as F
    from symmetry.nets import GPT

    torch.manual_seed(0)
    model = GPT(8, dim=dim, heads=2, hidden=4, layers=1).double()
    x, y = torch.randint(0, 8, (2, 5), generator=gen(1)), torch.randint(0, 8, (2, 5), generator=gen(2))

    def ce(out, target):
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))

    return model, x, y, ce


def test_teleport_on_the_gpt_with_attention_on_cpu():
    """nets.GPT calls scaled_dot_product_attention, whose fused CPU kernel has no double backward; teleport runs
    its objective on the math backend (before: "derivative for ... not implemented")."""
    model, x, y, ce = gpt_problem(dim=4)
    sym = S.module_symmetries(model, x, loss="cross_entropy")
    before = float(ce(model(x), y))
    _, report = T.teleport_to(model, None, (x, y), sym, "grad_norm", loss_fn=ce, lr=0.05, steps=3)
    assert report.objective_after > report.objective_before and report.stopped is None
    assert abs(float(ce(model(x), y)) - before) <= 1e-9 * before


def test_frozen_parameters_are_held_and_not_differentiated():
    """A frozen weight (requires_grad=False) never moves: teleport leaves it exactly as it is, drops the block
    acting on it (the report's notes say so) and maximises ‖∇L‖² over the trainable parameters. Before: it
    rewrote the frozen weight and counted its gradient in J."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 2)).double()
    net[0].weight.requires_grad_(False)
    X, Y = torch.randn(16, 3, dtype=D, generator=gen(1)), torch.randn(16, 2, dtype=D, generator=gen(2))
    frozen = net[0].weight.detach().clone()
    new, report = T.teleport_to(net, None, (X, Y), S.module_symmetries(net, X), "grad_norm", loss_fn=F.mse_loss,
                                lr=0.1, steps=5)
    assert torch.equal(net[0].weight, frozen) and torch.equal(new["0.weight"], frozen)
    assert list(new) == [n for n, _ in net.named_parameters()]
    assert report.objective_after > report.objective_before
    assert any("frozen" in note and "0.weight" in note and "['0']" in note for note in report.notes)
    loss = F.mse_loss(net(X), Y)
    trainable = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, trainable)
    assert report.objective_after == pytest.approx(float(sum((g * g).sum() for g in grads)), rel=1e-10)


def test_teleport_moves_a_model_with_rope_rotations():
    """RoPE's pair rotations (elements: angles, identity 0) are orthogonal maps, never ill-conditioned: teleport
    leaves them out of the condition number as it does translations. Before: condition number inf at the identity,
    the parameters returned unchanged."""
    model, x, y, ce = gpt_problem(dim=8)
    sym = S.module_symmetries(model, x, loss="cross_entropy")
    rotations = [b.name for b in sym.blocks if b.kind == "rotation"]
    assert rotations and set(rotations) <= set(T.shift_and_rotation_keys(sym))
    _, report = T.teleport_to(model, None, (x, y), sym, "grad_norm", loss_fn=ce, lr=0.05, steps=3)
    assert report.stopped is None and report.objective_after > report.objective_before
    assert any("rotation" in note for note in report.notes)
