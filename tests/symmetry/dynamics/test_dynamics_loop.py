"""The engine's one loop (symmetry.dynamics.loop): run and gradient_descent, batched per configuration,
recorded and guarded; the fast path between records; per-configuration learning rates; bad input named."""
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


@pytest.mark.parametrize("whitened", [True, False])
def test_the_loops_fast_path_equals_one_step_at_a_time(whitened):
    """run() advances TwoLayerGD between records in one call: bit-identical to stepping one State at a time."""
    (U, V), X, Y = two_layer_problem(3, 5, 4, seed=4, k=None if whitened else 6, batch=(3,))
    net = S.TwoLayerNet(S.activations.MixedActivation([S.get_activation(a) for a in ("tanh", "relu", "sigmoid")]))
    stepper = S.TwoLayerGD(net, X, Y, torch.tensor([0.05, 0.1, 0.02], dtype=DTYPE))
    fast = S.run(net, (U, V), X, Y, stepper, 47, record_every=10, clock="time")
    state = stepper.init_state((U, V))
    times, losses = [], []
    for k in range(48):
        if k % 10 == 0 or k == 47:
            times.append(state.time)
            losses.append(net.loss(state.params, X, Y))
        if k < 47:
            state = stepper.step(state)
    assert fast.times.tolist() == times and torch.equal(fast.loss, torch.stack(losses))
    assert all(torch.equal(a, b) for a, b in zip(fast.params, state.params))
    assert not torch.equal(fast.params[0], U)  # it moved



def test_per_configuration_learning_rates_equal_separate_runs():
    net = S.MLP("tanh")
    g = torch.Generator().manual_seed(1)
    params = tuple(0.5 * torch.randn(3, *s, generator=g, dtype=DTYPE) for s in ((5, 4), (2, 5)))
    X, Y = torch.randn(4, 8, generator=g, dtype=DTYPE), torch.randn(2, 8, generator=g, dtype=DTYPE)
    lr = torch.tensor([0.01, 0.05, 0.1], dtype=DTYPE)
    for make in (lambda eta: S.SGD(eta, momentum=0.9), lambda eta: S.Adam(eta), lambda eta: S.AdaGrad(eta)):
        batched = S.run(net, params, X, Y, make(lr), 30, record_every=30)
        for b in range(3):
            alone = S.run(net, tuple(p[b] for p in params), X, Y, make(float(lr[b])), 30, record_every=30)
            for x, y in zip(batched.params, alone.params):
                torch.testing.assert_close(x[b], y, rtol=1e-12, atol=1e-14)


def test_engine_bad_input_is_named():
    net = S.TwoLayerNet("tanh")
    params, X, Y = two_layer_problem(3, 4, 5, batch=(2,))
    with pytest.raises(ValueError, match="cannot take mini-batches"):
        S.run(net, params, X, Y, S.TwoLayerGD(net, X, Y, 0.1), 3, batches=lambda k: (X, Y))
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        S.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        S.Adam(0.1, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="torch.optim.Optimizer subclass"):
        S.wrap_optimizer(S.SGD)
    with pytest.raises(ValueError, match="clock='wall' is not allowed"):
        S.run(net, params, X, Y, S.GD(0.1), 3, clock="wall")
    with pytest.raises(ValueError, match="starts from rest"):
        S.run(net, params, X, Y, S.Adam(0.1), 3, velocity=params)
