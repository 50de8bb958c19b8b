"""Fig. 3 — Q is almost conserved under gradient descent (App. D.2).

Setting: F = Uσ(Vᵀ) on whitened input, m=5, n=10, h=50, U, V ~ N(0, 0.1²), Y ~ N(0, 1);
full-batch GD on the mean squared error at η ∈ {0.1, 0.01, 0.001} for 400 000 steps
(800 000 for sigmoid), all 12 configurations of a precision stepped together in one tensor.
Claims: ΔQ̃ = Q̃(t) − Q̃(0) (Q̃ = |Q| over its two terms at init) is small; it grows with η
(Prop. 13: O(η²) per step); it stops changing once the loss has converged. The run is made
in float32 (the paper's precision) and float64: where they disagree, float32 measures its own
round-off, not the step size. Q̃ is evaluated in float64 and recorded every 100 steps.
Q̃'s normaliser is the authors' (their code writes tanh's term as Σcosh²V and sigmoid's as Σ(V + eⱽ),
so both terms carry a constant n·h and Q̃ ≈ 1 there); the JSON also holds ours (A(0) = 0) as
``max_abs_dQ_tilde_ours``. ΔQ is the same in both; only the scale of ΔQ̃ differs (tanh, sigmoid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import symmetry as S
from repro import experiment as E
from repro import training as T
from symmetry.validation import check_choice

NAME = "Q_dynamics_elementwise"


@dataclass
class Settings:
    m: int = 5  # outputs
    n: int = 10  # inputs (whitened, X = I_n)
    h: int = 50  # hidden width
    init_std: float = 0.1  # U, V ~ N(0, init_std²)
    lrs: tuple = (0.1, 0.01, 0.001)  # GD learning rates
    activations: tuple = S.PAPER_ACTIVATIONS
    steps: int = 400_000  # GD steps (the paper's)
    sigmoid_steps: int = 800_000  # sigmoid converges slower
    record_every: int = 100  # Q̃ and loss recorded every k steps (max |ΔQ̃| is over recorded steps)
    dtypes: tuple = ("float32", "float64")  # the paper trains in float32; float64 separates round-off
    convergence_level: float = 1e-2  # "converged": ‖Y − F‖_F at or below this (Fig. 6's level, the paper's axis)
    still_fraction: float = 0.1  # "Q stops moving": it moves by at most this fraction of max |ΔQ̃| after convergence
    seed: int = 0
    device: str = "cpu"


def quick(cfg: Settings) -> Settings:
    return Settings(steps=400, sigmoid_steps=800, record_every=10, convergence_level=1.0, seed=cfg.seed,
                    device=cfg.device)


def initial_params(cfg: Settings, init_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 init every configuration starts from (T.train_two_layer: one N(0, 1) draw × init_std)."""
    U0, V0 = S.gaussian_init(cfg.m, cfg.h, cfg.n, std=1.0, seed=cfg.seed, dtype=torch.float64)
    return init_std * U0, init_std * V0


#: reproduce.py may train the two precisions in separate worker processes (run_part), main then reads them
PARTS = ("float32", "float64")


def _configs(cfg: Settings) -> dict[int, list[tuple[str, float, float]]]:
    groups = T.step_budgets(cfg.activations, cfg.steps, cfg.sigmoid_steps)
    return {steps: [(a, lr, cfg.init_std) for a in acts for lr in cfg.lrs] for steps, acts in groups.items()}


def train(cfg: Settings, dtype: str, out: str, resume: bool) -> dict:
    """Every configuration in one precision, cached: {step budget: training record}."""
    # one batch for every budget: sigmoid's extra steps run on after the others stop
    return E.cached(out, NAME, {"cfg": cfg, "dtype": dtype}, lambda: {
        str(k): v for k, v in T.train_two_layer_budgets(
            cfg.m, cfg.n, cfg.h, _configs(cfg), seed=cfg.seed, dtype=dtype, device=cfg.device,
            record_every=cfg.record_every, description=f"Fig. 3 {dtype}").items()}, resume)


def run_part(part: str, argv: list[str] | None = None) -> None:
    """One precision (a name in PARTS) trained and cached, nothing written: reproduce.py's worker job."""
    check_choice("part", part, PARTS)
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv, dtype=False)
    if part in cfg.dtypes:
        with E.torch_threads(args.threads):
            train(cfg, part, args.out, args.resume)


