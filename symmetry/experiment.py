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

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
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
        _atomic_write(path, lambda tmp, ext=ext, kwargs=kwargs: fig.savefig(tmp, format=ext, bbox_inches="tight", **kwargs))  # type: ignore[misc]
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


def step_budgets(activations, steps: int, sigmoid_steps: int) -> dict[int, list[str]]:
    """Activations grouped by step budget: the paper trains sigmoid nets twice as long (Figs. 3, 6, 9)."""
    groups: dict[int, list[str]] = {}
    for a in activations:
        groups.setdefault(sigmoid_steps if a == "sigmoid" else steps, []).append(a)
    return groups


def _two_layer_start(m: int, n: int, h: int, configs: list[tuple[str, float, float]], seed: int, dtype: str,
                     device: str) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, tuple[torch.Tensor, ...]]:
    """(init in float64, target Y, init in the training dtype): one standard-normal draw (``seed``)
    times each configuration's init_std, and Y ~ N(0, 1) (``seed + 1``)."""
    U0, V0 = S.gaussian_init(m, h, n, std=1.0, seed=seed, dtype=torch.float64)
    std = torch.tensor([s for _, _, s in configs], dtype=torch.float64).reshape(-1, 1, 1)
    init64 = ((std * U0).to(device), (std * V0).to(device))
    Y = torch.randn(m, n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return init64, Y, tuple(p.to(DTYPES[dtype]) for p in init64)


def _two_layer_run(configs: list[tuple[str, float, float]], params, init64, Y: torch.Tensor, steps: int, *,
                   dtype: str, record_every: int, description: str) -> S.Trajectory:
    """Batched GD of the configurations from ``params``, with Q and Q̃ (against ``init64``) in float64."""
    net = S.TwoLayerNet([a for a, _, _ in configs])

    def as64(p):
        return tuple(x.double() for x in p)

    return S.gradient_descent(
        net, params, None, Y.to(params[0]), torch.tensor([lr for _, lr, _ in configs]), steps,
        record_every=record_every, progress=True, description=description,
        labels=[f"{a}, lr={lr:g}, std={s:g}, {dtype}" for a, lr, s in configs],
        observables={"Q": lambda p: S.conserved_Q(as64(p), net.activation),
                     "Q_tilde": lambda p: S.normalized_Q(as64(p), net.activation, init64)})


def train_two_layer(m: int, n: int, h: int, configs: list[tuple[str, float, float]], steps: int, *, seed: int,
                    dtype: str = "float32", device: str = "cpu", record_every: int = 100,
                    description: str = "gradient descent") -> dict:
    """The synthetic experiment of Figs. 3, 6, 9: GD on F = Uσ(Vᵀ) (whitened input, MSE) for a list
    of configurations (activation, lr, init_std), all stepped together in one batched tensor.

    Every configuration starts from the same standard-normal draw (``seed``) times its init_std
    and fits the same target Y ~ N(0, 1) (``seed + 1``), so configurations differ only in what
    they name. Q (Eq. 48) and Q̃ (App. D.2) are evaluated in float64 every ``record_every`` steps.
    Returns tensors ``steps`` (T,), ``loss`` (T, B), ``Q``, ``Q_tilde`` (T, B), ``final_params``, ``Y``.
    """
    init64, Y, params = _two_layer_start(m, n, h, configs, seed, dtype, device)
    run = _two_layer_run(configs, params, init64, Y, steps, dtype=dtype, record_every=record_every,
                         description=description)
    return {"steps": run.times, "loss": run.loss.double().cpu(), "Q": run.observables["Q"].cpu(),
            "Q_tilde": run.observables["Q_tilde"].cpu(), "final_params": tuple(p.cpu() for p in run.params), "Y": Y}


def train_two_layer_budgets(m: int, n: int, h: int, groups: dict[int, list[tuple[str, float, float]]], *,
                            seed: int, dtype: str = "float32", device: str = "cpu", record_every: int = 100,
                            description: str = "gradient descent") -> dict[int, dict]:
    """:func:`train_two_layer` for configurations with different step budgets ({steps: configs}),
    in one batch: every configuration runs together up to the smallest budget, then those with
    more steps continue (sigmoid nets train twice as long in Figs. 3 and 6). The loop's cost is
    per step, not per configuration, so this saves the steps the groups would repeat apart.
    Returns, per budget, exactly what ``train_two_layer(…, configs, steps)`` returns; budgets must
    be multiples of ``record_every`` so that the records fall where a single run puts them.
    """
    budgets = sorted(groups)
    if any(b % record_every for b in budgets):
        raise ValueError(f"every step budget {budgets} must be a multiple of record_every={record_every}")
    configs = [c for b in budgets for c in groups[b]]
    budget_of = torch.tensor([b for b in budgets for _ in groups[b]])
    init64, Y, params = _two_layer_start(m, n, h, configs, seed, dtype, device)
    active = torch.arange(len(configs))
    phases, done = [], 0  # (configurations stepped, their trajectory, steps before it)
    for budget in budgets:
        keep = budget_of[active] >= budget
        active, params = active[keep], tuple(p[keep] for p in params)
        run = _two_layer_run([configs[i] for i in active.tolist()], params, tuple(p[active] for p in init64), Y,
                             budget - done, dtype=dtype, record_every=record_every,
                             description=f"{description} ({done}–{budget})")
        phases.append((active.tolist(), run, done))
        params, done = run.params, budget
    results = {}
    for budget in budgets:
        index = (budget_of == budget).nonzero().reshape(-1).tolist()
        parts, last = [], None
        for k, (stepped, run, start) in enumerate(phases):
            if start >= budget:
                break
            columns = [stepped.index(i) for i in index]
            first = 0 if k == 0 else 1  # a later phase's step 0 repeats the previous phase's last record
            parts.append((run.times[first:] + start, run.loss.double().cpu()[first:, columns],
                          run.observables["Q"].cpu()[first:, columns],
                          run.observables["Q_tilde"].cpu()[first:, columns]))
            last = tuple(p[columns].cpu() for p in run.params)
        steps, loss, Q, Q_tilde = (torch.cat(x) for x in zip(*parts, strict=True))
        results[budget] = {"steps": steps, "loss": loss, "Q": Q, "Q_tilde": Q_tilde, "final_params": last, "Y": Y}
    return results


def run_script(main: Callable[[], Any]) -> None:
    """Entry point of a figure script: a diverging run ends with its message and exit status 1, no traceback."""
    try:
        main()
    except S.DivergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
