"""teleportation.py's claim rows: each paper's protocol, statistics that count failures, controls of
the same family, the gap, distinct-run correlations with the paper's sign, criteria that can fail. Each changed
row is flipped by a perturbation of the committed JSON's data, so it can both hold and fail."""
import copy
import json
import math

import pytest
from conftest import ROOT, load_script

script = load_script("teleportation")
COMMITTED = ROOT / "figures" / "teleportation.json"


@pytest.fixture(scope="module")
def payload():
    return json.loads(COMMITTED.read_text(encoding="utf-8"))


def row(payload, start: str) -> dict:
    found = [r for r in script.claims(payload) if r["claim"].startswith(start)]
    assert len(found) == 1, (start, [r["claim"] for r in script.claims(payload)])
    return found[0]


def speed_row(task, opt):
    return f"teleportation speeds up {task}/{opt} against the controls of its protocol"


# ------------------------------------------------------------------------------------------- the statistics

def test_a_control_that_never_reaches_the_target_counts_at_the_horizon_not_dropped():
    """Rows 53/56 averaged a control over the seeds that reached the target: a failed control looked faster."""
    values = [700.0, 720.0, 740.0, 780.0, math.nan]
    text = script._arm(values, 1000.0, ".1f", " steps")
    assert text == "≥ 788.0 steps (1 of 5 never within 1000)"  # before: 735.0 over the four that reached it
    v = script.paired_verdict([600.0] * 5, values, horizon=1000.0)
    assert v["every_seed"] and v["censored_control"] == 1 and v["differences"][-1] == -400.0


def test_a_teleport_that_never_reaches_the_target_fails_its_row():
    """The NeurIPS AdaGrad teleport with the state kept: faster on four seeds, never there on the fifth, where the
    control reached it: censored, the row fails (a t-test on the four would have passed it)."""
    treated, control = [100.0, 120.0, 130.0, 90.0, math.nan], [161.0, 201.0, 132.0, 148.0, 289.0]
    v = script.paired_verdict(treated, control, horizon=300.0)
    assert v["treated_failed"] == [4] and not v["holds"] and v["wins"] == 4
    both = script.paired_verdict([100.0, math.nan], [150.0, math.nan], horizon=300.0)
    assert both["treated_failed"] == [] and both["differences"] == [-50.0, 0.0]  # both censored: a tie
    with pytest.raises(ValueError, match="horizon"):
        script.paired_verdict([1.0, math.nan], [2.0, 3.0])
    with pytest.raises(ValueError, match="seed by seed"):
        script.paired_verdict([1.0], [2.0, 3.0])


def test_correlations_count_each_distinct_run_once():
    runs = [{"x": float(i), "y": float(i) + 0.1 * (-1) ** i} for i in range(6)]
    once = script.correlation(runs, "x", "y")
    twice = script.correlation(runs + copy.deepcopy(runs[:3]), "x", "y")
    assert once["runs"] == twice["runs"] == 6 and twice["duplicates_dropped"] == 3
    assert twice["pearson_p"] == once["pearson_p"]


# ------------------------------------------------------------------------------ the protocols, in the JSON

def test_the_committed_run_follows_each_papers_protocol(payload):
    s = payload["settings"]
    for opt in script.MNIST_OPTIMIZERS:  # ICLR 2024 (SPEC A2.4): 8 teleports for every optimiser
        assert s[f"mnist_{opt}"][2] == 8 and payload["mnist"][opt]["teleport"]["count"] == 8
        assert len(payload["mnist"][opt]["teleport_steps"]) == 8
    assert s["mnist_adagrad"][3] == 1e-4  # the ICLR code's AdaGrad teleport lr
    assert payload["regression"]["adagrad"]["speed"]["family"] == "keep"  # NeurIPS 2022 keeps AdaGrad's state
    assert payload["mnist"]["adagrad"]["speed"]["family"] == "reset"
    assert not payload["settings"]["quick"] and payload["environment"]["git_dirty"] is False
    assert set(s["deviations"]) == {"regression", "mnist", "generalization", "two-layer"}
    assert "null" not in payload["generalization"]["arms"]  # SGD: it would repeat the plain run


def test_every_row_says_its_deviations_and_each_speed_row_its_cause(payload):
    rows = script.claims(payload)
    for r in rows:
        if r["claim"].startswith(("teleportation ", "teleporting ", "the perturbed", "the orbit")):
            assert "Deviations from the paper:" in r["criterion"], r["claim"]
        if r["claim"].startswith("teleportation "):
            assert "Cause: " in r["measured"], r["claim"]
            assert ("at the paper's settings" in r["measured"]) == ("regression" in r["claim"]), r["claim"]


# ------------------------------------------------------------------- each changed row can hold and fail

def _set(summary, arm, values):
    summary["values"][arm] = list(values)


@pytest.mark.parametrize("task,opt", [("regression", "gd"), ("regression", "adagrad"),
                                      ("mnist", "adagrad"), ("mnist", "momentum")])
def test_a_speed_row_flips_with_its_own_familys_controls_only(payload, task, opt):
    family = payload[task][opt]["speed"]["family"]
    controls = script.FAMILY_CONTROLS[family]
    other = "reset" if family == "keep" else "null"  # an arm of the other family: it must not decide the row
    good = copy.deepcopy(payload)
    speed = good[task][opt]["speed"]
    n, horizon = len(speed["values"]["teleport"]), speed["horizon"]
    _set(speed, "teleport", [horizon / 4] * n)
    for arm in speed["values"]:
        if arm != "teleport":
            _set(speed, arm, [horizon / 2 + i for i in range(n)])
    assert row(good, speed_row(task, opt))["holds"]
    _set(speed, other, [1.0] * n)  # the other family's arm far faster: no change
    assert row(good, speed_row(task, opt))["holds"]
    for control in controls:
        bad = copy.deepcopy(good)
        _set(bad[task][opt]["speed"], control, [1.0] * n)
        assert not row(bad, speed_row(task, opt))["holds"], control
    failed = copy.deepcopy(good)  # the teleport never reaches the target on one seed: fails, not dropped
    failed[task][opt]["speed"]["values"]["teleport"][0] = None
    r = row(failed, speed_row(task, opt))
    assert not r["holds"] and "never reached the target on seed 1 (of " in r["measured"]


