"""Regenerate every figure but the two CIFAR-10 notebooks and print the claims with the measured numbers.

The figures, one job each (FIGURES below; the figure table of the README gives each one's time and their total):
  Q_dynamics_elementwise (Fig. 3), Q_distribution (Figs. 4, 5), Q_convergence_elementwise (Fig. 6),
  Q_convergence_radial (Fig. 7), Q_sharpness_1d (App. G.1), Q_hessian_eigenvalues (Fig. 9),
  noether_dynamics (Gluch & Urbanke), conservation_laws (Marcotte et al.),
  conservation_under_optimizers (torch.optim), teleportation (Zhao et al. 2022, 2024),
  conservation_modern (ResNet-18, ViT, GPT).
First a short check that every figure's Q axis rests on (run while the first figures start): on
the net of Fig. 3, Q of Eq. 48 stays constant under gradient flow (adaptive ODE solver) and drifts
under gradient descent by an amount proportional to the step size. Each figure script runs at the paper's settings and
writes figures/NAME.{pdf,png,json}; the table at the end collects each script's claims(payload):
the claim, whether it holds, what was measured, and the criterion it was held to. At the end it prints its own
wall time in all.
Usage: python reproduce.py [--device cpu|cuda] [--seed 0] [--out figures] [--quick] [--only NAME ...] [--data PATH]
       [--jobs N (default: cores; figures, and the parts of Fig. 3, noether_dynamics, conservation_under_optimizers
       and conservation_modern, in parallel worker processes)] [--scheduler ADDRESS (a Dask cluster's workers instead)] [--threads 1]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import sys
import time
import traceback
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import symmetry as S
from repro import experiment as E

ROOT = Path(__file__).resolve().parent

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the figure scripts sit beside this file


@dataclass
class Settings:
    m: int = 5  # outputs (Fig. 3)
    n: int = 10  # inputs, whitened: X = I_n
    h: int = 50  # hidden width
    init_std: float = 0.1  # U, V ~ N(0, init_std²)
    steps: int = 2000  # GD steps at the largest rate; GF runs for the same time
    lrs: tuple[float, ...] = (0.1, 0.01)  # GD learning rates
    gf_tolerance: float = 1e-6  # claim: relative drift of Q under GF below this
    seed: int = 0
    device: str = "cpu"


def run(cfg: Settings) -> list[dict]:
    """One row per activation: Q(0), its relative drift under GF and under GD at each rate."""
    rows = []
    generator = torch.Generator().manual_seed(cfg.seed)
    Y = torch.randn(cfg.m, cfg.n, generator=generator, dtype=torch.float64).to(cfg.device)
    for activation in S.PAPER_ACTIVATIONS:
        net = S.TwoLayerNet(activation)
        params = S.gaussian_init(cfg.m, cfg.h, cfg.n, std=cfg.init_std, seed=cfg.seed,
                                 dtype=torch.float64, device=cfg.device)
        # Q̃ = |Q| / (|½Tr U₀ᵀU₀| + |ΣA(V₀)|), the normalisation of App. D.2
        observe = {"Q_tilde": lambda p: S.normalized_Q(p, activation, params)}

        def drift(trajectory):  # max_t |ΔQ̃(t)| = max_t |Q̃(t) − Q̃(0)|
            Q = trajectory.observables["Q_tilde"]
            return float((Q - Q[0]).abs().max())

        horizon = cfg.steps * max(cfg.lrs)
        flow = S.gradient_flow(net, params, None, Y, torch.linspace(0, horizon, 21), rtol=1e-10,
                               max_evaluations=1_000_000, observables=observe)
        row = {"activation": activation, "Q0": float(S.conserved_Q(params, activation)),
               "gf_drift": drift(flow), "loss_start": float(flow.loss[0]), "loss_end": float(flow.loss[-1])}
        for lr in cfg.lrs:
            steps = round(horizon / lr)
            gd = S.gradient_descent(net, params, None, Y, lr, steps, record_every=max(1, steps // 100),
                                    observables=observe, progress=True, description=f"{activation} GD lr={lr}")
            row[f"gd_drift_lr{lr:g}"] = drift(gd)
        rows.append(row)
    return rows


def conservation_claims(rows: list[dict], cfg: Settings) -> list[dict]:
    """The two rows of the check above: Q conserved under GF, drifting under GD ∝ η."""
    lr_keys = [f"gd_drift_lr{lr:g}" for lr in cfg.lrs]
    ratio = min(r[lr_keys[0]] / r[lr_keys[-1]] for r in rows)
    return [{"claim": "Q conserved under gradient flow (Prop. 12, Eq. 48)",
             "criterion": f"max |ΔQ̃| under GF < {cfg.gf_tolerance:g}, every σ",
             "holds": all(r["gf_drift"] < cfg.gf_tolerance for r in rows),
             "measured": f"max GF drift {max(r['gf_drift'] for r in rows):.3g}"},
            {"claim": "Q drifts under GD, more at the larger lr (App. D)",
             "criterion": f"drift at lr {max(cfg.lrs):g} > at lr {min(cfg.lrs):g} > GF drift, every σ",
             "holds": all(r[lr_keys[0]] > r[lr_keys[-1]] > r["gf_drift"] for r in rows),
             "measured": f"min drift ratio lr {max(cfg.lrs):g} / lr {min(cfg.lrs):g}: {ratio:.3g}"}]


CLAIM_KEYS = ("claim", "criterion", "holds", "measured")
CHECK = "conservation_check"  # the owner of the check's rows in claims.json's claim_figures


def collect_claims(name: str, payload: dict) -> list[dict]:
    """The claim rows a figure script owns (its module-level ``claims(payload)``), checked for shape. ``holds`` is
    True, False, or None for a claim that could not be measured (counted apart: it neither holds nor fails)."""
    rows = importlib.import_module(name).claims(payload)
    for row in rows:
        if set(row) != set(CLAIM_KEYS) or not (row["holds"] is None or isinstance(row["holds"], bool)):
            raise ValueError(f"{name}.claims returned a row without exactly the keys {CLAIM_KEYS} "
                             f"(holds True, False, or None for not measured): {row}")
    return rows


print_claims = E.print_claims  # one line per claim, then the tally: the same lines a figure script prints alone


@dataclass
class JobResult:
    """One figure script's run: its payload, or the error that stopped it (and where its output went)."""

    name: str
    seconds: float  # the figure's own job, plus its parts' jobs where they ran apart (process time each)
    payload: dict | None = None
    error: str | None = None  # "ExceptionType: message" when the script failed
    log: str | None = None  # the worker's stdout and stderr (parallel runs)
    parts: dict[str, float] | None = None  # seconds of each part run apart (reproduce --jobs > 1)


