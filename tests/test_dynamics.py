"""The training loop: faithful to torch.optim.SGD, batched per configuration, recorded, guarded."""
import pytest
import torch

import symmetry as S

from conftest import DTYPE, two_layer_problem

ACTS = list(S.PAPER_ACTIVATIONS)
LRS = [0.1, 0.01, 0.001]


def sgd_reference(net, params, X, Y, lr, steps):
    """The authors' approach: one configuration, torch.optim.SGD, autograd, loss every step."""
    U, V = (p.detach().clone().requires_grad_(True) for p in params)
    opt = torch.optim.SGD([U, V], lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = net.loss((U, V), X, Y)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    losses.append(net.loss((U, V), X, Y).item())
    return torch.tensor(losses, dtype=torch.float64), (U.detach(), V.detach())


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_batched_gd_matches_plain_sgd(dtype, rtol):
    """12 configurations (4 activations × 3 learning rates) in one tensor = 12 separate SGD loops, 200 steps."""
    configs = [(a, lr) for a in ACTS for lr in LRS]
    net = S.TwoLayerNet([a for a, _ in configs])
    params = S.gaussian_init(5, 50, 10, std=0.1, batch=(len(configs),), seed=0, dtype=dtype)
    Y = torch.randn(10, 5, generator=torch.Generator().manual_seed(1), dtype=dtype).mT.contiguous()
    lr = torch.tensor([lr for _, lr in configs], dtype=dtype)
    run = S.gradient_descent(net, params, None, Y, lr, 200)
    assert run.loss.shape == (201, 12)
    for b, (a, eta) in enumerate(configs):
        ref_loss, ref_params = sgd_reference(S.TwoLayerNet(a), (params[0][b], params[1][b]), None, Y, eta, 200)
        torch.testing.assert_close(run.loss[:, b].double(), ref_loss, rtol=rtol, atol=0)
        torch.testing.assert_close(run.params[0][b], ref_params[0], rtol=rtol, atol=rtol * 1e-2)


def test_recording_schedule_and_observables():
    net = S.TwoLayerNet("tanh")
    params, X, Y = two_layer_problem(3, 4, 5, batch=(2,))
    run = S.gradient_descent(net, params, X, Y, 0.05, 25, record_every=10,
                             observables={"Q": lambda p: S.conserved_Q(p, "tanh"), "U": lambda p: p[0]})
    assert run.times.tolist() == [0, 10, 20, 25]
    assert run.loss.shape == (4, 2) and run.observables["Q"].shape == (4, 2)
    assert run.observables["U"].shape == (4, 2, 3, 4)
    torch.testing.assert_close(run.observables["U"][-1], run.params[0])
    torch.testing.assert_close(run.observables["Q"][0], S.conserved_Q(params, "tanh"))
    torch.testing.assert_close(run.loss[-1], net.loss(run.params, X, Y))
    assert bool((run.loss[-1] < run.loss[0]).all())
    assert not torch.equal(run.params[0], params[0])  # inputs untouched, result moved
    torch.testing.assert_close(params[0], two_layer_problem(3, 4, 5, batch=(2,))[0][0])


def test_zero_steps_records_the_start():
    net = S.TwoLayerNet("relu")
    params, X, Y = two_layer_problem(2, 3, 4)
    run = S.gradient_descent(net, params, X, Y, 0.1, 0)
    assert run.times.tolist() == [0] and torch.equal(run.params[0], params[0])


def test_deterministic():
    def once():
        params = S.gaussian_init(5, 50, 10, std=0.1, seed=3)
        Y = torch.randn(5, 10, generator=torch.Generator().manual_seed(4))
        return S.gradient_descent(S.TwoLayerNet("sigmoid"), params, None, Y, 0.1, 50).loss

    assert torch.equal(once(), once())


def test_divergence_names_the_configuration():
    net = S.TwoLayerNet("identity")
    params, X, Y = two_layer_problem(3, 4, 5, batch=(3,), std=1.0)
    lr = torch.tensor([0.01, 50.0, 0.01], dtype=DTYPE)
    with pytest.raises(S.DivergenceError, match=r"lr=50"):
        S.gradient_descent(net, params, X, Y, lr, 200, labels=["lr=0.01 a", "lr=50", "lr=0.01 b"])
    with pytest.raises(FloatingPointError, match=r"configuration\(s\) \(1,\)"):
        S.gradient_descent(net, params, X, Y, lr, 200, record_every=7)


def test_bad_arguments():
    net = S.TwoLayerNet("tanh")
    params, X, Y = two_layer_problem(3, 4, 5, batch=(2,))
    with pytest.raises(ValueError, match=r"lr must be a number or have the parameters' batch shape \(2,\)"):
        S.gradient_descent(net, params, X, Y, torch.tensor([0.1, 0.2, 0.3]), 5)
    with pytest.raises(ValueError, match="steps=-1"):
        S.gradient_descent(net, params, X, Y, 0.1, -1)
    with pytest.raises(ValueError, match="record_every=0"):
        S.gradient_descent(net, params, X, Y, 0.1, 5, record_every=0)
    with pytest.raises(ValueError, match="labels"):
        S.gradient_descent(net, params, X, Y, 0.1, 5, labels=["only one"])
    with pytest.raises(ValueError, match="times must be"):
        S.gradient_flow(net, params, X, Y, [1.0, 0.5])


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