def test_the_cause_names_the_reset_when_the_reset_alone_does_it(payload):
    p = copy.deepcopy(payload)
    speed = p["mnist"]["adagrad"]["speed"]
    n = len(speed["values"]["teleport"])
    _set(speed, "plain", [900.0 + i for i in range(n)])
    _set(speed, "null", [900.0 + i for i in range(n)])
    for arm in ("reset", "random", "teleport"):
        _set(speed, arm, [500.0 + 10 * i for i in range(n)])
    r = row(p, speed_row("mnist", "adagrad"))
    assert not r["holds"] and "Cause: the optimiser reset causes the speed-up" in r["measured"]
    assert "the setting differs" not in r["measured"] or "not refuted" in r["measured"]


@pytest.mark.parametrize("arm,word", [("lower", "lower sharpness lowers"), ("raise", "higher sharpness raises")])
def test_generalisation_rows_use_the_gap_not_the_test_loss(payload, arm, word):
    start = f"teleporting to {word} the generalisation gap"
    lower = arm == "lower"
    p = copy.deepcopy(payload)
    runs = p["generalization"]["arms"]
    for i, r in enumerate(runs[arm]):
        shift = 0.01 + 0.001 * i
        r["final_gap"] = runs["plain"][i]["final_gap"] + (-shift if lower else shift)
    for i, r in enumerate(runs["random"]):
        r["final_gap"] = runs["plain"][i]["final_gap"]
    assert row(p, start)["holds"]
    shifted = copy.deepcopy(p)  # the test loss moves the wrong way, the gap stays: the row stays
    for r in shifted["generalization"]["arms"][arm]:
        r["final_test"] += 1.0 if lower else -1.0
        r["final_train"] += 1.0 if lower else -1.0
    assert row(shifted, start)["holds"]
    for r in p["generalization"]["arms"][arm]:
        r["final_gap"] += 0.02 if lower else -0.02
    assert not row(p, start)["holds"]


def _correlated(payload, key, sign):
    p = copy.deepcopy(payload)
    runs = [r for rs in p["generalization"]["arms"].values() for r in rs]
    for i, r in enumerate(runs):
        r[key] = 1.0 + i
        r["final_test"] = 2.0 + sign * 0.1 * i + 0.001 * (-1) ** i
    return p


@pytest.mark.parametrize("key,start,sign", [("sharpness_end", "the perturbed-loss sharpness", 1),
                                            ("curvature_end", "the orbit curvature", -1)])
def test_correlation_rows_need_the_papers_sign(payload, key, start, sign):
    """Row 69 held with the opposite sign to the one SPEC A-12 records: the sign is now part of the criterion."""
    assert row(_correlated(payload, key, sign), start)["holds"]
    assert not row(_correlated(payload, key, -sign), start)["holds"]


def test_correlation_rows_drop_duplicate_runs(payload):
    p = _correlated(payload, "curvature_end", -1)
    n = row(p, "the orbit curvature")["measured"]
    arms = p["generalization"]["arms"]
    arms["copy"] = copy.deepcopy(arms["plain"])  # an arm that repeats the plain runs exactly (as null did under SGD)
    assert row(p, "the orbit curvature")["measured"].split(" over ")[1].split(" runs")[0] == \
        n.split(" over ")[1].split(" runs")[0]
    assert f"({len(arms['copy'])} duplicates dropped)" in row(p, "the orbit curvature")["measured"]


@pytest.mark.parametrize("act", ["identity", "tanh"])
def test_fig6_net_rows_are_decided_over_seeds(payload, act):
    start = f"Fig. 6 net (σ = {act})"
    p = copy.deepcopy(payload)
    runs = p["two_layer"][act]["runs"]
    assert len(runs) == 5
    for i, r in enumerate(runs):
        r["with"]["steps_to_target"], r["without"]["steps_to_target"], r["random"]["steps_to_target"] = \
            500.0 + i, 600.0 + i, 610.0 + i
    assert row(p, start)["holds"]
    runs[0]["with"]["steps_to_target"] = 650.0  # one seed slower: the t-test on five seeds still decides
    assert row(p, start)["holds"] and "paired t-test" in row(p, start)["measured"]
    runs[1]["with"]["steps_to_target"] = 700.0
    runs[2]["with"]["steps_to_target"] = 700.0
    assert not row(p, start)["holds"]


@pytest.mark.parametrize("act", ["identity", "tanh"])
def test_fig9_net_rows_can_fail(payload, act):
    """'λ_max after < before' could not fail (the best iterate is returned); against a random element of the same
    size it can."""
    start = f"Fig. 9 net (σ = {act})"
    p = copy.deepcopy(payload)
    minima = [r["minimum_teleport"] for r in p["two_layer"][act]["runs"]]
    for m in minima:
        m["lambda_max_after"], m["lambda_max_random"] = 0.40, 0.45
    assert row(p, start)["holds"]
    for m in minima:
        m["lambda_max_random"] = 0.39  # a random element of the same size lowers λ_max more
    assert not row(p, start)["holds"]
    for m in minima:
        m["lambda_max_random"], m["random_relative_loss_change"] = 0.45, 1e-6  # the loss not kept
    assert not row(p, start)["holds"]