def parts_of(name: str, argv: list[str] | None = None) -> tuple[str, ...]:
    """A figure script's parts: independent cached computations that ``run_part(part, argv)`` makes alone, so
    that workers can share them out; the script's ``main`` then finds them cached. ``PARTS``, or where they
    depend on the settings (models × seeds), ``parts(argv)``."""
    module = importlib.import_module(name)
    if hasattr(module, "parts"):
        return tuple(module.parts(argv or []))
    return tuple(getattr(module, "PARTS", ()))


def _job_name(name: str, part: str | None) -> str:
    return name if part is None else f"{name}.{part}"


TIMINGS = "job_seconds.json"  # in the log folder: each job's last time, to start the longest first


def _last_times(out: str, log_dir: Path) -> dict[str, float]:
    """Each job's time in the last parallel run into OUT (``log_dir``/job_seconds.json), else in OUT's or
    the committed figures' claims.json (``figure_seconds``): longest first keeps every worker busy to the end."""
    import json

    def read(path: Path):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    times = {job: float(t) for job, t in (read(log_dir / TIMINGS) or {}).items()}
    for folder in dict.fromkeys((Path(out), Path(__file__).resolve().parent / E.DEFAULT_OUT)):
        for name, record in ((read(folder / "claims.json") or {}).get("figure_seconds") or {}).items():
            if not isinstance(record, dict) or "seconds" not in record:
                continue
            parts = record.get("parts") or {}
            times.setdefault(name, float(record["seconds"]) - sum(parts.values()))
            for part, seconds in parts.items():
                times.setdefault(_job_name(name, part), float(seconds))
    return times


