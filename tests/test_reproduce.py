"""The README's main command: reproduce.py runs, prints its claim table, and its count line says what the rows say."""
import json
import os
from pathlib import Path
import pytest

from conftest import load_script as load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    """The conservation check at seed 1, 300 steps (~14 s, nearly all of it the four GF solves), computed once:
    its claims are tested on these rows, and main is handed them after checking it asked for this run."""
    reproduce = load("reproduce")
    cfg = reproduce.Settings(steps=300, seed=1)
    return cfg, reproduce.run(cfg)


def test_reproduce_demo_claims_hold(demo):
    cfg, rows = demo
    assert [r["activation"] for r in rows] == ["identity", "relu", "tanh", "sigmoid"]
    for r in rows:
        assert r["gf_drift"] < cfg.gf_tolerance
        assert r["gd_drift_lr0.1"] > r["gd_drift_lr0.01"] > 100 * r["gf_drift"]
        # Prop. 13: per-step drift ∝ η², steps ∝ 1/η, so the total drift ∝ η
        assert 3 < r["gd_drift_lr0.1"] / r["gd_drift_lr0.01"] < 30
        assert r["loss_end"] < r["loss_start"]


def test_reproduce_main_prints_the_table(demo, monkeypatch, capsys, tmp_path):
    reproduce = load("reproduce")
    cfg, rows = demo
    asked = []
    monkeypatch.setattr(reproduce, "run", lambda c: asked.append(vars(c)) or rows)
    # --jobs 1: the figures in this process; spawned workers (each importing torch again) are tested in
    # test_a_failing_figure_is_named_and_the_others_still_run and test_case5_reproduce_quick_heading
    assert reproduce.main(["--seed", "1", "--steps", "300", "--quick", "--out", str(tmp_path), "--jobs", "1",
                           "--only", "Q_sharpness_1d", "Q_distribution"]) == 0
    assert asked == [vars(cfg)]  # --seed and --steps reach the check, so the rows it printed are its own
    out = capsys.readouterr().out
    assert "Q conserved under gradient flow" in out and "App. G.1: λ_max = √(Q²+4)" in out
    # the count line says what the rows printed above it say (the quick Q_distribution spread row may say NO)
    written = json.loads((tmp_path / "claims.json").read_text(encoding="utf-8"))
    table = written["claims"]
    # each row's figure, for the report's count by paper: the check's two rows, then each figure's own
    assert written["claim_figures"][:2] == ["conservation_check"] * 2 and len(written["claim_figures"]) == len(table)
    assert set(written["claim_figures"][2:]) == {"Q_sharpness_1d", "Q_distribution"}
    held = sum(r["holds"] is True for r in table)
    assert f"{held} of {len(table)} claims hold" in out and out.count("  NO  ") == len(table) - held
    assert (tmp_path / "Q_sharpness_1d.json").exists() and (tmp_path / "Q_distribution.png").exists()


def test_every_figure_script_owns_its_claims():
    """reproduce.py collects rows from each script's claims(payload); a malformed row is refused."""
    import pytest

    reproduce = load("reproduce")
    for name in reproduce.FIGURES:
        assert callable(load(name).claims), name
    import sys
    import types

    fake = types.ModuleType("_fake_claims")
    fake.claims = lambda payload: [{"claim": "x", "holds": "yes"}]
    sys.modules["_fake_claims"] = fake
    try:
        with pytest.raises(ValueError, match="exactly the keys"):
            reproduce.collect_claims("_fake_claims", {})
    finally:
        del sys.modules["_fake_claims"]


def _fig7_run(Q0, steps):
    keys = load("Q_convergence_radial").KEEP
    return {**{k: 0 for k in keys}, "Q0": Q0, "steps_to_1e-6": steps, "violating_modes": []}


