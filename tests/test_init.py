"""Initialisations: seeded, of the right law, spectral (Prop. 14), and at a chosen Q."""
import math

import pytest
import torch

import symmetry as S

from conftest import DTYPE, randn


def test_xavier_variances_and_seed():
    U, V = S.xavier_init(100, 200, 50, batch=(20,), seed=1, dtype=DTYPE)
    assert U.shape == (20, 100, 200) and V.shape == (20, 50, 200)
    assert abs(float(U.var()) * 200 - 1) < 0.02 and abs(float(V.var()) * 50 - 1) < 0.02
    again = S.xavier_init(100, 200, 50, batch=(20,), seed=1, dtype=DTYPE)
    assert torch.equal(U, again[0]) and torch.equal(V, again[1])
    assert not torch.equal(U, S.xavier_init(100, 200, 50, batch=(20,), seed=2, dtype=DTYPE)[0])


def test_gaussian_init_per_configuration_std():
    U, V = S.gaussian_init(10, 30, 20, std=[0.01, 1.0], batch=(2,), seed=0, dtype=DTYPE)
    assert abs(float(U[0].std()) / 0.01 - 1) < 0.1 and abs(float(V[1].std()) - 1) < 0.1
    with pytest.raises(ValueError, match="std must be a number or have the batch shape"):
        S.gaussian_init(10, 30, 20, std=[0.1, 0.2, 0.3], batch=(2,))
    with pytest.raises(ValueError, match="h=0"):
        S.gaussian_init(10, 0, 20)
    with pytest.raises(TypeError, match="seed"):
        S.gaussian_init(10, 3, 20, seed="zero")


def test_spectral_init_prop14():
    """U g(Vᵀ) = Φ diag(ū_i / v̄_i) Ψᵀ and λ_i = ū_i² + v̄_i² for the spectral init (Prop. 14, 15)."""
    m, h, n = 5, 5, 10
    Y = randn(m, n, seed=2)
    U, V = S.spectral_init(Y, h, mean=1.0, std=0.1, seed=3)
    Phi, _, PsiT = torch.linalg.svd(Y)
    Ubar, Vbar = Phi.mT @ U, PsiT @ V
    torch.testing.assert_close(Ubar, torch.diag_embed(torch.diagonal(Ubar)), atol=1e-12, rtol=0)
    torch.testing.assert_close(Vbar[:h], torch.diag_embed(torch.diagonal(Vbar)), atol=1e-12, rtol=0)
    u, v = torch.diagonal(Ubar), torch.diagonal(Vbar)
    F = S.TwoLayerRadialNet()((U, V))
    torch.testing.assert_close(F, Phi[:, :h] @ torch.diag(u / v) @ PsiT[:h], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(S.radial_lambda((U, V)), u ** 2 + v ** 2)


@pytest.mark.parametrize("name", S.ACTIVATIONS)
@pytest.mark.parametrize("target", [-30.0, -0.5, 0.0, 2.0, 40.0])
def test_init_at_Q(name, target):
    params = S.gaussian_init(5, 8, 4, std=0.5, seed=4, dtype=DTYPE)
    U, V = S.init_at_Q(params, target, name)
    assert abs(float(S.conserved_Q((U, V), name)) - target) < 1e-9 * max(1.0, abs(target))
    # only one factor changes, by a positive scale
    assert torch.equal(U, params[0]) or torch.equal(V, params[1])


def test_expected_Q_xavier_matches_eq47_convention():
    assert S.expected_Q_xavier(100, 200, 100) == -50.0  # (m − h)/2; the paper's m − h is for 2Q
    # tanh: m/2 − n h (e^{2/n} − 1)/4
    assert math.isclose(S.expected_Q_xavier(10, 20, 30, "tanh"), 5 - 30 * 20 * math.expm1(2 / 30) / 4)
