"""Every figure script's --quick run, into a temporary directory: files written, JSON complete and finite,
and the claims that must hold even in quick mode."""
import json
import math
import sys

import pytest

from conftest import ROOT, load_script as load


def run_quick(name, tmp_path, *extra):
    payload = load(name).main(["--quick", "--out", str(tmp_path), *extra])
    assert payload["figure"] == name
    for ext in ("pdf", "png", "json"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    on_disk = json.loads((tmp_path / f"{name}.json").read_text())
    for key in ("settings", "environment", "wall_time_s"):
        assert key in on_disk
    assert on_disk["settings"]["quick"] is True
    assert not list(tmp_path.glob(".*.json")) and not list(tmp_path.glob(".*.png"))  # no temp files left
    return on_disk


# Runs that several tests read, made once per module (a --quick run takes 3-5 s; pytest-xdist runs a module's
# tests in one worker, --dist loadfile in pyproject.toml).
@pytest.fixture(scope="module")
def fig6_run(tmp_path_factory):
    """Fig. 6's first --quick run into a fresh folder: (folder, payload); its cache is left there."""
    out = tmp_path_factory.mktemp("fig6")
    return out, run_quick("Q_convergence_elementwise", out)


@pytest.fixture(scope="module")
def fig9_run(tmp_path_factory):
    """Fig. 9's --quick run at seed 0 with --no-resume, into a fresh folder (so nothing to resume anyway)."""
    return run_quick("Q_hessian_eigenvalues", tmp_path_factory.mktemp("fig9"), "--no-resume")


def finite_numbers(value):
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_fig3_dynamics(tmp_path):
    r = run_quick("Q_dynamics_elementwise", tmp_path)
    assert set(r["per_activation"]) == {"identity", "relu", "tanh", "sigmoid"}
    for by_lr in r["per_activation"].values():
        assert set(by_lr) == {"lr=0.1", "lr=0.01", "lr=0.001"}
        for v in by_lr.values():
            assert {"float32", "float64"} <= set(v)
            assert {"max_abs_dQ_tilde", "final_loss"} <= set(v["float64"])
    assert all(g["float64"] for g in r["dQ_grows_with_lr"].values())  # Prop. 13 even in 400 steps
    assert finite_numbers(r)
    fig3 = load("Q_dynamics_elementwise")
    rows = {x["claim"]: x for x in fig3.claims(r)}
    assert all(set(x) == {"claim", "criterion", "holds", "measured"} and isinstance(x["holds"], bool)
               for x in rows.values())
    for d in ("float32", "float64"):
        for name in ("ΔQ̃ largest at the largest η", "ΔQ̃ increases strictly with η",
                     "Q stops moving once the loss has converged"):
            assert f"Fig. 3: {name} ({d})" in rows
    assert rows["Fig. 3: Q stops moving once the loss has converged (float64)"]["holds"]
    # doctored payloads flip the rows: ΔQ̃ at η = 0.01 above η = 0.1, and one converged run that keeps moving
    doctored = json.loads(json.dumps(r))
    sig = doctored["per_activation"]["sigmoid"]
    sig["lr=0.01"]["float64"]["max_abs_dQ_tilde"] = 2 * sig["lr=0.1"]["float64"]["max_abs_dQ_tilde"]
    doctored["dQ_grows_with_lr"]["sigmoid"]["float64"] = False
    moved = next(v["float64"] for by_lr in doctored["per_activation"].values() for v in by_lr.values()
                 if v["float64"]["converged_step"] is not None)
    moved["max_abs_move_after_convergence"] = 0.5 * moved["max_abs_dQ_tilde"]
    flipped = {x["claim"]: x for x in fig3.claims(doctored)}
    for name in ("ΔQ̃ largest at the largest η", "ΔQ̃ increases strictly with η",
                 "Q stops moving once the loss has converged"):
        assert not flipped[f"Fig. 3: {name} (float64)"]["holds"], name
    # the paper's looser statement holds where only the strict order fails (η = 0.001 above η = 0.01)
    looser = json.loads(json.dumps(r))
    sig = looser["per_activation"]["sigmoid"]
    sig["lr=0.001"]["float64"]["max_abs_dQ_tilde"] = 1.01 * sig["lr=0.01"]["float64"]["max_abs_dQ_tilde"]
    looser["dQ_grows_with_lr"]["sigmoid"]["float64"] = False
    looser_rows = {x["claim"]: x["holds"] for x in fig3.claims(looser)}
    assert looser_rows["Fig. 3: ΔQ̃ largest at the largest η (float64)"]
    assert not looser_rows["Fig. 3: ΔQ̃ increases strictly with η (float64)"]


def test_fig45_distribution(tmp_path):
    r = run_quick("Q_distribution", tmp_path)
    assert r["claim_mean_matches_eq47"]
    for d in r["distributions"]:
        assert {"mean", "std", "predicted_mean", "convention", "activation", "m", "h", "n"} <= set(d)
        # the authors' constants only enlarge the denominator
        assert d["std_over_terms_authors"] <= d["std_over_terms_ours"] * (1 + 1e-12)
    assert finite_numbers(r)
    fig45 = load("Q_distribution")
    rows = {x["claim"]: x for x in fig45.claims(r)}
    narrow = next(x for name, x in rows.items() if "narrowly spread" in name)
    assert set(narrow) == {"claim", "criterion", "holds", "measured"} and isinstance(narrow["holds"], bool)
    doctored = json.loads(json.dumps(r))
    for d in doctored["distributions"]:
        d["std_over_terms_ours"] = 0.01
    assert next(x for x in fig45.claims(doctored) if "narrowly spread" in x["claim"])["holds"]
    doctored["distributions"][0]["std_over_terms_ours"] = 0.2  # one wide histogram
    wide = next(x for x in fig45.claims(doctored) if "narrowly spread" in x["claim"])
    assert not wide["holds"] and "wider: identity" in wide["measured"]


def test_fig6_convergence(fig6_run):
    _, r = fig6_run
    stds = r["settings"]["init_stds"]
    for a, runs in r["per_activation"].items():
        assert len(runs) == len(stds)
        for x in runs:
            assert {"Q0", "steps_to_converge", "final_error"} <= set(x)
            s = x["steps_to_converge"]
            assert s is None or 0 <= s <= r["settings"]["sigmoid_steps"]
            assert (s is None) == (x["final_error"] > r["settings"]["convergence_level"])
        c = r["correlation"][a]
        assert c["converged"] == sum(x["steps_to_converge"] is not None for x in runs)
        # a never-converged run makes the claim fail, whatever ρ says
        assert not c["correlated"] or c["converged"] == c["runs"]
    # Q₀ scales with the init: std² ratios of 4 between runs
    Q = sorted(abs(x["Q0"]) for x in r["per_activation"]["identity"])
    assert Q[-1] > 3 * Q[-2] > 9 * Q[-3]
    # the control sweep: one initial loss per activation (float32 rounding apart), Q₀ moved by the orbit
    for a, runs in r["per_activation_fixed_loss"].items():
        losses = [x["initial_loss"] for x in runs]
        assert len(runs) >= 3 and max(losses) - min(losses) <= 1e-6 * max(losses), (a, losses)
        assert len({round(x["Q0"], 6) for x in runs}) == len(runs)
        assert all(x["init_std"] == r["settings"]["orbit_init_std"] for x in runs)
    rows = load("Q_convergence_elementwise").claims(r)
    assert len(rows) == 8 and all(set(x) == {"claim", "criterion", "holds", "measured"} for x in rows)
    assert sum("fixed initial loss" in x["claim"] for x in rows) == 4
    assert all(not x["holds"] for x in rows if "never converged" in x["measured"])
    assert finite_numbers(r)


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "sigmoid"])
def test_fig6_orbit_move_keeps_the_function_and_moves_Q(activation):
    """along_orbit: (U/c, V') with σ(V'ᵀ) = cσ(Vᵀ) keeps F = Uσ(Vᵀ) on X = I and changes Q₀ (Eq. 48);
    the control, V moved without U, changes F; a c that leaves σ's range is refused (None)."""
    import torch
    import symmetry as S

    fig6 = load("Q_convergence_elementwise")
    U, V = S.gaussian_init(5, 50, 10, std=0.1, seed=0, dtype=torch.float64)
    sigma = S.get_activation(activation)
    F = U @ sigma(V.mT)
    U2, V2 = fig6.along_orbit(U, V, activation, 1.4, 1e-3)
    assert torch.allclose(U2 @ sigma(V2.mT), F, rtol=0, atol=1e-14)
    assert abs(float(S.conserved_Q((U2, V2), activation) - S.conserved_Q((U, V), activation))) > 1e-2
    assert not torch.allclose(U @ sigma(V2.mT), F, rtol=0, atol=1e-3)
    if activation in fig6.INVERSE:
        assert fig6.along_orbit(U, V, activation, 100.0, 1e-3) is None