def run(cfg: Settings, out: str, resume: bool) -> dict:
    """{(activation, lr, dtype): {"steps", "loss", "dQ_tilde", "dQ_tilde_ours"}} for every configuration."""
    curves = {}
    configs = _configs(cfg)
    init = initial_params(cfg, cfg.init_std)
    for dtype in cfg.dtypes:
        results = train(cfg, dtype, out, resume)
        for steps, group in configs.items():
            res = results[str(steps)]
            for b, (a, lr, _) in enumerate(group):
                Q = res["Q"][:, b]
                shift, denominator = S.Q_normalizer(init, a, "authors")
                Qt_authors = (Q - shift).abs() / float(denominator)
                Qt = res["Q_tilde"][:, b]
                curves[(a, lr, dtype)] = {"steps": res["steps"], "loss": res["loss"][:, b],
                                          "dQ_tilde": Qt_authors - Qt_authors[0], "dQ_tilde_ours": Qt - Qt[0]}
    return curves


def after_convergence(c: dict, cfg: Settings) -> dict:
    """Where a run's ‖Y − F‖_F first reaches ``cfg.convergence_level`` and how far ΔQ̃ moves after it."""
    error = torch.sqrt(c["loss"] * cfg.m * cfg.n)
    reached = torch.nonzero(error <= cfg.convergence_level)
    if not len(reached):
        return {"converged_step": None, "dQ_tilde_at_convergence": None, "max_abs_move_after_convergence": None}
    k = int(reached[0, 0])
    return {"converged_step": int(c["steps"][k]), "dQ_tilde_at_convergence": float(c["dQ_tilde"][k]),
            "max_abs_move_after_convergence": float((c["dQ_tilde"][k:] - c["dQ_tilde"][k]).abs().max())}


def summarize(curves: dict, cfg: Settings) -> dict:
    table = {}
    for (a, lr, dtype), c in curves.items():
        table.setdefault(a, {}).setdefault(f"lr={lr:g}", {})[dtype] = {
            "max_abs_dQ_tilde": float(c["dQ_tilde"].abs().max()),  # the authors' normaliser (plotted)
            "max_abs_dQ_tilde_ours": float(c["dQ_tilde_ours"].abs().max()),  # A(0) = 0
            "final_loss": float(c["loss"][-1]),
            "final_frobenius_error": math.sqrt(float(c["loss"][-1]) * cfg.m * cfg.n),
            "steps": int(c["steps"][-1]),
            "dQ_tilde_final": float(c["dQ_tilde"][-1]),
            **after_convergence(c, cfg),  # authors' normaliser, as plotted
        }
    grows, roundoff = {}, {}
    for a, by_lr in table.items():
        for dtype in cfg.dtypes:
            drifts = [by_lr[f"lr={lr:g}"][dtype]["max_abs_dQ_tilde"] for lr in sorted(cfg.lrs)]
            grows.setdefault(a, {})[dtype] = all(x < y for x, y in zip(drifts, drifts[1:]))
        if {"float32", "float64"} <= set(cfg.dtypes):
            for lr in cfg.lrs:
                d32, d64 = (by_lr[f"lr={lr:g}"][d]["max_abs_dQ_tilde"] for d in ("float32", "float64"))
                # float32 measures round-off when it disagrees with float64 by more than half
                roundoff.setdefault(a, {})[f"lr={lr:g}"] = abs(d32 - d64) > 0.5 * d64
    return {"per_activation": table, "dQ_grows_with_lr": grows, "float32_dominated_by_roundoff": roundoff,
            "Q_tilde_definition": "max_abs_dQ_tilde: |Q - c*n*h| / (|1/2 Tr U0'U0| + |sum A(V0) + c*n*h|) with the "
                                  "authors' constants c = 1/2 (tanh: their sum cosh^2 V), 1 (sigmoid: their sum V + e^V), "
                                  "0 (identity, ReLU); max_abs_dQ_tilde_ours: c = 0 (A(0) = 0). Q is the same; "
                                  "the constant makes Q-tilde about 1 for tanh and sigmoid and their dQ-tilde smaller",
            "loss_axis": "bottom panels ||Y - F||_F (the paper's); final_loss is the MSE",
            "convergence_definition": f"converged_step: first recorded step with ||Y - F||_F <= {cfg.convergence_level:g} "
                                      "(null if never reached); max_abs_move_after_convergence: max over later recorded "
                                      "steps of |dQ_tilde(t) - dQ_tilde(converged_step)| (authors' normaliser)"}


