"""The steppers (symmetry.dynamics.steppers) equal their torch.optim counterparts; a wrapper may replace the
parameters between steps and the optimizer memory is kept (the Stepper protocol of symmetry.dynamics.state)."""
import dataclasses

import pytest
import torch

import symmetry as S

from conftest import DTYPE, two_layer_problem


TORCH_TWINS = {
    "sgd": (lambda: S.SGD(0.05), torch.optim.SGD, {"lr": 0.05}),
    "momentum": (lambda: S.SGD(0.05, momentum=0.9, dampening=0.1), torch.optim.SGD,
                 {"lr": 0.05, "momentum": 0.9, "dampening": 0.1}),
    "nesterov": (lambda: S.SGD(0.05, momentum=0.8, nesterov=True), torch.optim.SGD,
                 {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    "sgd_weight_decay": (lambda: S.SGD(0.05, momentum=0.5, weight_decay=0.1), torch.optim.SGD,
                         {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.1}),
    "adam": (lambda: S.Adam(0.01, betas=(0.8, 0.99)), torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99)}),
    "adam_weight_decay": (lambda: S.Adam(0.01, weight_decay=0.1), torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    "adamw": (lambda: S.AdamW(0.01, weight_decay=0.1), torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "adagrad": (lambda: S.AdaGrad(0.05, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1),
                torch.optim.Adagrad, {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.05,
                                      "initial_accumulator_value": 0.1}),
}


def torch_optim_reference(model, params, X, Y, optimizer, kwargs, steps):
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    opt = optimizer(leaves, **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        model.loss(tuple(leaves), X, Y).sum().backward()
        opt.step()
    return tuple(p.detach() for p in leaves)


@pytest.mark.parametrize("name", TORCH_TWINS)
def test_each_stepper_equals_its_torch_optim_counterpart_over_100_steps(name):
    """float64, an MLP with 3 layers, 100 steps: the engine's stepper and torch.optim agree to 1e-12."""
    make, optimizer, kwargs = TORCH_TWINS[name]
    model = S.MLP("tanh")
    g = torch.Generator().manual_seed(0)
    params = tuple(0.5 * torch.randn(*s, generator=g, dtype=DTYPE) for s in ((6, 4), (5, 6), (2, 5)))
    X, Y = torch.randn(4, 10, generator=g, dtype=DTYPE), torch.randn(2, 10, generator=g, dtype=DTYPE)
    ref = torch_optim_reference(model, params, X, Y, optimizer, kwargs, 100)
    for stepper in (make(), S.wrap_optimizer(optimizer, **kwargs)):
        run = S.run(model, params, X, Y, stepper, 100, record_every=100)
        for a, b in zip(run.params, ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(run.params[0], params[0])
        assert isinstance(stepper, S.Stepper)


def one_gd_step(net, params, X, Y, lr):
    return S.gradient_descent(net, params, X, Y, lr, 1).params


# ----------------------------------------------------------------------------- replacing parameters between steps

def test_replaced_parameters_keep_the_optimizer_memory():
    """A wrapper (teleportation) swaps θ between steps: the next step starts at the new θ with the old momentum."""
    model, lr, mu = S.MLP("tanh"), 0.05, 0.9
    g = torch.Generator().manual_seed(2)
    params = tuple(0.5 * torch.randn(*s, generator=g, dtype=DTYPE) for s in ((5, 4), (2, 5)))
    X, Y = torch.randn(4, 8, generator=g, dtype=DTYPE), torch.randn(2, 8, generator=g, dtype=DTYPE)
    grad = S.dynamics.gradient_fn(model, X, Y)
    new = tuple(0.3 * torch.randn(*p.shape, generator=g, dtype=DTYPE) for p in params)
    results = []
    for stepper in (S.SGD(lr, momentum=mu), S.wrap_optimizer(torch.optim.SGD, lr=lr, momentum=mu)):
        state = stepper.init_state(params)
        for _ in range(5):
            state = stepper.step(state, grad)
        buffer = (state.memory["momentum_buffer"] if "momentum_buffer" in state.memory else
                  tuple(state.memory["optimizer"].state[p]["momentum_buffer"].clone() for p in state.memory["leaves"]))
        state = stepper.step(dataclasses.replace(state, params=new), grad)
        _, g_new = grad(new)
        expected = tuple(p - lr * (mu * b + x) for p, b, x in zip(new, buffer, g_new))
        for a, b in zip(state.params, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        results.append(state.params)
    # the fused two-layer step rebinds its buffers to replaced parameters
    net = S.TwoLayerNet("tanh")
    (U, V), _, Y2 = two_layer_problem(3, 4, 5, batch=(2,))
    stepper = S.TwoLayerGD(net, None, Y2, 0.1)
    state = stepper.step(stepper.init_state((U, V)))
    moved = tuple(2 * p for p in (U, V))
    state = stepper.step(dataclasses.replace(state, params=moved))
    for a, b in zip(state.params, one_gd_step(net, moved, None, Y2, 0.1)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
