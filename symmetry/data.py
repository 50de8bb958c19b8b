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

import torch

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
    from torchvision.datasets import CIFAR10

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
    data = {}
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
