"""The README's main command: reproduce.py runs, prints its claim table, and every claim holds."""
from conftest import load_script as load


def test_reproduce_demo_claims_hold(capsys):
    reproduce = load("reproduce")
    cfg = reproduce.Settings(steps=300)
    rows = reproduce.run(cfg)
    assert [r["activation"] for r in rows] == ["identity", "relu", "tanh", "sigmoid"]
    for r in rows:
        assert r["gf_drift"] < cfg.gf_tolerance
        assert r["gd_drift_lr0.1"] > r["gd_drift_lr0.01"] > 100 * r["gf_drift"]
        # Prop. 13: per-step drift ∝ η², steps ∝ 1/η, so the total drift ∝ η
        assert 3 < r["gd_drift_lr0.1"] / r["gd_drift_lr0.01"] < 30
        assert r["loss_end"] < r["loss_start"]


def test_reproduce_main_prints_the_table(capsys, tmp_path):
    reproduce = load("reproduce")
    assert reproduce.main(["--seed", "1", "--steps", "200", "--quick", "--out", str(tmp_path),
                           "--only", "Q_sharpness_1d", "Q_distribution"]) == 0
    out = capsys.readouterr().out
    assert "Q conserved under gradient flow" in out and "App. G.1: λ_max = √(Q²+4)" in out
    assert "NO" not in out
    assert (tmp_path / "Q_sharpness_1d.json").exists() and (tmp_path / "Q_distribution.png").exists()


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


def test_jobs_and_threads_must_be_positive(capsys):
    import pytest

    reproduce = load("reproduce")
    for flag in ("--jobs", "--threads"):
        with pytest.raises(SystemExit) as stop:
            reproduce.main([flag, "0"])
        assert stop.value.code == 2
        assert f"argument {flag}: '0' is not a positive integer" in capsys.readouterr().err