def _failure(name: str, error: str) -> str:
    """A figure's error; where a CIFAR-10 figure found no data, with how to give it the data on this command line."""
    if not (name in CIFAR10_FIGURES and error.startswith(("FileNotFoundError:", "DatasetUnavailable:"))
            and "CIFAR-10" in error):
        return error
    return E.command_line_data_advice(error, "reproduce.py")


def _run_here(names: list[str], argv: list[str], threads: int, meanwhile, results: dict,
              extra_argv: dict[str, list[str]]) -> list[JobResult]:
    """``run_figures`` with jobs = 1: one after the other in this process."""
    total = len(names)
    if meanwhile is not None:
        meanwhile()
    for name in names:
        started = time.perf_counter()
        try:
            with S.models.torch_threads(threads):
                payload = importlib.import_module(name).main(argv + extra_argv.get(name, []))
            results[name] = JobResult(name, time.perf_counter() - started, payload)
            print(f"[{len(results)}/{total}] {name}: {results[name].seconds:.0f} s", flush=True)
        except (Exception, SystemExit) as error:
            traceback.print_exc()
            results[name] = JobResult(name, time.perf_counter() - started,
                                      error=_failure(name, f"{type(error).__name__}: {error}"))
            print(f"[{len(results)}/{total}] {name}: FAILED ({results[name].error})", flush=True)
    return [results[n] for n in names]


def run_figures(names: list[str], argv: list[str], jobs: int, threads: int = 1, log_dir: str | Path = "figures/.logs",
                out: str = "figures", meanwhile: Callable[[], object] | None = None,
                extra_argv: dict[str, list[str]] | None = None, executor: Executor | None = None) -> list[JobResult]:
    """Run each figure script's ``main(argv)``; a failure is recorded and the others still run.
    ``extra_argv``: arguments of some figures only (name → list, after ``argv``), e.g. --data for those that
    read CIFAR-10.
    ``meanwhile()`` runs in this process: first with ``jobs`` = 1, else once the first workers have started.

    ``jobs`` = 1: one after the other in this process (live progress bars), with ``threads`` torch threads.
    ``jobs`` > 1, or an ``executor``: up to ``jobs`` jobs at once on a ``concurrent.futures.Executor``
    (default: ``jobs`` spawned local worker processes, [`repro.jobs.local_executor`][]; or a Dask cluster's,
    [`repro.jobs.dask_executor`][]), ``threads`` torch threads each, longest first by the last recorded
    times; a script's parts (``parts_of``) run as jobs of their own first, and its ``main`` runs when they are
    done, reading them from the cache (so with --no-resume the parts recompute and ``main`` resumes). Each
    job's output goes to ``log_dir``/JOB.log and this process prints one line per finished job. A local worker
    that dies (killed, out of memory) breaks the pool for every job in flight: those run again one at a time,
    so that only the job that kills its worker fails; a failed part is computed again by the figure's
    ``main``. Results come back in the order of ``names``.
    """
    results: dict[str, JobResult] = {}
    try:
        if jobs == 1 and executor is None:
            return _run_here(names, argv, threads, meanwhile, results, extra_argv or {})
        return _run_workers(names, argv, jobs, threads, Path(log_dir), out, meanwhile, results, extra_argv or {},
                            executor)
    except KeyboardInterrupt as stop:  # the figures finished before it, for the caller to save
        stop.finished = [results[n] for n in names if n in results]  # type: ignore[attr-defined]
        raise


