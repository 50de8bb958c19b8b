"""Benchmark: `python reproduce.py` end to end, on a quiet machine and with one core kept busy.

For each condition (quiet; a spinning process that this benchmark starts and stops itself), two
reproduce runs into fresh temporary folders (no cache): the main paper's figures (Figs. 3–9 and
App. G.1) and then the two related papers (noether_dynamics, conservation_laws). Each run's wall
time counts reproduce's own 6-second conservation check too. Per-figure times are reproduce's job
times (claims.json's figure_seconds: a figure's worker job plus the jobs of its parts run apart, so
with parts they add up to more than the figure's share of the wall time); peak memory is the largest
process (reproduce or a worker).
Prints the table and the ratios busy/quiet, writes benchmarks/results/bench_reproduce[_quick].json;
`--table FILE.json` prints that JSON as the README's Markdown table.
Targets (issue 14): main figures ≤ 60 s quiet, everything ≤ 120 s, busy ≤ 1.3× quiet, Fig. 7 ≤ 10 s,
peak memory < 2 GB.
Usage: python benchmarks/bench_reproduce.py [--quick] [--jobs N] [--threads 1] [--out benchmarks/results]
       [--keep-quiet DIR (the quiet runs' figure files, copied before the temporary folders go)]
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

from repro import experiment as E  # noqa: E402
from repro import report  # noqa: E402

MAIN = ("Q_dynamics_elementwise", "Q_distribution", "Q_convergence_elementwise", "Q_convergence_radial",
        "Q_sharpness_1d", "Q_hessian_eigenvalues")
RELATED = ("noether_dynamics", "conservation_laws")
TARGETS = {"main_s": 60.0, "all_s": 120.0, "busy_ratio": 1.3, "fig7_s": 10.0, "peak_memory_mb": 2048.0}


def reproduce(figures, quick: bool, jobs: int | None, threads: int, workdir: Path) -> dict:
    """One reproduce.py run into a fresh folder: its wall time, the figures' own times, its exit status."""
    if not figures:  # a group left out by --only
        return {"wall_s": 0.0, "exit_status": 0, "figures_s": {}, "command": None, "out": None}
    out = Path(tempfile.mkdtemp(prefix="figures-", dir=workdir))
    command = [sys.executable, str(ROOT / "reproduce.py"), "--out", str(out), "--threads", str(threads),
               "--only", *figures] + (["--quick"] if quick else []) + ([] if jobs is None else ["--jobs", str(jobs)])
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
    except (OSError, ValueError, KeyError, TypeError):
        figures_s = dict.fromkeys(figures)
    return {"wall_s": wall, "exit_status": status, "figures_s": figures_s, "command": " ".join(command[1:]),
            "out": out}


def keep(condition_result: dict, target: Path) -> None:
    """The figure files of a condition's runs, copied into ``target`` (claims.json as claims_GROUP.json)."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for group in ("main", "related"):
        out = condition_result[group]["out"]
        if out is None:
            continue
        for path in Path(out).iterdir():
            if path.is_file() and path.suffix in (".json", ".pdf", ".png"):
                name = f"claims_{group}.json" if path.name == "claims.json" else path.name
                shutil.copy2(path, target / name)


def condition(busy: bool, args, workdir: Path) -> dict:
    spinner = None
    if busy:  # one core kept busy for the whole condition, by a process we own and stop
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        main, related = (reproduce([n for n in group if n in args.only], args.quick, args.jobs, args.threads, workdir)
                         for group in (MAIN, RELATED))
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.wait()
    return {"main": main, "related": related, "main_s": main["wall_s"], "all_s": main["wall_s"] + related["wall_s"],
            "figures_s": {**main["figures_s"], **related["figures_s"]},
            "ok": main["exit_status"] == 0 and related["exit_status"] == 0}


def markdown(results: dict) -> str:
    """The README's timing table from a results JSON."""
    quiet, busy = results["quiet"], results["busy"]
    lines = [f"Measured by `{results['command']}` on {results['environment']['platform']} "
             f"({results['environment']['cpu_count']} cores), {'quick settings' if results['quick'] else 'full settings'}, "
             f"--jobs {results['jobs'] or 'default (cores)'}, --threads {results['threads']}.", "",
             report.benchmark_table(results)]
    verdicts = results["targets_met"]
    lines += ["", ("Targets: " + "; ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in verdicts.items()) + "."
                   if verdicts else "Targets not judged: only some figures were timed (--only).")
              + f" Peak memory {results['peak_memory_mb']:.0f} MB."]
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every figure in its --quick form (tests the benchmark)")
    parser.add_argument("--jobs", type=E.positive_int, default=None, help="reproduce.py --jobs (default: its own)")
    parser.add_argument("--threads", type=E.positive_int, default=1, help="reproduce.py --threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the results JSON")
    parser.add_argument("--only", nargs="+", choices=MAIN + RELATED, default=list(MAIN + RELATED),
                        help="figures to time (default all; fewer only to try the benchmark out)")
    parser.add_argument("--table", metavar="JSON", help="print the Markdown table of a results file and stop")
    parser.add_argument("--keep-quiet", metavar="DIR", default=None,
                        help="copy the quiet runs' figures (PDF, PNG, JSON, claims.json) into DIR before the "
                             "temporary folders go")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return None
    load_before = os.getloadavg()  # a busy machine makes "quiet" meaningless: recorded with the results
    with tempfile.TemporaryDirectory(prefix="bench-reproduce-") as tmp:
        quiet = condition(False, args, Path(tmp))
        if args.keep_quiet:
            keep(quiet, Path(args.keep_quiet))
        busy = condition(True, args, Path(tmp))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    fig7 = quiet["figures_s"].get("Q_convergence_radial")
    results = {
        "benchmark": "bench_reproduce", "command": " ".join(["python benchmarks/bench_reproduce.py", *(argv or sys.argv[1:])]),
        "environment": E.environment(), "quick": args.quick, "jobs": args.jobs, "threads": args.threads,
        "load_average_before": load_before, "quiet": quiet, "busy": busy,
        "only": args.only, "busy_over_quiet": {"main": busy["main_s"] / quiet["main_s"] if quiet["main_s"] else None,
                                               "all": busy["all_s"] / quiet["all_s"]},
        "peak_memory_mb": peak, "targets": TARGETS,
        "note": "each reproduce run includes its 6-second conservation check; two runs per condition",
    }
    results["targets_met"] = {} if set(args.only) != set(MAIN + RELATED) else {  # judged on every figure only
        "main paper ≤ 60 s": quiet["main_s"] <= TARGETS["main_s"], "everything ≤ 120 s": quiet["all_s"] <= TARGETS["all_s"],
        "busy ≤ 1.3× quiet": results["busy_over_quiet"]["all"] <= TARGETS["busy_ratio"],
        "Fig. 7 ≤ 10 s": fig7 is not None and fig7 <= TARGETS["fig7_s"],
        "peak memory < 2 GB": peak < TARGETS["peak_memory_mb"], "every run succeeded": quiet["ok"] and busy["ok"]}
    E.write_json(Path(args.out) / f"bench_reproduce{'_quick' if args.quick else ''}.json", results)
    print(markdown(E.to_jsonable(results)))
    return results


if __name__ == "__main__":
    main()
