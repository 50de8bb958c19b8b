"""conservation_under_optimizers.py --quick on a tiny generated CIFAR-10 ImageFolder: files, exact identities, claims."""
import json

import pytest

from conftest import load_script
from conftest import write_tree


@pytest.mark.slow  # a --quick figure run (CNN and MLP on CIFAR-10): pytest -m slow
def test_quick_run(tmp_path):
    write_tree(tmp_path / "cifar", per_class=(4, 1))
    script = load_script("conservation_under_optimizers")
    payload = script.main(["--quick", "--out", str(tmp_path), "--data", str(tmp_path / "cifar"), "--threads", "1"])
    for ext in ("pdf", "png", "json"):
        assert (tmp_path / f"conservation_under_optimizers.{ext}").stat().st_size > 0
    on_disk = json.loads((tmp_path / "conservation_under_optimizers.json").read_text())
    assert on_disk["settings"]["quick"] is True
    # the JSON records the content of the CIFAR-10 it read, not only the --data path
    from repro.data import load_cifar10

    assert on_disk["runs"]["cnn"]["data_sha256"] == load_cifar10(tmp_path / "cifar")["sha256"]
    assert "data_sha256" not in on_disk["runs"]["mlp"]
    for name in ("mlp", "cnn"):
        s = payload["summary"][name]
        assert s["gd_identity_error"] < 1e-10 and s["decay_identity_error"] < 1e-10
        assert s["momentum_identity_error"] < 1e-10  # the exact per-step identities hold even in 12 steps
        assert s["minibatch_identity_error"] < 1e-10  # ... and with each step's mini-batch gradient
        assert s["decay"]["discrete_decay_error_max"] < 1e-10  # (1 − ηλ)² per step is exact
        assert len(payload["runs"][name]["by_optimizer"]) == 9
        assert len(s["minibatch_drift_by_lr"]) == 3 and s["minibatch_drift_by_lr"] != s["sgd_drift_by_lr"]
    rows = script.claims(payload)
    assert len(rows) == 16
    for row in rows:
        assert set(row) == {"claim", "criterion", "holds", "measured"} and isinstance(row["holds"], bool)
    by_claim = {x["claim"]: x for x in rows}
    exponent_rows = [k for k in by_claim if "scales as η²" in k]
    assert len(exponent_rows) == 4 and any("mini-batch SGD" in k for k in exponent_rows)

    # doctored payloads flip the exponent and weight-decay rows
    doctored = json.loads(json.dumps(on_disk))
    s = doctored["summary"]["cnn"]
    s["drift_exponent"]["minibatch"]["fit"] = 2.1
    s["decay"].update(kunin_error_max=1e-6, finite_lr_term_max=1e-3)
    flipped = {x["claim"]: x["holds"] for x in script.claims(doctored)}
    assert flipped["CNN/CIFAR-10: O(η²) per step — the drift over 12 steps scales as η² (mini-batch SGD, batch 4)"]
    weight_decay = "CNN/CIFAR-10: with weight decay each Q_i decays as e^{−2λt} plus Kunin et al.'s finite-lr term"
    assert flipped[weight_decay]
    s["drift_exponent"]["minibatch"]["fit"] = 7.5  # a spike's drift
    s["decay"]["kunin_error_max"] = 5e-4  # not below a tenth of the term: the two cannot be told apart
    flipped = {x["claim"]: x for x in script.claims(doctored)}
    assert not flipped["CNN/CIFAR-10: O(η²) per step — the drift over 12 steps scales as η² (mini-batch SGD, batch 4)"]["holds"]
    assert not flipped[weight_decay]["holds"] and "cannot be told apart" in flipped[weight_decay]["measured"]


@pytest.mark.slow  # a --quick figure run (CNN and MLP on CIFAR-10): pytest -m slow
def test_parts_cover_every_run_once_and_main_reads_them(tmp_path, monkeypatch):
    """reproduce.py's jobs (PARTS: each model's optimizers in groups) split the runs without overlap, and main, run
    after them on the same --out, trains nothing: it reads the parts' cache, in the optimizers' order."""
    write_tree(tmp_path / "cifar", per_class=(4, 1))
    script = load_script("conservation_under_optimizers")
    cfg = script.quick(script.Settings())
    groups = [list(script.optimizers(cfg))[k::script.GROUPS] for k in range(script.GROUPS)]
    assert sorted(sum(groups, [])) == sorted(script.optimizers(cfg))
    assert script.PARTS == tuple(f"{m}-{k + 1}" for m in cfg.models for k in range(script.GROUPS))
    argv = ["--quick", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "cifar"), "--threads", "1"]
    for part in script.PARTS:
        script.run_part(part, argv)
    assert len(list((tmp_path / "out" / ".cache").glob("conservation_under_optimizers-*.pt"))) == len(script.PARTS)

    def no_training(*args, **kwargs):
        raise AssertionError("main trained a run that its parts had cached")

    monkeypatch.setattr(script, "train", no_training)
    payload = script.main(argv)
    for name in cfg.models:
        assert list(payload["runs"][name]["by_optimizer"]) == list(script.optimizers(cfg))