def test_fig7_convergence_claim_needs_converged_runs():
    """Issue 16.2: runs that never reach the threshold (inf ≤ inf) must not make 'smaller Q₀ converges faster' hold."""
    fig7 = load("Q_convergence_radial")
    never = fig7.summary([_fig7_run(1.0, None), _fig7_run(2.0, None), _fig7_run(3.0, None)])
    assert not never["smaller_Q0_converges_faster"] and not never["all_converged"]
    partly = fig7.summary([_fig7_run(1.0, 1000), _fig7_run(2.0, 2000), _fig7_run(3.0, None)])
    assert not partly["smaller_Q0_converges_faster"]
    ordered = fig7.summary([_fig7_run(1.0, 1000), _fig7_run(2.0, 2000), _fig7_run(3.0, 5000)])
    assert ordered["smaller_Q0_converges_faster"]
    assert not fig7.summary([_fig7_run(1.0, 3000), _fig7_run(2.0, 2000)])["smaller_Q0_converges_faster"]
    payload = {"settings": {"threshold": 1e-6, "steps": 10000}, "per_dtype": {"float32": partly},
               "decoupled_modes_float64": ordered, "smaller_lr_float64": {
                   "mu": 0.01, "flow_time_window": 0.002, "per_lr": [{"lr": 1e-5, "bound_violations": 0,
                                                                       "lambda_drift": 0.0}]}}
    row = next(r for r in fig7.claims(payload) if r["claim"].startswith("Fig. 7"))
    # a run that never converges is censored at the horizon, slower than the runs that do, not dropped
    assert row["holds"] is True and "≥ 10000 (censored)" in row["measured"]
    payload["per_dtype"]["float32"] = never  # no pair can be ordered: nothing shown
    assert next(r for r in fig7.claims(payload) if r["claim"].startswith("Fig. 7"))["holds"] is False
    payload["per_dtype"]["float32"] = fig7.summary([_fig7_run(1.0, None), _fig7_run(2.0, 2000)])  # the other way
    assert next(r for r in fig7.claims(payload) if r["claim"].startswith("Fig. 7"))["holds"] is False


FIGURE_OK = '''
from pathlib import Path
import torch

def main(argv):
    Path(argv[0]).write_text("written")
    return {"value": torch.ones(2), "threads": torch.get_num_threads()}
'''
FIGURE_FAILS = '''
def main(argv):
    raise RuntimeError("this figure cannot be made")
'''


def test_a_failing_figure_is_named_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    reproduce = load("reproduce")
    (tmp_path / "figure_ok.py").write_text(FIGURE_OK)
    (tmp_path / "figure_fails.py").write_text(FIGURE_FAILS)
    monkeypatch.syspath_prepend(str(tmp_path))  # workers start with this process's sys.path
    for jobs in (1, 2):
        target = tmp_path / f"written_{jobs}.txt"
        runs = reproduce.run_figures(["figure_fails", "figure_ok"], [str(target)], jobs=jobs, threads=1,
                                     log_dir=tmp_path / "logs", out=str(tmp_path))
        assert [r.name for r in runs] == ["figure_fails", "figure_ok"]
        assert runs[0].payload is None and "RuntimeError: this figure cannot be made" in runs[0].error
        assert runs[1].error is None and runs[1].payload["value"].tolist() == [1.0, 1.0]
        assert runs[1].payload["threads"] == 1 and target.read_text() == "written"
        out = capsys.readouterr().out
        assert "figure_fails: FAILED (RuntimeError: this figure cannot be made" in out
        assert "figure_ok:" in out
    assert "this figure cannot be made" in (tmp_path / "logs" / "figure_fails.log").read_text()


FIGURE_DIES = '''
import os, time

def main(argv):
    time.sleep(0.5)
    os._exit(3)  # what the kernel's OOM killer leaves: no exception, no result
'''
FIGURE_SLOW = '''
import time

def main(argv):
    time.sleep(3)  # still running when the other job's worker dies
    return {"slow": True}
'''


@pytest.mark.slow  # worker processes or a Dask cluster started and stopped: pytest -m slow
def test_a_worker_that_dies_fails_only_its_own_figure(tmp_path, monkeypatch, capsys):
    """A dead worker breaks the whole local pool; the jobs in flight with it run again one at a time, so only the
    job that kills its worker fails."""
    reproduce = load("reproduce")
    for name, text in (("figure_dies", FIGURE_DIES), ("figure_slow", FIGURE_SLOW), ("figure_ok", FIGURE_OK)):
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    runs = reproduce.run_figures(["figure_dies", "figure_slow", "figure_ok"], [str(tmp_path / "w.txt")], jobs=2,
                                 threads=1, log_dir=tmp_path / "logs", out=str(tmp_path))
    dies, slow, ok = runs
    assert dies.payload is None and "its worker process died (BrokenProcessPool" in dies.error
    assert slow.error is None and slow.payload == {"slow": True}
    assert ok.error is None and ok.payload["threads"] == 1
    assert "figure_dies: FAILED (its worker process died" in capsys.readouterr().out


