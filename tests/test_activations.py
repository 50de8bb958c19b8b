"""The activation table: every entry's σ', ∫σ/σ' (Eq. 48), homogeneity and Gaussian mean."""
import math

import pytest
import torch

import symmetry as S
from symmetry.activations import MixedActivation, radial_rescaling

from conftest import DTYPE, randn

ALL = list(S.ACTIVATIONS)


def points(seed=0):
    x = randn(2000, seed=seed, scale=1.5)
    return x[x.abs() > 1e-3]  # keep away from the kinks of relu-type entries


@pytest.mark.parametrize("name", ALL)
def test_derivative_matches_autograd(name):
    act = S.get_activation(name)
    x = points().requires_grad_(True)
    (auto,) = torch.autograd.grad(act.sigma(x).sum(), x)
    torch.testing.assert_close(act.dsigma(x.detach()), auto, rtol=1e-12, atol=1e-12)


WITH_VJP = [S.get_activation(n) for n in ALL] + [S.activations.repu(1.0), S.activations.repu(3.0)]
WITH_VJP = [a for a in WITH_VJP if a.autograd_vjp is not None]


def test_the_activations_of_the_noether_problems_have_a_vjp():
    """MLP's closed-form gradient needs it for G&U's ReLU, RePU and linear nets (else it falls back to autograd)."""
    assert {"identity", "relu", "repu(2)"} <= {a.name for a in WITH_VJP}


@pytest.mark.parametrize("act", WITH_VJP, ids=lambda a: a.name)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_autograd_vjp_is_autograd_bit_for_bit(act, dtype):
    """g·σ'(z) as autograd computes it through σ: the same bits, zeros and the kink included."""
    z = torch.cat([randn(3000, seed=1, scale=2.0), torch.zeros(5), -torch.zeros(5)]).to(dtype)
    g = randn(z.numel(), seed=2).to(dtype)
    leaf = z.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(act.sigma(leaf), leaf, g)
    assert torch.equal(act.autograd_vjp(g, z, act.sigma(z)), auto)


@pytest.mark.parametrize("name", ALL)
def test_integral_is_antiderivative_of_sigma_over_dsigma(name):
    """A'(x) σ'(x) = σ(x) with A(0) = 0: the V-term of Eq. 48 (no division, so σ' = 0 is fine)."""
    act = S.get_activation(name)
    x = points(1).requires_grad_(True)
    (dA,) = torch.autograd.grad(act.integral(x).sum(), x)
    torch.testing.assert_close(dA * act.dsigma(x.detach()), act.sigma(x.detach()), rtol=1e-10, atol=1e-10)
    assert float(act.integral(torch.zeros(1, dtype=DTYPE))) == 0.0


@pytest.mark.parametrize("name", ALL)
def test_homogeneity_degree(name):
    """σ(cx) = c^α σ(x) for c > 0 exactly when the table says α (Example 3)."""
    act = S.get_activation(name)
    x = points(2)
    c = 1.7
    if act.homogeneity is None:
        assert not torch.allclose(act.sigma(c * x), act.sigma(x) * c, rtol=1e-3)
    else:
        torch.testing.assert_close(act.sigma(c * x), c ** act.homogeneity * act.sigma(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("s2", [0.01, 0.5])
def test_gaussian_mean_of_integral(name, s2):
    """E[A(x)], x ~ N(0, s²), used for E[Q] under Xavier (Eq. 47): within 5 standard errors."""
    act = S.get_activation(name)
    x = math.sqrt(s2) * torch.randn(400_000, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    values = act.integral(x)
    se = float(values.std()) / math.sqrt(values.numel())
    assert abs(float(values.mean()) - act.gaussian_mean_integral(s2)) < 5 * se


def test_unknown_activation_names_the_allowed_ones():
    with pytest.raises(ValueError, match="activation='swish'.*identity.*relu.*sigmoid.*tanh"):
        S.get_activation("swish")
    with pytest.raises(TypeError, match="activation must be"):
        S.get_activation(3)


def test_options_reach_the_factory():
    act = S.get_activation("leaky_relu", slope=0.1)
    x = torch.tensor([-2.0, 3.0], dtype=DTYPE)
    assert act.sigma(x).tolist() == [-0.2, 3.0]
    with pytest.raises(ValueError, match="slope"):
        S.get_activation("leaky_relu", slope=0.0)


def test_mixed_activation_applies_one_per_configuration():
    names = ["tanh", "relu", "tanh", "sigmoid"]
    mixed = S.get_activation(names)
    assert isinstance(mixed, MixedActivation)
    z = randn(4, 3, 5)
    for attr in ("sigma", "dsigma", "integral"):
        expected = torch.stack([getattr(S.get_activation(a), attr)(z[b]) for b, a in enumerate(names)])
        torch.testing.assert_close(getattr(mixed, attr)(z), expected, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="leading batch dimension of 4"):
        mixed.sigma(randn(3, 3, 5))


def test_radial_rescaling_commutes_with_rotations():
    """σ(gz) = gσ(z) for g ∈ O(h) when σ rescales each column (Example 5)."""
    Z = randn(5, 7)
    g, _ = torch.linalg.qr(randn(5, 5, seed=1))
    torch.testing.assert_close(radial_rescaling(g @ Z), g @ radial_rescaling(Z))
    # f(r) = r⁻²: each column of σ(Z) has norm 1/‖z‖
    torch.testing.assert_close(radial_rescaling(Z).norm(dim=0), 1 / Z.norm(dim=0))
    # a generic (non-orthogonal) g does not commute
    assert not torch.allclose(radial_rescaling(2 * g @ Z), 2 * g @ radial_rescaling(Z))
