"""Figure scripts as jobs on a standard ``concurrent.futures.Executor``: local worker processes by default, or the
workers of a Dask distributed cluster (the ``distributed`` extra).

``reproduce.py`` decides what runs when (longest first, a script's parts before its ``main``); this module holds
what runs on a worker ([`figure_job`][repro.jobs.figure_job]) and the two executors. The job function lives in
the package, not in ``reproduce.py``, so that a worker on another machine can import it by name.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pickle
import sys
import threading
import time
import traceback
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, Iterator

from symmetry._optional import require
from symmetry.threads import torch_threads

from . import experiment as E
from .errors import SchedulerError

__all__ = ["SchedulerError", "StaleCodeError", "figure_job", "local_executor", "dask_executor", "workers_left",
           "stop", "close"]


@contextlib.contextmanager
def _output_to(log_path: str) -> Iterator[None]:
    """stdout and stderr, of Python and of the C++ side (torch's warnings), into ``log_path``; restored after, so
    that a worker process that runs the next job (a pool's, a Dask worker's) keeps its own streams."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    with open(log_path, "w", buffering=1, encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        try:
            yield
        finally:
            log.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _unwind_on_sigterm() -> Iterator[None]:
    """While a job runs in a local worker's main thread: SIGTERM and SIGHUP (the parent's stop) unwind it as they
    do a script ([`repro.experiment.stop_on_signal`][]), so a figure being written removes its temporary files;
    the worker's own handlers come back after the job. A Dask worker runs jobs in threads: nothing to change."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    saved = {n: signal.getsignal(getattr(signal, n)) for n in names}
    E.stop_on_signal()
    try:
        yield
    finally:
        for n, handler in saved.items():
            signal.signal(getattr(signal, n), handler)


def _source_hash(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def _package_hash() -> str:
    return E.code_hash()


# the library's and repro's code hash when this process imported them (repro.jobs is imported with them, when a worker
# unpickles its first job): a long-lived worker whose sources changed on disk since runs other code than the hash says
_PACKAGE_AT_IMPORT = _package_hash()


class StaleCodeError(RuntimeError):
    """A worker process runs the library and repro as they were when it imported them, and their source has changed since."""


def loaded_code() -> tuple[str, str]:
    """(the package's code hash when this process imported it, its code hash on disk now): equal when the process
    runs the code on disk. The client asks every Dask worker ([`dask_executor`][]) and restarts the stale ones."""
    return _PACKAGE_AT_IMPORT, _package_hash()


def _current_module(name: str):
    """Figure script ``name`` as its file is now: a process that ran it before (a Dask worker lives across runs)
    executes its source again when the file changed, from the bytes it hashes, never from a stale ``.pyc`` or the
    module it imported first; the module keeps the hash of the source it runs (``__source_sha256__``)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    origin = getattr(spec, "origin", None)
    if spec is None or spec.loader is None or not origin or not str(origin).endswith(".py"):
        return importlib.import_module(name)  # not a source file: nothing to compare
    source = Path(origin).read_bytes()
    digest = _source_hash(source)
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__source_sha256__", None) == digest \
            and getattr(module, "__file__", None) == origin:
        return module
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    try:
        exec(compile(source, origin, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    module.__source_sha256__ = digest  # type: ignore[attr-defined]
    return module


# jobs in one process run one at a time: matplotlib's pyplot state, the stdout/stderr redirection to the job's log
# and torch's thread count are per process (a Dask worker with several threads would mix them)
_ONE_JOB = threading.Lock()


def _written_files(out: str | None, name: str, since: float) -> dict[str, bytes]:
    """The figure files (NAME.pdf/png/json, NAME_*.…) a figure job wrote into ``out`` since ``since`` (time.time()):
    their bytes, for the client to write where the user asked when the worker's file system is not its own."""
    from .experiment import FIGURE_FILES

    if out is None or not Path(out).is_dir():
        return {}
    files = {}
    for path in Path(out).iterdir():
        stem, _, ext = path.name.rpartition(".")
        if ext in FIGURE_FILES and (stem == name or stem.startswith(name + "_")) and path.is_file() \
                and path.stat().st_mtime >= since - 1:
            files[path.name] = path.read_bytes()
    return files


def figure_job(name: str, part: str | None, argv: list[str], threads: int, log_path: str,
               path: tuple[str, ...] = (), ship: bool = False) -> tuple:
    """On a worker: run figure script ``name``'s ``main(argv)`` (or ``run_part(part, argv)``) with ``threads``
    torch threads, its output to ``log_path``. Returns ``("ok", pickled payload, seconds)`` or
    ``("error", "ExceptionType: message", seconds)``: a failing script (``SystemExit`` from its checks included)
    is a result, not an exception of the executor. ``ship``: a fourth element, {file name: bytes} of the figure
    files the job wrote into ``--out``, for the client to write (``_written_files``).

    ``path``: import directories put in front of ``sys.path`` (the scripts' folder; the submitting process's
    path, as a spawned process would have it). ``--out OUT`` in ``argv``: the submitting run holds OUT's lock,
    so the scripts take it as held while the job runs. The script runs as its file is now
    (``_current_module``); a process whose copy of the library or of repro is older than the files on disk
    refuses the job ([`StaleCodeError`][]); jobs in one process run one at a time.
    """
    with _ONE_JOB:
        for entry in reversed(path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        out = argv[argv.index("--out") + 1] if "--out" in argv else None
        started, wall = time.perf_counter(), time.time()
        with _output_to(log_path), _unwind_on_sigterm():
            try:
                loaded, now = loaded_code()
                if loaded != now:
                    raise StaleCodeError(f"this worker process imported symmetry and repro (code hash {loaded}) "
                                         f"before their source changed on disk (now {now}); restart the workers "
                                         "(client.restart(), or start them again) and rerun")
                with torch_threads(threads), (E.inherited_output_lock(out) if out else contextlib.nullcontext()):
                    module = _current_module(name)
                    payload = module.main(argv) if part is None else module.run_part(part, argv)
                # plain pickle, by value: a process pool's pickler would share tensors through shared memory
                result: tuple = ("ok", pickle.dumps(payload), time.perf_counter() - started)
            except BaseException as error:  # noqa: B036 (SystemExit from a script's checks: a result, not a hang)
                if isinstance(error, KeyboardInterrupt):
                    raise
                traceback.print_exc()
                result = ("error", f"{type(error).__name__}: {error}", time.perf_counter() - started)
        if ship:
            result += (_written_files(out, name, wall) if part is None and result[0] == "ok" else {},)
        return result


def local_executor(jobs: int) -> Executor:
    """``jobs`` local worker processes, started with ``spawn``: no fork of a process whose torch thread pool is
    running. A worker runs job after job; [`figure_job`][repro.jobs.figure_job] restores its streams, threads
    and lock after each."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))


def dask_executor(address: str, timeout: float = 20.0) -> tuple[Executor, int]:
    """The workers of the Dask distributed scheduler at ``address`` (``tcp://host:8786``; a SLURM or Kubernetes
    cluster started by ``dask-jobqueue`` or ``dask-kubernetes`` has one) as an Executor, and how many jobs they
    run at once: one per worker process. A worker with more than one thread is refused with one line (a figure
    job's matplotlib state, log redirection and torch threads are per process; [`figure_job`][] also runs a
    process's jobs one at a time). A worker whose copy of the library or of repro is older than the files on disk is
    restarted (it imports them again), or refused where it cannot be. Jobs are submitted as impure: a rerun
    computes again instead of returning Dask's stored result. The figure files come back to the client
    (``figure_job(ship=True)``), which writes them under its own --out. Every worker must import ``repro`` (this
    project installed with ``pip install -e .``, or the repository on its ``PYTHONPATH``): a worker unpickles
    ``repro.jobs.figure_job`` by name.
    """
    distributed = require("distributed", "distributed", "reproduce.py --scheduler")
    try:
        client = distributed.Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError) as error:
        raise SchedulerError(f"--scheduler {address!r}: no Dask scheduler answers there within {timeout:g} s "
                             f"({type(error).__name__})") from error
    try:
        threads = client.nthreads()
        if not threads:
            raise SchedulerError(f"--scheduler {address!r}: the scheduler has no workers")
        many = {worker: n for worker, n in threads.items() if n > 1}
        if many:
            worker, n = next(iter(many.items()))
            others = f" (and {len(many) - 1} other worker(s) more than one)" if len(many) > 1 else ""
            raise SchedulerError(f"--scheduler {address!r}: worker {worker} runs {n} threads{others}; a figure "
                                 "job's matplotlib state and log files are per "
                                 "process, so start the workers with --nthreads 1 (several per machine with "
                                 "--nworkers N)")
        stale = [w for w, (loaded, now) in client.run(loaded_code).items() if loaded != now]
        if stale:  # they imported this package before it changed: a restart makes each import it again
            try:
                client.restart()
            except Exception as error:  # no nanny to restart them
                raise SchedulerError(f"--scheduler {address!r}: worker(s) {', '.join(stale)} imported the symmetry "
                                     "package before its source changed and cannot be restarted from here "
                                     f"({type(error).__name__}); start them again") from None
            threads = client.nthreads()
    except BaseException:
        client.close()
        raise
    executor = client.get_executor(pure=False)
    executor.client = client  # closed by stop()
    return executor, len(threads)


#: seconds a Dask run waits for a worker when its cluster has none left (all lost, kill -9) before it gives up
WORKERLESS_WAIT_S = 10.0


def workers_left(executor: Executor) -> int | None:
    """How many workers the executor's Dask scheduler has now; None for a local pool (whose dead workers break
    it at once) or a scheduler that does not answer."""
    client = getattr(executor, "client", None)
    if client is None:
        return None
    try:
        return len(client.nthreads())
    except Exception:  # noqa: BLE001 (a scheduler gone too: the caller's own wait ends the run)
        return 0


def stop(executor: Executor, running: list[Future]) -> None:
    """Stop a run now: cancel its jobs and, for the local pool, end its worker processes (what Python 3.14's
    ``ProcessPoolExecutor.terminate_workers`` does; before it, through the pool's own process table). A Dask
    cluster keeps its workers; the run's jobs are cancelled there."""
    for future in running:
        future.cancel()
    processes = dict(getattr(executor, "_processes", None) or {})
    for process in processes.values():
        process.terminate()
    close(executor, wait=False)
    for process in processes.values():  # SIGTERM: a worker unwinds (a figure half-written leaves no temporary file)
        process.join(30)
        if process.is_alive():  # stuck in one long native call: no unwinding to wait for
            process.kill()
            process.join()


def close(executor: Executor, wait: bool = True) -> None:
    """Shut the executor down (and disconnect from a Dask scheduler)."""
    client = getattr(executor, "client", None)
    if client is None:
        executor.shutdown(wait=wait, cancel_futures=True)
        return
    executor.shutdown(wait=wait)
    client.close()