def test_the_figures_run_on_a_dask_cluster_of_two_workers(tmp_path, monkeypatch):
    """The distributed extra: the same jobs, failures and parts on a local Dask cluster (two worker processes)
    give what the local pool gives."""
    distributed = pytest.importorskip("distributed")
    from repro import jobs as J

    reproduce = load("reproduce")
    for name, text in (("figure_ok", FIGURE_OK), ("figure_fails", FIGURE_FAILS), ("figure_parts", FIGURE_WITH_PARTS)):
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))  # sent to the workers with each job
    (tmp_path / "cache").mkdir()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        executor, slots = J.dask_executor(cluster.scheduler_address)
        assert slots == 2
        try:
            ok, fails = reproduce.run_figures(["figure_ok", "figure_fails"], [str(tmp_path / "w.txt")], jobs=slots,
                                              threads=1, log_dir=tmp_path / "logs", out=str(tmp_path),
                                              executor=executor)
            [parts] = reproduce.run_figures(["figure_parts"], [str(tmp_path / "cache"), "--no-resume"], jobs=slots,
                                            threads=1, log_dir=tmp_path / "logs", out=str(tmp_path), executor=executor)
            # a second run recomputes (impure jobs): Dask does not hand back the first run's stored result
            (tmp_path / "w.txt").unlink()
            [again] = reproduce.run_figures(["figure_ok"], [str(tmp_path / "w.txt")], jobs=slots, threads=1,
                                            log_dir=tmp_path / "logs", out=str(tmp_path), executor=executor)
        finally:
            J.close(executor)
    assert ok.error is None and ok.payload["value"].tolist() == [1.0, 1.0] and ok.payload["threads"] == 1
    assert "RuntimeError: this figure cannot be made" in fails.error
    assert "this figure cannot be made" in (tmp_path / "logs" / "figure_fails.log").read_text()
    assert parts.payload == {"parts_done_before_main": ["a"], "argv": []} and set(parts.parts) == {"a", "broken"}
    assert again.error is None and (tmp_path / "w.txt").read_text() == "written"


@pytest.mark.slow  # worker processes or a Dask cluster started and stopped: pytest -m slow
def test_a_scheduler_that_does_not_answer_is_one_line(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("distributed")
    done = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "--quick", "--only", "Q_distribution",
                           "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr[-800:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: --scheduler 'tcp://127.0.0.1:9': no Dask scheduler")
    assert not (tmp_path / "o" / "Q_distribution.json").exists()


FIGURE_WITH_PARTS = '''
from pathlib import Path

PARTS = ("a", "broken")

def run_part(part, argv):
    if part == "broken":
        raise RuntimeError("this part fails")
    Path(argv[0], part).write_text(" ".join(argv[1:]))

def main(argv):
    folder = Path(argv[0])
    done = sorted(p.name for p in folder.iterdir())
    return {"parts_done_before_main": done, "argv": argv[1:]}
'''


