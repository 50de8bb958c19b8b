"""Benchmark: the README's test command (`pytest`, settings in pyproject.toml) timed end to end.

Runs the suite once in a subprocess from the repository root and records its wall time, the CPU time
of everything it started (pytest-xdist workers, notebook kernels, figure subprocesses), the pass/fail
counts from pytest's summary line, and the load average before and after (a busy machine makes the
wall time an upper bound). Target (issue 14): under 3 minutes on a 2-core CPU.
Usage: python benchmarks/bench_tests.py [--out benchmarks/results] [-- extra pytest arguments]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from symmetry import experiment as E  # noqa: E402

TARGET_S = 180.0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for bench_tests.json")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "pytest", "-q", *args.pytest_args]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", summary)}
    results = {"benchmark": "bench_tests", "command": " ".join(["pytest", "-q", *args.pytest_args]),
               "environment": E.environment(), "cpu_count": os.cpu_count(), "wall_s": round(wall, 1),
               "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "exit_status": done.returncode,
               "summary": summary, "counts": counts, "load_average_before": load_before,
               "load_average_after": os.getloadavg(), "target_s": TARGET_S, "target_met": wall <= TARGET_S}
    E.write_json(Path(args.out) / "bench_tests.json", results)
    print(f"{summary}\npytest: {wall:.1f} s wall, {results['cpu_s']:.1f} s CPU (target {TARGET_S:g} s: "
          f"{'met' if results['target_met'] else 'NOT met'})")
    return results


if __name__ == "__main__":
    main()
