"""Gluch & Urbanke: what GF, ND and NAGF conserve, measured by an ODE solver; leapfrog's Hamiltonian; the
Eq. 34 bound; rotation-symmetric data; the offline data path; the figure script's --quick run."""
import functools
import json
import math
import socket

import pytest
import torch
from conftest import load_script, randn

import symmetry as S
from symmetry import conserved as C
from symmetry import dynamics as D
from symmetry import noether as N
from symmetry.data import DatasetUnavailable, load_image_dataset
from symmetry.models import PotentialModel

HORIZON = 3.0  # ODE time of the drift checks (the drift table's)


@functools.cache
def ode_run(problem: str, dynamics: str):
    model, params, X, Y, velocity, quantities = N.small_problems(0)[problem]
    t0 = 0.1 if (dynamics == "nagf" and velocity is not None) else 0.0
    return N.measure(model, params, X, Y, quantities, dynamics, HORIZON,
                     velocity=None if dynamics == "gf" else velocity, t0=t0, points=61)


# GF of the ReLU net slides along a kink, where the ODE solver stalls: tested through GD's η → 0 limit below
CONSERVED = [c for c in N.CLAIMS if c[3].startswith(("conserved", "zero")) and c[:3] != ("relu", "balance", "gf")]
NOT_CONSERVED = [c for c in N.CLAIMS if c[3].startswith("not conserved")]


@pytest.mark.parametrize("problem,quantity,dynamics,claim", CONSERVED, ids=lambda x: str(x)[:24])
def test_conserved_pairs_drift_below_1e_6(problem, quantity, dynamics, claim):
    """Every (quantity, dynamics) the paper calls conserved: relative ODE drift < 1e-6 (DOP853, rtol 1e-12)."""
    r = ode_run(problem, dynamics)[quantity]
    assert r["relative_drift"] < 1e-6, (claim, r["relative_drift"])
    assert r["scale"] > 1e-3  # the terms that cancel are not themselves ~0


@pytest.mark.parametrize("problem,quantity,dynamics,claim", NOT_CONSERVED, ids=lambda x: str(x)[:24])
def test_not_conserved_pairs_drift_well_above(problem, quantity, dynamics, claim):
    """The pairs the paper calls not conserved drift by more than 1e-4 (100× the conserved threshold)."""
    assert ode_run(problem, dynamics)[quantity]["relative_drift"] > 1e-4


def test_relu_balance_drift_under_gd_vanishes_with_the_step():
    """ReLU + GF (Eq. 31) in the limit GD → GF: the balance drift at fixed time 3 falls at least ∝ η."""
    model, params, X, Y, _, quantities = N.small_problems(0)["relu"]
    drift = {lr: N.measure(model, params, X, Y, quantities, "gf", HORIZON, stepper=D.GD(lr), points=31)["balance"]
             ["relative_drift"] for lr in (0.01, 0.001)}
    assert drift[0.01] / drift[0.001] > 5 and drift[0.001] < 1e-3


def test_the_balance_with_alpha_on_the_inner_layer_is_not_conserved():
    """For α = 2, GF conserves α‖W_{i+1}‖² − ‖W_i‖², not ‖W_{i+1}‖² − α‖W_i‖² (the issue's wording)."""
    model, params, X, Y, _, _ = N.small_problems(0)["repu2"]
    swapped = N.Quantity("swapped", lambda s, d: C.layer_balance(s.params[::-1], alpha=2.0),
                         lambda s, d: C.layer_balance(tuple(p.abs() for p in s.params), alpha=2.0).abs().sum())
    r = N.measure(model, params, X, Y, {**N.balance_quantities(2.0), "swapped": swapped}, "gf", HORIZON, points=31)
    assert r["balance"]["relative_drift"] < 1e-9
    assert r["swapped"]["relative_drift"] > 1e-3


def test_hamiltonian_of_nagf_never_increases():
    """NAGF: dH/dt = −(3/t)‖θ̇‖² ≤ 0 (Eq. 35), and it does decrease."""
    r = ode_run("linear", "nagf")["hamiltonian"]
    assert r["relative_increase"] < 1e-9
    assert r["relative_drift"] > 1e-2


@pytest.mark.parametrize("problem,alpha", [("relu", 1.0), ("repu2", 2.0)])
def test_nd_balance_obeys_eq34_bound(problem, alpha):
    """|Δ(α‖W_{i+1}‖² − ‖W_i‖²)| ≤ 2 max(1, α) L(θ₀) t² along ND from rest, in the ODE and under leapfrog."""
    model, params, X, Y, _, quantities = N.small_problems(0)[problem]
    # the ODE run is ode_run's (the same call: from rest, t0 = 0, 61 points); the ReLU one alone takes ~20 s
    for r in (ode_run(problem, "nd"), N.measure(model, params, X, Y, quantities, "nd", HORIZON, stepper=D.Leapfrog(0.01),
                                                points=61)):
        balance = r["balance"]["values"]
        delta = (balance - balance[0]).abs()
        bound = C.nd_balance_bound(float(r["trajectory"].loss[0]), r["balance"]["times"], alpha).unsqueeze(-1)
        assert bool((delta <= bound + 1e-12).all())
        assert float(delta.max()) > 1e-4  # the balance does move: the bound is not vacuous here


