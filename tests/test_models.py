"""Models: closed-form gradients agree with autograd; batching is per configuration; shapes are checked."""
import pytest
import torch

import symmetry as S
from symmetry.models import REDUCTIONS, Model

from conftest import DTYPE, SHAPES, grad_of, randn, two_layer_problem


@pytest.mark.parametrize("name", S.ACTIVATIONS)
@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
@pytest.mark.parametrize("k", [None, 6])
def test_closed_form_gradient_matches_autograd(name, reduction, k):
    net = S.TwoLayerNet(name, reduction=reduction)
    params, X, Y = two_layer_problem(4, 5, 3, seed=1, k=k, batch=(2,))
    loss, grads = net.loss_and_grad(params, X, Y)
    torch.testing.assert_close(loss, net.loss(params, X, Y), rtol=1e-14, atol=1e-14)
    for g, ref in zip(grads, grad_of(net, params, X, Y)):
        torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-12)
    # and the generic torch.func path of the base class
    _, generic = Model.loss_and_grad(net, params, X, Y)
    for g, ref in zip(grads, generic):
        torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-12)


MLP_VJP = ["identity", "relu", "repu", ["relu", "repu"]]


@pytest.mark.parametrize("activations", MLP_VJP, ids=str)
@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("layout", ["row-major", "column-major W", "transposed X", "no X", "width 1"])
def test_mlp_backpropagation_is_autograd_bit_for_bit(activations, reduction, dtype, layout, monkeypatch):
    """MLP.loss_and_grad written out (no graph) returns autograd's loss and gradient, bit for bit: the
    Noether figure's numbers do not depend on which of the two computed them."""
    sizes = [3, 1, 1, 2] if layout == "width 1" else [3, 4, 5, 2]
    g = torch.Generator().manual_seed(7)
    Ws = tuple(torch.randn(b, a, generator=g, dtype=dtype) for a, b in zip(sizes, sizes[1:]))
    if layout == "column-major W":
        Ws = tuple(W.t().contiguous().t() for W in Ws)
    X = torch.randn(3, 6, generator=g, dtype=dtype)
    X = {"transposed X": X.t().contiguous().t(), "no X": None}.get(layout, X)
    Y = torch.randn(2, 3 if X is None else 6, generator=g, dtype=dtype)
    net = S.MLP(activations, reduction=reduction)
    loss, grads = Model.loss_and_grad(net, Ws, X, Y)  # autograd
    with monkeypatch.context() as m:  # the written-out path must not fall back on autograd
        m.setattr(torch.autograd, "grad", lambda *a, **k: pytest.fail("autograd used"))
        fast_loss, fast = net.loss_and_grad(Ws, X, Y)
    assert torch.equal(fast_loss, loss)
    assert all(torch.equal(a, b) for a, b in zip(fast, grads))


class _ScaledMLP(S.MLP):
    """A subclass with its own forward: the written-out backpropagation must not stand in for it."""

    def forward(self, params, X=None):
        return 2.0 * super().forward(params, X)


@pytest.mark.parametrize("case", ["batched", "classifier", "no vjp", "nested", "own forward"])
def test_mlp_gradient_falls_back_on_autograd(case):
    """What the written-out backpropagation does not cover still gets the right gradient."""
    Ws = (randn(4, 3), randn(2, 4, seed=1))
    X, Y = randn(3, 5, seed=2), randn(2, 5, seed=3)
    net = S.MLP("leaky_relu" if case == "no vjp" else "relu", reduction="half_sum")
    if case == "batched":
        Ws = tuple(torch.stack([W, 2 * W]) for W in Ws)
    if case == "classifier":
        net, Y = S.MLPClassifier("relu"), torch.tensor([0, 1, 1, 0, 1])
    if case == "nested":
        Ws = tuple(W.requires_grad_(True) for W in Ws)
    if case == "own forward":
        net = _ScaledMLP("relu", reduction="half_sum")
    loss, grads = net.loss_and_grad(Ws, X, Y)
    for g, ref in zip(grads, grad_of(net, Ws, X, Y)):
        torch.testing.assert_close(g, ref, rtol=1e-14, atol=1e-14)
    if case == "nested":  # a graph to differentiate again
        assert grads[0].requires_grad


def test_mean_reduction_is_the_mean_over_entries():
    net = S.TwoLayerNet("tanh")
    params, X, Y = two_layer_problem(5, 50, 10, seed=0)
    F = net(params, X)
    assert torch.isclose(net.loss(params, X, Y), ((Y - F) ** 2).sum() / (5 * 10))
    assert torch.isclose(S.TwoLayerNet("tanh", "sum").loss(params, X, Y), torch.linalg.matrix_norm(Y - F) ** 2)


def test_batched_forward_is_per_configuration():
    net = S.TwoLayerNet(["identity", "relu", "tanh"])
    params, X, Y = two_layer_problem(3, 4, 5, seed=2, batch=(3,))
    F = net(params, X)
    for b, name in enumerate(["identity", "relu", "tanh"]):
        single = S.TwoLayerNet(name)((params[0][b], params[1][b]), X)
        torch.testing.assert_close(F[b], single, rtol=1e-14, atol=1e-14)