def test_parts_run_apart_before_their_figure_which_resumes_from_them(tmp_path, monkeypatch, capsys):
    reproduce = load("reproduce")
    (tmp_path / "figure_parts.py").write_text(FIGURE_WITH_PARTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "cache"
    folder.mkdir()
    [run] = reproduce.run_figures(["figure_parts"], [str(folder), "--no-resume"], jobs=2, threads=1,
                                  log_dir=tmp_path / "logs", out=str(tmp_path))
    assert run.error is None
    # the good part ran (with --no-resume: it recomputes) before main, which got the argv without it
    assert run.payload == {"parts_done_before_main": ["a"], "argv": []}
    assert (folder / "a").read_text() == "--no-resume"
    assert set(run.parts) == {"a", "broken"} and run.seconds >= sum(run.parts.values())
    out = capsys.readouterr().out
    assert "figure_parts part broken: FAILED (RuntimeError: this part fails" in out
    assert "the figure computes it itself" in out
    timings = (tmp_path / "logs" / reproduce.TIMINGS).read_text()
    assert "figure_parts.a" in timings and '"figure_parts"' in timings
    # one job: no parts, main does everything itself
    [alone] = reproduce.run_figures(["figure_parts"], [str(folder)], jobs=1, threads=1, out=str(tmp_path))
    assert alone.parts is None


def test_jobs_and_threads_must_be_positive(capsys):
    import pytest

    reproduce = load("reproduce")
    for flag in ("--jobs", "--threads"):
        with pytest.raises(SystemExit) as stop:
            reproduce.main([flag, "0"])
        assert stop.value.code == 2
        assert f"argument {flag}: '0' is not a positive integer" in capsys.readouterr().err


def test_a_figure_named_twice_runs_once_and_an_empty_only_is_refused(demo, monkeypatch, capsys,
                                                                                     tmp_path):
    import pytest

    reproduce = load("reproduce")
    cfg, rows = demo
    monkeypatch.setattr(reproduce, "run", lambda c: rows)
    asked: list[list[str]] = []

    def run_figures(names, common, jobs, threads, log_dir, out, meanwhile=None, extra_argv=None, executor=None):
        asked.append(list(names))
        if meanwhile is not None:
            meanwhile()
        return []

    monkeypatch.setattr(reproduce, "run_figures", run_figures)
    reproduce.main(["--quick", "--out", str(tmp_path), "--jobs", "1", "--only", "Q_sharpness_1d", "Q_sharpness_1d"])
    assert asked == [["Q_sharpness_1d"]]
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["--quick", "--out", str(tmp_path), "--only"])
    assert stop.value.code == 2 and "--only needs at least one figure name" in capsys.readouterr().err


FIGURE_STOPPED = '''
def main(argv):
    raise KeyboardInterrupt  # what SIGTERM becomes in the main process
'''


def test_a_stopped_run_keeps_the_claims_of_the_figures_that_finished(demo, tmp_path, monkeypatch,
                                                                                    capsys):
    import json

    import pytest

    reproduce = load("reproduce")
    (tmp_path / "figure_ok.py").write_text(FIGURE_OK)
    (tmp_path / "figure_stopped.py").write_text(FIGURE_STOPPED)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt) as stop:  # in this process (jobs = 1): the finished ones ride along
        reproduce.run_figures(["figure_ok", "figure_stopped"], [str(tmp_path / "w.txt")], jobs=1,
                              log_dir=tmp_path / "logs", out=str(tmp_path))
    assert [r.name for r in stop.value.finished] == ["figure_ok"]
    # main saves what finished: a real figure's claims, then the stop
    payload = load("Q_sharpness_1d").main(["--quick", "--out", str(tmp_path / "q")])
    cfg, rows = demo
    monkeypatch.setattr(reproduce, "run", lambda c: rows)

    def stopped(names, *args, **kwargs):
        error = KeyboardInterrupt()
        error.finished = [reproduce.JobResult("Q_sharpness_1d", 1.0, payload)]
        raise error

    monkeypatch.setattr(reproduce, "run_figures", stopped)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        reproduce.main(["--quick", "--out", str(out), "--jobs", "1", "--only", "Q_sharpness_1d", "Q_distribution"])
    saved = json.loads((out / "claims.partial.json").read_text())
    assert saved["interrupted"] and saved["figures"] == ["Q_sharpness_1d"] and saved["claims"]
    assert not (out / "claims.json").exists()
    assert "claims.partial.json" in capsys.readouterr().err
    # the rerun that finishes writes claims.json and removes the stopped run's partial claims (before: left beside it)
    def finished(names, *args, meanwhile=None, **kwargs):
        meanwhile()  # the conservation check (its rows: the demo's)
        return [reproduce.JobResult("Q_sharpness_1d", 1.0, payload)]

    monkeypatch.setattr(reproduce, "run_figures", finished)
    assert reproduce.main(["--quick", "--out", str(out), "--jobs", "1", "--only", "Q_sharpness_1d"]) == 0
    assert (out / "claims.json").exists() and not (out / "claims.partial.json").exists()


# ---------------------------------------------------------------- --data: CIFAR-10 for the figures that read it
FIGURE_ARGV = '''
def main(argv):
    return {"argv": argv}

def claims(payload):
    return []
'''
FIGURE_NO_CIFAR = '''
from repro.data import load_cifar10

def main(argv):
    load_cifar10(argv[0], download=False)
'''