def _run_workers(names: list[str], argv: list[str], jobs: int, threads: int, log_dir: Path, out: str,
                 meanwhile: Callable[[], object] | None, results: dict, extra_argv: dict[str, list[str]],
                 executor: Executor | None) -> list[JobResult]:
    """``run_figures`` on an Executor: up to ``jobs`` jobs in flight, each job's output to its log."""
    from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, wait

    from repro import jobs as J

    total = len(names)
    own = executor is None
    pool = J.local_executor(jobs) if own else executor
    log_dir.mkdir(parents=True, exist_ok=True)
    parts = {name: parts_of(name, argv + extra_argv.get(name, [])) for name in names}
    waiting = {name: set(p) for name, p in parts.items()}  # parts still to finish before the figure's main
    part_seconds: dict[str, dict[str, float]] = {name: {} for name in names}
    resumed = [a for a in argv if a != "--no-resume"]  # main after its parts: they are fresh in the cache
    last = _last_times(out, log_dir)
    queue = sorted([(name, part) for name in names for part in (*parts[name], None)],
                   key=lambda job: -last.get(_job_name(*job), 0.0))
    alone: set = set()  # jobs in flight when a local worker died: run again one at a time, to find which
    timings: dict[str, float] = {}
    running: dict[Future, tuple] = {}  # future → (name, part, start, log)
    workerless: float | None = None  # since when a Dask cluster has had no worker
    where = "worker processes" if own else "jobs at once on the Dask cluster"
    print(f"running {total} figures ({sum(map(len, parts.values()))} parts apart) in {min(jobs, len(queue))} {where} "
          f"({threads} torch thread(s) each); their output goes to {log_dir}/JOB.log", flush=True)
    try:
        while queue or running:
            while len(running) < jobs and not (alone & {(n, p) for n, p, _, _ in running.values()}):
                ready = [job for job in queue if job[1] is not None or not waiting[job[0]]]
                ready = [job for job in ready if job in alone] or ready  # the suspects first, one at a time
                if not ready or (ready[0] in alone and running):
                    break
                name, part = ready[0]
                queue.remove((name, part))
                log = str(log_dir / f"{_job_name(name, part)}.log")
                job_argv = (resumed if part is None and parts[name] else argv) + extra_argv.get(name, [])
                # a cluster's worker may have started in another folder: it gets absolute paths, and its files
                future = pool.submit(J.figure_job, name, part, job_argv, threads, str(Path(log).resolve()),
                                     tuple(sys.path), **({} if own else {"ship": True}))
                running[future] = (name, part, time.perf_counter(), log)
            if meanwhile is not None:  # this process's own work, while the workers start theirs
                meanwhile()
                meanwhile = None
            done, _ = wait(list(running), timeout=None if own else 1.0, return_when=FIRST_COMPLETED)
            if not done and not own:  # a cluster that lost every worker (kill -9) would wait for one for ever
                workerless = None if J.workers_left(pool) else workerless or time.perf_counter()
                if workerless is not None and time.perf_counter() - workerless > J.WORKERLESS_WAIT_S:
                    _give_up_workerless(names, queue, running, results, total)
                    break
                continue
            broken = False
            for future in done:
                name, part, started, log = running.pop(future)
                try:
                    status, value, seconds, *shipped = future.result()
                    if shipped and status == "ok":
                        _write_shipped(Path(out), shipped[0])
                except BrokenExecutor as error:  # a local worker died (killed, out of memory): which job killed it?
                    broken = True
                    if (name, part) not in alone:  # every job in flight fails with the pool: run each again alone
                        alone.add((name, part))
                        queue.insert(0, (name, part))
                        continue
                    value = f"its worker process died ({type(error).__name__}: killed, out of memory, or exited)"
                    status, seconds = "error", time.perf_counter() - started
                except BaseException as error:  # the executor's own failure (a Dask worker lost, KilledWorker)
                    if isinstance(error, KeyboardInterrupt):
                        raise
                    status, value, seconds = "error", f"{type(error).__name__}: {error}", time.perf_counter() - started
                if status == "ok":
                    value = pickle.loads(value)
                timings[_job_name(name, part)] = seconds
                if part is not None:
                    waiting[name].discard(part)
                    part_seconds[name][part] = seconds
                    print(f"      {name} part {part}: " + (f"{seconds:.0f} s" if status == "ok" else
                          f"FAILED ({value}; see {log}); the figure computes it itself"), flush=True)
                    continue
                seconds += sum(part_seconds[name].values())
                kept = part_seconds[name] or None
                if status == "ok":
                    results[name] = JobResult(name, seconds, payload=value, log=log, parts=kept)
                    print(f"[{len(results)}/{total}] {name}: {seconds:.0f} s", flush=True)
                else:
                    value = _failure(name, value)
                    results[name] = JobResult(name, seconds, error=value, log=log, parts=kept)
                    print(f"[{len(results)}/{total}] {name}: FAILED ({value}; see {log})", flush=True)
            if broken and own:  # a broken pool takes no more jobs
                J.stop(pool, list(running))
                for name, part, _, _ in running.values():  # none is left running; each again, alone
                    alone.add((name, part))
                    queue.insert(0, (name, part))
                running.clear()
                pool = J.local_executor(jobs)
    except BaseException as stop:  # an error here (the check in meanwhile, an interrupt) stops the jobs still running
        if isinstance(stop, KeyboardInterrupt):  # figures done while this process was busy (the check) are kept
            for future, (name, part, _, log) in running.items():
                if part is None and future.done() and not future.cancelled() and future.exception() is None:
                    status, value, seconds = future.result()
                    if status == "ok":
                        results[name] = JobResult(name, seconds + sum(part_seconds[name].values()),
                                                  payload=pickle.loads(value), log=log, parts=part_seconds[name] or None)
        J.stop(pool, list(running))
        raise
    else:
        if own:
            J.close(pool)
    try:  # the order of the next run
        known = json.loads((log_dir / TIMINGS).read_text(encoding="utf-8")) if (log_dir / TIMINGS).exists() else {}
        E.write_json(log_dir / TIMINGS, {**known, **{k: round(v, 2) for k, v in timings.items()}})
    except (OSError, ValueError):
        pass  # only an ordering hint
    return [results[n] for n in names]


