"""Gluch & Urbanke's steppers and symmetries: leapfrog's Hamiltonian and angular momentum, heavy ball =
leapfrog, the GD stepper, NAGF from rest, the Table 2 quantities against the main paper's, the swish and
rotation symmetries."""
import pytest
import torch
from conftest import randn

import symmetry as S
from symmetry import conserved as C
from symmetry import dynamics as D
from symmetry import noether as N
from symmetry.models import PotentialModel


def _radial_leapfrog(h, steps, record_every=1):
    model = PotentialModel(N.radial_loss)
    w, v = (torch.tensor([[1.2, 0.3, -0.4]], dtype=torch.float64),), (torch.tensor([[0.2, 0.8, 0.5]], dtype=torch.float64),)
    run = D.run(model, w, None, None, D.Leapfrog(h), steps, velocity=v, record_every=record_every,
                observables={"H": lambda s: C.hamiltonian(s.loss, s.velocity),
                             "L": lambda s: C.angular_momentum_vector(C.data_angular_momentum(s.params, s.velocity)),
                             "w": lambda s: s.params[0]})
    return run


def test_leapfrog_hamiltonian_stays_within_h_squared_over_1e4_steps():
    """Symplectic leapfrog: |H − H₀| = O(h²) with no secular drift over 10⁴ steps (halving h divides it by ≈ 4)."""
    errors = {}
    for h in (0.02, 0.01):  # H every 10 steps (dt 0.2 or 0.1, ~30 records per turn): the same maxima to 1e-5
        H = _radial_leapfrog(h, 10_000, record_every=10).observables["H"]
        dev = (H - H[0]).abs()
        errors[h] = float(dev.max())
        quarter = len(dev) // 4
        assert float(dev[-quarter:].max()) < 1.5 * float(dev[:quarter].max()) + 1e-14  # bounded, not growing
        assert errors[h] < 2 * h ** 2
    assert 3.0 < errors[0.02] / errors[0.01] < 5.0


def test_heavy_ball_is_leapfrog_in_position():
    """θ_{k+1} = 2θ_k − θ_{k−1} − η∇L with η = h² and Störmer's first step = leapfrog's positions."""
    model, params, X, Y, velocity, _ = N.small_problems(0)["rotation_nn"]
    a = D.run(model, params, X, Y, D.HeavyBall(0.01), 200, record_every=50, velocity=velocity,
              clock="time")
    b = D.run(model, params, X, Y, D.Leapfrog(0.1), 200, record_every=50, velocity=velocity,
              clock="time")
    for p, q in zip(a.params, b.params):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.times, b.times)


def test_gd_stepper_matches_the_foundation_loop():
    """The GD stepper takes the same steps as symmetry.dynamics.gradient_descent."""
    model, params, X, Y, _, _ = N.small_problems(0)["repu2"]
    a = D.run(model, params, X, Y, D.GD(0.05), 30, record_every=10)
    b = S.gradient_descent(model, params, X, Y, 0.05, 30, record_every=10)
    torch.testing.assert_close(a.loss, b.loss)
    for p, q in zip(a.params, b.params):
        torch.testing.assert_close(p, q)


def test_angular_momentum_of_nd_is_conserved_and_gf_stays_on_a_line():
    """Rotation-symmetric loss: ND conserves w × ẇ (Eq. 45), in the ODE and exactly under leapfrog;
    the trajectory stays in the plane normal to it; GF from w₀ moves along the line through 0 and w₀."""
    model = PotentialModel(N.radial_loss)
    w0, v0 = (torch.tensor([[1.2, 0.3, -0.4]], dtype=torch.float64),), (torch.tensor([[0.2, 0.8, 0.5]], dtype=torch.float64),)
    ell0 = C.angular_momentum_vector(C.data_angular_momentum(w0, v0))
    obs = {"L": lambda s: C.angular_momentum_vector(C.data_angular_momentum(s.params, s.velocity)), "w": lambda s: s.params[0][0]}
    nd = D.integrate(model, w0, None, None, torch.linspace(0, 20, 201), "nd", velocity=v0, observables=obs)
    assert float((nd.observables["L"] - ell0).norm(dim=-1).max()) < 1e-9 * float(ell0.norm())
    assert float((nd.observables["w"] @ ell0).abs().max()) < 1e-9
    assert float(nd.observables["w"].norm(dim=-1).std()) > 0.05  # it does move (not a circle at rest)
    leap = _radial_leapfrog(0.05, 2000).observables["L"]
    assert float((leap - ell0).abs().max()) < 1e-12
    gf = D.integrate(model, w0, None, None, torch.linspace(0, 20, 101), "gf", observables=obs)
    w = gf.observables["w"]
    cross = torch.linalg.cross(w, w0[0][0].expand_as(w))
    assert float(cross.norm(dim=-1).max()) < 1e-12
    assert abs(float(w[-1].norm()) - 1.0) < 1e-6  # and ends on the unit sphere, the minimum
    assert float(gf.observables["L"].abs().max()) < 1e-14