def test_the_cifar10_figures_are_those_that_read_it():
    from conftest import ROOT

    reproduce = load("reproduce")
    reading = {name for name in reproduce.FIGURES if "load_cifar10" in (ROOT / f"{name}.py").read_text()}
    assert set(reproduce.CIFAR10_FIGURES) == reading and reading  # a new CIFAR-10 figure gets --data too


def test_data_reaches_the_cifar10_figures_only(tmp_path, monkeypatch):
    reproduce = load("reproduce")
    for name in ("fig_cifar", "fig_plain"):
        (tmp_path / f"{name}.py").write_text(FIGURE_ARGV)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(reproduce, "FIGURES", ("fig_cifar", "fig_plain"))
    monkeypatch.setattr(reproduce, "CIFAR10_FIGURES", ("fig_cifar",))
    monkeypatch.setattr(reproduce, "run", lambda cfg: [{"activation": "tanh", "Q0": 0.0, "gf_drift": 0.0,
                                                        "loss_start": 1.0, "loss_end": 0.5, "gd_drift_lr0.1": 2e-3,
                                                        "gd_drift_lr0.01": 1e-4}])
    seen = {}
    monkeypatch.setattr(reproduce, "collect_claims", lambda name, payload: seen.update({name: payload["argv"]}) or [])
    data = tmp_path / "cifar10-jpeg.tar.gz"
    data.write_bytes(b"")  # only its existence is checked up front; the figure's loader reads it
    common = ["--jobs", "1", "--quick", "--out", str(tmp_path / "out"), "--only", "fig_cifar", "fig_plain"]
    assert reproduce.main([*common, "--data", str(data)]) == 0
    assert seen["fig_cifar"][-2:] == ["--data", str(data)] and "--data" not in seen["fig_plain"]
    seen.clear()
    assert reproduce.main(common) == 0  # without --data: the figure's own default (data/ in the repository)
    assert "--data" not in seen["fig_cifar"] and "--data" not in seen["fig_plain"]


def test_a_cifar10_figure_without_its_data_says_to_pass_data(tmp_path, monkeypatch, capsys):
    reproduce = load("reproduce")
    (tmp_path / "fig_argv.py").write_text(FIGURE_ARGV)
    for name in ("fig_no_cifar", "fig_other_no_cifar"):
        (tmp_path / f"{name}.py").write_text(FIGURE_NO_CIFAR)
    monkeypatch.syspath_prepend(str(tmp_path))  # workers start with this process's sys.path
    monkeypatch.setattr(reproduce, "CIFAR10_FIGURES", ("fig_argv", "fig_no_cifar"))
    for jobs in (1, 2):
        runs = reproduce.run_figures(["fig_argv", "fig_no_cifar", "fig_other_no_cifar"], [str(tmp_path / "missing")],
                                     jobs=jobs, log_dir=tmp_path / "logs", out=str(tmp_path),
                                     extra_argv={"fig_argv": ["--data", "D"]})
        assert runs[0].payload == {"argv": [str(tmp_path / "missing"), "--data", "D"]}, jobs
        told = runs[1].error
        assert told.startswith("FileNotFoundError: CIFAR-10 root") and "\n" not in told
        _assert_says_to_pass_data(told)
        assert "--data PATH" not in runs[2].error  # not a figure that reads CIFAR-10 through reproduce.py
        assert f"fig_no_cifar: FAILED ({told}" in capsys.readouterr().out


def _assert_says_to_pass_data(told: str):
    assert "Give reproduce.py the data with --data PATH, PATH being" in told
    for form in ("ImageFolder tree", ".tar.gz", "cifar-10-batches-py"):
        assert form in told.split("--data PATH")[1], form
    assert "load_cifar10(" not in told and "download=True" not in told  # the Python API's advice, not this command's


def test_offline_without_data_says_to_pass_data(tmp_path, monkeypatch):
    """The main job on a fresh offline machine: data/ is empty and torchvision cannot download CIFAR-10."""
    import urllib.error

    import torchvision.datasets

    from repro import data as D

    class Offline:
        def __init__(self, root, train, download):
            raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    monkeypatch.setattr(D, "default_data_root", lambda: tmp_path / "data")
    with pytest.raises(D.DatasetUnavailable) as error:
        D.load_cifar10()
    told = load("reproduce")._failure("conservation_under_optimizers", f"DatasetUnavailable: {error.value}")
    assert told.startswith("DatasetUnavailable: CIFAR-10 is not in") and "offline?" in told
    _assert_says_to_pass_data(told)
    assert told.endswith(f"or put one of them in {tmp_path / 'data'}")


