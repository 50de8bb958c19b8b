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


# --- modules, data in batches, Lanczos with a tolerance --------------------------------------------

def small_module(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()


def exact_module_hessian(model, loss, X, Y):
    """The (D, D) Hessian by torch.func (forward-over-reverse) through functional_call: the oracle."""
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for p in model.parameters())

    def loss_fn(p):
        return loss(torch.func.functional_call(model, dict(zip(names, p)), (X,)), Y)

    return S.loss_hessian(loss_fn, params)


def test_module_top_k_matches_the_exact_hessian():
    model = small_module()
    X, Y = randn(20, 4, seed=1), torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(2))
    loss = torch.nn.functional.cross_entropy
    H = exact_module_hessian(model, loss, X, Y)
    values, vectors = torch.linalg.eigh(H)
    for which, k, pick in (("LA", 4, torch.arange(len(values) - 1, len(values) - 5, -1)), ("SA", 3, torch.arange(3))):
        result = S.hessian_top_k(model, loss, (X, Y), k=k, which=which, tol=0.0)
        torch.testing.assert_close(result.values, values[pick], rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(H @ result.vectors, result.vectors * result.values, rtol=1e-7, atol=1e-9)
        overlap = (vectors[:, pick].mT @ result.vectors).abs().diagonal()
        torch.testing.assert_close(overlap, torch.ones(k, dtype=DTYPE), rtol=1e-7, atol=1e-7)
    named = S.eigenvector_parameters(model, result.vectors[:, 0])
    assert list(named) == [n for n, _ in model.named_parameters()]
    assert all(named[n].shape == p.shape for n, p in model.named_parameters())


@pytest.mark.parametrize("weight, reduction", [("size", "mean"), ("one", "sum")])
def test_batches_are_summed_exactly(weight, reduction):
    model = small_module(seed=3)
    X, Y = randn(23, 4, seed=4), randn(23, 3, seed=5)
    loss = lambda F, T: torch.nn.functional.mse_loss(F, T, reduction=reduction)  # noqa: E731
    batches = [(X[:10], Y[:10]), (X[10:17], Y[10:17]), (X[17:], Y[17:])]  # unequal sizes
    v = randn(sum(p.numel() for p in model.parameters()), seed=6)
    whole, _ = S.module_hessian_vector_product(model, loss, (X, Y))
    parts, names = S.module_hessian_vector_product(model, loss, batches, batch_weight=weight)
    torch.testing.assert_close(parts(v), whole(v), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(whole(v), exact_module_hessian(model, loss, X, Y) @ v, rtol=1e-10, atol=1e-12)
    assert names == [n for n, _ in model.named_parameters()]
    if weight == "size":  # a mean loss over unweighted batch means is not the mean over the data: control
        plain, _ = S.module_hessian_vector_product(model, loss, batches, batch_weight="one")
        assert float((plain(v) - whole(v)).norm()) > 1e-3 * float(whole(v).norm())


def test_reverse_and_forward_products_agree():
    net = S.TwoLayerNet("tanh", reduction="sum")
    params, X, Y = two_layer_problem(4, 6, 3, seed=7, k=5)
    loss = net.loss_function(X, Y)
    v = randn(sum(p.numel() for p in params), seed=8)
    torch.testing.assert_close(S.hessian_vector_product(loss, params, mode="reverse")(v),
                               S.hessian_vector_product(loss, params, mode="forward")(v), rtol=1e-12, atol=1e-12)


def test_lanczos_tolerance_bounds_the_eigenvalue_error():
    """A symmetric matrix with a known, decaying spectrum: at tol the top-5 are within tol relative."""
    D = 400
    Q = torch.linalg.qr(randn(D, D, seed=9)).Q
    spectrum = 10.0 * 0.8 ** torch.arange(D, dtype=DTYPE) * torch.where(torch.arange(D) % 7 == 3, -1.0, 1.0)
    A = (Q * spectrum) @ Q.mT
    exact = torch.sort(spectrum, descending=True).values[:5]
    for tol in (1e-3, 1e-8):
        got = S.lanczos(lambda x: A @ x, D, k=5, tol=tol)
        assert bool((((got.values - exact) / exact).abs() <= tol).all())
        assert got.iterations < D
        one = S.lanczos(lambda x: A @ x, D, k=1, tol=tol)  # a single Ritz value has no gap to lean on
        assert abs(float(one.values[0] - exact[0])) <= tol * float(exact[0]) and one.iterations > 1
    loose, tight = S.lanczos(lambda x: A @ x, D, k=5, tol=1e-3), S.lanczos(lambda x: A @ x, D, k=5, tol=1e-8)
    assert loose.iterations < tight.iterations  # the tolerance buys time


def test_bad_module_input_is_named():
    model = small_module()
    X, Y = randn(6, 4), randn(6, 3)
    with pytest.raises(TypeError, match="one-shot iterator"):
        S.hessian_top_k(model, torch.nn.functional.mse_loss, iter([(X, Y)]))
    with pytest.raises(ValueError, match="scalar"):
        S.hessian_top_k(model, lambda F, T: (F - T) ** 2, (X, Y))
    with pytest.raises(ValueError, match="batch_weight='mean' is not allowed"):
        S.hessian_top_k(model, torch.nn.functional.mse_loss, (X, Y), batch_weight="mean")
    with pytest.raises(ValueError, match="tol=-1"):
        S.hessian_top_k(model, torch.nn.functional.mse_loss, (X, Y), tol=-1)
    with pytest.raises(RuntimeError, match="did not reach tol"):
        S.hessian_top_k(model, torch.nn.functional.mse_loss, (X, Y), k=3, tol=1e-14, max_iter=4)


def interpolating_net(relu: bool):
    """A module at an exact minimum (zero loss: its targets are its own outputs), with biases."""
    torch.manual_seed(2)
    hidden = [torch.nn.ReLU()] if relu else []
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), *hidden, torch.nn.Linear(6, 3)).double()
    X = torch.randn(20, 4, dtype=DTYPE)
    return net, (X, net(X).detach())


