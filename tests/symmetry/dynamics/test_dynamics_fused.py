"""The fused two-layer GD stepper (symmetry.dynamics.fused.TwoLayerGD): one gradient step, its preallocated
form equal to the fused one, and what the preallocated form declines."""
import pytest
import torch

import symmetry as S

from conftest import DTYPE, grad_of, two_layer_problem


def one_gd_step(net, params, X, Y, lr):
    return S.gradient_descent(net, params, X, Y, lr, 1).params


@pytest.mark.parametrize("k", [None, 6])
def test_fused_two_layer_step_is_one_gradient_step(k):
    """TwoLayerGD (the loop's in-place hot path) = θ − η ∇L with the autograd gradient; GD for the radial net."""
    models = [S.TwoLayerNet(list(S.ACTIVATIONS)), S.TwoLayerNet(["tanh", "relu", "tanh", "sigmoid", "repu", "identity"]),
              S.TwoLayerRadialNet(reduction="sum"), S.TwoLayerNet("sigmoid", reduction="half_sum")]
    for net in models:
        params, X, Y = two_layer_problem(4, 5, 3, seed=5, k=k, batch=(6,))
        lr = torch.linspace(0.01, 0.3, 6, dtype=DTYPE)
        expected = [p - lr.reshape(6, 1, 1) * g for p, g in zip(params, grad_of(net, params, X, Y))]
        for a, b in zip(one_gd_step(net, params, X, Y, lr), expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    net = S.TwoLayerNet("tanh")
    single = tuple(p[0] for p in params)
    for a, b in zip(one_gd_step(net, single, X, Y[0], 0.1),
                    (p - 0.1 * g for p, g in zip(single, grad_of(net, single, X, Y[0])))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activations,lr", [([a for a in S.PAPER_ACTIVATIONS for _ in range(2)], "per_config"),
                                            (["tanh"] * 3, 0.05), (["relu", "relu", "sigmoid"], "per_config")])
def test_preallocated_two_layer_step_matches_the_fused_one(activations, lr):
    B, (m, h, n) = len(activations), (3, 5, 4)
    net = S.TwoLayerNet(S.activations.MixedActivation([S.get_activation(a) for a in activations]))
    (U, V), _, Y = two_layer_problem(m, h, n, seed=3, batch=(B,))
    eta = torch.linspace(0.01, 0.2, B, dtype=DTYPE).reshape(B, 1, 1) if lr == "per_config" else lr
    stepper = S.TwoLayerGD(net, None, Y, 0.1)
    a, b = (U.clone(), V.clone()), (U.clone(), V.clone())
    step = stepper._preallocated(a, eta)
    assert step is not None
    for _ in range(20):
        step()
        stepper._fused(b, eta)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(a[0], U)  # it moved


def test_preallocated_step_declines_what_it_does_not_cover():
    (U, V), X, Y = two_layer_problem(3, 4, 5, k=6, batch=(2,))
    assert S.TwoLayerGD(S.TwoLayerNet("tanh"), X, Y, 0.1)._preallocated((U, V), 0.1) is None  # data X
    Y5 = Y[..., :5]
    assert S.TwoLayerGD(S.TwoLayerNet("leaky_relu"), None, Y5, 0.1)._preallocated((U, V), 0.1) is None  # no `into`
    interleaved = S.activations.MixedActivation([S.get_activation(a) for a in ("tanh", "relu", "tanh")])
    (U3, V3), _, Y3 = two_layer_problem(3, 4, 5, batch=(3,))
    assert S.TwoLayerGD(S.TwoLayerNet(interleaved), None, Y3, 0.1)._preallocated((U3, V3), 0.1) is None
    (U1, V1), _, Y1 = two_layer_problem(3, 4, 5)
    assert S.TwoLayerGD(S.TwoLayerNet("tanh"), None, Y1, 0.1)._preallocated((U1, V1), 0.1) is None  # no batch dim
