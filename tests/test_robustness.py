"""What a careless user broke (issue 16) and honest provenance / output locations (issue 12):
each case is a check that failed before the fix."""
from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import symmetry as S
from symmetry import data as D
from symmetry import experiment as E

from conftest import DTYPE, ROOT, load_script, randn, two_layer_problem


# ---------------------------------------------------------------- case 4 and 10: library inputs

def test_case4_gradient_flow_refuses_nan_and_infinite_times():
    params, X, Y = two_layer_problem(3, 4, 4)
    net = S.TwoLayerNet("tanh")
    for times in ([0.0, float("nan")], [0.0, float("inf")]):
        with pytest.raises(ValueError, match="times"):
            S.gradient_flow(net, params, X, Y, times)


def test_case4_learning_rates_and_counts_are_checked():
    params, X, Y = two_layer_problem(3, 4, 4)
    net = S.TwoLayerNet("tanh")
    for lr in (-0.1, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr"):
            S.gradient_descent(net, params, X, Y, lr, 3)
        with pytest.raises(ValueError, match="lr"):
            S.gradient_flow(net, params, X, Y, [0.0, 1.0], lr=lr)
    for lr in ("0.1", None, True):
        with pytest.raises(TypeError, match="lr"):
            S.gradient_descent(net, params, X, Y, lr, 3)
    with pytest.raises(ValueError, match="lr"):
        S.gradient_descent(net, tuple(p.expand(2, *p.shape) for p in params), X, Y, torch.tensor([0.1, -0.1]), 3)
    with pytest.raises(TypeError, match="steps"):
        S.gradient_descent(net, params, X, Y, 0.1, True)
    with pytest.raises(TypeError, match="record_every"):
        S.gradient_descent(net, params, X, Y, 0.1, 3, record_every=True)


def test_case10_gradient_flow_fails_fast_on_infinite_time_and_nan_lr():
    import time

    params, X, Y = two_layer_problem(3, 4, 4)
    started = time.perf_counter()
    with pytest.raises(ValueError, match="times"):
        S.gradient_flow(S.TwoLayerNet("tanh"), params, X, Y, [0.0, math.inf])
    with pytest.raises(ValueError, match="lr"):
        S.gradient_flow(S.TwoLayerNet("tanh"), params, X, Y, [0.0, 1.0], lr=math.nan)
    assert time.perf_counter() - started < 5  # before the fix: 105 s, then a misleading error


def test_case10_conserved_Q_names_mismatched_shapes_dtypes():
    U, V = randn(3, 4), randn(5, 4)
    with pytest.raises(ValueError, match="hidden width"):
        S.conserved_Q((U, randn(5, 3)), "tanh")
    with pytest.raises(ValueError, match="batch shape"):
        S.conserved_Q((U.expand(2, 3, 4), V), "tanh")
    with pytest.raises(TypeError, match=r"params\[1\] has dtype torch.float32"):
        S.conserved_Q((U, V.float()), "tanh")
    with pytest.raises(ValueError, match="must be"):
        S.conserved_Q((randn(4), V), "tanh")


def test_case10_nonlinear_action_refuses_a_nan_group_element():
    params, _, _ = two_layer_problem(3, 4, 4)
    g = torch.eye(4, dtype=DTYPE)
    g[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^g \(shape \(4, 4\)\) contains NaN"):
        S.nonlinear_action(g, params, None, "tanh")
    with pytest.raises(TypeError, match="g .*dtype"):
        S.nonlinear_action(torch.eye(4, dtype=torch.float32), params, None, "tanh")


def test_case10_unbatched_divergence_names_the_run():
    params, X, Y = two_layer_problem(3, 4, 4, std=3.0)
    with pytest.raises(S.DivergenceError) as error:
        S.gradient_descent(S.TwoLayerNet("identity"), params, X, Y * 100, 50.0, 200)
    message = str(error.value)
    assert "()" not in message and "the run" in message and "lr" in message