def _radial_leapfrog(h, steps):
    model = PotentialModel(N.radial_loss)
    w, v = (torch.tensor([[1.2, 0.3, -0.4]], dtype=torch.float64),), (torch.tensor([[0.2, 0.8, 0.5]], dtype=torch.float64),)
    run = D.run(model, w, None, None, D.Leapfrog(h), steps, velocity=v,
                observables={"H": lambda s: C.hamiltonian(s.loss, s.velocity),
                             "L": lambda s: C.angular_momentum_vector(C.data_angular_momentum(s.params, s.velocity)),
                             "w": lambda s: s.params[0]})
    return run


def test_leapfrog_hamiltonian_stays_within_h_squared_over_1e4_steps():
    """Symplectic leapfrog: |H − H₀| = O(h²) with no secular drift over 10⁴ steps (halving h divides it by ≈ 4)."""
    errors = {}
    for h in (0.02, 0.01):
        H = _radial_leapfrog(h, 10_000).observables["H"]
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
    torch.testing.assert_close(C.balance_matrix(weights)[0], -C.layer_imbalances(weights)[0])
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


@pytest.fixture
def offline(monkeypatch):
    """No network: every socket connection fails."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name,shape", [("mnist-subset", (5000, 784)), ("digits", (1797, 64))])
def test_offline_datasets_load_without_network(offline, name, shape):
    data = load_image_dataset(name)
    assert tuple(data["x"].shape) == shape and data["name"] == name and data["fallback_reason"] is None
    assert float(data["x"].min()) >= 0 and float(data["x"].max()) <= 1
    assert sorted(torch.unique(data["y"]).tolist()) == list(range(10))


def test_kmnist_offline_is_a_clear_error_and_falls_back_only_when_allowed(offline, tmp_path):
    with pytest.raises(DatasetUnavailable, match="could not load 'kmnist'.*mnist-subset.*allow_fallback"):
        load_image_dataset("kmnist", root=tmp_path)
    data = load_image_dataset("kmnist", root=tmp_path, allow_fallback="digits")
    assert data["name"] == "digits" and "kmnist unavailable" in data["fallback_reason"]
    with pytest.raises(ValueError, match="allow_fallback"):
        load_image_dataset("kmnist", root=tmp_path, allow_fallback="cifar")


def test_script_quick(tmp_path):
    """noether_dynamics.py --quick: files, JSON, every conserved claim of the table holds in its ODE column."""
    module = load_script("noether_dynamics")
    payload = module.main(["--quick", "--out", str(tmp_path)])
    assert payload["figure"] == "noether_dynamics"
    for name in ("noether_dynamics", "noether_dynamics_rotation"):
        for ext in ("pdf", "png"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    on_disk = json.loads((tmp_path / "noether_dynamics.json").read_text())
    assert on_disk["settings"]["quick"] is True and on_disk["dataset"]["name"] == "digits"
    assert len(on_disk["drift_table"]) == len(N.CLAIMS)
    for row in on_disk["drift_table"]:
        if row["claim"].startswith(("conserved", "zero")):  # ReLU + GF: the solver may stall on a kink (said so)
            assert row["verdict"] in (("yes", "ODE stalled") if row["problem"] == "relu" else ("yes",)), row
    for act in ("relu", "repu"):
        nd = on_disk["mlp"][act]["ND (heavy ball)"]
        assert nd["eq34_holds"] and math.isfinite(nd["final_loss"])
    assert on_disk["rotation"]["nd"]["max_distance_from_plane"] < 1e-8


def test_the_drift_table_groups_cover_every_problem_once_in_the_claims_order():
    """reproduce.py runs the table's groups apart (noether_dynamics.PARTS): together they are N.CLAIMS, in order."""
    script = load_script("noether_dynamics")
    grouped = [p for group in script.TABLE_GROUPS.values() for p in group]
    assert sorted(grouped) == sorted(set(grouped)) == sorted({c[0] for c in N.CLAIMS})
    ordered = [c for group in script.TABLE_GROUPS.values() for c in N.CLAIMS if c[0] in group]
    assert ordered == N.CLAIMS
    assert set(script.TABLE_GROUPS) <= set(script.PARTS)
    with pytest.raises(ValueError, match="part='table'"):
        script.run_part("table", [])
