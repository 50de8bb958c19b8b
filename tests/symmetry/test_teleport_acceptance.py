"""symmetry.teleport's acceptance policy and ascent, apart from teleport_to: which objective values an iterate
is refused for, and the ascent's record of what it did."""
import math

import torch

import symmetry as S
from symmetry.teleport import AcceptancePolicy, ascend, make_objective
from symmetry.teleport.problem import _problem

from conftest import two_layer_problem


def test_an_iterate_is_refused_for_a_non_finite_worse_or_too_large_objective():
    policy = AcceptancePolicy(objective_limit=10.0, max_ratio=4.0)
    assert policy.refuse_value(2.0, 1.0, 1.0, 1.0) is None  # better, under both caps
    assert policy.refuse_value(math.nan, 1.0, 1.0, 1.0) == "objective is nan"
    assert policy.refuse_value(0.5, 1.0, 1.0, 1.0) == "the objective did not improve"
    assert AcceptancePolicy().refuse_value(0.5, 1.0, 1.0, -1.0) is None  # minimising: lower is better
    assert "objective_limit=10" in policy.refuse_value(11.0, 1.0, 3.0, 1.0)
    assert "max_ratio=4" in policy.refuse_value(5.0, 1.0, 1.0, 1.0)
    assert AcceptancePolicy(backtrack=False).refuse_value(0.5, 1.0, 1.0, 1.0) is None


def test_the_ascent_records_its_iterates_and_teleport_to_applies_its_best():
    params, X, Y = two_layer_problem(3, 4, 5, seed=1, k=6)
    net = S.TwoLayerNet("identity")
    pb = _problem(net, params, (X, Y), "gl", None, None, None, False, True, 0)
    run = ascend(pb, make_objective("grad_norm"), AcceptancePolicy(), lr=0.01, steps=4, max_step=None,
                 max_halvings=30)
    assert run.steps == len(run.history) - 1 and run.best_step == max(range(len(run.history)), key=run.history.__getitem__)
    assert run.history[run.best_step] > run.before == run.history[0]
    _, report = S.teleport_to(net, params, (X, Y), "gl", lr=0.01, steps=4)
    assert report.history == run.history and report.best_step == run.best_step
    assert report.objective_after == run.history[run.best_step]
    assert torch.isfinite(torch.tensor(run.history)).all()