@pytest.mark.parametrize("relu", [False, True])
def test_orbit_tangents_are_flat_at_a_minimum_and_deflated(relu):
    """Cor. 11: the orbit of a minimum lies in the minimum, so H t = 0 for its tangents (r of them, Eq. 20 with
    the bias as an input); with symmetry=, Lanczos works on the complement of the orbit (the oracle: eigvalsh
    of P H P there): r fewer zeros, the same largest eigenvalues, eigenvectors orthogonal to the orbit."""
    net, data = interpolating_net(relu)
    mse = torch.nn.functional.mse_loss
    sym = S.module_symmetries(net)
    T = S.hessian.orbit_tangents(sym, {n: p.detach() for n, p in net.named_parameters()})
    r = T.shape[1]
    assert r == (6 if relu else 36 - (6 - 5) * (6 - 3))  # (R_>0)^6; GL(6) on [W1 b1] (5 columns) and W2 (3 rows)
    assert torch.allclose(T.mT @ T, torch.eye(r, dtype=DTYPE), atol=1e-12)
    hvp, _ = S.hessian.module_hessian_vector_product(net, mse, data)
    H = torch.stack([hvp(e) for e in torch.eye(T.shape[0], dtype=DTYPE)])
    assert float((H @ T).abs().max()) <= 1e-12 * float(H.abs().max())
    P = torch.eye(T.shape[0], dtype=DTYPE) - T @ T.mT
    outside = torch.linalg.eigvalsh(P @ H @ P)[r:]  # the r zeros of the projection dropped
    zeros = lambda e: int((e.abs() < 1e-10 * float(H.abs().max())).sum())  # noqa: E731
    assert zeros(outside) == zeros(torch.linalg.eigvalsh(H)) - r
    top = S.hessian_top_k(net, mse, data, k=3, tol=1e-12, symmetry=sym)
    torch.testing.assert_close(top.values, outside.flip(0)[:3], rtol=1e-8, atol=0)
    bottom = S.hessian_top_k(net, mse, data, k=1, which="SA", tol=1e-12, symmetry=sym)
    assert abs(float(bottom.values[0]) - float(outside[0])) < 1e-10
    assert float((T.mT @ torch.cat([top.vectors, bottom.vectors], 1)).abs().max()) < 1e-10


