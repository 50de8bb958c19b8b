"""Optional dependencies: imported when a function needs them, with an error naming the extra to install."""
from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"torchvision.datasets"``); if it is missing, say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise ImportError(
            f"{purpose} needs the optional package {package!r}, which is not installed. Install the "
            f"'{extra}' extra: pip install -e \".[{extra}]\" in a clone of this repository "
            f"(the distribution is symmetry-flat-minima; the PyPI project named 'symmetry' is another one)."
        ) from error