@pytest.mark.slow  # worker processes or a Dask cluster started and stopped: pytest -m slow
def test_a_figure_done_while_the_check_ran_is_kept_when_the_run_is_stopped(tmp_path, monkeypatch):
    import time

    import pytest

    reproduce = load("reproduce")
    (tmp_path / "figure_ok.py").write_text(FIGURE_OK)
    monkeypatch.syspath_prepend(str(tmp_path))
    target = tmp_path / "w.txt"

    def check_then_ctrl_c():  # the conservation check runs here while the worker finishes its figure
        import multiprocessing

        deadline = time.time() + 120
        while (not target.exists() or multiprocessing.active_children()) and time.time() < deadline:
            time.sleep(0.1)  # until the worker has sent its result and exited: the result waits in the pipe
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stop:
        reproduce.run_figures(["figure_ok"], [str(target)], jobs=2, threads=1, log_dir=tmp_path / "logs",
                              out=str(tmp_path), meanwhile=check_then_ctrl_c)
    # before: nothing was read from a worker until the check returned, so claims.partial.json missed this figure
    assert [r.name for r in stop.value.finished] == ["figure_ok"]
    assert stop.value.finished[0].payload["value"].tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- --only merges by figure
def _fake_check_rows():
    """Rows of the conservation check's shape (its four activations), for main runs that test something else."""
    return [{"activation": a, "Q0": 1.0, "gf_drift": 1e-9, "loss_start": 1.0, "loss_end": 0.5,
             "gd_drift_lr0.1": 1e-2, "gd_drift_lr0.01": 1e-3} for a in ("identity", "relu", "tanh", "sigmoid")]


@pytest.mark.slow  # worker processes or a Dask cluster started and stopped: pytest -m slow
def test_only_keeps_what_the_other_figures_recorded(tmp_path, monkeypatch):
    """`--only Q_distribution` after a run of two figures: claims.json keeps Q_sharpness_1d's rows and job time
    (before: rewritten to Q_distribution's alone), and --report's time column still reads its job time."""
    from repro import report

    reproduce = load("reproduce")
    monkeypatch.setattr(reproduce, "run", lambda cfg: _fake_check_rows())
    out = tmp_path / "figures"
    common = ["--quick", "--out", str(out), "--jobs", "1"]
    assert reproduce.main(common + ["--only", "Q_sharpness_1d", "Q_distribution"]) == 0
    first = json.loads((out / "claims.json").read_text(encoding="utf-8"))
    assert reproduce.main(common + ["--only", "Q_distribution"]) == 0
    second = json.loads((out / "claims.json").read_text(encoding="utf-8"))
    assert second["figures"] == first["figures"] == ["Q_distribution", "Q_sharpness_1d"]
    assert [r["claim"] for r in second["claims"]] == [r["claim"] for r in first["claims"]]
    assert second["claim_figures"] == first["claim_figures"] and len(second["claim_figures"]) == len(second["claims"])
    assert {"Q_sharpness_1d", "Q_distribution", "conservation_check"} == set(second["claim_figures"])
    assert second["figure_seconds"]["Q_sharpness_1d"] == first["figure_seconds"]["Q_sharpness_1d"]
    assert set(second["figure_seconds"]) == {"Q_sharpness_1d", "Q_distribution"}
    # --report reads the kept job time, not the figure's own wall time
    seconds, parts = report._job_seconds("Q_sharpness_1d", second)
    assert parts == 0 and seconds == first["figure_seconds"]["Q_sharpness_1d"]["seconds"]
    assert first["wall_seconds"] is None and second["wall_seconds"] is None  # --only runs time no main job
    assert reproduce.report_claims(tmp_path)["figure_seconds"] == second["figure_seconds"]
    # a figure whose JSON is gone is not claimed any more; a full-settings run keeps nothing of a --quick one
    (out / "Q_sharpness_1d.json").unlink()
    assert reproduce.main(common + ["--only", "Q_distribution"]) == 0
    assert json.loads((out / "claims.json").read_text(encoding="utf-8"))["figures"] == ["Q_distribution"]