def kept_from_before(out: Path, ran: list[str], quick: bool) -> dict:
    """What the last run on ``out`` recorded for the figures this run did not make (``--only``), so that its
    ``claims.json`` never loses them: their claim rows (made anew from their NAME.json there, as ``--report``
    does; a figure whose JSON is gone is dropped), their recorded failures and job times, and the last full run's wall
    time. Nothing is kept
    from a run of the other form (--quick against full settings) or from an unreadable claims.json."""
    kept: dict = {"figures": [], "claims": {}, "failed": [], "figure_seconds": {}, "wall_seconds": None}
    try:
        old = json.loads((out / "claims.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return kept
    if not isinstance(old, dict) or bool(old.get("quick")) != bool(quick):
        return kept
    failed = {f.get("figure"): f for f in old.get("failed") or [] if isinstance(f, dict)}
    seconds = old.get("figure_seconds") or {}
    kept["wall_seconds"] = old.get("wall_seconds")
    for name in old.get("figures") or []:
        if name not in FIGURES or name in ran:
            continue
        if name in failed:
            kept["failed"].append(failed[name])
        else:
            try:
                payload = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # its figure is gone: nothing to claim
            kept["claims"][name] = collect_claims(name, payload)
        kept["figures"].append(name)
        if name in seconds:
            kept["figure_seconds"][name] = seconds[name]
    return kept


def _write_shipped(out: Path, files: dict[str, bytes]) -> None:
    """The figure files a cluster's worker sent back, written under this process's --out (atomically, as the
    scripts write them) where they are not there already: a worker without this file system, or started in
    another folder, leaves its copy elsewhere."""
    for name, data in sorted(files.items(), key=lambda item: item[0].endswith(".json")):  # the JSON last
        target = out / name
        if not (target.is_file() and target.read_bytes() == data):
            E._atomic_write(target, lambda tmp, data=data: Path(tmp).write_bytes(data))


def _give_up_workerless(names: list[str], queue: list, running: dict, results: dict, total: int) -> None:
    """A Dask cluster with no worker left: the jobs in flight and those still queued are failures (the figures
    finished before are kept), said in one line; their futures are cancelled."""
    from repro import jobs as J

    for future in running:
        future.cancel()
    lost = [n for n in names if n not in results]
    why = (f"not made: the Dask cluster lost all its workers (none for {J.WORKERLESS_WAIT_S:g} s; killed, out of "
           "memory, or stopped)")
    for name in lost:
        results[name] = JobResult(name, 0.0, error=why)
    running.clear()
    queue.clear()
    print(f"the Dask cluster has no workers left: {len(lost)} of {total} figure(s) not made "
          f"({', '.join(lost)}); the {len(results) - len(lost)} finished are written", file=sys.stderr, flush=True)


def report_claims(root: Path = ROOT) -> dict:
    """``figures/claims.json`` with its claim rows made anew from the committed figure JSONs: the conservation
    check's two rows from its own numbers, then each figure's ``claims(payload)``. Nothing is computed."""
    claims = json.loads((root / "figures" / "claims.json").read_text(encoding="utf-8"))
    cfg = Settings(**{**claims["settings"], "lrs": tuple(claims["settings"]["lrs"])})
    table = conservation_claims(claims["conservation_check"], cfg)
    owners = [CHECK] * len(table)  # which figure each row comes from: the report counts them by paper
    figures = [name for name in FIGURES if (root / "figures" / f"{name}.json").exists()]
    for name in figures:
        rows = collect_claims(name, json.loads((root / "figures" / f"{name}.json").read_text(encoding="utf-8")))
        table += rows
        owners += [name] * len(rows)
    return {**claims, "figures": figures, "claims": table, "claim_figures": owners}


def write_report(root: Path = ROOT) -> int:
    """``reproduce.py --report``: claims.json's rows, then the generated blocks of every page (repro.report)."""
    from repro import report
    from repro.experiment import write_json

    fresh = report_claims(root)
    path = root / "figures" / "claims.json"
    if fresh != json.loads(path.read_text(encoding="utf-8")):
        write_json(str(path), fresh)
        print(f"rewrote the claim rows of {path.relative_to(root)}")
    changed = report.update_pages(root)
    print(f"rewrote the generated tables of {', '.join(changed)}" if changed else "every generated table is current")
    return 0


FIGURES = ("Q_dynamics_elementwise", "Q_distribution", "Q_convergence_elementwise", "Q_convergence_radial",
           "Q_sharpness_1d", "Q_hessian_eigenvalues", "noether_dynamics", "conservation_laws",
           "conservation_under_optimizers", "teleportation", "conservation_modern")
CIFAR10_FIGURES = ("conservation_under_optimizers", "conservation_modern")  # the figures that read CIFAR-10: --data reaches them


def is_main_job(only: list[str]) -> bool:
    """Whether a run of ``--only`` these figures is the main job (every figure): only then is its wall recorded."""
    return set(only) == set(FIGURES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])  # -OO strips docstrings
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    parser.add_argument("--seed", type=E.seed_argument, default=0, help="seed of the inits and the targets Y")
    parser.add_argument("--out", default=None, help=f"directory for the figures and their JSON (default: "
                                                    f"{E.DEFAULT_OUT}, or {E.QUICK_OUT} with --quick)")
    parser.add_argument("--quick", action="store_true", help="every figure in its --quick form")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="recompute every figure even if finished runs are cached under OUT/.cache")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--only", nargs="*", choices=FIGURES, default=list(FIGURES), help="figures to regenerate")
    parser.add_argument("--data", default=None,
                        help=f"CIFAR-10 for the figures that read it ({', '.join(CIFAR10_FIGURES)}): "
                             f"{E.CIFAR10_FORMS} (default: data/ in the repository)")
    parser.add_argument("--steps", type=int, default=Settings.steps, help="GD steps of the conservation check")
    parser.add_argument("--jobs", type=E.positive_int, default=os.cpu_count() or 1,
                        help="figures run at once, in worker processes (default: the number of cores; 1: in this "
                             "process, one after the other)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the figures on the workers of this Dask distributed scheduler (tcp://host:8786; "
                             "pip install -e \".[distributed]\"), one at a time per worker process: start the "
                             "workers with --nthreads 1 (more threads are refused); every worker must see this "
                             "repository at the same path; the figure files come back here, to --out")
    parser.add_argument("--threads", type=E.positive_int, default=1,
                        help="torch threads per figure (default 1: their loops are of tiny ops)")
    parser.add_argument("--report", action="store_true",
                        help="compute nothing: rewrite claims.json's claim rows from the committed figure JSONs, "
                             "then every generated table of the README and the docs")
    args = parser.parse_args(argv)
    if args.report:
        return write_report()
    if not args.only:
        parser.error(f"--only needs at least one figure name; choose from {', '.join(FIGURES)}")
    args.only = list(dict.fromkeys(args.only))  # a name given twice runs once
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be a positive integer")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.out is None:  # --quick never writes over the full-setting figures the README shows
        args.out = E.QUICK_OUT if args.quick else E.DEFAULT_OUT
    args.out = E.quick_out(args.out, args.quick)  # nor over another checkout's
    E.check_data_location(args.data)  # before any computation, as --out:
    E.check_output_location(args.out, tuple(args.only) + ("noether_dynamics_rotation",))
    with E.OutputLock(args.out):  # a second run on this --out is refused, not mixed with this one
        return _main(args)


