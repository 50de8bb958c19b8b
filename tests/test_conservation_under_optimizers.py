"""conservation_under_optimizers.py --quick on a tiny generated CIFAR-10 ImageFolder: files, exact identities, claims."""
import json

from conftest import load_script
from test_data import write_tree


def test_quick_run(tmp_path):
    write_tree(tmp_path / "cifar", per_class=(4, 1))
    script = load_script("conservation_under_optimizers")
    payload = script.main(["--quick", "--out", str(tmp_path), "--data", str(tmp_path / "cifar"), "--threads", "1"])
    for ext in ("pdf", "png", "json"):
        assert (tmp_path / f"conservation_under_optimizers.{ext}").stat().st_size > 0
    on_disk = json.loads((tmp_path / "conservation_under_optimizers.json").read_text())
    assert on_disk["settings"]["quick"] is True
    for name in ("mlp", "cnn"):
        s = payload["summary"][name]
        assert s["gd_identity_error"] < 1e-10 and s["decay_identity_error"] < 1e-10
        assert s["momentum_identity_error"] < 1e-10  # the exact per-step identities hold even in 12 steps
        assert len(payload["runs"][name]["by_optimizer"]) == 6
    rows = script.claims(payload)
    assert len(rows) == 10
    for row in rows:
        assert set(row) == {"claim", "criterion", "holds", "measured"} and isinstance(row["holds"], bool)
