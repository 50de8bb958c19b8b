"""Are the paper's conserved quantities all of them? Count every conservation law (Marcotte et al.).

For a model that factors through θ ↦ φ(θ), the number of independent conservation laws of
gradient flow is D − dim Lie(W_φ)(θ) at a generic θ (ALGO 2), and the polynomial laws of
degree ≤ k are the nullspace of a linear system (ALGO 1). This script
(a) runs both on the paper's own models and says whether the paper's list (Eq. 27, 28, 48)
    is complete,
(b) reruns the reference's check on 50 random linear (depth 2–4, widths 2–5) and 50 random
    ReLU architectures (depth 2–4, widths 2–9, biases on every other one): D − dim must equal
    the known count (rank of the gradients of UᵢᵀUᵢ − Uᵢ₊₁Uᵢ₊₁ᵀ; number of hidden neurons),
(c) plots laws found vs known, laws vs D and the time per architecture.
Everything is float64 on the CPU (thousands of tiny ops; --device is recorded, not used).
Exit status 1 if any count disagrees.
"""
from __future__ import annotations

import statistics
import sys
from collections import Counter
from dataclasses import dataclass

import torch
from tqdm import tqdm

from repro import experiment as E
from symmetry import laws as L

NAME = "conservation_laws"

#: The reference implementation's time per architecture (SageMath, its own machine).
REFERENCE_SECONDS = {"linear": 41.0, "relu": 136.0}


@dataclass
class Settings:
    linear_architectures: int = 50  # random linear nets, depth 2–4, widths 2–5 (the reference's set)
    relu_architectures: int = 50  # random ReLU nets, depth 2–4, widths 2–9, biases on every other one
    points: int = 2  # ALGO 2 runs at this many random points, which must agree
    degree: int = 2  # ALGO 1 on the paper's models: all polynomial laws up to this degree
    region_points: int = 20  # random points for models whose count depends on the activation region
    rtol: float = L.RANK_RTOL  # relative rank tolerance of ALGO 2
    seed: int = 0
    device: str = "cpu"  # recorded only: the computation is CPU float64 by design


def quick(cfg: Settings) -> Settings:
    return Settings(linear_architectures=6, relu_architectures=6, region_points=5, seed=cfg.seed, device=cfg.device)


# The paper's models: (name, the paper's laws, factorization, ALGO 1 degree or None)
def paper_models(degree: int) -> list[tuple[str, str, L.Factorization, int | None]]:
    return [
        ("two-layer linear, whitened", "Eq. 27/28, M ∈ gl_h: UᵀU − VᵀV", L.two_layer_net(3, 2, 4), degree),
        ("two-layer linear, h > m + n", "Eq. 27/28, M ∈ gl_h: UᵀU − VᵀV", L.two_layer_net(2, 5, 2), degree),
        ("two-layer tanh, whitened", "Eq. 48: Q_k = ½‖u_k‖² − Σ_a ∫σ/σ'", L.two_layer_net(3, 2, 4, "tanh"), None),
        ("two-layer sigmoid, whitened", "Eq. 48: Q_k = ½‖u_k‖² − Σ_a ∫σ/σ'", L.two_layer_net(3, 3, 4, "sigmoid"), None),
        ("two-layer ReLU, any input (u_k v_kᵀ)_k", "Eq. 28, M diagonal: ‖v_k‖² − ‖u_k‖²", L.relu_net((4, 3, 3)), degree),
        ("three-layer linear", "Eq. 27 per hidden layer: WᵢᵀWᵢ − Wᵢ₊₁Wᵢ₊₁ᵀ", L.linear_net((3, 2, 3, 2)), degree),
        ("three-layer ReLU with biases", "Eq. 27, M diagonal, per hidden neuron", L.relu_net((3, 3, 2, 2), True), degree),
    ]


# Models whose count is only locally constant: it changes with the sign pattern of V.
REGION_MODELS = [("two-layer ReLU, whitened", "relu"), ("two-layer LeakyReLU, whitened", "leaky_relu")]


