"""Shared helpers: seeded random problems in float64 (the checks are about formulas, not round-off)."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import symmetry as S

DTYPE = torch.float64
#: (m, h, n) shapes the propositions are checked on: wide, narrow, square, h > m + n
SHAPES = [(3, 4, 5), (5, 3, 2), (4, 4, 4), (2, 7, 3)]
SEEDS = [0, 1]


ROOT = Path(__file__).resolve().parents[1]

# The suite's tensors are tiny: a second intra-op thread only waits, and on a busy machine it waits for a
# core (test_batched_gd_matches_plain_sgd took 126 s with two threads beside other work, 6.5 s with one).
torch.set_num_threads(1)


# The slowest files first, by their seconds in the default run (`pytest --durations=0`, summed per file; the tests
# marked slow left out, as pyproject.toml's addopts does): pytest-xdist's --dist loadfile hands whole files to the
# workers in collection order (--no-loadscope-reorder in pyproject.toml), so the long files start first and the
# short ones fill the gaps at the end (longest-first scheduling). In alphabetical order the last long file started
# late and one worker finished ~25 s after the other. Files not named keep their order, after these. Seconds
# measured with two workers beside other work (load average ~9), so about 4× a quiet machine's.
SLOW_FILES = ("test_robustness.py",  # 212 s
              "test_figures.py",  # 147 s
              "test_laws.py",  # 111 s
              "test_graph.py",  # 87 s
              "test_zoo.py",  # 79 s
              "test_conserved.py",  # 79 s
              "test_reproduce.py",  # 74 s
              "test_script_output.py",  # 55 s
              "test_noether.py",  # 55 s
              "test_modules.py",  # 32 s
              "test_packaging.py",  # 26 s
              "test_doc_examples.py",  # 14 s
              "test_noether_steppers.py",  # 12 s
              "test_docs_build.py",  # 12 s
              "test_data.py",  # 10 s
              "test_teleportation_claims.py")  # 9 s


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: a file's tests stay in order


def load_script(name: str):
    """Import a top-level script (reproduce.py, a figure script) by file name."""
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=generator(seed), dtype=DTYPE)


def two_layer_problem(m, h, n, seed=0, k=None, std=0.7, batch=()):
    """(U, V), X, Y; X = None (whitened) unless a batch size k is given."""
    U, V = S.gaussian_init(m, h, n, std=std, batch=batch, seed=seed, dtype=DTYPE)
    X = None if k is None else randn(n, k, seed=seed + 100)
    Y = randn(*batch, m, n if k is None else k, seed=seed + 200)
    return (U, V), X, Y


def grad_of(model, params, X, Y):
    """∇L by plain autograd, independent of the models' closed forms."""
    params = tuple(p.detach().clone().requires_grad_(True) for p in params)
    loss = model.loss(params, X, Y).sum()
    return torch.autograd.grad(loss, params)


def inner(a, b) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b)))


def norm(a) -> float:
    return float(sum((x * x).sum() for x in a)) ** 0.5


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


#: the classes of the tiny CIFAR-10-like ImageFolder tree that write_tree writes
CLASSES = ["airplane", "bird", "cat"]


def write_tree(root, per_class=(4, 2), seed=0):
    """An ImageFolder tree root/{train,test}/<class>/NNNN.png of random 32×32 images (lossless); returns the pixels."""
    from PIL import Image  # torchvision's dependency, in the cifar and data extras

    g = torch.Generator().manual_seed(seed)
    pixels = {}
    for split, count in zip(("train", "test"), per_class):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                array = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8)
                Image.fromarray(array.numpy()).save(root / split / c / f"{i:04d}.png")  # lossless
                pixels[(split, c, i)] = array
    return pixels
