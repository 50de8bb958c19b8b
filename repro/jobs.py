"""Figure scripts as jobs on a standard ``concurrent.futures.Executor``: local worker processes by default, or the
workers of a Dask distributed cluster (the ``distributed`` extra).

``reproduce.py`` decides what runs when (longest first, a script's parts before its ``main``); this module holds
what runs on a worker ([`figure_job`][repro.jobs.figure_job]) and the two executors. The job function lives in
the package, not in ``reproduce.py``, so that a worker on another machine can import it by name.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import sys
import time
import traceback
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, Iterator

from symmetry._optional import require
from symmetry.models import torch_threads

from . import experiment as E
from .errors import SchedulerError

__all__ = ["SchedulerError", "figure_job", "local_executor", "dask_executor", "stop", "close"]


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


def figure_job(name: str, part: str | None, argv: list[str], threads: int, log_path: str,
               path: tuple[str, ...] = ()) -> tuple[str, Any, float]:
    """On a worker: run figure script ``name``'s ``main(argv)`` (or ``run_part(part, argv)``) with ``threads``
    torch threads, its output to ``log_path``. Returns ``("ok", pickled payload, seconds)`` or
    ``("error", "ExceptionType: message", seconds)``: a failing script (``SystemExit`` from its checks included)
    is a result, not an exception of the executor.

    ``path``: import directories put in front of ``sys.path`` (the scripts' folder; the submitting process's
    path, as a spawned process would have it). ``--out OUT`` in ``argv``: the submitting run holds OUT's lock,
    so the scripts take it as held while the job runs.
    """
    for entry in reversed(path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    started = time.perf_counter()
    with _output_to(log_path), _unwind_on_sigterm():
        try:
            with torch_threads(threads), (E.inherited_output_lock(out) if out else contextlib.nullcontext()):
                module = importlib.import_module(name)
                payload = module.main(argv) if part is None else module.run_part(part, argv)
            # plain pickle, by value: a process pool's pickler would share tensors through shared memory
            return "ok", pickle.dumps(payload), time.perf_counter() - started
        except BaseException as error:  # noqa: B036 (SystemExit from a script's checks: a result, not a hang)
            if isinstance(error, KeyboardInterrupt):
                raise
            traceback.print_exc()
            return "error", f"{type(error).__name__}: {error}", time.perf_counter() - started


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
    run at once (their threads). Every worker must see this repository and ``--out`` at the same path (a shared
    file system) and import ``repro`` (this project installed with ``pip install -e .``, or the repository on its
    ``PYTHONPATH``): a worker unpickles ``repro.jobs.figure_job`` by name. Jobs are submitted as impure: a rerun
    computes again instead of returning Dask's stored result.
    """
    distributed = require("distributed", "distributed", "reproduce.py --scheduler")
    try:
        client = distributed.Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError) as error:
        raise SchedulerError(f"--scheduler {address!r}: no Dask scheduler answers there within {timeout:g} s "
                             f"({type(error).__name__})") from error
    slots = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
    if slots < 1:
        client.close()
        raise SchedulerError(f"--scheduler {address!r}: the scheduler has no workers")
    executor = client.get_executor(pure=False)
    executor.client = client  # closed by stop()
    return executor, slots


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