def run_paper_models(cfg: Settings) -> list[dict]:
    rows = []
    for name, paper, fact, degree in tqdm(paper_models(cfg.degree), desc="paper's models", leave=False):
        found = L.lie_algebra_dimension(fact, points=cfg.points, seed=cfg.seed, rtol=cfg.rtol)
        known = L.known_law_count(fact, seed=cfg.seed)
        row = {"model": name, "description": fact.description, "paper_laws": paper, "D": fact.D,
               "paper_functions": int(fact.known_laws(fact.random_point()).numel()),
               "paper_independent": known, "lie_dim": found.dim, "laws_found": found.laws,
               "paper_complete": known == found.laws, "dims_per_level": found.dims_per_level,
               "smallest_accepted": found.smallest_accepted, "largest_rejected": found.largest_rejected,
               "paper_laws_conserved_residual": L.laws_are_conserved(fact, fact.known_laws, seed=cfg.seed),
               "seconds": found.seconds}
        if degree is not None:
            poly = L.polynomial_laws(fact, degree, seed=cfg.seed)
            row["polynomial"] = {"degree": degree, "count": poly.count, "independent": poly.independent,
                                 "laws": [str(e) for e in poly.expressions()] if poly.count <= 8 else None,
                                 "seconds": poly.seconds}
        rows.append(row)
    return rows


def run_region_models(cfg: Settings) -> list[dict]:
    """ReLU and LeakyReLU with whitened input: φ = Uσ(Vᵀ) is linear in V on each sign region."""
    rows = []
    for name, activation in REGION_MODELS:
        fact = L.two_layer_net(3, 2, 4, activation)
        gen = torch.Generator().manual_seed(cfg.seed)
        counts = Counter()
        for _ in range(cfg.region_points):
            theta = fact.random_point(gen)
            V = fact.split(theta)[1]
            shared = bool(((V[:, 0] > 0) == (V[:, 1] > 0)).all())  # both neurons see the same sign pattern
            laws = L.lie_algebra_dimension(fact, theta, points=1, rtol=cfg.rtol).laws
            counts[(laws, int((V < 0).sum()), shared)] += 1
        rows.append({"model": name, "description": fact.description, "D": fact.D,
                     "paper_independent": L.known_law_count(fact, seed=cfg.seed),
                     "regions": [{"laws": k[0], "negative_V_entries": k[1], "neurons_share_pattern": k[2], "points": v}
                                 for k, v in sorted(counts.items())]})
    return rows


def run_architectures(kind: str, count: int, cfg: Settings) -> list[dict]:
    rows = []
    for arch in tqdm(L.random_architectures(kind, count, seed=cfg.seed), desc=f"random {kind} nets", leave=False):
        fact = arch.factorization()
        found = L.lie_algebra_dimension(fact, points=cfg.points, seed=cfg.seed, rtol=cfg.rtol)
        known = arch.known_count()
        rows.append({"kind": kind, "widths": list(arch.widths), "bias": arch.bias, "D": fact.D,
                     "known": known, "found": found.laws, "match": known == found.laws,
                     "dims_per_level": found.dims_per_level, "generators": found.generators,
                     "smallest_accepted": found.smallest_accepted, "largest_rejected": found.largest_rejected,
                     "seconds": found.seconds})
    return rows


def timing(rows: list[dict]) -> dict:
    seconds = [r["seconds"] for r in rows]
    return {"median_s": statistics.median(seconds), "max_s": max(seconds), "total_s": sum(seconds),
            "all_match": all(r["match"] for r in rows), "architectures": len(rows),
            "smallest_gap_ratio": min(r["smallest_accepted"] / max(r["largest_rejected"], 1e-300) for r in rows)}