@pytest.mark.parametrize("quick", [True, False])
def test_fig6_batch_keeps_each_activation_side_by_side(quick):
    """Both sweeps of one activation are contiguous in Fig. 6's batch, so TwoLayerGD takes its preallocated
    path (slices per activation, no gather per step: 5x fewer CPU-s than the interleaved batch), and each
    (design, activation) keeps its runs in sweep order."""
    import torch

    from symmetry.dynamics import TwoLayerGD
    from symmetry.models import TwoLayerNet

    fig6 = load("Q_convergence_elementwise")
    cfg = fig6.Settings()
    cfg = fig6.quick(cfg) if quick else cfg
    runs = fig6.starting_points(cfg, ("identity", "relu", "tanh"))
    net = TwoLayerNet([r["activation"] for r in runs])
    assert net.activation._slices is not None
    U = torch.stack([r["U"] for r in runs]).float()
    V = torch.stack([r["V"] for r in runs]).float()
    stepper = TwoLayerGD(net, None, torch.zeros(cfg.m, cfg.n), 1e-3)
    assert stepper._preallocated((U, V), 1e-3) is not None
    for design, key, values in (("init_scale", "init_std", cfg.init_stds), ("fixed_loss", "orbit_scale", None)):
        for a in ("identity", "relu", "tanh"):
            got = [r[key] for r in runs if r["design"] == design and r["activation"] == a]
            assert got == (list(values) if values else sorted(got))


