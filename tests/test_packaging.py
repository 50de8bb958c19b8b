"""What a user gets from `import symmetry`: a light import, a complete __all__, optional packages that
name their extra, a typed package. (The import's time is measured in benchmarks/bench_import.py.)"""
import subprocess
import sys
import types
from pathlib import Path

import pytest

import symmetry
from symmetry._optional import require

ROOT = Path(__file__).resolve().parents[1]
#: heavy or optional packages that `import symmetry` must not load (they load when a function needs them)
NOT_AT_IMPORT = ["torchvision", "matplotlib", "sympy", "scipy", "sklearn", "art", "mlxtend", "pandas"]


def test_import_loads_none_of_the_heavy_packages():
    code = ("import sys, symmetry; print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))))")
    out = subprocess.run([sys.executable, "-c", code, *NOT_AT_IMPORT], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == []


def test_all_lists_every_exported_name_and_each_resolves():
    exported = {name for name, value in vars(symmetry).items()
                if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    listed = set(symmetry.__all__)
    assert exported - listed == set(), "exported but missing from __all__"
    assert len(symmetry.__all__) == len(listed), "__all__ lists a name twice"
    for name in symmetry.__all__:
        assert hasattr(symmetry, name), name


def test_each_submodules_all_names_only_what_it_defines():
    # `from symmetry.graph import *` raised AttributeError on two names left in graph's __all__
    import importlib
    import pkgutil
    for info in pkgutil.walk_packages(symmetry.__path__, "symmetry."):
        module = importlib.import_module(info.name)
        missing = [name for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
        assert not missing, f"{info.name}.__all__ lists {missing}, which {info.name} does not define"


def test_a_missing_optional_package_names_the_extra_to_install():
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[cifar\]\".*symmetry-flat-minima") as error:
        require("no_such_package_xyz.datasets", "cifar", "loading CIFAR-10")
    assert "loading CIFAR-10" in str(error.value) and "'no_such_package_xyz'" in str(error.value)
    assert isinstance(error.value.__cause__, ImportError)


def test_a_present_optional_package_is_returned():
    assert require("json", "laws", "json") is sys.modules["json"]


def test_package_is_typed():
    assert (Path(symmetry.__file__).parent / "py.typed").is_file()