def test_frozen_parameters_leave_their_blocks_out_of_the_deflation():
    """A frozen weight is no variable of the Hessian: the blocks moving it are left out (.notes says so), the same
    rule as the monitor and teleport (before: the whole symmetry was refused); a symmetry given as a bare Symmetry
    (no blocks to drop) that moves a frozen parameter is refused by name."""
    import dataclasses

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(16, 3, generator=g, dtype=DTYPE), torch.randn(16, 2, generator=g, dtype=DTYPE))
    mse = torch.nn.functional.mse_loss
    sym = S.module_symmetries(net)
    net[0].weight.requires_grad_(False)
    got = S.hessian_top_k(net, mse, data, k=3, tol=1e-12, symmetry=sym)
    by_hand = dataclasses.replace(sym, blocks=tuple(b for b in sym.blocks if b.name != "0"))
    want = S.hessian_top_k(net, mse, data, k=3, tol=1e-12, symmetry=by_hand)
    torch.testing.assert_close(got.values, want.values, rtol=1e-12, atol=0)
    assert any("frozen" in n and "0.weight" in n and "['0']" in n for n in got.notes)
    assert want.notes == ("frozen parameters ['0.weight'] (requires_grad=False): no block acts on them",)

    class Bare:  # the Symmetry protocol only: nothing to drop
        algebra_zero, exp, act_params = sym.algebra_zero, sym.exp, sym.act_params

    with pytest.raises(S.NotSupportedError, match=r"moves the frozen parameters \['0.weight'\]"):
        S.hessian_top_k(net, mse, data, k=2, symmetry=Bare())
    with pytest.raises(ValueError, match="deflate"):
        S.lanczos(lambda v: v, 5, 2, deflate=torch.zeros(4, 1, dtype=DTYPE))


def test_a_paper_group_deflates_the_hessian_of_a_tuple_model():
    """The linear two-layer net at a generic global minimum: GL_h's orbit (Eq. 20) is flat (Cor. 11) and the
    Lanczos on its complement starts above zero when the minimum is the orbit itself (h ≤ m: the fibre of
    UVᵀ = Y, of dimension (m + n)h − mn, equals h² here)."""
    from symmetry.groups import paper as P

    m, h, n = 3, 3, 4
    U, Y = randn(m, h, seed=4), randn(m, n, seed=5)
    V = (torch.linalg.solve(U, Y)).mT  # U Vᵀ = Y
    net = S.TwoLayerNet("identity", reduction="sum")
    loss = net.loss_function(None, Y)
    group = P.GeneralLinear().bind(net, (U, V))
    eigs = S.hessian_eigenvalues(loss, (U, V))
    n_zero = int((eigs.abs() < 1e-9 * eigs.abs().max()).sum())
    assert n_zero == h * h == S.hessian.orbit_tangents(group, (U, V)).shape[1]
    bottom = S.top_hessian_eigenvalues(loss, (U, V), k=1, which="SA", symmetry=group)
    assert float(bottom[0]) == pytest.approx(float(eigs[n_zero]), rel=1e-8)  # the smallest nonzero one
    assert abs(float(S.top_hessian_eigenvalues(loss, (U, V), k=1, which="SA")[0])) < 1e-9 * float(eigs[-1])


def test_hessian_top_k_on_the_gpt_with_attention_on_cpu():
    """nets.GPT calls scaled_dot_product_attention (no double backward in torch's fused CPU kernel): the Hessian
    is taken on the math backend and equals the dense Hessian's top eigenvalues (before: "derivative for ...
    not implemented")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from symmetry.nets import GPT

    torch.manual_seed(0)
    model = GPT(8, dim=4, heads=2, hidden=4, layers=1).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 8, (2, 5), generator=g), torch.randint(0, 8, (2, 5), generator=g)

    def ce(out, target):
        return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))

    top = S.hessian_top_k(model, ce, (x, y), k=2, tol=1e-12)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(t):
        parts = [c.reshape(s) for c, s in zip(torch.split(t, [s.numel() for s in shapes]), shapes)]
        return ce(torch.func.functional_call(model, dict(zip(names, parts)), (x,)), y)

    with sdpa_kernel(SDPBackend.MATH):
        dense = torch.autograd.functional.hessian(loss, theta)
    want = torch.linalg.eigvalsh(0.5 * (dense + dense.mT)).flip(0)[:2]
    torch.testing.assert_close(top.values, want, rtol=1e-9, atol=0)


def test_lambda_max_is_the_largest_eigenvalue_of_the_exact_hessian_and_teleports_is_the_same_function():
    from symmetry import teleport as T
    from symmetry.hessian import lambda_max

    params, X, Y = two_layer_problem(3, 4, 5, seed=3)
    loss = S.TwoLayerNet("tanh").loss_function(X, Y)
    exact = float(S.hessian_eigenvalues(loss, params)[-1])  # eigvalsh of the dense Hessian: the oracle
    assert lambda_max(loss, params) == pytest.approx(exact, rel=1e-10)
    assert T.lambda_max is lambda_max
