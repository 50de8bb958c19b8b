"""Hessians: exact matrix, eigenvalues, Hessian-vector products and Lanczos top-k."""

import pytest
import torch

import symmetry as S

from conftest import DTYPE, randn, two_layer_problem


def test_quadratic_loss_hessian_is_its_matrix():
    A = randn(6, 6)
    A = A + A.mT
    params = (randn(2, 3, seed=1),)
    loss = lambda p: 0.5 * p[0].reshape(-1) @ A @ p[0].reshape(-1)  # noqa: E731
    torch.testing.assert_close(S.loss_hessian(loss, params), A)
    torch.testing.assert_close(S.hessian_eigenvalues(loss, params), torch.linalg.eigvalsh(A))


def test_one_dimensional_example_eq75():
    """Eq. 75: H = [[V²X², 2UVX² − YX], [2UVX² − YX, U²X²]] for L = ½(Y − UVX)²."""
    u, v, x, y = 0.7, -1.3, 1.0, 1.0
    net = S.TwoLayerNet("identity", reduction="half_sum")
    H = S.loss_hessian(net.loss_function(None, torch.tensor([[y]], dtype=DTYPE)),
                       (torch.tensor([[u]], dtype=DTYPE), torch.tensor([[v]], dtype=DTYPE)))
    off = 2 * u * v * x * x - y * x
    torch.testing.assert_close(H, torch.tensor([[v * v * x * x, off], [off, u * u * x * x]], dtype=DTYPE))


def test_hvp_and_lanczos_agree_with_the_full_matrix():
    net = S.TwoLayerNet("tanh", reduction="sum")
    params, X, Y = two_layer_problem(4, 6, 3, seed=2, k=5)
    loss = net.loss_function(X, Y)
    H = S.loss_hessian(loss, params)
    v = randn(H.shape[0], seed=3)
    torch.testing.assert_close(S.hessian_vector_product(loss, params)(v), H @ v, rtol=1e-10, atol=1e-10)
    full = torch.linalg.eigvalsh(H)
    torch.testing.assert_close(S.top_hessian_eigenvalues(loss, params, k=4), full.flip(0)[:4], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(S.top_hessian_eigenvalues(loss, params, k=3, which="SA"), full[:3], rtol=1e-8, atol=1e-8)
    assert torch.equal(S.top_hessian_eigenvalues(loss, params, k=2, seed=5),
                       S.top_hessian_eigenvalues(loss, params, k=2, seed=5))


def test_flat_directions_at_a_minimum_include_the_orbit():
    """At a minimum of a linear net the GL_h orbit (Eq. 20) lies in the minimum (Cor. 11): that many zero eigenvalues."""
    m, h, n = 2, 5, 3
    U = randn(m, h, seed=4)
    Y = randn(m, n, seed=5)
    null_U = torch.linalg.svd(U).Vh[m:].mT  # (h, h − m), U @ null_U = 0
    V = (torch.linalg.pinv(U) @ Y + null_U @ randn(h - m, n, seed=6)).mT  # U Vᵀ = Y: a generic global minimum
    net = S.TwoLayerNet("identity", reduction="sum")
    eigs = S.hessian_eigenvalues(net.loss_function(None, Y), (U, V))
    n_zero = int((eigs.abs() < 1e-9 * eigs.abs().max()).sum())
    orbit = S.orbit_dimension(S.linear_action, (U, V), "gl")
    assert orbit == h * h - max(0, h - n) * max(0, h - m)
    assert n_zero >= orbit
    assert n_zero == (m + n) * h - m * n  # the minimum is the whole fibre {UVᵀ = Y}, of codimension m·n


def test_hessian_of_a_batched_loss_is_refused():
    net = S.TwoLayerNet("tanh")
    params, X, Y = two_layer_problem(2, 3, 4, batch=(2,))
    with pytest.raises(ValueError, match="scalar"):
        S.loss_hessian(net.loss_function(X, Y), params)
    with pytest.raises(ValueError, match="k=20 must be"):
        S.top_hessian_eigenvalues(net.loss_function(X, Y[0]), tuple(p[0] for p in params), k=20)
    with pytest.raises(ValueError, match="which='BE'"):
        S.top_hessian_eigenvalues(net.loss_function(X, Y[0]), tuple(p[0] for p in params), which="BE")
