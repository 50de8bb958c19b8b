"""Regenerate every figure but the CIFAR-10 notebooks (Figs. 3–9, App. G.1, the two related papers) and print the claims with the measured numbers.

First a 6-second check that every figure's Q axis rests on: on the net of Fig. 3, Q of Eq. 48
stays constant under gradient flow (adaptive ODE solver) and drifts under gradient descent by an
amount proportional to the step size. Then each figure script runs at the paper's settings and
writes figures/NAME.{pdf,png,json}; the table at the end collects each script's claims(payload):
the claim, whether it holds, what was measured, and the criterion it was held to.
Then the two related papers: Gluch & Urbanke (noether_dynamics) and Marcotte et al. (conservation_laws).
Runtime: about 6 min on a 2-core CPU (--quick: about a minute).
Usage: python reproduce.py [--device cpu|cuda] [--seed 0] [--out figures] [--quick] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import symmetry as S
from symmetry import experiment as E

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
        flow = S.gradient_flow(net, params, None, Y, torch.linspace(0, horizon, 21), observables=observe)
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
    """The two rows of the 6-second check above: Q conserved under GF, drifting under GD ∝ η."""
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


def collect_claims(name: str, payload: dict) -> list[dict]:
    """The claim rows a figure script owns (its module-level ``claims(payload)``), checked for shape."""
    rows = importlib.import_module(name).claims(payload)
    for row in rows:
        if set(row) != set(CLAIM_KEYS) or not isinstance(row["holds"], bool):
            raise ValueError(f"{name}.claims returned a row without exactly the keys {CLAIM_KEYS} "
                             f"(holds a bool): {row}")
    return rows


def print_claims(table: list[dict]) -> None:
    """One line per claim: the claim, yes/NO, what was measured, and the criterion it was held to."""
    width = max(len(r["claim"]) for r in table)
    measured = max(len(r["measured"]) for r in table)
    print(f"\n{'claim':<{width}}  {'holds':<5}  {'measured':<{measured}}  criterion")
    for r in table:
        print(f"{r['claim']:<{width}}  {'yes' if r['holds'] else 'NO':<5}  {r['measured']:<{measured}}  {r['criterion']}")
    print(f"{sum(r['holds'] for r in table)}/{len(table)} claims hold")


FIGURES = ("Q_dynamics_elementwise", "Q_distribution", "Q_convergence_elementwise", "Q_convergence_radial",
           "Q_sharpness_1d", "Q_hessian_eigenvalues", "noether_dynamics", "conservation_laws")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    parser.add_argument("--seed", type=E.seed_argument, default=0, help="seed of the inits and the targets Y")
    parser.add_argument("--out", default=None, help=f"directory for the figures and their JSON (default: "
                                                    f"{E.DEFAULT_OUT}, or {E.QUICK_OUT} with --quick)")
    parser.add_argument("--quick", action="store_true", help="every figure in its --quick form")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="recompute every figure even if finished runs are cached under OUT/.cache")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--only", nargs="*", choices=FIGURES, default=list(FIGURES), help="figures to regenerate")
    parser.add_argument("--steps", type=int, default=Settings.steps, help="GD steps of the conservation check")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be a positive integer")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.out is None:  # --quick never writes over the full-setting figures the README shows
        args.out = E.QUICK_OUT if args.quick else E.DEFAULT_OUT
    E.check_output_location(args.out, tuple(args.only) + ("noether_dynamics_rotation",))  # before any computation
    cfg = Settings(seed=args.seed, device=args.device, steps=args.steps)
    rows = run(cfg)

    lr_keys = [f"gd_drift_lr{lr:g}" for lr in cfg.lrs]
    print(f"\nQ of Eq. 48 on the Fig. 3 net (m={cfg.m}, n={cfg.n}, h={cfg.h}), time {cfg.steps * max(cfg.lrs):g} "
          f"(= {cfg.steps} GD steps at lr {max(cfg.lrs):g}); drift = max |ΔQ̃|")
    header = f"{'activation':<10} {'Q(0)':>9} {'loss':>17} {'GF drift':>9} " + " ".join(
        f"{'GD lr=' + k.removeprefix('gd_drift_lr'):>11}" for k in lr_keys)
    print(header)
    for r in rows:
        print(f"{r['activation']:<10} {r['Q0']:>9.4f} {r['loss_start']:>8.4f}→{r['loss_end']:<8.4f} {r['gf_drift']:>9.1e} "
              + " ".join(f"{r[k]:>11.1e}" for k in lr_keys))

    table = conservation_claims(rows, cfg)
    common = (["--device", args.device, "--seed", str(args.seed), "--out", args.out] + (["--quick"] if args.quick else [])
              + ([] if args.resume else ["--no-resume"]))
    for name in args.only:
        started = time.perf_counter()
        payload = importlib.import_module(name).main(common)
        print(f"{name}: {time.perf_counter() - started:.0f} s -> {args.out}/{name}.{{pdf,png,json}}", flush=True)
        table += collect_claims(name, payload)

    from symmetry.experiment import environment, peak_memory_mb, write_json

    print(f"peak memory of this process: {peak_memory_mb():.0f} MB")
    if args.quick:  # quick settings are a first look, not the paper's: their claims are not the README's
        print(f"\nQUICK MODE (--quick: small settings, not the paper's; figures in {args.out}): claims below are "
              f"quick-mode numbers, not the README's")
    print_claims(table)
    # the conservation check's numbers and the table, beside the figures they were read from
    write_json(f"{args.out}/claims.json", {"settings": cfg, "figures": args.only, "quick": args.quick,
                                           "conservation_check": rows, "claims": table,
                                           "environment": environment(args.device)})
    # a claim that does not hold is a result, reported above and in the README, not a failure of the run
    return 0


if __name__ == "__main__":
    E.run_script(main)  # expected failures end with one line (--debug: the traceback)