def claims(payload: dict) -> list[dict]:
    """Fig. 3's rows: ΔQ̃ small (authors' normaliser); per precision, ΔQ̃ largest at the largest η (the
    paper's words), increasing strictly with η (stricter), and still once the loss has converged."""
    pa, settings = payload["per_activation"], payload["settings"]
    worst = max(v[d]["max_abs_dQ_tilde"] for by_lr in pa.values() for v in by_lr.values() for d in v)
    worst_ours = max(v[d]["max_abs_dQ_tilde_ours"] for by_lr in pa.values() for v in by_lr.values() for d in v)
    rows = [{"claim": "Fig. 3: ΔQ̃ small relative to Q's terms",
             "criterion": "max |ΔQ̃| < 0.01 over every σ, η and precision (authors' normaliser)",
             "holds": worst < 0.01, "measured": f"max |ΔQ̃| = {worst:.2g} (ours, A(0) = 0: {worst_ours:.2g})"}]
    lrs = sorted(settings["lrs"])
    for d in settings["dtypes"]:
        drift = {a: [by_lr[f"lr={lr:g}"][d]["max_abs_dQ_tilde"] for lr in lrs] for a, by_lr in pa.items()}
        largest = [a for a, x in drift.items() if all(x[-1] > y for y in x[:-1])]
        at_top = ", ".join(f"{a} {x[-1]:.3g}" for a, x in drift.items())
        rows.append({"claim": f"Fig. 3: ΔQ̃ largest at the largest η ({d})",
                     "criterion": f"the paper's words (\"larger with the largest learning rate\"): for every σ, max |ΔQ̃| "
                                  f"at η = {lrs[-1]:g} exceeds it at every smaller η; looser than the strict row",
                     "holds": len(largest) == len(drift),
                     "measured": f"{len(largest)}/{len(drift)} activations; at η = {lrs[-1]:g}: {at_top}"})
        grows = [a for a, g in payload["dQ_grows_with_lr"].items() if g.get(d)]
        failing = "; ".join(f"{a} " + " → ".join(f"{y:.3g}" for y in x) for a, x in drift.items() if a not in grows)
        rows.append({"claim": f"Fig. 3: ΔQ̃ increases strictly with η ({d})",
                     "criterion": "stricter than the paper (which says only that it is largest at the largest η): max |ΔQ̃| "
                                  "increases strictly from η = " + " to ".join(f"{lr:g}" for lr in lrs) + ", for every σ",
                     "holds": len(grows) == len(pa),
                     "measured": f"{len(grows)}/{len(pa)} activations" + (f"; not: {failing}" if failing else "")})
    level, fraction = settings["convergence_level"], settings["still_fraction"]
    for d in settings["dtypes"]:
        runs = [(a, lr, v[d]) for a, by_lr in pa.items() for lr, v in by_lr.items()]
        tested = [(a, lr, x) for a, lr, x in runs if x["converged_step"] is not None]
        moving = [(a, lr, x) for a, lr, x in tested
                  if x["max_abs_move_after_convergence"] > fraction * x["max_abs_dQ_tilde"]]
        # the runs that move most after convergence (relative to their max |ΔQ̃|), at most three named
        ranked = sorted(moving or tested, key=lambda r: -r[2]["max_abs_move_after_convergence"]
                        / max(r[2]["max_abs_dQ_tilde"], 1e-300))
        detail = "; ".join(f"{a} {lr}: ΔQ̃ {x['dQ_tilde_at_convergence']:.2g} at step {x['converged_step']} → "
                           f"{x['dQ_tilde_final']:.2g} at {x['steps']} (moved {x['max_abs_move_after_convergence']:.2g}, "
                           f"max |ΔQ̃| {x['max_abs_dQ_tilde']:.2g})" for a, lr, x in ranked[:3 if moving else 1])
        detail += f"; {len(moving) - 3} more moving" if len(moving) > 3 else ""
        rows.append({"claim": f"Fig. 3: Q stops moving once the loss has converged ({d})",
                     "criterion": f"in every run that reaches ‖Y − F‖_F ≤ {level:g}, ΔQ̃ moves after that step by at most "
                                  f"{fraction:g} × its max |ΔQ̃| (authors' normaliser); runs never reaching it are not tested",
                     "holds": bool(tested) and not moving,
                     "measured": f"{len(tested) - len(moving)}/{len(tested)} converged runs still "
                                 f"({len(runs) - len(tested)} never converged)" + (f"; {'moving' if moving else 'largest'}: "
                                                                                   f"{detail}" if detail else "")})
    return rows


