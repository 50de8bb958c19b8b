"""Bad input gets a clear error naming the argument and, where there is a list, the allowed values."""
import pytest
import torch

import symmetry as S

from conftest import DTYPE, randn, two_layer_problem


def with_nan(params):
    U = params[0].clone()
    U[0, 0] = float("nan")
    return (U, params[1])


def test_nan_in_parameters_is_refused_everywhere_it_enters():
    params, X, Y = two_layer_problem(3, 4, 4)
    bad = with_nan(params)
    net = S.TwoLayerNet("tanh")
    calls = [
        lambda: S.conserved_Q(bad, "tanh"),
        lambda: S.imbalance_matrix(bad),
        lambda: S.gradient_descent(net, bad, X, Y, 0.1, 3),
        lambda: S.gradient_flow(net, bad, X, Y, [0.0, 1.0]),
        lambda: S.nonlinear_action(torch.eye(4, dtype=DTYPE), bad, None, "tanh"),
        lambda: S.loss_hessian(net.loss_function(X, Y), bad),
        lambda: S.orbit_dimension(S.linear_action, bad, "gl"),
        lambda: S.init_at_Q(bad, 1.0, "tanh"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"params\[0\] \(shape \(3, 4\)\) contains NaN"):
            call()
    inf = (params[0], params[1] * float("inf"))
    with pytest.raises(ValueError, match="contains infinity"):
        S.conserved_Q(inf, "relu")


def test_parameters_must_be_a_tuple_of_float_tensors():
    with pytest.raises(TypeError, match="params must be a tuple of tensors"):
        S.conserved_Q(randn(3, 4), "tanh")
    with pytest.raises(TypeError, match=r"params\[1\] must be a torch.Tensor"):
        S.conserved_Q((randn(3, 4), [[1.0]]), "tanh")
    with pytest.raises(TypeError, match="floating-point"):
        S.conserved_Q((torch.ones(3, 4, dtype=torch.int64), randn(2, 4)), "tanh")
    with pytest.raises(ValueError, match="must hold 2 tensors, got 3"):
        S.conserved_Q((randn(3, 4), randn(2, 4), randn(2, 2)), "tanh")


def test_unknown_activation_everywhere():
    params, _, _ = two_layer_problem(3, 4, 4)
    for call in (lambda: S.TwoLayerNet("gelu"), lambda: S.conserved_Q(params, "gelu"),
                 lambda: S.nonlinear_action(torch.eye(4, dtype=DTYPE), params, None, "gelu"),
                 lambda: S.expected_Q_xavier(3, 4, 4, "gelu"), lambda: S.MLP(["relu", "gelu"])):
        with pytest.raises(ValueError, match="activation='gelu' is not allowed; choose one of identity, leaky_relu"):
            call()


def test_shape_mismatch_in_the_actions():
    params, _, _ = two_layer_problem(3, 4, 5)
    with pytest.raises(ValueError, match="g must be 4x4.*width 4, got 5x5"):
        S.linear_action(torch.eye(5, dtype=DTYPE), params)
    with pytest.raises(ValueError, match="square matrix"):
        S.scaling_action(torch.ones(4, dtype=DTYPE), params)
    with pytest.raises(ValueError, match="4 weight matrices have 3 hidden layers; got 2"):
        S.multilayer_action([torch.eye(2)] * 2, tuple(randn(2, 2) for _ in range(4)))


def test_non_square_nonlinear_action():
    params, X, _ = two_layer_problem(3, 4, 5, k=7)
    with pytest.raises(ValueError, match="only for h == k.*h=4 and batch size k=7"):
        S.nonlinear_action(torch.eye(4, dtype=DTYPE), params, X, "tanh")
