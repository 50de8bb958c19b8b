"""Two runs of the main job (``python reproduce.py --out A`` and ``--out B``, same code and seed): do they give the same
claim table, and the same figure JSONs apart from what a clock measures?

Compares A/claims.json with B/claims.json row by row (claim, criterion, verdict, measured text), and every figure
JSON of A with B's with the clock's fields left out (keys naming seconds, times, wall time, peak memory, the command
line, the environment and the image hashes: a plot of times changes its image). Writes
benchmarks/results/compare_runs.json. A verdict that differs is a claim decided by something other than the code and
the seed (load, scheduling); a measured text that differs names the number that moved.
Usage: python benchmarks/compare_runs.py A B [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from repro import experiment as E

CLOCK = ("second", "time", "wall", "peak_memory", "median_s", "max_s", "total_s")
NOT_RESULTS = ("command", "environment", "files")


def without_clock(value):
    """``value`` with every field a clock measures left out."""
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items()
                if k not in NOT_RESULTS and not any(c in k for c in CLOCK)}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


def differences(a, b, path: str = "") -> list[str]:
    """The paths where two JSON values differ (at most the first 20)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one run" for k in sorted(set(a) ^ set(b))]
        for k in a:
            if k in b:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out[:20]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in differences(u, v, f"{path}[{i}]")][:20]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"[:300]]


def compare(a: Path, b: Path) -> dict:
    ca, cb = (json.loads((p / "claims.json").read_text(encoding="utf-8")) for p in (a, b))
    ra, rb = ca["claims"], cb["claims"]
    if [r["claim"] for r in ra] != [r["claim"] for r in rb]:
        raise SystemExit(f"{a} and {b} hold different claims: not two runs of one job")
    rows = [{"claim": x["claim"], "verdicts": [x["holds"], y["holds"]], "measured": [x["measured"], y["measured"]]}
            for x, y in zip(ra, rb) if x != y]
    figures = {}
    for path in sorted(a.glob("*.json")):
        if path.name in ("claims.json", "claims.partial.json") or not (b / path.name).exists():
            continue
        x, y = (without_clock(json.loads(p.read_text(encoding="utf-8"))) for p in (path, b / path.name))
        figures[path.stem] = differences(x, y)
    return {"runs": [str(a), str(b)], "commits": [c["environment"].get("git_commit") for c in (ca, cb)],
            "rows": len(ra), "verdicts_differing": sum(r["verdicts"][0] != r["verdicts"][1] for r in rows),
            "rows_differing": rows, "conservation_check_equal": ca["conservation_check"] == cb["conservation_check"],
            "figure_json_differences_apart_from_the_clock": figures}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    payload = {"benchmark": "compare_runs", **compare(args.a, args.b)}
    print(f"{payload['rows']} rows: {len(payload['rows_differing'])} differ, {payload['verdicts_differing']} in their "
          f"verdict; figure JSONs apart from the clock: "
          + ", ".join(f"{n} {'identical' if not d else f'{len(d)} differences'}"
                      for n, d in payload["figure_json_differences_apart_from_the_clock"].items()))
    E.write_json(f"{args.out}/compare_runs.json", payload)
    return payload


if __name__ == "__main__":
    main()
