"""Benchmark: the main job as a user runs it, `python reproduce.py [--data PATH]` (every figure), quiet and with one
core kept busy.

For each condition (quiet; a spinning process that this benchmark starts and stops itself), into fresh temporary
folders (no cache): the main job, one reproduce.py run of every figure (reproduce.FIGURES) with the README's
arguments (``--data PATH`` for the CIFAR-10 figures); then the paper's figures alone (Figs. 3–9 and App. G.1), whose
wall time the main job cannot separate from the rest (``--no-paper-run`` leaves that run out). Each run's wall time
counts reproduce's own conservation check too. Per-figure times are the main job's job times (claims.json's
figure_seconds: a figure's worker job plus the jobs of its parts run apart, so with parts they add up to more than
the figure's share of the wall time); peak memory is the largest process (reproduce or a worker).
Prints the table and the ratios busy/quiet, writes benchmarks/results/bench_reproduce[_quick].json;
`--table FILE.json` prints that JSON as the docs' Markdown table; `--keep-quiet DIR` keeps the quiet main job's
figures and claims.json (the README's figure table and its total are written from that claims.json).
Targets (issue 37): the main job ≤ 600 s quiet, the paper's figures alone ≤ 180 s quiet, peak memory < 2 GB.
Usage: python benchmarks/bench_reproduce.py [--data PATH] [--quick] [--jobs N] [--threads 1] [--out benchmarks/results]
       [--only NAME ... (fewer figures, to try the benchmark out: no targets judged)] [--no-paper-run]
       [--keep-quiet DIR]
       python benchmarks/bench_reproduce.py --table benchmarks/results/bench_reproduce.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import reproduce as R  # noqa: E402  (the figure list of the main job)
from repro import experiment as E  # noqa: E402
from repro import report  # noqa: E402

PAPER = ("Q_dynamics_elementwise", "Q_distribution", "Q_convergence_elementwise", "Q_convergence_radial",
         "Q_sharpness_1d", "Q_hessian_eigenvalues")  # Figs. 3–9 and App. G.1
TARGETS = {"main_job_s": 600.0, "paper_s": 180.0, "peak_memory_mb": 2048.0}


def reproduce(figures, quick: bool, jobs: int | None, threads: int, workdir: Path, data: str | None = None) -> dict:
    """One reproduce.py run into a fresh folder: its wall time, the figures' own times, its exit status."""
    if not figures:  # a group left out by --only
        return {"wall_s": 0.0, "exit_status": 0, "figures_s": {}, "parts_s": {}, "command": None, "out": None}
    out = Path(tempfile.mkdtemp(prefix="figures-", dir=workdir))
    command = ([sys.executable, str(ROOT / "reproduce.py"), "--out", str(out), "--threads", str(threads),
                "--only", *figures] + (["--quick"] if quick else []) + ([] if jobs is None else ["--jobs", str(jobs)])
               + ([] if data is None else ["--data", data]))
    log = out / "reproduce.log"
    started = time.perf_counter()
    with open(log, "w") as handle:
        status = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    if status != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        print(f"reproduce.py exited with {status}; the end of {log}:\n{tail}", file=sys.stderr)
    try:  # each figure's job time, its parts run apart included (reproduce.py's claims.json)
        seconds = json.loads((out / "claims.json").read_text())["figure_seconds"]
        figures_s = {name: seconds[name]["seconds"] if name in seconds else None for name in figures}
        parts_s = {name: seconds[name]["parts"] for name in figures if name in seconds and seconds[name]["parts"]}
    except (OSError, ValueError, KeyError, TypeError):
        figures_s, parts_s = dict.fromkeys(figures), {}
    return {"wall_s": wall, "exit_status": status, "figures_s": figures_s, "parts_s": parts_s,
            "command": " ".join(command[1:]), "out": out}


def keep(condition_result: dict, target: Path) -> None:
    """The figure files and claims.json of a condition's main job, copied into ``target``."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    out = condition_result["main_job"]["out"]
    for path in Path(out).iterdir() if out is not None else ():
        if path.is_file() and path.suffix in (".json", ".pdf", ".png"):
            shutil.copy2(path, target / path.name)


def condition(busy: bool, args, workdir: Path) -> dict:
    """The main job (every figure of ``args.only``), then the paper's figures alone (unless --no-paper-run)."""
    spinner = None
    if busy:  # one core kept busy for the whole condition, by a process we own and stop
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        main = reproduce(args.only, args.quick, args.jobs, args.threads, workdir, args.data)
        paper = (reproduce([n for n in PAPER if n in args.only], args.quick, args.jobs, args.threads, workdir)
                 if args.paper_run else None)
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.wait()
    return {"main_job": main, "paper_figures": paper, "wall_s": main["wall_s"],
            "paper_wall_s": None if paper is None else paper["wall_s"], "figures_s": main["figures_s"],
            "ok": main["exit_status"] == 0 and (paper is None or paper["exit_status"] == 0)}


