"""The CIFAR notebooks run top to bottom with QUICK on a tiny dataset the test writes (nbclient)."""
import json
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from PIL import Image

from conftest import ROOT
from repro import experiment as E

CLASSES = [f"class{i}" for i in range(10)]
# each test starts a Jupyter kernel and runs a notebook: CI's separate slow step runs them (pytest -m slow)
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """The kernel is a process of its own: conftest's torch.set_num_threads(1) does not reach it, OMP_NUM_THREADS
    does (a second thread only waits on these small tensors, and beside a pytest-xdist worker it waits for a core)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def tiny_cifar(root: Path, train_per_class=12, test_per_class=16):
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                # a class-dependent colour plus noise, so that a little training helps
                base = torch.full((32, 32, 3), 20 * label, dtype=torch.int32)
                noise = torch.randint(0, 60, (32, 32, 3), generator=g, dtype=torch.int32)
                Image.fromarray((base + noise).clamp(0, 255).to(torch.uint8).numpy()).save(root / split / name / f"{i}.png")
    return root


def run_notebook(name: str, parameters: str, tmp_path: Path):
    nb = nbformat.read(ROOT / f"{name}.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source.startswith("# parameters")
    first.source = parameters
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def assert_provenance_like_the_scripts(result: dict, notebook: str, out: Path):
    """The JSON carries what a figure script's does (experiment.finish): the checkout's commit and dirty flag,
    the lock file's hash, the settings' hash, and the SHA-256 of the figure files beside it."""
    environment = result["environment"]
    assert set(environment) == set(E.environment(source=ROOT / notebook))  # the same record, field for field
    state = E.git_state(ROOT)
    assert environment["git_commit"] == state["git_commit"] and environment["git_dirty"] == state["git_dirty"]
    if state["git_commit"] is not None:  # a git checkout (not an unpacked copy)
        assert len(environment["git_commit"]) == 40 and isinstance(environment["git_dirty"], bool)
    assert environment["lock_file"] == E.lock_file_hash(ROOT)
    assert result["settings_hash"] == E.settings_hash(result["settings"]) and result["command"] == notebook
    for ext in ("pdf", "png"):
        assert result["files"][ext]["sha256"] == E.file_sha256(out / result["files"][ext]["name"])


def test_ensemble_notebook_quick(tmp_path):
    data = tiny_cifar(tmp_path / "cifar")
    out = tmp_path / "figures"
    run_notebook("ensemble_CIFAR", f'DATA = "{data}"\nOUT = "{out}"\nSEEDS = [0, 1]\n'
                 "NUM_GS = [10, 20]\nEPSILONS = [20, 1e-4]\nEPOCHS = 1\nN_EVAL = 64\nQUICK = True", tmp_path)
    for ext in ("pdf", "png", "json"):
        assert (out / f"ensemble_CIFAR.{ext}").exists()
    assert (out / "ensemble_CIFAR_loss.png").exists()
    result = json.loads((out / "ensemble_CIFAR.json").read_text())
    assert result["settings"]["quick"] is True
    assert_provenance_like_the_scripts(result, "ensemble_CIFAR.ipynb", out)
    for mode in ("group", "inverse", "random", "shuffle", "permutation"):
        diff = result["summary"][mode]["accuracy_difference_mean"]
        assert len(diff) == 2 and len(diff[0]) == 3
        assert all(v is not None for row in diff for v in row)  # finite everywhere (null would mean NaN)
        assert abs(diff[0][-1]) <= 1 / 64 + 1e-9  # ε = 1e-4: the ensemble is the single model


def test_adversarial_notebook_quick(tmp_path):
    data = tiny_cifar(tmp_path / "cifar")
    out = tmp_path / "figures"
    run_notebook("adversarial_CIFAR", f'DATA = "{data}"\nOUT = "{out}"\nSEEDS = [0]\nNUM_G = 4\nEPSILON = 10.0\n'
                 "FGSM_STRENGTHS = [0, 0.012]\nPGD_ITERATIONS = [0, 1]\nSTRONG_ITERATIONS = [0, 2]\n"
                 "EPOCHS = 1\nN_EVAL = 64\nQUICK = True", tmp_path)
    result = json.loads((out / "adversarial_CIFAR.json").read_text())
    assert (out / "adversarial_CIFAR.png").exists() and (out / "adversarial_CIFAR.pdf").exists()
    assert result["settings"]["clip_values"] == [-0.5, 0.5]
    assert_provenance_like_the_scripts(result, "adversarial_CIFAR.ipynb", out)
    for threat in ("transfer", "adaptive"):
        for name_attack in ("fgsm", "pgd", "pgd_8_255"):
            curves = result["summary"][threat][name_attack]
            assert set(curves) == {"original", "group", "inverse", "permutation"}
            for curve in curves.values():
                assert all(0 <= v <= 1 for v in curve["mean"])
    # strength 0 is the clean accuracy, the same under both threat models
    for name in ("original", "group"):
        assert result["summary"]["transfer"]["fgsm"][name]["mean"][0] == result["summary"]["adaptive"]["fgsm"][name]["mean"][0]
