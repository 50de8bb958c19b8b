"""Group actions (App. B): invariance (Prop. 5, 7, 9), Prop. 8, Prop. 10 and orbit dimensions (Eq. 20–22)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import symmetry as S
from symmetry.actions import RankDeficiencyWarning, orbit_dimension_formula, random_lie_algebra_element

from conftest import DTYPE, SHAPES, SEEDS, generator, grad_of, inner, norm, randn, two_layer_problem

# (label, model, action on (U, V), Lie algebra, dπ = α·M closed form or None)
LINEAR_SYMMETRIES = [
    ("linear GL_h", lambda: S.TwoLayerNet("identity"), S.linear_action, "gl", 1.0),
    ("relu scaling", lambda: S.TwoLayerNet("relu"), S.scaling_action, "diagonal", 1.0),
    ("leaky_relu scaling", lambda: S.TwoLayerNet("leaky_relu", ), S.scaling_action, "diagonal", 1.0),
    ("repu(2) scaling", lambda: S.TwoLayerNet(S.get_activation("repu", power=2.0)),
     lambda g, p: S.scaling_action(g, p, alpha=2.0), "diagonal", 2.0),
    ("radial O(h)", lambda: S.TwoLayerRadialNet(over="hidden"), S.orthogonal_action, "so", 1.0),
    ("radial neuron scaling", lambda: S.TwoLayerRadialNet(over="neuron"), S.neuron_scaling_action, "diagonal", None),
]
IDS = [s[0] for s in LINEAR_SYMMETRIES]


def group_element(algebra, h, seed, scale=0.5):
    """exp(M) for a random M in the algebra: invertible, positive diagonal, or orthogonal."""
    return torch.linalg.matrix_exp(scale * random_lie_algebra_element(algebra, h, generator(seed)))


@pytest.mark.parametrize("label,make_model,action,algebra,alpha", LINEAR_SYMMETRIES, ids=IDS)
@pytest.mark.parametrize("m,h,n", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_action_leaves_loss_invariant(label, make_model, action, algebra, alpha, m, h, n, seed):
    """Prop. 7: L(g·θ) = L(θ) for any data, g far from the identity."""
    model = make_model()
    params, X, Y = two_layer_problem(m, h, n, seed=seed, k=6)
    g = group_element(algebra, h, seed + 10, scale=1.0)
    moved = action(g, params)
    assert not torch.allclose(moved[0], params[0])  # g really moved θ
    torch.testing.assert_close(model(moved, X), model(params, X), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("label,make_model,action,algebra,alpha", LINEAR_SYMMETRIES, ids=IDS)
@pytest.mark.parametrize("m,h,n", SHAPES)
def test_gradient_orthogonal_to_infinitesimal_action(label, make_model, action, algebra, alpha, m, h, n):
    """Prop. 5 / Cor. 6: ⟨∇L, M·θ⟩ = 0, and Eq. 13's closed form is d/dt exp(tM)·θ (Eq. 9)."""
    model = make_model()
    params, X, Y = two_layer_problem(m, h, n, seed=3, k=6)
    M = random_lie_algebra_element(algebra, h, generator(4))
    M_theta = S.infinitesimal_action(action, M, params)
    if alpha is not None:
        for a, b in zip(M_theta, S.linear_infinitesimal_action(M, params, alpha)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    grad = grad_of(model, params, X, Y)
    assert abs(inner(grad, M_theta)) <= 1e-10 * norm(grad) * norm(M_theta)


def test_gl_action_is_not_a_symmetry_of_tanh_nets():
    """Negative control: the checks above can fail. GL_h does not commute with tanh."""
    model = S.TwoLayerNet("tanh")
    params, X, Y = two_layer_problem(3, 4, 5, seed=0, k=6)
    M = random_lie_algebra_element("gl", 4, generator(1))
    M_theta = S.linear_infinitesimal_action(M, params)
    grad = grad_of(model, params, X, Y)
    assert abs(inner(grad, M_theta)) > 1e-3 * norm(grad) * norm(M_theta)
    g = group_element("gl", 4, 2)
    assert not torch.allclose(model(S.linear_action(g, params), X), model(params, X), rtol=1e-3)


def multilayer_problem(seed=0):
    widths = [4, 5, 3, 6, 2]  # n_0 … n_4
    Ws = tuple(randn(widths[i + 1], widths[i], seed=seed + i) for i in range(4))
    X, Y = randn(4, 7, seed=seed + 20), randn(2, 7, seed=seed + 21)
    acts = ["identity", "relu", S.get_activation("repu", power=2.0)]
    return S.MLP(acts), Ws, X, Y, [1.0, 1.0, 2.0], ["gl", "diagonal", "diagonal"], widths


@pytest.mark.parametrize("seed", SEEDS)
def test_multilayer_action_is_a_symmetry(seed):
    """Prop. 9 (Eq. 17, 18) on a 4-layer MLP mixing a linear, a ReLU and a RePU(2) hidden layer."""
    model, Ws, X, Y, alphas, algebras, widths = multilayer_problem(seed)
    gs = [group_element(a, widths[i + 1], seed + i) for i, a in enumerate(algebras)]
    torch.testing.assert_close(model(S.multilayer_action(gs, Ws, alphas), X), model(Ws, X), rtol=1e-10, atol=1e-10)

    Ms = [random_lie_algebra_element(a, widths[i + 1], generator(seed + 5 + i)) for i, a in enumerate(algebras)]
    closed = S.multilayer_infinitesimal_action(Ms, Ws, alphas)

    def along(t):
        return S.multilayer_action([torch.linalg.matrix_exp(t * M) for M in Ms], Ws, alphas)

    t0 = torch.zeros((), dtype=DTYPE)
    derivative = S.models.jvp(along, (t0,), (torch.ones_like(t0),))[1]
    for a, b in zip(closed, derivative):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    grad = grad_of(model, Ws, X, Y)
    assert abs(inner(grad, closed)) <= 1e-10 * norm(grad) * norm(closed)
    # a wrong degree for the RePU layer breaks it
    wrong = S.multilayer_infinitesimal_action(Ms, Ws, [1.0, 1.0, 1.0])
    assert abs(inner(grad, wrong)) > 1e-4 * norm(grad) * norm(wrong)


@pytest.mark.parametrize("m,h,n", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_prop10_gradient_transforms_by_transpose(m, h, n, seed):
    """Prop. 10: g^T ∇L(g·θ) = ∇L(θ). For T_g(U, V) = (Ug⁻¹, Vgᵀ), T_gᵀ(A, B) = (A g⁻ᵀ, B g)."""
    model = S.TwoLayerNet("identity")
    params, X, Y = two_layer_problem(m, h, n, seed=seed, k=6)
    g = group_element("gl", h, seed + 1, scale=0.7)
    A, B = grad_of(model, S.linear_action(g, params), X, Y)
    pulled_back = (torch.linalg.solve(g, A.mT).mT, B @ g)  # (A g⁻ᵀ, B g)
    for a, b in zip(pulled_back, grad_of(model, params, X, Y)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    # applying T_g instead of its transpose does not give ∇L(θ)
    assert not torch.allclose(torch.linalg.solve(g.mT, A.mT).mT, grad_of(model, params, X, Y)[0], rtol=1e-3)


NONLINEAR = [a for a in S.ACTIVATIONS if a != "identity"]


@pytest.mark.parametrize("name", NONLINEAR)
@pytest.mark.parametrize("seed", SEEDS)
def test_prop8_nonlinear_action(name, seed):
    """Prop. 8 with h = k: F(X) kept on X, identity and composition axioms (Eq. 16); not kept on X'."""
    m, h, n = 3, 6, 4
    model = S.TwoLayerNet(name)
    params, X, _ = two_layer_problem(m, h, n, seed=seed, k=h)
    g1, g2 = group_element("gl", h, seed + 1), group_element("gl", h, seed + 2)

    moved = S.nonlinear_action(g1, params, X, name)
    torch.testing.assert_close(model(moved, X), model(params, X), rtol=1e-8, atol=1e-9)

    eye = torch.eye(h, dtype=DTYPE)
    for a, b in zip(S.nonlinear_action(eye, params, X, name), params):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)

    twice = S.nonlinear_action(g2, moved, X, name)
    once = S.nonlinear_action(g2 @ g1, params, X, name)
    for a, b in zip(twice, once):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)

    X_other = randn(n, h, seed=seed + 50)
    change = (model(moved, X_other) - model(params, X_other)).norm() / model(params, X_other).norm()
    assert change > 1e-2


def test_prop8_for_the_identity_is_the_linear_action():
    """σ = id and invertible Z: π(g, Z) = Z(gZ)⁻¹ = g⁻¹, so Prop. 8 reduces to Example 2 on every batch."""
    Z = randn(5, 5)
    g = group_element("gl", 5, 1)
    torch.testing.assert_close(S.nonlinear_pi(g, Z, "identity"), torch.linalg.inv(g), rtol=1e-9, atol=1e-10)


def test_prop8_needs_a_square_batch():
    params, X, _ = two_layer_problem(3, 6, 4, k=5)
    g = group_element("gl", 6, 0)
    with pytest.raises(ValueError, match="h == k.*h=6.*k=5"):
        S.nonlinear_action(g, params, X, "tanh")
    U, V = S.nonlinear_action(g, params, X, "tanh", square_only=False)
    assert U.shape == params[0].shape


def test_prop8_rank_deficiency_is_reported():
    """σ(gZ) with a zero row (ReLU of a negative row) is rank-deficient: warn, or raise if asked."""
    (U, V), _, _ = two_layer_problem(3, 4, 4, seed=0)
    X = None  # whitened: Z = Vᵀ, square 4 x 4
    V = V.abs()
    V[:, 0] = -V[:, 0]  # neuron 0 is negative on every sample, the others positive
    eye = torch.eye(4, dtype=DTYPE)
    with pytest.warns(RankDeficiencyWarning, match="rank 3 < 4"):
        S.nonlinear_action(eye, (U, V), X, "relu")
    with pytest.raises(ValueError, match="rank-deficient"):
        S.nonlinear_action(eye, (U, V), X, "relu", on_rank_deficient="raise")
    with pytest.raises(ValueError, match="on_rank_deficient='never'.*ignore, raise, warn"):
        S.nonlinear_action(eye, (U, V), X, "relu", on_rank_deficient="never")


def test_nonlinear_pi_is_the_pseudo_inverse_formula():
    """The least-squares solve equals σ(Z)σ(gZ)⁺, also for k < h (minimum-norm)."""
    for h, k in [(5, 5), (6, 4)]:
        Z = randn(h, k, seed=h)
        g = group_element("gl", h, 3)
        expected = torch.tanh(Z) @ torch.linalg.pinv(torch.tanh(g @ Z))
        torch.testing.assert_close(S.nonlinear_pi(g, Z, "tanh"), expected, rtol=1e-9, atol=1e-10)


ORBIT_CASES = [("linear", S.linear_action, "gl"), ("homogeneous", S.scaling_action, "diagonal"),
               ("radial", S.orthogonal_action, "so")]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(m=st.integers(1, 5), h=st.integers(1, 7), n=st.integers(1, 5), seed=st.integers(0, 100))
def test_orbit_dimensions(m, h, n, seed):
    """Eq. 20–22: rank of the Jacobian of g ↦ g·θ at g = I, at a generic θ."""
    params = S.gaussian_init(m, h, n, std=1.0, seed=seed, dtype=DTYPE)
    for kind, action, algebra in ORBIT_CASES:
        measured = S.orbit_dimension(action, params, algebra)
        formula = orbit_dimension_formula(kind, m, h, n)
        assert measured == formula["generic"], (kind, m, h, n, measured, formula)
        if kind == "linear":
            assert formula["paper"] == formula["generic"]  # Eq. 20 holds as printed


@pytest.mark.parametrize("kind,action,algebra,m,h,n,paper,measured", [
    ("homogeneous", S.scaling_action, "diagonal", 2, 5, 2, 2, 5),
    ("homogeneous", S.scaling_action, "diagonal", 3, 8, 2, 3, 8),
    ("radial", S.orthogonal_action, "so", 2, 5, 2, 7, 10),
    ("radial", S.orthogonal_action, "so", 2, 8, 3, 18, 25),
])
def test_orbit_dimension_where_eq21_eq22_disagree(kind, action, algebra, m, h, n, paper, measured):
    """Eq. 21 and 22 as printed undercount once h > max(m, n): the README reports these numbers."""
    params = S.gaussian_init(m, h, n, std=1.0, seed=7, dtype=DTYPE)
    assert S.orbit_dimension(action, params, algebra) == measured
    assert orbit_dimension_formula(kind, m, h, n) == {"paper": paper, "generic": measured}


def test_group_element_checks():
    params, _, _ = two_layer_problem(3, 4, 5)
    with pytest.raises(ValueError, match="orthogonal"):
        S.orthogonal_action(2 * torch.eye(4, dtype=DTYPE), params)
    with pytest.raises(ValueError, match="positive"):
        S.scaling_action(-torch.eye(4, dtype=DTYPE), params)
    with pytest.raises(ValueError, match="must be 4x4"):
        S.linear_action(torch.eye(3, dtype=DTYPE), params)
    with pytest.raises(ValueError, match="algebra='sl'"):
        S.orbit_dimension(S.linear_action, params, "sl")