def plot(arch_rows: list[dict], paper_rows: list[dict]):
    plt = E.pyplot()
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(14, 4.2))
    style = {"linear": ("tab:blue", "o"), "relu": ("tab:red", "s")}
    for kind, (color, marker) in style.items():
        rows = [r for r in arch_rows if r["kind"] == kind]
        if not rows:
            continue
        label = f"random {kind} ({sum(r['match'] for r in rows)}/{len(rows)} match)"
        ax.scatter([r["known"] for r in rows], [r["found"] for r in rows], c=color, marker=marker, s=18, label=label)
        bx.scatter([r["D"] for r in rows], [r["found"] for r in rows], c=color, marker=marker, s=18, label=f"random {kind}")
        cx.scatter([r["D"] for r in rows], [r["seconds"] for r in rows], c=color, marker=marker, s=18,
                   label=f"{kind}: median {statistics.median(r['seconds'] for r in rows):.2f} s "
                         f"(reference {REFERENCE_SECONDS[kind]:.0f} s)")
    ax.scatter([r["paper_independent"] for r in paper_rows], [r["laws_found"] for r in paper_rows], c="k", marker="*",
               s=60, label="the paper's models")
    top = max([r["known"] for r in arch_rows] + [r["laws_found"] for r in paper_rows]) + 2
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set(xlabel="known laws (rank of their gradients)", ylabel="laws found: D − dim Lie(W_φ)",
           title="ALGO 2 finds exactly the known laws")
    bx.set(xlabel="parameters D", ylabel="independent conservation laws", title="laws vs parameter count")
    cx.set(xlabel="parameters D", ylabel="seconds per architecture (2 points)", yscale="log",
           title="time of ALGO 2 on a 2-core CPU")
    for axis in (ax, bx, cx):
        axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv, dtype=False)
    settings = {**vars(cfg), "quick": args.quick}
    with E.torch_threads(args.threads), E.Stopwatch() as clock:
        paper_rows = E.cached(args.out, f"{NAME}-paper", settings, lambda: {"rows": run_paper_models(cfg)},
                              args.resume)["rows"]
        region_rows = E.cached(args.out, f"{NAME}-regions", settings, lambda: {"rows": run_region_models(cfg)},
                               args.resume)["rows"]
        arch_rows = []
        for kind, count in (("linear", cfg.linear_architectures), ("relu", cfg.relu_architectures)):
            arch_rows += E.cached(args.out, f"{NAME}-{kind}", settings,
                                  lambda k=kind, c=count: {"rows": run_architectures(k, c, cfg)}, args.resume)["rows"]
    for r in paper_rows:
        print(f"{r['model']:42s} D={r['D']:3d}  paper: {r['paper_independent']:2d} independent of "
              f"{r['paper_functions']:2d} ({r['paper_laws']})  found: {r['laws_found']:2d}  "
              f"{'complete' if r['paper_complete'] else 'INCOMPLETE'}")
        for law in (r.get("polynomial") or {}).get("laws") or []:
            print(f"    {law}")
    for r in region_rows:
        spread = sorted({g['laws'] for g in r['regions']})
        print(f"{r['model']:42s} D={r['D']:3d}  paper: {r['paper_independent']}  found (depends on the region): {spread}")
    summary = {kind: timing([r for r in arch_rows if r["kind"] == kind]) for kind in ("linear", "relu")
               if any(r["kind"] == kind for r in arch_rows)}
    for kind, t in summary.items():
        print(f"random {kind}: {sum(r['match'] for r in arch_rows if r['kind'] == kind)}/{t['architectures']} match; "
              f"median {t['median_s']:.3f} s, max {t['max_s']:.3f} s per architecture "
              f"(reference {REFERENCE_SECONDS[kind]:.0f} s)")
    results = {"paper_models": paper_rows, "region_models": region_rows, "architectures": arch_rows,
               "timing": summary, "reference_seconds": REFERENCE_SECONDS,
               "claim_counts_match_known": all(r["match"] for r in arch_rows),
               "claim_paper_lists_complete": {r["model"]: r["paper_complete"] for r in paper_rows}}
    payload = E.finish(args.out, NAME, settings, results, clock.seconds, plot(arch_rows, paper_rows), args.device)
    mismatches = [r for r in arch_rows if not r["match"]]
    if mismatches:
        print(f"error: {len(mismatches)} architectures disagree with the known count: "
              f"{[(r['kind'], r['widths'], r['known'], r['found']) for r in mismatches]}", file=sys.stderr)
        raise SystemExit(1)
    return payload



def claims(payload: dict) -> list[dict]:
    """Marcotte et al.: the count on random architectures, and the completeness of the paper's lists."""
    arch = payload["architectures"]
    complete = payload["claim_paper_lists_complete"]
    return [{"claim": "Marcotte et al.: D − dim Lie(W_φ) = known count, random nets",
             "criterion": "the count equals the known one on every random architecture",
             "holds": bool(payload["claim_counts_match_known"]),
             "measured": f"{sum(a['match'] for a in arch)}/{len(arch)} architectures"},
            {"claim": "The paper's laws are all the laws (generic θ)",
             "criterion": "laws found = the paper's independent laws, for every model",
             "holds": all(complete.values()), "measured": f"{sum(complete.values())}/{len(complete)} models"}]


if __name__ == "__main__":
    E.run_script(main)
