"""What every figure script shares: the CLI, atomic PDF/PNG/JSON output, provenance, resumable caching.

Scripts stay short: settings (a dataclass) → run → save → plot. This module never imports
matplotlib at import time; [`save_figure`][] loads it (with the Agg backend) when called.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import platform
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import symmetry as S
from symmetry._optional import require
from symmetry.threads import computation_threads, torch_threads  # noqa: F401  (for the scripts: E.torch_threads)

from .errors import DataError, DatasetUnavailable, SchedulerError
from .training import DTYPES  # the training precisions, also for --dtype


#: --out when none is given; --quick writes beside, never over, the full-setting figures the README shows
DEFAULT_OUT, QUICK_OUT = "figures", os.path.join("figures", "quick")
#: the largest --seed: scripts derive further seeds (seed + 1, seed + 100, …) and torch takes 64 bits
MAX_SEED = 2**62


def seed_argument(text: str) -> int:
    """argparse type of --seed: an integer in [0, 2⁶²] (a larger one overflows torch's generator)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text} is out of range: choose an integer from 0 to 2**62 = {MAX_SEED}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser, default_out: str | None = None, dtype: bool = True) -> None:
    """--device, --seed, --out, --quick, --dtype (where the script trains in one precision), --no-resume, --debug,
    --threads."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where tensors live")
    parser.add_argument("--seed", type=seed_argument, default=0, help="seed of every random draw (0 to 2**62)")
    parser.add_argument("--out", default=default_out,
                        help=f"directory for NAME.pdf, NAME.png, NAME.json (default: {DEFAULT_OUT}, "
                             f"or {QUICK_OUT} with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few hundred steps and small sizes (tests, a first look)")
    if dtype:
        parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="training precision")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="recompute even if finished runs with the same settings and code are cached under OUT/.cache")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch intra-op threads (default 1: the loops are of tiny ops, where a second thread "
                             "only waits, and on a busy machine it waits for a core)")


def parse_common(parser: argparse.ArgumentParser, argv: list[str] | None, names: tuple[str, ...] = ()) -> argparse.Namespace:
    """Parse, then settle what must be right before any computation: the device and --out
    (defaulting to figures/ or figures/quick/; refused at once if it cannot take ``names``)."""
    args = parser.parse_args(argv)
    resolve_device(args.device)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    args.out = quick_out(args.out, args.quick)
    check_output_location(args.out, names)
    hold_output(args.out)  # a second run on this --out is refused, not mixed with this one
    return args


def quick_out(out: str, quick: bool) -> str:
    """--quick never replaces a checkout's committed full-setting figures: an --out that is the ``figures/`` folder
    of a checkout of this project (this one or another) becomes its ``figures/quick/``, said in one line."""
    if not quick or not str(out).strip():
        return out
    folder = Path(out).resolve()
    root = project_root(folder.parent) if folder.parent.is_dir() else None
    if folder.name == "figures" and root is not None and root == folder.parent:
        moved = str(Path(out) / "quick")
        print(f"--quick: {out} holds a checkout's committed figures; writing to {moved} instead", file=sys.stderr)
        return moved
    return out



def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1, else a clear error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def settings_from_cli(doc: str, settings_cls, quick: Callable[[Any], Any], argv: list[str] | None,
                      dtype: bool = True, names: tuple[str, ...] | None = None) -> tuple[argparse.Namespace, Any]:
    """Parse a figure script's flags and build its Settings (``quick(cfg)`` under --quick).

    ``dtype=False`` for scripts that fix their own precision(s) and so take no --dtype flag.
    ``names``: the figures the script writes (default: the calling script's ``NAME``); their
    output location is checked before anything is computed.
    """
    if names is None:
        name = sys._getframe(1).f_globals.get("NAME")
        names = (name,) if isinstance(name, str) else ()
    parser = argparse.ArgumentParser(description=(doc or "").partition("\n")[0])  # python -OO: no docstrings
    add_common_arguments(parser, dtype=dtype)
    args = parse_common(parser, argv, names)
    cfg = settings_cls(seed=args.seed, device=args.device, **({"dtype": args.dtype} if dtype else {}))
    return args, (quick(cfg) if args.quick else cfg)


class OutputLocationError(ValueError):
    """--out cannot take the figure: an existing file, a directory that cannot be written, a read-only target."""


def _read_only(path: Path) -> bool:
    # the owner's write bit, not os.access: root may write anything, yet a file marked 444 is to be kept
    return not (path.stat().st_mode & stat.S_IWUSR) or not os.access(path, os.W_OK)


def check_output_location(out: str | Path, names: tuple[str, ...] = ()) -> Path:
    """Refuse (OutputLocationError, naming --out) a location the figure could not be written to, before
    any computation: an existing file, a parent that is a file, a directory that cannot be written, or a
    read-only NAME.pdf / NAME.png / NAME.json. The directory is created if missing."""
    if not str(out).strip():
        raise OutputLocationError(f"--out {str(out)!r}: an empty path names no directory (it would write into the "
                                  "current one and claims.json to /); pass a directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputLocationError(f"--out {out}: is an existing file, not a directory; pass a directory "
                                  f"(it is created if missing)")
    existing = next(p for p in (out, *out.parents) if p.exists())  # "." or "/" at the latest
    if existing.exists() and not existing.is_dir():
        raise OutputLocationError(f"--out {out}: {existing} is a file, so the directory cannot be created; "
                                  f"pass another directory")
    if existing.exists() and _read_only(existing):
        raise OutputLocationError(f"--out {out}: directory {existing} is not writable; pass a directory you can "
                                  f"write to, or make it writable (chmod u+w)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise OutputLocationError(f"--out {out}: cannot write there ({error.strerror}); pass a directory you "
                                  f"can write to") from None
    for name in names:
        for ext in FIGURE_FILES:
            target = out / f"{name}.{ext}"
            if target.exists() and _read_only(target):
                raise OutputLocationError(f"--out {out}: {target} is read-only (mode "
                                          f"{stat.S_IMODE(target.stat().st_mode):o}); make it writable (chmod u+w) "
                                          f"to replace it, or pass another --out")
    warn_committed(out, names)
    return out


def committed_files(out: str | Path, names: tuple[str, ...]) -> list[str]:
    """The NAME.pdf/png/json under ``out`` that git tracks in this project's checkout (the committed figures)."""
    root = project_root(out)
    candidates = [Path(out) / f"{name}.{ext}" for name in names for ext in FIGURE_FILES]
    candidates = [p for p in candidates if p.exists()]
    if root is None or not candidates:
        return []
    listed = _git(root, "ls-files", "--", *(str(p.resolve().relative_to(root)) for p in candidates))
    return listed.splitlines() if listed else []


def warn_committed(out: str | Path, names: tuple[str, ...]) -> None:
    """One line on stderr before anything is computed when this run will replace committed figure files."""
    files = committed_files(out, names)
    if files:
        stems = sorted({str(Path(f).with_suffix("")) for f in files})
        print(f"note: this run replaces committed files ({', '.join(s + '.*' for s in stems)}); "
              f"`git checkout -- {' '.join(s + '.*' for s in stems)}` restores them", file=sys.stderr, flush=True)


class DataLocationError(ValueError):
    """--data names nothing there: refused before any computation, as a bad --out is."""


CIFAR10_FORMS = ("an ImageFolder tree (train/<class>/*, test/<class>/*), its .tar.gz, or torchvision's CIFAR-10 "
                 "folder (holding cifar-10-batches-py)")
"""What a CIFAR-10 location (--data, ``load_cifar10(root)``) may be, in the errors that ask for one."""


def command_line_data_advice(message: str, program: str) -> str:
    """``load_cifar10``'s error with its advice in Python arguments (``load_cifar10('path')``, ``download=True``)
    said as the command line takes it: ``--data PATH`` (reproduce.py and the CIFAR-10 figure scripts)."""
    advice = f"Give {program} the data with --data PATH, PATH being {CIFAR10_FORMS}"
    head, found, tail = message.partition(" Pass one of: ")
    if not found:
        return f"{message}; {advice[0].lower()}{advice[1:]}"
    place = tail.partition("; or put one of them in ")[2].partition(", or pass download=True")[0].rstrip(".")
    return f"{head} {advice}" + (f"; or put one of them in {place}" if place else "")


def check_data_location(data: str | Path | None) -> None:
    """Refuse (DataLocationError, naming --data) a CIFAR-10 location that does not exist, before any computation;
    None (the default: data/ in the repository) passes. Whether it holds CIFAR-10 is ``load_cifar10``'s to say."""
    if data is None:
        return
    if not str(data).strip():
        raise DataLocationError(f"--data '': an empty path names no data; pass {CIFAR10_FORMS}, or leave --data "
                                f"out to use data/ in the repository")
    path = Path(data)
    if not path.exists():  # a cycle of links does not exist either (ELOOP)
        what = "is a symbolic link that leads nowhere (dangling, or a cycle)" if path.is_symlink() else "does not exist"
        raise DataLocationError(f"--data {data}: {what}; pass {CIFAR10_FORMS}, or leave --data out to use data/ "
                                f"in the repository")


def resolve_device(name: str) -> torch.device:
    """A torch.device, with a clear error when CUDA was asked for and is not there."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return torch.device(name)


PROJECT = "symmetry-flat-minima"  # pyproject.toml's name: marks this project's repository root
LOCK_FILE = "requirements.txt"  # the exact versions that made the committed results


def project_root(start: str | Path | None = None) -> Path | None:
    """The checkout of this project that holds ``start`` (a script or a folder; default: this package):
    the nearest folder above it whose pyproject.toml names symmetry-flat-minima, else None."""
    start = Path(__file__ if start is None else start).resolve()
    for folder in (start, *start.parents) if start.is_dir() else start.parents:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                text = pyproject.read_text(encoding="utf-8")
            except OSError:
                return None
            return folder if f'name = "{PROJECT}"' in text else None
    return None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit(source: str | Path | None = None) -> str | None:
    """HEAD of this project's own repository (the one holding ``source``), or None: never the commit of a
    repository that merely contains the checkout (a user's project around an unpacked copy)."""
    return git_state(source)["git_commit"]


def git_state(source: str | Path | None = None) -> dict[str, Any]:
    """{"git_commit", "git_dirty", "project_root"} of the checkout that holds ``source``; None where unknown."""
    root = project_root(source)
    state: dict[str, Any] = {"git_commit": None, "git_dirty": None, "project_root": None}
    if root is None:
        return state
    state["project_root"] = str(root)
    toplevel = _git(root, "rev-parse", "--show-toplevel")
    if toplevel is None or Path(toplevel).resolve() != root:
        return state  # not a git checkout of its own, or a folder inside someone else's repository
    state["git_commit"] = _git(root, "rev-parse", "HEAD") or None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    state["git_dirty"] = None if status is None else bool(status)
    return state


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_file_hash(source: str | Path | None = None) -> dict[str, Any] | None:
    """{"file", "sha256"} of the lock file (requirements.txt) of the checkout holding ``source``, or None."""
    root = project_root(source)
    lock = None if root is None else root / LOCK_FILE
    if lock is None or not lock.is_file():
        return None
    return {"file": LOCK_FILE, "sha256": file_sha256(lock)}


def code_hash(script: str | Path | None = None) -> str:
    """A hash of what computes the numbers: every source file of the library and of this package plus
    ``script``. Cached results are reused only when it is unchanged (a `git pull` or an edit recomputes)."""
    digest = hashlib.sha256()
    packages = Path(S.__file__).resolve().parent, Path(__file__).resolve().parent
    sources = [path for package in packages for path in sorted(package.rglob("*.py"))]
    for path in sources + ([Path(script).resolve()] if script else []):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


#: [`code_hash`][] (the library and this package) when this process imported this module: a long-lived process
#: (a notebook, a Dask worker) whose sources changed on disk since runs other code than code_hash() names, and [`cached`][] stores nothing then
CODE_AT_IMPORT = code_hash()


def _caller_file(depth: int) -> str | None:
    """The source file of the script that called (``depth`` frames up): what made the result."""
    return sys._getframe(depth + 1).f_globals.get("__file__")


def environment(device: torch.device | str = "cpu", source: str | Path | None = None) -> dict[str, Any]:
    """Versions, git commit (of the checkout holding ``source``, the script that made the result; default
    this package), a dirty flag, the lock file's hash and the hardware: saved beside every result."""
    import numpy
    import scipy

    device = torch.device(device)
    git = git_state(source)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "symmetry": S.__version__,
        "git_commit": git["git_commit"],
        "git_dirty": git["git_dirty"],
        "lock_file": lock_file_hash(source),
        "code_hash": code_hash(source if source and str(source).endswith(".py") else None),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": computation_threads(),  # in force during the computation, not at the time of writing
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


FIGURE_FILES = ("pdf", "png", "json")


def _temp_path(path: Path) -> str:
    # the writer's pid in the name: a cleanup removes only the temporary files of processes that are gone
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=path.suffix)
    os.close(fd)
    return tmp


def _refuse_read_only(path: Path) -> None:
    if path.exists() and _read_only(path):
        raise OutputLocationError(f"--out {path.parent}: {path} is read-only (mode {stat.S_IMODE(path.stat().st_mode):o}); "
                                  f"make it writable (chmod u+w) to replace it, or pass another --out")


#: the figure files (NAME.pdf/png/json) this process has written, in order: what a script reports at its end
WRITTEN: list[Path] = []


def _write_unit(files: list[tuple[Path, Callable[[str], object]]]) -> None:
    """Write every file to a temporary name in its directory, then rename them in order: the last one
    (a figure's JSON) appears only after the others are in place; on any failure no temporary file is
    left and no target is replaced. Read-only targets are refused before anything is written."""
    for path, _ in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        _refuse_read_only(path)
    temps: list[str] = []
    try:
        for path, write in files:
            temps.append(_temp_path(path))
            write(temps[-1])
            os.chmod(temps[-1], 0o644)  # mkstemp makes files private; results are for everyone to read
        for (path, _), tmp in zip(files, temps):
            os.replace(tmp, path)
            if path.suffix[1:] in FIGURE_FILES:
                WRITTEN.append(path)
    except BaseException:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write to a temporary file in the same directory, then rename: a reader never sees half a file."""
    _write_unit([(path, write)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove_stale_temps(out: Path, name: str) -> None:
    """Temporary files of NAME left by a killed process (SIGKILL cannot be caught); those of a process still
    running (another run on the same --out) are left to it."""
    for ext in FIGURE_FILES:
        for stale in out.glob(f".{name}.{ext}.*{ext}"):
            writer = stale.name[len(f".{name}.{ext}."):].split("-", 1)[0]
            if writer.isdigit() and _alive(int(writer)):
                continue
            stale.unlink(missing_ok=True)


class OutputLock:
    """An exclusive lock on ``OUT/.lock`` for a run's lifetime (fcntl.flock; released by the kernel if the process
    dies): a second run on the same --out is refused with one line instead of mixing its files with the first's.
    Reentrant within a process, and taken as held in a worker whose parent holds it ([`inherited_output_lock`][])."""

    def __init__(self, out: str | Path):
        self.path = Path(out) / ".lock"
        self.file: Any = None
        self.key = self.path.parent.resolve()
        self.reentered = False

    def __enter__(self) -> "OutputLock":
        if self.key in _HELD:  # this process (or the reproduce.py run that started it) holds it already
            self.reentered = True
            return self
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputLocationError(f"--out {self.path.parent}: another run (pid {holder}) is writing there; wait "
                                      "for it to finish, or pass another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.file = handle
        _HELD[self.key] = self
        return self

    def __exit__(self, *exc) -> None:
        if self.reentered:
            return
        if self.file is not None:
            self.file.close()  # closing releases the lock
            self.file = None
            _HELD.pop(self.key, None)


# the --out folders whose lock this process holds (None: the reproduce.py run that started this worker holds it)
_HELD: dict[Path, OutputLock | None] = {}


def hold_output(out: str | Path) -> None:
    """Take OUT's lock for the rest of this process (a figure script run on its own, from [`parse_common`][]): a
    second script or reproduce.py on the same --out is refused with one line while this one runs."""
    OutputLock(out).__enter__()  # kept in _HELD; the kernel releases it when the process exits


@contextlib.contextmanager
def inherited_output_lock(out: str | Path) -> Iterator[None]:
    """In a job of reproduce.py, whose submitting process holds OUT's lock: the scripts it runs take it as held
    while the job runs (a worker that runs jobs of several runs holds nothing after each)."""
    key = Path(out).resolve()
    if key in _HELD:
        yield
        return
    _HELD[key] = None
    try:
        yield
    finally:
        _HELD.pop(key, None)


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


def _json_text(payload: Any) -> str:
    return json.dumps(to_jsonable(payload), indent=1, allow_nan=False) + "\n"


def write_json(path: str | Path, payload: Any) -> None:
    """Atomic, indented JSON."""
    text = _json_text(payload)
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _savefig(fig, ext: str) -> Callable[[str], object]:
    kwargs = {"dpi": 150} if ext == "png" else {}
    return lambda tmp: fig.savefig(tmp, format=ext, bbox_inches="tight", **kwargs)


def save_figure(fig, out: str | Path, name: str) -> list[Path]:
    """NAME.pdf and NAME.png side by side, written as one unit (both new or both old)."""
    out = Path(out)
    _remove_stale_temps(out, name)
    paths = [out / f"{name}.{ext}" for ext in ("pdf", "png")]
    _write_unit([(path, _savefig(fig, path.suffix[1:])) for path in paths])
    return paths


def write_figure(out: str | Path, name: str, payload: dict, fig=None) -> dict:
    """NAME.pdf, NAME.png and NAME.json as one unit: all three go to temporary names first, the JSON
    is renamed last and names the other two with their SHA-256 (``payload["files"]``), so a JSON on
    disk always describes the figure files beside it; on failure nothing is replaced or left behind."""
    out = Path(out)
    _remove_stale_temps(out, name)
    written: dict[str, str] = {}  # extension -> temporary file holding it

    def image(ext: str) -> Callable[[str], object]:
        def write(tmp: str) -> None:
            _savefig(fig, ext)(tmp)
            written[ext] = tmp
        return write

    def json_last(tmp: str) -> None:
        payload["files"] = {ext: {"name": f"{name}.{ext}", "sha256": file_sha256(path)} for ext, path in written.items()}
        Path(tmp).write_text(_json_text(payload), encoding="utf-8")

    images = [(out / f"{name}.{ext}", image(ext)) for ext in ("pdf", "png")] if fig is not None else []
    _write_unit([*images, (out / f"{name}.json", json_last)])
    return payload


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use (the ``plot`` extra). The
    scripts only write files, so a backend named in MPLBACKEND (which matplotlib refuses at import when it does not
    know it) is replaced by Agg, here and in the workers this process starts."""
    if "matplotlib" not in sys.modules:
        os.environ["MPLBACKEND"] = "Agg"
    matplotlib = require("matplotlib", "plot", "drawing the figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def settings_hash(settings: Any) -> str:
    """A short hash of the settings: cached results are reused only for identical settings."""
    text = json.dumps(to_jsonable(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(out: str | Path, name: str, settings: Any, compute: Callable[[], dict], resume: bool = True) -> dict:
    """Run ``compute()`` once per settings and code: its result (a dict of tensors and numbers) is saved
    under OUT/.cache and reloaded on a rerun, so an interrupted figure resumes at the last finished part.

    The key hashes the settings and [`code_hash`][] (the library's and this package's source and the calling script),
    so a code change recomputes; a process that imported the packages before their source changed stores
    nothing (its code is not the code the key names). An unreadable entry (truncated, garbage) is recomputed
    with one line naming the file; entries are loaded with ``weights_only=True`` only (never arbitrary pickles).
    """
    key = settings_hash({"settings": settings, "code": code_hash(_caller_file(1))})
    path = Path(out) / ".cache" / f"{name}-{key}.pt"
    if resume and path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception as error:  # any corruption: the entry is only a cache, recompute it
            print(f"cache entry {path} is unreadable ({type(error).__name__}); recomputing it", file=sys.stderr)
    result = compute()
    if code_hash() != CODE_AT_IMPORT:  # computed by the code imported before the change: not under the new key
        print(f"not cached: this process imported the package before its source changed on disk, so {name}'s "
              "result is not stored under the new code's key; restart the process to cache it", file=sys.stderr)
        return result
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
           device: torch.device | str = "cpu", source: str | Path | None = None,
           claims: Callable[[dict], list[dict]] | None = None) -> dict:
    """Write NAME.json (settings and their hash, environment with the commit and dirty flag of the calling
    script's checkout, wall time, results) and, if given, NAME.pdf/png, as one unit ([`write_figure`][]).
    ``source``: the file that made the result where it is not the calling script (a notebook passes its own
    path, which is then the JSON's ``command``); default the calling script, run as ``sys.argv``.
    ``claims``: the script's ``claims(payload)``, whose rows go into the JSON under ``claims`` in the same write."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if source is None else Path(source).name
    source = _caller_file(1) if source is None else str(source)
    payload = {"figure": name, "settings": settings, "settings_hash": settings_hash(settings),
               "environment": environment(device, source),
               "wall_time_s": round(wall_seconds, 2), "peak_memory_mb_of_process": round(peak_memory_mb(), 1),
               "command": command, **results}
    if claims is not None:
        payload["claims"] = claims(payload)
    return write_figure(out, name, payload, fig)


def explain(error: BaseException) -> tuple[int, str] | None:
    """(exit status, one line naming the cause and what to do) for an expected failure, else None."""
    if isinstance(error, (OutputLocationError, DataLocationError, SchedulerError)):
        return 2, str(error)
    if isinstance(error, ImportError) and "optional package" in str(error):  # _optional.require: names the extra
        return 1, str(error)
    if isinstance(error, KeyboardInterrupt):
        by = f" by {error.args[0]}" if error.args else ""
        status = 128 + int(error.args[1]) if len(error.args) > 1 else 130
        return status, (f"interrupted{by}; workers stopped, finished parts are cached under OUT/.cache: rerun the "
                        "same command to resume (--no-resume to start over)")
    if isinstance(error, S.DivergenceError):
        advice = "" if "lower the learning rate" in str(error) else " (the run diverged: lower the learning rate or the init scale)"
        return 1, f"{error}{advice}"
    if isinstance(error, (DatasetUnavailable, DataError, FileNotFoundError)) and " Pass one of: " in str(error):
        return 1, command_line_data_advice(str(error), Path(sys.argv[0]).name)  # the user passes --data, not Python
    if isinstance(error, (DatasetUnavailable, DataError)):
        return 1, str(error)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return 1, (f"disk full while writing {error.filename or 'the results'}: free some space or pass another "
                   f"--out, then rerun (finished parts are cached; the previous figure files are unchanged)")
    if isinstance(error, FileNotFoundError):
        return 1, f"{error}"
    if isinstance(error, OSError) and error.filename:
        return 1, f"{error.strerror}: {error.filename}"
    return None


def printable_streams() -> None:
    """Under a locale that cannot encode the scripts' text (LC_ALL=C without Python's UTF-8 mode: ASCII), print
    what it cannot encode as escapes (Δ → \\u0394) instead of failing with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            "Δ≤θ→".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            reconfigure = getattr(stream, "reconfigure", None)
            if callable(reconfigure):
                reconfigure(errors="backslashreplace")


def stop_on_signal() -> None:
    """SIGTERM (what a cluster scheduler sends) and SIGHUP end a run like Ctrl-C: as a KeyboardInterrupt, so the
    cleanup that stops worker processes runs, and the exit status is 128 + the signal's number. Also in
    reproduce.py's workers, which their parent stops with SIGTERM: a figure being written removes its temporary
    files and the worker exits through Python (no semaphore of its left for the resource tracker to report)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name, signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), interrupt)


def print_claims(table: list[dict]) -> None:
    """One line per claim: the claim, yes/NO, what was measured, and the criterion it was held to; then the tally.
    What reproduce.py prints for all figures and a figure script for its own."""
    from .report import tally, verdict

    width = max(len(r["claim"]) for r in table)
    measured = max(len(r["measured"]) for r in table)
    print(f"\n{'claim':<{width}}  {'holds':<5}  {'measured':<{measured}}  criterion")
    for r in table:
        print(f"{r['claim']:<{width}}  {verdict(r['holds'], markdown=False):<5}  {r['measured']:<{measured}}  "
              f"{r['criterion']}")
    print(tally(table))


def report_run(payload: dict, claims: Callable[[dict], list[dict]] | None, written: list[Path]) -> None:
    """What a figure script prints at its end: the files it wrote, and its claims with their verdicts (the lines
    reproduce.py prints for it)."""
    stems: dict[Path, list[str]] = {}
    for path in written:
        stems.setdefault(path.with_suffix(""), [])
        if path.suffix[1:] not in stems[path.with_suffix("")]:
            stems[path.with_suffix("")].append(path.suffix[1:])
    for stem, exts in stems.items():
        print(f"wrote {stem}.{{{','.join(exts)}}}" if len(exts) > 1 else f"wrote {stem}.{exts[0]}")
    rows = claims(payload) if claims is not None else payload.get("claims")
    if payload.get("settings", {}).get("quick"):
        print("QUICK MODE (--quick: small settings, not the paper's): the verdicts below are a first look")
    if rows:
        print_claims(rows)


def run_script(main: Callable[[], Any]) -> None:
    """Entry point of a figure script and reproduce.py: an expected failure (bad --out, disk full,
    interrupt, SIGTERM, divergence, missing or offline data) ends with one line and a non-zero exit status, no
    traceback; ``--debug`` on the command line shows the traceback instead. A script's ``main`` that returns its
    figure's payload ends with the files written and its claims with their verdicts ([`report_run`][])."""
    printable_streams()
    stop_on_signal()
    try:
        status = main()
        if isinstance(status, dict) and "figure" in status:
            report_run(status, getattr(sys.modules.get(main.__module__), "claims", None), WRITTEN)
    except Exception as error:
        return _fail(error)
    except KeyboardInterrupt as error:
        return _fail(error)
    if isinstance(status, int) and not isinstance(status, bool):
        raise SystemExit(status)


def _fail(error: BaseException) -> None:
    known = explain(error)
    if known is None or "--debug" in sys.argv[1:]:
        raise error
    print(f"error: {known[1]}", file=sys.stderr)
    raise SystemExit(known[0]) from None
