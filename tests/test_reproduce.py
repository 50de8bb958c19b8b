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
