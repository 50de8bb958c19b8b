"""Benchmark: how long `import symmetry` takes, and what it loads.

Each repeat is a fresh interpreter; the three timings are `import torch` alone, `import symmetry`
(torch included: what a user waits for), and `import symmetry` with torch already imported (the
package's own cost). Medians of the repeats, interleaved so a burst of load hits all three alike.
Target (issue 12): `import symmetry` under 2 s, loading none of torchvision, matplotlib, sympy,
scipy, sklearn. The time is dominated by torch's own import, so measure it on a quiet machine.
Runtime: about 10 s per repeat on a 2-core CPU.
Usage: python benchmarks/bench_import.py [--repeats 5] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torchvision", "matplotlib", "sympy", "scipy", "sklearn", "art", "mlxtend", "pandas"]
CASES = {
    "import torch": ("", "import torch"),
    "import symmetry": ("", "import symmetry"),
    "import symmetry, torch already imported": ("import torch", "import symmetry"),
}
PROBE = ("import sys, time\n{before}\nt = time.perf_counter()\n{timed}\nt = time.perf_counter() - t\n"
         "print(t, *sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")


def time_once(before: str, timed: str) -> tuple[float, list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before, timed=timed, heavy=HEAVY)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1:]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer, got {args.repeats}")
    from repro import experiment as E

    seconds: dict[str, list[float]] = {name: [] for name in CASES}
    loaded: list[str] = []
    for _ in range(args.repeats):
        for name, (before, timed) in CASES.items():
            t, heavy = time_once(before, timed)
            seconds[name].append(t)
            if name == "import symmetry":
                loaded = sorted(set(loaded) | set(heavy))
    import torch

    payload = {
        "benchmark": "import time of the symmetry package (fresh interpreter per repeat)",
        "repeats": args.repeats,
        "median_s": {name: round(statistics.median(v), 3) for name, v in seconds.items()},
        "all_s": {name: [round(x, 3) for x in v] for name, v in seconds.items()},
        "heavy_packages_loaded_by_import_symmetry": loaded,
        "target": "import symmetry < 2 s; loads none of " + ", ".join(HEAVY[:5]),
        "meets_target": statistics.median(seconds["import symmetry"]) < 2 and not loaded,
        "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    E.write_json(Path(args.out) / "bench_import.json", payload)
    for name, value in payload["median_s"].items():
        print(f"{name:45s} {value:6.3f} s (median of {args.repeats})")
    print("heavy packages loaded:", loaded or "none")
    return payload


if __name__ == "__main__":
    main()