def _until_floor(error: torch.Tensor, reference: torch.Tensor | None = None) -> int:
    """How many records of ``error`` the bottom panels draw: given the float64 ``reference``, up to where it first
    departs from it by more than 2× (float32's own round-off from there on); else, for a run that fell by over three
    decades, up to where it first comes within 1.5× of its minimum (its round-off floor); else every record."""
    if reference is not None:
        apart = torch.nonzero(error > 2 * reference[: len(error)])
        if len(apart):
            return int(apart[0, 0]) + 1
    if error.min() < 1e-3 * error[0]:
        return int(torch.nonzero(error <= 1.5 * error.min())[0, 0]) + 1
    return len(error)


def plot(curves: dict, cfg: Settings):
    """Top: ΔQ̃ on log steps (η = 0.1 drifts within its first few hundred steps); bottom: the error down to where
    round-off takes over (float64 to its floor, float32 until it leaves float64), not the floors themselves."""
    plt = E.pyplot()
    acts = list(cfg.activations)
    fig, axes = plt.subplots(2, len(acts), figsize=(3.8 * len(acts), 6.2), sharex="col")
    colors = dict(zip(cfg.lrs, ["tab:red", "tab:green", "tab:blue"]))
    styles = {"float32": "-", "float64": ":"}
    for j, a in enumerate(acts):
        for lr in cfg.lrs:
            for dtype in cfg.dtypes:
                c = curves.get((a, lr, dtype))
                if c is None:
                    continue
                later = c["steps"] > 0  # log step axis: step 0 (ΔQ̃ = 0 by definition) has no place on it
                label = f"η={lr:g}" + ("" if dtype == "float32" else " (float64)")
                axes[0, j].plot(c["steps"][later], c["dQ_tilde"][later], styles.get(dtype, "-"), color=colors.get(lr),
                                lw=1, label=label)
                done = after_convergence(c, cfg)
                if done["converged_step"] is not None:  # where the loss reaches the convergence level
                    axes[0, j].plot(done["converged_step"], done["dQ_tilde_at_convergence"], "o" if dtype == "float32"
                                    else "s", mfc="none", color=colors.get(lr), ms=4)
            # the error: float64 down to its round-off floor; float32 until it leaves float64 (×), not its floor
            error = {d: torch.sqrt(curves[(a, lr, d)]["loss"] * cfg.m * cfg.n) for d in cfg.dtypes
                     if (a, lr, d) in curves}
            steps = {d: curves[(a, lr, d)]["steps"] for d in error}
            for dtype, e in error.items():
                reference = error.get("float64") if dtype == "float32" else None
                n = _until_floor(e, reference)
                x, y = steps[dtype][:n], e[:n]
                later = x > 0
                axes[1, j].semilogy(x[later], y[later], "-" if dtype == "float64" else "--", color=colors.get(lr), lw=1,
                                    label=f"η={lr:g}" + ("" if dtype == "float64" else " (float32)"))
                if reference is not None and n < len(e):
                    axes[1, j].plot(x[-1], y[-1], "x", color=colors.get(lr), ms=6)
        axes[0, j].set_title(f"σ = {a}")
        axes[0, j].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        axes[0, j].axhline(0, color="grey", lw=0.5)
        axes[1, j].axhline(cfg.convergence_level, color="grey", lw=0.6, ls=":")
        axes[1, j].set_xscale("log")
        axes[1, j].set_xlabel("GD step (log)")
    axes[0, 0].set_ylabel("ΔQ̃(t) = Q̃(t) − Q̃(0)\n(authors' normaliser)")
    axes[1, 0].set_ylabel("‖Y − Uσ(Vᵀ)‖_F\n(until round-off takes over)")
    axes[0, 0].legend(fontsize=6)
    axes[1, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle("Fig. 3: Q under gradient descent. Top: ΔQ̃, solid float32 (the paper's), dotted float64; ○ float32 / "
                 f"□ float64: first step with ‖Y − F‖_F ≤ {cfg.convergence_level:g} (grey dotted line below).\n"
                 "Bottom: the error in float64 (solid) down to its round-off floor, and in float32 (dashed) until it "
                 "leaves float64 by 2× (×): float32 stalls there at its own round-off, which is not the dynamics",
                 fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv, dtype=False)  # runs both precisions
    with E.torch_threads(args.threads), E.Stopwatch() as clock:
        curves = run(cfg, args.out, args.resume)
    fig = plot(curves, cfg)
    results = summarize(curves, cfg)
    return E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)


if __name__ == "__main__":
    E.run_script(main)
