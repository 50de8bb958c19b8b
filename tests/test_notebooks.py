"""The CIFAR notebooks run top to bottom with QUICK on a tiny dataset the test writes (nbclient)."""
import json
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"class{i}" for i in range(10)]


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
    for mode in ("group", "inverse", "random", "shuffle", "permutation"):
        diff = result["summary"][mode]["accuracy_difference_mean"]
        assert len(diff) == 2 and len(diff[0]) == 3
        assert all(v is not None for row in diff for v in row)  # finite everywhere (null would mean NaN)
        assert abs(diff[0][-1]) <= 1 / 64 + 1e-9  # ε = 1e-4: the ensemble is the single model
