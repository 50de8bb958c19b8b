"""The one ODE integrator (symmetry.dynamics.ode): gradient flow's clock, batching, budgets and stalls,
a closed-form solution; friction b(t), the one definition the integrator uses."""
import pytest
import torch

import symmetry as S

from conftest import DTYPE, two_layer_problem


def test_gradient_descent_approaches_gradient_flow_as_lr_shrinks():
    """GD step t at rate η ≈ GF time t (time rescaled by η), with an error that shrinks like η."""
    net = S.TwoLayerNet("tanh")
    params, X, Y = two_layer_problem(3, 4, 5, seed=2)
    flow = S.gradient_flow(net, params, X, Y, [0.0, 10.0], observables={"U": lambda p: p[0]})
    errors = []
    for lr in (0.1, 0.01):
        steps = round(10.0 / lr)
        gd = S.gradient_descent(net, params, X, Y, lr, steps)
        errors.append(float((gd.params[0] - flow.observables["U"][-1]).norm()))
    assert errors[1] < errors[0] / 5


def test_gradient_flow_time_scaling_and_batching():
    """lr rescales time; a batch of configurations integrates as each one alone."""
    net = S.TwoLayerNet("sigmoid")
    params, X, Y = two_layer_problem(3, 4, 5, seed=3, batch=(2,))
    a = S.gradient_flow(net, params, X, Y, [0.0, 20.0], lr=0.1)
    b = S.gradient_flow(net, params, X, Y, [0.0, 2.0], lr=1.0)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-8, atol=1e-12)
    single = S.gradient_flow(net, (params[0][1], params[1][1]), X, Y[1], [0.0, 2.0])
    torch.testing.assert_close(b.loss[:, 1], single.loss, rtol=1e-8, atol=1e-12)
    assert b.times.tolist() == [0.0, 2.0]


def test_gradient_flow_gives_up_instead_of_hanging():
    """A ReLU net on general data slides along its kinks: the evaluation budget stops it with a message."""
    net = S.TwoLayerNet("relu")
    params, X, Y = two_layer_problem(3, 5, 4, seed=8, k=6, std=0.6)
    with pytest.raises(RuntimeError, match="max_evaluations=2000"):
        S.gradient_flow(net, params, X, Y, [0.0, 1.0], max_evaluations=2000)


def test_a_stalled_solver_is_stopped_where_it_stalled():
    """G&U's ReLU net under GF gets stuck at one t (the drift table's stalled row): stopped after
    stall_evaluations without progress, long before the budget. (Its ND and NAGF runs cross the kinks
    under the default stall_evaluations: test_noether's conserved pairs.) Where it stalls moves with the CPU's
    round-off (t = 0.022 on one machine, 0.0063 on another), so only "before the end" is asserted."""
    model, params, X, Y, _, _ = S.noether.small_problems(0)["relu"]
    with pytest.raises(RuntimeError, match=r"gf stalled at t = [\d.e-]+: stall_evaluations=2000") as stalled:
        S.integrate(model, params, X, Y, [0.0, 3.0], "gf", max_evaluations=20_000, stall_evaluations=2000)
    assert 0 < float(str(stalled.value).split("t = ")[1].split(":")[0]) < 3.0


def test_gradient_flow_matches_a_closed_form_solution():
    """Balanced 1-D net u = v, L = ½(1 − uv)²: w = u² solves ẇ = 2w(1 − w), a logistic curve.

    Checks the flow's clock, not just what it conserves: a 0.1 % error in speed would show.
    """
    net = S.TwoLayerNet("identity", reduction="half_sum")
    w0 = 0.05
    u0 = torch.tensor([[w0 ** 0.5]], dtype=DTYPE)
    times = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0], dtype=DTYPE)
    flow = S.gradient_flow(net, (u0, u0.clone()), None, torch.ones(1, 1, dtype=DTYPE), times,
                           observables={"w": lambda p: p[0][0, 0] * p[1][0, 0]})
    exact = 1 / (1 + (1 / w0 - 1) * torch.exp(-2 * times))
    torch.testing.assert_close(flow.observables["w"], exact, rtol=1e-9, atol=1e-10)


def test_friction_is_the_damping_of_each_second_order_flow():
    assert S.dynamics.friction("nd", 2.0) == 0.0 and S.dynamics.friction("nagf", 2.0) == 1.5
    with pytest.raises(ValueError, match="t > 0"):
        S.dynamics.friction("nagf", 0.0)
    with pytest.raises(ValueError, match="dynamics='gf'"):
        S.dynamics.friction("gf", 1.0)


def test_the_integrator_damps_by_friction(monkeypatch):
    """NAGF with friction() replaced by ND's takes exactly ND's path (started at t0 > 0, off the singularity)."""
    from symmetry.dynamics import ode

    net = S.TwoLayerNet("tanh")
    params, X, Y = two_layer_problem(3, 4, 5, seed=6, k=6)
    velocity = tuple(0.1 * p for p in params)
    run = lambda dynamics: S.integrate(net, params, X, Y, [0.5, 1.0, 2.0], dynamics, velocity=velocity,  # noqa: E731
                                       t0=0.5, observables={"U": lambda s: s[0]})
    nd, nagf = run("nd"), run("nagf")
    assert not torch.allclose(nagf.observables["U"][-1], nd.observables["U"][-1])
    monkeypatch.setattr(ode, "friction", lambda dynamics, t: 0.0)
    undamped = run("nagf")
    assert torch.equal(undamped.observables["U"], nd.observables["U"]) and torch.equal(undamped.loss, nd.loss)


def test_gradient_flow_has_the_defaults_of_integrate():
    import inspect

    flow, engine = (inspect.signature(f).parameters for f in (S.gradient_flow, S.integrate))
    shared = [name for name in flow if name in engine and flow[name].default is not inspect.Parameter.empty]
    assert {"rtol", "atol", "max_evaluations", "stall_evaluations", "method", "lr"} <= set(shared)
    assert {n: flow[n].default for n in shared} == {n: engine[n].default for n in shared}
