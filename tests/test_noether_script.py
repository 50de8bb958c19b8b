"""noether_dynamics.py: its --quick run, its parts, and its image data offline (network blocked)."""
import json
import math
import socket

import pytest
import torch
from conftest import load_script

from symmetry import noether as N
from repro.data import DatasetUnavailable, load_image_dataset


@pytest.fixture
def offline(monkeypatch):
    """No network: every socket connection fails."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name,shape", [("mnist-subset", (5000, 784)), ("digits", (1797, 64))])
def test_offline_datasets_load_without_network(offline, name, shape):
    data = load_image_dataset(name)
    assert tuple(data["x"].shape) == shape and data["name"] == name and data["fallback_reason"] is None
    assert float(data["x"].min()) >= 0 and float(data["x"].max()) <= 1
    assert sorted(torch.unique(data["y"]).tolist()) == list(range(10))


def test_kmnist_offline_is_a_clear_error_and_falls_back_only_when_allowed(offline, tmp_path):
    with pytest.raises(DatasetUnavailable, match="could not load 'kmnist'.*mnist-subset.*allow_fallback"):
        load_image_dataset("kmnist", root=tmp_path)
    data = load_image_dataset("kmnist", root=tmp_path, allow_fallback="digits")
    assert data["name"] == "digits" and "kmnist unavailable" in data["fallback_reason"]
    with pytest.raises(ValueError, match="allow_fallback"):
        load_image_dataset("kmnist", root=tmp_path, allow_fallback="cifar")


@pytest.mark.slow  # the figure's --quick run (every ODE of the drift table, the MLPs, the rotation): pytest -m slow
def test_script_quick(tmp_path):
    """noether_dynamics.py --quick: files, JSON, every conserved claim of the table holds in its ODE column."""
    module = load_script("noether_dynamics")
    payload = module.main(["--quick", "--out", str(tmp_path)])
    assert payload["figure"] == "noether_dynamics"
    for name in ("noether_dynamics", "noether_dynamics_rotation"):
        for ext in ("pdf", "png"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    on_disk = json.loads((tmp_path / "noether_dynamics.json").read_text())
    assert on_disk["settings"]["quick"] is True and on_disk["dataset"]["name"] == "digits"
    assert len(on_disk["drift_table"]) == len(N.CLAIMS)
    for row in on_disk["drift_table"]:
        if row["claim"].startswith(("conserved", "zero")):  # ReLU + GF: the solver may stall on a kink (said so)
            assert row["verdict"] in (("yes", "ODE stalled") if row["problem"] == "relu" else ("yes",)), row
    for act in ("relu", "repu"):
        nd = on_disk["mlp"][act]["ND (heavy ball)"]
        assert nd["eq34_holds"] and math.isfinite(nd["final_loss"])
    assert on_disk["rotation"]["nd"]["max_distance_from_plane"] < 1e-8


def test_the_drift_table_groups_cover_every_problem_once_in_the_claims_order():
    """reproduce.py runs the table's groups apart (noether_dynamics.PARTS): together they are N.CLAIMS, in order."""
    script = load_script("noether_dynamics")
    grouped = [p for group in script.TABLE_GROUPS.values() for p in group]
    assert sorted(grouped) == sorted(set(grouped)) == sorted({c[0] for c in N.CLAIMS})
    ordered = [c for group in script.TABLE_GROUPS.values() for c in N.CLAIMS if c[0] in group]
    assert ordered == N.CLAIMS
    assert set(script.TABLE_GROUPS) <= set(script.PARTS)
    with pytest.raises(ValueError, match="part='table'"):
        script.run_part("table", [])
