"""What every figure script shares: the CLI, atomic PDF/PNG/JSON output, provenance, resumable caching.

Scripts stay short: settings (a dataclass) → run → save → plot. This module never imports
matplotlib at import time; :func:`save_figure` loads it (with the Agg backend) when called.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

import symmetry as S
from symmetry.models import torch_threads  # noqa: F401  (for the scripts: E.torch_threads)

from symmetry.training import DTYPES  # noqa: E402  (the training precisions, also for --dtype)


def add_common_arguments(parser: argparse.ArgumentParser, default_out: str = "figures", dtype: bool = True) -> None:
    """--device, --seed, --out, --quick, --dtype (where the script trains in one precision), --no-resume."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where tensors live")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--out", default=default_out, help="directory for NAME.pdf, NAME.png, NAME.json")
    parser.add_argument("--quick", action="store_true", help="a few hundred steps and small sizes (tests, a first look)")
    if dtype:
        parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="training precision")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="recompute even if finished runs with the same settings are cached under OUT/.cache")


def settings_from_cli(doc: str, settings_cls, quick: Callable[[Any], Any], argv: list[str] | None,
                      dtype: bool = True) -> tuple[argparse.Namespace, Any]:
    """Parse a figure script's flags and build its Settings (``quick(cfg)`` under --quick).

    ``dtype=False`` for scripts that fix their own precision(s) and so take no --dtype flag.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_common_arguments(parser, dtype=dtype)
    args = parser.parse_args(argv)
    resolve_device(args.device)
    cfg = settings_cls(seed=args.seed, device=args.device, **({"dtype": args.dtype} if dtype else {}))
    return args, (quick(cfg) if args.quick else cfg)


def resolve_device(name: str) -> torch.device:
    """A torch.device, with a clear error when CUDA was asked for and is not there."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return torch.device(name)


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Versions, git commit and hardware: saved beside every result."""
    import numpy
    import scipy

    from . import __version__

    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "symmetry": __version__,
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write to a temporary file in the same directory, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def to_jsonable(value: Any) -> Any:
    """Tensors → lists, non-finite floats → null, dataclasses → dicts: JSON a reader can load anywhere."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    return value


def write_json(path: str | Path, payload: Any) -> None:
    """Atomic, indented JSON."""
    text = json.dumps(to_jsonable(payload), indent=1, allow_nan=False)
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def save_figure(fig, out: str | Path, name: str) -> list[Path]:
    """NAME.pdf and NAME.png side by side, each written atomically."""
    paths = []
    for ext, kwargs in (("pdf", {}), ("png", {"dpi": 150})):
        path = Path(out) / f"{name}.{ext}"
        _atomic_write(path, lambda tmp, ext=ext, kwargs=kwargs: fig.savefig(tmp, format=ext, bbox_inches="tight", **kwargs))
        paths.append(path)
    return paths


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def settings_hash(settings: Any) -> str:
    """A short hash of the settings: cached results are reused only for identical settings."""
    text = json.dumps(to_jsonable(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(out: str | Path, name: str, settings: Any, compute: Callable[[], dict], resume: bool = True) -> dict:
    """Run ``compute()`` once per settings: its result (a dict of tensors and numbers) is saved under
    OUT/.cache and reloaded on a rerun, so an interrupted figure resumes at the last finished part."""
    path = Path(out) / ".cache" / f"{name}-{settings_hash(settings)}.pt"
    if resume and path.exists():
        return torch.load(path, weights_only=True)
    result = compute()
    _atomic_write(path, lambda tmp: torch.save(result, tmp))
    return result


class Stopwatch:
    """Wall time of a block, in seconds."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def finish(out: str | Path, name: str, settings: Any, results: dict, wall_seconds: float, fig=None,
           device: torch.device | str = "cpu") -> dict:
    """Write NAME.json (settings, environment, wall time, results) and, if given, NAME.pdf/png."""
    payload = {"figure": name, "settings": settings, "environment": environment(device),
               "wall_time_s": round(wall_seconds, 2), "peak_memory_mb_of_process": round(peak_memory_mb(), 1),
               "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), **results}
    write_json(Path(out) / f"{name}.json", payload)
    if fig is not None:
        save_figure(fig, out, name)
    return payload


def run_script(main: Callable[[], Any]) -> None:
    """Entry point of a figure script: a diverging run ends with its message and exit status 1, no traceback."""
    try:
        main()
    except S.DivergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