def test_nagf_from_rest_at_t0_and_its_singularity():
    """NAGF from rest starts at t = 0 (θ̈(0) = −∇L/4); with a velocity it needs t0 > 0; GF takes no velocity."""
    model = PotentialModel(N.radial_loss)
    w0, v0 = (randn(1, 3),), (randn(1, 3, seed=1),)
    run = D.integrate(model, w0, None, None, [0.0, 1e-3], "nagf")
    # θ(t) ≈ θ₀ − t²∇L/8 for small t
    grad = (float((w0[0] ** 2).sum()) - 1) * w0[0]
    torch.testing.assert_close(run.params[0], w0[0] - 1e-6 / 8 * grad, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="t0 > 0"):
        D.integrate(model, w0, None, None, [0.0, 1.0], "nagf", velocity=v0)
    with pytest.raises(ValueError, match="first order"):
        D.integrate(model, w0, None, None, [0.0, 1.0], "gf", velocity=v0)
    with pytest.raises(ValueError, match="starts from rest"):
        D.Nesterov(0.01).init_state(w0, v0)


def test_quantity_functions_agree_with_the_main_papers():
    """layer_balance and balance_matrix are the two-layer imbalances of Examples 7, 9 in the MLP convention."""
    U, V = randn(3, 4), randn(5, 4, seed=1)
    weights = (V.mT, U)  # W_1 = Vᵀ, W_2 = U
    torch.testing.assert_close(C.layer_balance(weights, alpha=2.0)[..., 0], C.homogeneous_imbalance((U, V), 2.0).sum(-1))
    torch.testing.assert_close(C.balance_matrix(weights)[0], C.layer_imbalances(weights)[0])
    torch.testing.assert_close(C.balance_matrix(weights)[0], C.imbalance_matrix((U, V)))
    assert C.nd_balance_bound(2.0, 3.0, alpha=2.0) == 2 * 2 * 2.0 * 9


def test_swish_symmetry_leaves_the_function_unchanged():
    """(w_j, β_j, u_j) ↦ (c w_j, β_j/c, u_j/c) per neuron: the output of SwishMLP is unchanged (Sec. 4.3)."""
    net = S.models.SwishMLP()
    W1, b1, W2 = randn(4, 3), randn(4, 1, seed=1), randn(2, 4, seed=2)
    c = torch.tensor([0.5, 2.0, 3.0, 1.3], dtype=torch.float64)
    X = randn(3, 6, seed=3)
    moved = (c[:, None] * W1, b1 / c[:, None], W2 / c)
    torch.testing.assert_close(net((W1, b1, W2), X), net(moved, X))
    assert not torch.allclose(C.swish_balance((W1, b1, W2)), C.swish_balance((2 * W1, b1, W2)))


def test_isotropic_relu_loss_is_rotation_invariant():
    """L(W₁R, W₂) = L(W₁, W₂) for a rotation R of the input space: the symmetry of Sec. 6.2, exactly."""
    W1, W2 = randn(4, 3), randn(2, 4, seed=1)
    R, _ = torch.linalg.qr(randn(3, 3, seed=2))
    torch.testing.assert_close(N.isotropic_relu_loss((W1 @ R, W2)), N.isotropic_relu_loss((W1, W2)), rtol=1e-12, atol=1e-12)
    # the closed form is the Monte-Carlo expectation over x ~ N(0, I)
    x = torch.randn(3, 400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    energy = (W2 @ torch.relu(W1 @ x)).pow(2).sum(0).mean()
    expected = 0.25 * (float(energy) - 1) ** 2
    assert abs(float(N.isotropic_relu_loss((W1, W2))) - expected) < 0.02 * expected