def test_two_layer_mlp_is_the_two_layer_net():
    """The MLP's (W_1, W_2) is (Vᵀ, U)."""
    (U, V), X, Y = two_layer_problem(3, 6, 4, seed=3, k=5)
    torch.testing.assert_close(S.MLP("tanh")((V.mT, U), X), S.TwoLayerNet("tanh")((U, V), X))


def test_mlp_layers_and_activations():
    Ws = (randn(5, 3), randn(4, 5, seed=1), randn(2, 4, seed=2))
    X = randn(3, 7, seed=3)
    expected = Ws[2] @ torch.tanh(Ws[1] @ torch.relu(Ws[0] @ X))
    torch.testing.assert_close(S.MLP(["relu", "tanh"])(Ws, X), expected)
    with pytest.raises(ValueError, match="3 weight matrices need 2 hidden activations"):
        S.MLP(["relu"])(Ws, X)
    with pytest.raises(ValueError, match="W_2 is"):
        S.MLP("relu")((Ws[0], Ws[2]), X)


def test_radial_net_prop14_form():
    """g(Vᵀ) rescales each row of Vᵀ by its norm⁻² (Prop. 15's h(r) = r⁻²)."""
    U, V = randn(3, 4), randn(5, 4, seed=1)
    rows = V.mT / (V.mT.norm(dim=1, keepdim=True) ** 2)
    torch.testing.assert_close(S.TwoLayerRadialNet()((U, V)), U @ rows)
    cols = V.mT / (V.mT.norm(dim=0, keepdim=True) ** 2)
    torch.testing.assert_close(S.TwoLayerRadialNet(over="hidden")((U, V)), U @ cols)


@pytest.mark.parametrize("m,h,n", SHAPES)
def test_loss_function_is_pure(m, h, n):
    """model.loss_function(X, Y) is a function of the parameters only: torch.func can take it."""
    net = S.TwoLayerNet("sigmoid")
    params, X, Y = two_layer_problem(m, h, n, k=3)
    grads = torch.func.grad(net.loss_function(X, Y))(params)
    for g, ref in zip(grads, grad_of(net, params, X, Y)):
        torch.testing.assert_close(g, ref)


def test_shape_errors_name_the_problem():
    net = S.TwoLayerNet("relu")
    with pytest.raises(ValueError, match=r"hidden widths differ.*h=4.*h=5"):
        net((randn(3, 4), randn(2, 5)))
    with pytest.raises(ValueError, match="X has 3 rows.*n=2"):
        net((randn(3, 4), randn(2, 4)), randn(3, 6))
    with pytest.raises(ValueError, match="Y has shape"):
        net.loss((randn(3, 4), randn(2, 4)), None, randn(3, 5))
    with pytest.raises(ValueError, match="Y has shape"):
        net.loss_and_grad((randn(3, 4), randn(2, 4)), None, randn(3, 5))
    with pytest.raises(ValueError, match="Y has shape"):
        S.MLP("relu").loss_and_grad((randn(4, 3), randn(2, 4)), randn(3, 6), randn(2, 5))
    with pytest.raises(ValueError, match="X has 2 rows"):
        S.MLP("relu").loss_and_grad((randn(4, 3), randn(2, 4)), randn(2, 6), randn(2, 6))
    with pytest.raises(ValueError, match="reduction='avg'.*half_sum, mean, sum"):
        S.TwoLayerNet("relu", reduction="avg")
    with pytest.raises(ValueError, match="over='rows'.*hidden, neuron"):
        S.TwoLayerRadialNet(over="rows")


@pytest.mark.parametrize("over", ["neuron", "hidden"])
@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
@pytest.mark.parametrize("k", [None, 6])
def test_radial_closed_form_gradient_matches_autograd(over, reduction, k):
    net = S.TwoLayerRadialNet(over=over, reduction=reduction)
    params, X, Y = two_layer_problem(4, 5, 3, seed=4, k=k, batch=(2,))
    loss, grads = net.loss_and_grad(params, X, Y)
    torch.testing.assert_close(loss, net.loss(params, X, Y), rtol=1e-14, atol=1e-14)
    for g, ref in zip(grads, grad_of(net, params, X, Y)):
        torch.testing.assert_close(g, ref, rtol=1e-11, atol=1e-11)
    # a user-supplied f takes the autograd path
    cubic = S.TwoLayerRadialNet(f=lambda r: r ** -3, over=over, reduction=reduction)
    for g, ref in zip(cubic.loss_and_grad(params, X, Y)[1], grad_of(cubic, params, X, Y)):
        torch.testing.assert_close(g, ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", S.ACTIVATIONS)
def test_sigma_and_dsigma_agree_with_the_table(name):
    act = S.get_activation(name)
    z = randn(200, seed=8, scale=2.0)
    z = z[z.abs() > 1e-6]
    s, d = act.sigma_and_dsigma(z)
    torch.testing.assert_close(s, act.sigma(z), rtol=0, atol=0)
    torch.testing.assert_close(d, act.dsigma(z), rtol=1e-12, atol=1e-14)