# ---------------------------------------------------------------- Dask workers (stale code, files, loss)
FIGURE_VERSION = '''
def main(argv):
    return {"lambda_max": 8.2121}
'''
FIGURE_WRITES = '''
from pathlib import Path

def main(argv):
    out = Path(argv[argv.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "figure_writes.json").write_text('{"made": "on the worker"}')
    return {"out": str(out)}
'''
FIGURE_HANGS_ON = '''
import time
from pathlib import Path

def main(argv):
    Path(argv[0]).write_text("started")
    time.sleep(120)  # killed before it ends
'''


def _worker(address, cwd, threads=1):
    """A Dask worker process without a nanny (nothing restarts it), started in ``cwd``; returned once it joined."""
    import subprocess
    import sys
    import time

    import distributed

    process = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
                                str(threads), "--no-nanny", "--no-dashboard"], cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    with distributed.Client(address, timeout="20s") as client:
        deadline = time.time() + 60
        while not client.nthreads() and time.time() < deadline:
            time.sleep(0.2)
        assert client.nthreads(), "the worker did not join"
    return process


@pytest.fixture
def scheduler():
    """A Dask scheduler in this process, with no workers of its own."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.mark.slow  # worker processes or a Dask cluster started and stopped: pytest -m slow
def test_a_worker_runs_the_figure_script_as_it_is_now(tmp_path, monkeypatch):
    """The script edited between two runs on one cluster: the second run gives the edited script's number (before:
    the worker kept the module it imported first, 8.2121 under the new code's hash). A worker whose package is older
    than the files on disk is restarted by the client, and a job on one refuses."""
    distributed = pytest.importorskip("distributed")
    from repro import jobs as J

    reproduce = load("reproduce")
    script = tmp_path / "figure_version.py"
    script.write_text(FIGURE_VERSION)
    monkeypatch.syspath_prepend(str(tmp_path))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        executor, slots = J.dask_executor(cluster.scheduler_address)
        try:
            [first] = reproduce.run_figures(["figure_version"], [], jobs=slots, log_dir=tmp_path / "logs",
                                            out=str(tmp_path), executor=executor)
            script.write_text(FIGURE_VERSION.replace("8.2121", "4.1061"))  # same size, same second: no .pyc trusted
            [second] = reproduce.run_figures(["figure_version"], [], jobs=slots, log_dir=tmp_path / "logs",
                                             out=str(tmp_path), executor=executor)
            assert first.payload == {"lambda_max": 8.2121} and second.payload == {"lambda_max": 4.1061}
            # a worker that imported the package before it changed: dask_executor restarts it
            executor.client.run(lambda: setattr(J, "_PACKAGE_AT_IMPORT", "an older package"))
        finally:
            J.close(executor)
        executor, _ = J.dask_executor(cluster.scheduler_address)
        try:
            assert all(a == b for a, b in executor.client.run(J.loaded_code).values())
        finally:
            J.close(executor)
    monkeypatch.setattr(J, "_PACKAGE_AT_IMPORT", "an older package")  # and a job on such a process refuses
    status, message, _ = J.figure_job("figure_version", None, [], 1, str(tmp_path / "logs" / "stale.log"))
    assert status == "error" and message.startswith("StaleCodeError") and "restart the workers" in message


@pytest.mark.slow  # worker processes or a Dask cluster started and stopped: pytest -m slow
def test_the_figure_files_come_back_to_the_clients_out(tmp_path, monkeypatch, scheduler):
    """A worker started in another folder, writing where the client cannot see: the figure files are written under
    the client's --out (before: only in the worker's folder)."""
    from repro import jobs as J

    reproduce = load("reproduce")
    (tmp_path / "figure_writes.py").write_text(FIGURE_WRITES)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    worker = _worker(scheduler, tmp_path / "elsewhere")
    executor, slots = J.dask_executor(scheduler)
    try:
        # the worker's --out is one this process does not read: what it writes must still land in out
        [run] = reproduce.run_figures(["figure_writes"], ["--out", str(tmp_path / "elsewhere" / "out")], jobs=slots,
                                      log_dir=tmp_path / "logs", out=str(tmp_path / "client-out"), executor=executor)
    finally:
        J.close(executor)
        worker.kill()
        worker.wait()
    assert run.error is None
    assert (tmp_path / "client-out" / "figure_writes.json").read_text() == '{"made": "on the worker"}'


@pytest.mark.slow  # worker processes or a Dask cluster started and stopped: pytest -m slow
def test_reproduce_gives_a_cluster_absolute_paths(tmp_path, monkeypatch, scheduler):
    """reproduce.py --out relative, its worker started in another folder: the figure is under the client's folder."""
    reproduce = load("reproduce")
    monkeypatch.setattr(reproduce, "run", lambda cfg: _fake_check_rows())
    (tmp_path / "client").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "client")
    worker = _worker(scheduler, tmp_path / "elsewhere")
    try:
        assert reproduce.main(["--quick", "--only", "Q_sharpness_1d", "--out", "rel", "--scheduler", scheduler]) == 0
    finally:
        worker.kill()
        worker.wait()
    assert (tmp_path / "client" / "rel" / "Q_sharpness_1d.json").exists()
    assert (tmp_path / "client" / "rel" / ".logs" / "Q_sharpness_1d.log").exists()
    assert not (tmp_path / "elsewhere" / "rel").exists()