def test_fig7_radial(tmp_path):
    r = run_quick("Q_convergence_radial", tmp_path)
    for v in r["per_dtype"].values():
        assert v["total_bound_violations"] == 0
        for x in v["per_Q0"]:
            assert {"Q0", "steps_to_1e-6", "steps_to_relative_1e-6", "bound_violations", "max_off_manifold"} <= set(x)
        # never-converged runs cannot make the convergence claim hold
        assert not v["smaller_Q0_converges_faster"] or v["all_converged"]
    assert r["decoupled_modes_float64"]["total_bound_violations"] == 0
    assert [x["lr"] for x in r["smaller_lr_float64"]["per_lr"]] == [2e-3, 2e-4]
    fig7 = load("Q_convergence_radial")
    rows = fig7.claims(r)
    assert all(set(x) == {"claim", "criterion", "holds", "measured"} and isinstance(x["holds"], bool) for x in rows)
    assert finite_numbers(r)
    by_claim = {x["claim"]: x for x in rows}
    for d in r["per_dtype"]:
        assert f"Fig. 7: smaller Q₀ ends at a lower loss ({d})" in by_claim
        # the bound rows state the tolerances the count uses
        assert "1e-4 relative, 1e-6 absolute" in by_claim[f"Prop. 16 bound holds along GD ({d})"]["criterion"]
    # doctored final losses flip the ordering row both ways, and leave the convergence row alone
    doctored = json.loads(json.dumps(r))
    v = doctored["per_dtype"]["float64"]
    for k, x in enumerate(sorted(v["per_Q0"], key=lambda x: x["Q0"])):
        x["final_loss_over_Y_norm"] = 10.0 ** (k - 5)
    assert {x["claim"]: x["holds"] for x in fig7.claims(doctored)}["Fig. 7: smaller Q₀ ends at a lower loss (float64)"]
    max(v["per_Q0"], key=lambda x: x["Q0"])["final_loss_over_Y_norm"] = 1e-9  # the largest Q₀ ends lowest
    assert not {x["claim"]: x["holds"] for x in fig7.claims(doctored)}["Fig. 7: smaller Q₀ ends at a lower loss (float64)"]


