"""repro.training: the paper-training helpers (two-layer nets on several step budgets in one batch, starts
given, divergence named by its configuration, the learning rate kept in float64)."""
import pytest

def test_train_two_layer_budgets_takes_its_starts_and_checks_them():
    """starts replaces the scaled draw: given the draw itself it changes nothing; a wrong shape is named."""
    import torch
    import symmetry as S
    from repro import training as T

    groups = {20: [("tanh", 0.1, 0.5), ("relu", 0.1, 0.5)]}
    U0, V0 = S.gaussian_init(3, 6, 4, std=1.0, seed=0, dtype=torch.float64)
    plain = T.train_two_layer_budgets(3, 4, 6, groups, seed=0, dtype="float64", record_every=10)
    given = T.train_two_layer_budgets(3, 4, 6, groups, seed=0, dtype="float64", record_every=10,
                                      starts={20: (0.5 * U0.expand(2, 3, 6), 0.5 * V0.expand(2, 4, 6))})
    assert torch.equal(plain[20]["loss"], given[20]["loss"])
    with pytest.raises(ValueError, match="start must be a float64 pair"):
        T.train_two_layer_budgets(3, 4, 6, groups, seed=0, record_every=10, starts={20: (U0, V0)})
    with pytest.raises(ValueError, match="starts must have the step budgets"):
        T.train_two_layer_budgets(3, 4, 6, groups, seed=0, record_every=10, starts={40: (U0, V0)})


def test_divergence_stops_with_the_configuration_named(tmp_path):
    """A NaN loss stops a script with a message naming the configuration."""
    import symmetry as S
    from repro import training as T

    with pytest.raises(S.DivergenceError, match=r"identity, lr=1000"):
        T.train_two_layer(3, 4, 5, [("identity", 1000.0, 1.0)], 200, seed=0, record_every=10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_budgets_in_one_batch_equal_separate_runs(dtype):
    """train_two_layer_budgets (sigmoid's extra steps run on after the others stop) returns, per
    budget, what a separate train_two_layer run gives: same records, same numbers."""
    import torch

    from repro import training as T

    groups = {40: [("identity", 0.1, 0.1), ("relu", 0.1, 0.5), ("tanh", 0.01, 0.1)],
              80: [("sigmoid", 0.1, 0.1), ("sigmoid", 0.01, 0.2)], 120: [("tanh", 0.05, 0.3)]}
    merged = T.train_two_layer_budgets(3, 4, 6, groups, seed=0, dtype=dtype, record_every=10)
    assert sorted(merged) == [40, 80, 120]
    for steps, configs in groups.items():
        alone = T.train_two_layer(3, 4, 6, configs, steps, seed=0, dtype=dtype, record_every=10)
        assert torch.equal(merged[steps]["steps"], alone["steps"]) and merged[steps]["steps"][-1] == steps
        for key in ("loss", "Q", "Q_tilde"):
            assert torch.allclose(merged[steps][key], alone[key], rtol=1e-6 if dtype == "float32" else 1e-12)
        for a, b in zip(merged[steps]["final_params"], alone["final_params"]):
            assert torch.allclose(a, b, rtol=1e-5 if dtype == "float32" else 1e-12)
    with pytest.raises(ValueError, match="multiple of record_every"):
        T.train_two_layer_budgets(3, 4, 6, {45: groups[40]}, seed=0, record_every=10)


def test_float64_runs_take_the_learning_rate_in_float64():
    """Issue 13.7: η = 0.001 must not pass through float32 (0.0010000000475) in a float64 run."""
    import torch

    import symmetry as S
    from repro import training as T

    lr = 1e-3
    res = T.train_two_layer(3, 4, 5, [("tanh", lr, 0.5)], 1, seed=0, dtype="float64", record_every=1)
    U0, V0 = S.gaussian_init(3, 5, 4, std=1.0, seed=0, dtype=torch.float64)
    params = (0.5 * U0, 0.5 * V0)
    _, grads = S.TwoLayerNet("tanh").loss_and_grad(params, None, res["Y"])
    expected = tuple(p - lr * g for p, g in zip(params, grads))
    for got, want in zip(res["final_params"], expected):
        assert torch.allclose(got[0], want, rtol=0, atol=1e-15)
    float32_lr = float(torch.tensor(lr, dtype=torch.float32))
    wrong = tuple(p - float32_lr * g for p, g in zip(params, grads))
    assert not all(torch.allclose(got[0], w, rtol=0, atol=1e-15) for got, w in zip(res["final_params"], wrong))