@pytest.mark.slow  # worker processes or a Dask cluster started and stopped: pytest -m slow
def test_the_only_worker_killed_ends_the_run_with_the_finished_figures(tmp_path, monkeypatch, capsys,
                                                                                    scheduler):
    """kill -9 of the only worker during a job: the run ends (before: it waited for ever) with one line, the
    figure finished before it kept and the one in flight failed."""
    import signal
    import threading
    import time

    from repro import jobs as J

    reproduce = load("reproduce")
    (tmp_path / "figure_ok.py").write_text(FIGURE_OK)
    (tmp_path / "figure_hangs_on.py").write_text(FIGURE_HANGS_ON)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(J, "WORKERLESS_WAIT_S", 2.0, raising=False)
    worker = _worker(scheduler, tmp_path)
    executor, slots = J.dask_executor(scheduler)
    marker = tmp_path / "started.txt"
    runs: list = []
    thread = threading.Thread(target=lambda: runs.extend(reproduce.run_figures(
        ["figure_ok", "figure_hangs_on"], [str(marker)], jobs=slots, log_dir=tmp_path / "logs", out=str(tmp_path),
        executor=executor)), daemon=True)
    try:
        started = time.time()
        thread.start()
        while marker.read_text() != "started" if marker.exists() else time.time() - started < 120:
            time.sleep(0.1)
        os.kill(worker.pid, signal.SIGKILL)
        thread.join(60)
        assert not thread.is_alive(), "the run waits for a worker for ever"
    finally:
        worker.kill()
        worker.wait()
        J.close(executor, wait=not thread.is_alive())  # as reproduce.py's main closes it after the run
    ok, lost = runs
    assert ok.error is None and ok.payload["value"].tolist() == [1.0, 1.0]
    assert lost.payload is None and "the Dask cluster lost all its workers" in lost.error
    err = capsys.readouterr().err
    assert err.count("no workers left") == 1 and "figure_hangs_on" in err


def test_the_scheduler_help_says_one_job_per_worker_process(capsys):
    with pytest.raises(SystemExit):
        load("reproduce").main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "one at a time per worker process" in text and "--nthreads 1" in text
    assert "as many at once as they have threads" not in text


def test_only_keeps_the_last_full_runs_wall_time(tmp_path):
    """A run of --only some figures times no main job: the wall time the last full run recorded stays."""
    reproduce = load("reproduce")
    (tmp_path / "claims.json").write_text(json.dumps({"quick": False, "figures": [], "wall_seconds": 512.5}))
    assert reproduce.kept_from_before(tmp_path, ["Q_distribution"], quick=False)["wall_seconds"] == 512.5
    assert reproduce.kept_from_before(tmp_path, ["Q_distribution"], quick=True)["wall_seconds"] is None


def test_only_every_figure_is_the_main_job():
    """`--only` naming every figure (as bench_reproduce passes it) is the main job, whose wall time is recorded."""
    reproduce = load("reproduce")
    assert reproduce.is_main_job(list(reproduce.FIGURES))
    assert reproduce.is_main_job(list(reversed(reproduce.FIGURES)))
    assert not reproduce.is_main_job(["Q_distribution"])