def test_fig7_decoupled_modes_follow_the_full_model_on_the_spectral_manifold():
    """Prop. 14: from spectral init (away from the unstable small-λ case) the per-mode system and the
    full (U, V) model give the same singular values and loss step by step."""
    fig7 = load("Q_convergence_radial")
    cfg = fig7.Settings(means=(1.0, 3.0), lr=1e-3, steps=200, record_every=50)
    full, modes = fig7.train(cfg, "float64"), fig7.train_decoupled(cfg)
    assert (full["sigma_X"] - modes["sigma_X"]).abs().max() < 1e-10
    assert ((full["loss"] - modes["loss"]).abs() / full["loss"]).max() < 1e-10
    assert (full["lambda"] - modes["lambda"]).abs().max() < 1e-10


def test_sharpness_1d(tmp_path):
    r = run_quick("Q_sharpness_1d", tmp_path)
    for t in r["trajectories"]:
        assert abs(t["lambda_max_measured"] - t["lambda_max_formula"]) < 1e-4
        assert abs(t["lambda_max_measured_unhalved_loss"] - t["lambda_max_eq77_as_printed"]) < 1e-4
        assert {"Q", "lambda_max_measured", "lambda_max_formula"} <= set(t)
    assert r["flattest_Q"] == 0.0


def test_fig9_hessian(fig9_run):
    r = fig9_run
    for runs in r["per_activation"].values():
        for x in runs:
            assert {"Q0", "n_near_zero", "median_nonzero", "max"} <= set(x)
            assert x["n_near_zero"] <= x["n_parameters"]
    assert r["runs_with_D_minus_mn_near_zero"] >= 1
    assert finite_numbers(r)


def test_rerun_resumes_from_the_cache(fig6_run):
    out, first = fig6_run
    assert list((out / ".cache").glob("Q_convergence_elementwise-*.pt"))
    second = run_quick("Q_convergence_elementwise", out)
    assert second["per_activation"] == first["per_activation"]
    assert second["wall_time_s"] <= first["wall_time_s"] + 0.5


def test_bad_flags_are_refused(tmp_path, capsys):
    module = load("Q_distribution")
    with pytest.raises(SystemExit):
        module.main(["--device", "tpu", "--out", str(tmp_path)])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_script_exits_cleanly_on_divergence(tmp_path):
    """Run as a program, a diverging script prints the configuration and exits 1 without a traceback."""
    import subprocess

    code = ("import sys; sys.argv=['Q_convergence_elementwise.py','--quick','--out',sys.argv[1]];"
            "import Q_convergence_elementwise as f; from repro import experiment as E;"
            "f.quick=lambda cfg: f.Settings(lr=1e4, steps=50, sigmoid_steps=50, record_every=5);"
            "E.run_script(f.main)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "error: loss became" in proc.stderr and "lr=10000" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fixed_seed_gives_the_same_numbers(fig9_run, tmp_path):
    """Two fresh runs (no cache) with one seed agree exactly; another seed does not."""
    a = fig9_run
    b = run_quick("Q_hessian_eigenvalues", tmp_path / "b", "--no-resume")
    c = run_quick("Q_hessian_eigenvalues", tmp_path / "c", "--no-resume", "--seed", "1")
    assert a["per_activation"] == b["per_activation"]
    assert a["per_activation"] != c["per_activation"]


def same_within(a, b, rel=1e-5, floor=1e-9, path="") -> list[str]:
    """Where two JSON values differ beyond the stated cross-machine tolerances (docs/conventions.md,
    *Determinism*): floats to a relative ``rel``, or an absolute ``floor`` for numbers below it (losses at the
    float64 loss floor); integers, booleans and strings exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in same_within(a[k], b[k], rel, floor, f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same_within(x, y, rel, floor, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=rel, abs_tol=floor) else [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_quick_form_matches_its_committed_reference(fig9_run):
    """Fig. 9's --quick numbers equal a committed run of the same form, at the tolerances the docs state."""
    reference = json.loads((ROOT / "tests" / "reference" / "Q_hessian_eigenvalues_quick.json").read_text())
    assert same_within(fig9_run["per_activation"], reference["per_activation"]) == []
    # control: a change beyond the tolerance is caught, one within it is not
    moved = json.loads(json.dumps(reference["per_activation"]))
    moved["tanh"][1]["median_nonzero"] *= 1 + 1e-4
    assert same_within(moved, reference["per_activation"]) != []
    moved["tanh"][1]["median_nonzero"] = reference["per_activation"]["tanh"][1]["median_nonzero"] * (1 + 1e-8)
    assert same_within(moved, reference["per_activation"]) == []