def markdown(results: dict) -> str:
    """The README's timing table from a results JSON."""
    quiet, busy = results["quiet"], results["busy"]
    lines = [f"Measured by `{results['command']}` on {results['environment']['platform']} "
             f"({results['environment']['cpu_count']} cores), {'quick settings' if results['quick'] else 'full settings'}, "
             f"--jobs {results['jobs'] or 'default (cores)'}, --threads {results['threads']}.", "",
             report.benchmark_table(results)]
    verdicts = results["targets_met"]
    lines += ["", ("Targets: " + "; ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in verdicts.items()) + "."
                   if verdicts else "Targets not judged: only some figures were timed (--only), or quick settings.")
              + f" Peak memory {results['peak_memory_mb']:.0f} MB."]
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])  # -OO strips docstrings
    parser.add_argument("--quick", action="store_true", help="every figure in its --quick form (tests the benchmark)")
    parser.add_argument("--jobs", type=E.positive_int, default=None, help="reproduce.py --jobs (default: its own)")
    parser.add_argument("--threads", type=E.positive_int, default=1, help="reproduce.py --threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the results JSON")
    parser.add_argument("--only", nargs="+", choices=R.FIGURES, default=list(R.FIGURES),
                        help="figures to time (default all: the main job; fewer only to try the benchmark out)")
    parser.add_argument("--data", default=None, help="reproduce.py --data: CIFAR-10 for the figures that read it")
    parser.add_argument("--no-paper-run", dest="paper_run", action="store_false",
                        help="leave out the second run of each condition, the paper's figures alone")
    parser.add_argument("--table", metavar="JSON", help="print the Markdown table of a results file and stop")
    parser.add_argument("--keep-quiet", metavar="DIR", default=None,
                        help="copy the quiet main job's figures (PDF, PNG, JSON, claims.json) into DIR before "
                             "the temporary folders go")
    parser.add_argument("--conditions", nargs="+", choices=("quiet", "busy"), default=["quiet", "busy"],
                        help="which conditions to time (default both; the one left out is recorded as not measured)")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return None
    load_before = os.getloadavg()  # a busy machine makes "quiet" meaningless: recorded with the results
    with tempfile.TemporaryDirectory(prefix="bench-reproduce-") as tmp:
        quiet = condition(False, args, Path(tmp)) if "quiet" in args.conditions else None
        if args.keep_quiet and quiet is not None:
            keep(quiet, Path(args.keep_quiet))
        busy = condition(True, args, Path(tmp)) if "busy" in args.conditions else None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    every = set(args.only) == set(R.FIGURES)
    results = {
        "benchmark": "bench_reproduce", "command": " ".join(["python benchmarks/bench_reproduce.py", *(argv or sys.argv[1:])]),
        "environment": E.environment(), "quick": args.quick, "jobs": args.jobs, "threads": args.threads,
        "data": args.data, "load_average_before": load_before, "quiet": quiet, "busy": busy, "only": args.only,
        "conditions": args.conditions,
        "busy_over_quiet": None if quiet is None or busy is None else {
            "main_job": busy["wall_s"] / quiet["wall_s"] if quiet["wall_s"] else None,
            "paper": busy["paper_wall_s"] / quiet["paper_wall_s"] if quiet["paper_wall_s"] else None},
        "peak_memory_mb": peak, "targets": TARGETS,
        "note": "each reproduce run includes its conservation check; per condition the main job, then the paper's "
                "figures alone",
    }
    ran = [c for c in (quiet, busy) if c is not None]
    results["targets_met"] = {} if not every or args.quick or quiet is None else {  # the main job, full settings
        "main job ≤ 600 s quiet": quiet["wall_s"] <= TARGETS["main_job_s"],
        "paper's figures alone ≤ 180 s quiet": (quiet["paper_wall_s"] is not None
                                                and quiet["paper_wall_s"] <= TARGETS["paper_s"]),
        "peak memory < 2 GB": peak < TARGETS["peak_memory_mb"], "every run succeeded": all(c["ok"] for c in ran)}
    # a subset (--only) is a try-out: it never overwrites the main job's results
    E.write_json(Path(args.out) / f"bench_reproduce{'_quick' if args.quick else ''}{'' if every else '_subset'}.json",
                 results)
    print(markdown(E.to_jsonable(results)))
    return results


if __name__ == "__main__":
    main()