def _main(args) -> int:
    cfg = Settings(seed=args.seed, device=args.device, steps=args.steps)
    rows: list[dict] = []

    def check() -> None:  # the conservation check, in this process while the first figures start
        with E.torch_threads(args.threads):
            rows.extend(run(cfg))
        lr_keys = [f"gd_drift_lr{lr:g}" for lr in cfg.lrs]
        print(f"\nQ of Eq. 48 on the Fig. 3 net (m={cfg.m}, n={cfg.n}, h={cfg.h}), time {cfg.steps * max(cfg.lrs):g} "
              f"(= {cfg.steps} GD steps at lr {max(cfg.lrs):g}); drift = max |ΔQ̃|")
        header = f"{'activation':<10} {'Q(0)':>9} {'loss':>17} {'GF drift':>9} " + " ".join(
            f"{'GD lr=' + k.removeprefix('gd_drift_lr'):>11}" for k in lr_keys)
        print(header)
        for r in rows:
            print(f"{r['activation']:<10} {r['Q0']:>9.4f} {r['loss_start']:>8.4f}→{r['loss_end']:<8.4f} "
                  f"{r['gf_drift']:>9.1e} " + " ".join(f"{r[k]:>11.1e}" for k in lr_keys), flush=True)

    # a cluster's workers may have started in other folders: they get --out and --data as absolute paths
    where = (lambda path: str(Path(path).resolve())) if args.scheduler is not None else str
    common = (["--device", args.device, "--seed", str(args.seed), "--out", where(args.out), "--threads", str(args.threads)]
              + (["--quick"] if args.quick else []) + ([] if args.resume else ["--no-resume"]))
    jobs = 1 if args.device == "cuda" else args.jobs  # one process owns the GPU
    executor = None
    if args.scheduler is not None:  # a cluster: as many jobs in flight as its workers have threads
        from repro.jobs import dask_executor

        executor, jobs = dask_executor(args.scheduler)
    started = time.perf_counter()
    try:
        data = {name: ["--data", where(args.data)] for name in CIFAR10_FIGURES} if args.data is not None else {}
        runs = run_figures(args.only, common, jobs, args.threads, Path(args.out) / ".logs", args.out, meanwhile=check,
                           extra_argv=data, executor=executor)
    except KeyboardInterrupt as stop:  # stopped (Ctrl-C, SIGTERM): the claims of the figures that finished are kept
        finished = [r for r in getattr(stop, "finished", []) if r.error is None]
        if finished:
            from repro.experiment import write_json

            partial = [row for r in finished for row in collect_claims(r.name, r.payload)]
            write_json(f"{args.out}/claims.partial.json", {"interrupted": True, "figures": [r.name for r in finished],
                                                           "claims": partial, "quick": args.quick})
            print(f"stopped: the claims of the {len(finished)} figure(s) that finished are in "
                  f"{args.out}/claims.partial.json", file=sys.stderr, flush=True)
        raise
    finally:
        if executor is not None:
            from repro.jobs import close

            close(executor)
    print(f"figures: {time.perf_counter() - started:.0f} s wall in all -> {args.out}/NAME.{{pdf,png,json}}")
    failed = [r for r in runs if r.error is not None]
    own = {r.name: collect_claims(r.name, r.payload) for r in runs if r.error is None}
    table = conservation_claims(rows, cfg) + [row for r in runs for row in own.get(r.name, [])]

    from repro.experiment import environment, peak_memory_mb, write_json

    import resource

    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest finished worker
    print(f"peak memory of this process: {peak_memory_mb():.0f} MB" + (f"; of the largest worker: {worker:.0f} MB"
                                                                         if worker else ""))
    if args.quick:  # quick settings are a first look, not the paper's: their claims are not the README's
        print(f"\nQUICK MODE (--quick: small settings, not the paper's; figures in {args.out}): claims below are "
              f"quick-mode numbers, not the README's")
    print_claims(table)
    # --only: what the last run on OUT recorded for the other figures stays, merged by figure
    kept = kept_from_before(Path(args.out), [r.name for r in runs], args.quick)
    claimed = [n for n in FIGURES if n in kept["figures"] or n in args.only]
    merged, checked = {**kept["claims"], **own}, conservation_claims(rows, cfg)
    table = checked + [row for n in claimed for row in merged.get(n, [])]
    owners = [CHECK] * len(checked) + [n for n in claimed for _ in merged.get(n, [])]  # each row's figure
    # the conservation check's numbers and the table, beside the figures they were read from
    write_json(f"{args.out}/claims.json", {"settings": cfg, "figures": claimed, "quick": args.quick,
                                           "conservation_check": rows, "claims": table, "claim_figures": owners,
                                           "failed": kept["failed"] + [{"figure": r.name, "error": r.error}
                                                                       for r in failed],
                                           # each figure's time: its own job plus its parts run apart (--jobs > 1)
                                           "figure_seconds": {**kept["figure_seconds"],
                                                              **{r.name: {"seconds": round(r.seconds, 2),
                                                                          "parts": r.parts} for r in runs}},
                                           # the run's wall time: its figures' jobs and the conservation check (a run
                                           # of --only some figures keeps the last full run's)
                                           "wall_seconds": (kept["wall_seconds"] if not is_main_job(args.only)
                                                            else round(time.perf_counter() - started, 2)),
                                           "environment": environment(args.device)})
    Path(args.out, "claims.partial.json").unlink(missing_ok=True)  # a stopped run's, made stale by this one
    for r in failed:
        print(f"FAILED: {r.name} ({r.error}){f'; its output: {r.log}' if r.log else ''}")
    # a claim that does not hold is a result, reported above and in the README, not a failure of the run;
    # a figure that could not be made is a failure
    return 1 if failed else 0


if __name__ == "__main__":
    E.run_script(main)  # expected failures end with one line (--debug: the traceback)
