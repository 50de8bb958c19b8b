"""The group-action ensemble layer (App. H): Prop. 8 on the fitting batches, ε → 0, no NaN on the ε grid."""
import pytest
import torch

from symmetry.ensemble import ENSEMBLE_MODES, GroupActionEnsemble, mean_probability, vote

H, C, N_IN, NUM_G = 8, 5, 12, 6
EPSILONS = (20, 10, 1, 0.1, 0.01, 1e-3, 1e-4)  # the paper's grid


def problem(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    V, U = torch.nn.Linear(N_IN, H).to(dtype), torch.nn.Linear(H, C).to(dtype)
    with torch.no_grad():
        for p in (*V.parameters(), *U.parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    held_out = torch.randn(NUM_G, H, N_IN, generator=g, dtype=dtype)  # NUM_G batches of h samples
    test = torch.randn(50, N_IN, generator=g, dtype=dtype)
    return V, U, held_out, test


@pytest.mark.parametrize("activation", ["leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("epsilon", [0.1, 1.0])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_group_members_keep_the_output_on_their_fitting_batch(activation, epsilon, dtype, tol):
    """Prop. 8 with h = k: U π(g, H) σ(gH) = U σ(H) on the batch H that defined π (error relative
    to the output's scale; in float32 it is round-off × the condition number of σ(gH), up to ~1e3)."""
    V, U, held_out, _ = problem(dtype=dtype)
    with torch.no_grad():
        hidden = V(held_out)  # (NUM_G, h, h)
        layer = GroupActionEnsemble(activation, "group", epsilon=epsilon, num_g=NUM_G).fit(hidden)
        for j in range(NUM_G):
            members = U(layer(hidden[j]))  # (NUM_G, h, C)
            original = U(layer.activation.sigma(hidden[j]))
            assert (members[j] - original).abs().max() <= tol * original.abs().max()
            if epsilon >= 1.0:  # …but not on another member's batch
                other = (j + 1) % NUM_G
                assert (members[other] - original).abs().max() > 1e-2


@pytest.mark.parametrize("mode", ENSEMBLE_MODES)
def test_tiny_epsilon_gives_the_single_model(mode):
    V, U, held_out, test = problem(1)
    with torch.no_grad():
        layer = GroupActionEnsemble("leaky_relu", mode, epsilon=1e-7, num_g=NUM_G).fit(V(held_out))
        logits = U(layer(V(test)))
        single = U(layer.activation.sigma(V(test)))
    assert torch.equal(vote(logits), single.argmax(dim=-1))
    assert torch.equal(mean_probability(logits).argmax(dim=-1), single.argmax(dim=-1))


@pytest.mark.parametrize("mode", ENSEMBLE_MODES)
@pytest.mark.parametrize("activation", ["leaky_relu", "tanh"])
def test_no_nan_over_the_epsilon_grid(mode, activation):
    V, U, held_out, test = problem(2)
    with torch.no_grad():
        for epsilon in EPSILONS:
            layer = GroupActionEnsemble(activation, mode, epsilon=epsilon, num_g=NUM_G).fit(V(held_out))
            logits = U(layer(V(test)))
            assert bool(torch.isfinite(logits).all()), (mode, epsilon)
            assert vote(logits).shape == (50,)


def test_modes_differ_and_are_seeded():
    V, U, held_out, test = problem(3)
    with torch.no_grad():
        hidden, z = V(held_out), V(test)
        outs = {m: GroupActionEnsemble("tanh", m, epsilon=1.0, num_g=NUM_G, seed=4).fit(hidden)(z) for m in ENSEMBLE_MODES}
        again = GroupActionEnsemble("tanh", "group", epsilon=1.0, num_g=NUM_G, seed=4).fit(hidden)(z)
    assert torch.equal(outs["group"], again)
    for a in ENSEMBLE_MODES:
        for b in ENSEMBLE_MODES:
            if a < b:
                assert not torch.allclose(outs[a], outs[b])


def test_bad_input():
    V, U, held_out, _ = problem()
    with pytest.raises(ValueError, match="mode='bagging'.*group, inverse, permutation, random, shuffle"):
        GroupActionEnsemble("tanh", "bagging")
    with pytest.raises(ValueError, match=r"needs batches of k = h = 8.*k=5"):
        GroupActionEnsemble("tanh", num_g=NUM_G).fit(V(held_out)[:, :5])
    with pytest.raises(ValueError, match=r"hidden must be \(num_g=3"):
        GroupActionEnsemble("tanh", num_g=3).fit(V(held_out))
    with pytest.raises(RuntimeError, match="call fit"):
        GroupActionEnsemble("tanh")(torch.zeros(2, H))
