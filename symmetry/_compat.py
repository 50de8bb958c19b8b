"""Deprecated names kept working for a release: the modules that moved from ``symmetry`` to ``repro``, the
repository's machinery beside the library. ``symmetry.experiment`` (attribute access, ``from symmetry import
experiment``) and ``import symmetry.experiment`` both give ``repro.experiment``, with a DeprecationWarning."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: modules that moved to the repository's machinery (the ``repro`` package beside ``symmetry``)
MOVED_TO_REPRO = ("cifar", "data", "experiment", "jobs", "report", "training")


def moved(name: str, stacklevel: int = 3) -> ModuleType:
    """``repro.NAME`` for the old ``symmetry.NAME``, with a DeprecationWarning at the caller."""
    warnings.warn(f"symmetry.{name} moved to repro.{name} (the repository's machinery, beside the library): "
                  f"import it from there", DeprecationWarning, stacklevel=stacklevel)
    try:
        return importlib.import_module(f"repro.{name}")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"symmetry.{name} moved to repro.{name}, which is not importable here: run from "
                                  f"a clone of the repository (its root on sys.path)", name=f"symmetry.{name}") from error


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``symmetry.NAME`` for a moved module (nothing else): its module is ``repro.NAME``."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != "symmetry" or name not in MOVED_TO_REPRO:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        # the import system returns what sys.modules holds under the name after this call: the moved module
        sys.modules[module.__name__] = moved(module.__name__.partition(".")[2])


def install_finder() -> None:
    """Put the finder last on ``sys.meta_path`` (once): it answers only names no other finder found."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
