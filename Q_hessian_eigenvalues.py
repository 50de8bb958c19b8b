"""Fig. 9 — the Hessian eigenvalues at the minimum depend on the conserved quantity Q₀ (App. G.2).

Setting: F = Uσ(Vᵀ), whitened input, m=10, n=5, h=50 (750 parameters), U, V ~ N(0, s²) for
s ∈ {0.001, 0.3, 0.6, 0.9} (the same draw scaled: four Q₀), Y ~ N(0, 1); GD on the MSE at
η = 0.1 for 4000 steps (8000 for sigmoid), then the full 750×750 Hessian of ‖Y − Uσ(Vᵀ)‖²_F
(``torch.func``, float64) and all its eigenvalues.
Claims: about 700 of the 750 eigenvalues have |λ| ≤ 1e-3 (the flat directions of the minimum; at a
zero-loss minimum H = 2JᵀJ with J the mn × D Jacobian of F, so exactly D − mn = 700 vanish);
for the linear net the centre of the non-zero eigenvalues grows with Q₀; for nonlinear nets Q₀
and the spectrum are related less simply. Every (σ, Q₀) runs from 5 seeds (inits and Y); a run counts
as converged when its final MSE is ≤ 1e-6, and the unconverged ones run again for 4× the steps to show
whether the step budget is what stops them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import symmetry as S
from repro import experiment as E
from repro import training as T

NAME = "Q_hessian_eigenvalues"


@dataclass
class Settings:
    m: int = 10  # outputs
    n: int = 5  # inputs (whitened)
    h: int = 50  # hidden width: (m + n)·h = 750 parameters
    init_stds: tuple = (0.001, 0.3, 0.6, 0.9)  # four Q₀
    lr: float = 0.1  # GD learning rate
    activations: tuple = S.PAPER_ACTIVATIONS
    steps: int = 4000
    sigmoid_steps: int = 8000
    zero_threshold: float = 1e-3  # |λ| ≤ this counts as a flat direction
    bin_width: float = 4.0  # histogram bins of width 4 from 1e-3 to 401 (the paper's)
    seeds: int = 5  # seeds seed, seed + 1, … of the init and Y
    converged_loss: float = 1e-6  # final MSE at or below this: at a minimum
    extend_factor: int = 4  # unconverged runs train again for this many times the steps
    dtype: str = "float32"  # training precision; the Hessian is always float64
    seed: int = 0
    device: str = "cpu"


def quick(cfg: Settings) -> Settings:
    return Settings(m=4, n=3, h=6, steps=300, sigmoid_steps=600, seeds=2, dtype=cfg.dtype, seed=cfg.seed,
                    device=cfg.device)


def train_and_diagonalise(cfg: Settings, configs: list, steps: int, seed: int) -> dict:
    res = T.train_two_layer(cfg.m, cfg.n, cfg.h, configs, steps, seed=seed, dtype=cfg.dtype, device=cfg.device,
                            record_every=max(1, steps // 100), description=f"Fig. 9, seed {seed}, {steps} steps")
    eigenvalues = []
    for b, (a, _, _) in enumerate(configs):
        theta = tuple(p[b].double() for p in res["final_params"])
        loss = S.TwoLayerNet(a, reduction="sum").loss_function(None, res["Y"])
        eigenvalues.append(S.hessian_eigenvalues(loss, theta))
    last_tenth = res["loss"][-(len(res["loss"]) // 10 + 1)]
    return {"Q0": res["Q"][0], "final_loss": res["loss"][-1], "loss_at_90pct": last_tenth,
            "eigenvalues": torch.stack(eigenvalues)}


def summarize_run(cfg: Settings, eig: torch.Tensor, **info) -> dict:
    nonzero = eig[eig.abs() > cfg.zero_threshold]
    return {**info,
            # at a zero-loss minimum H = 2JᵀJ, J the (mn × D) Jacobian of F: rank ≤ mn
            "expected_near_zero_at_zero_loss": int(eig.numel()) - cfg.m * cfg.n,
            "n_near_zero": int((eig.abs() <= cfg.zero_threshold).sum()),
            "n_negative": int((eig < -cfg.zero_threshold).sum()),
            "median_nonzero": float(nonzero.median()) if len(nonzero) else None,
            "max": float(eig.max()), "n_parameters": int(eig.numel())}


def run(cfg: Settings, out: str, resume: bool) -> list[dict]:
    groups = T.step_budgets(cfg.activations, cfg.steps, cfg.sigmoid_steps)
    rows = []
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        for steps, acts in groups.items():
            configs = [(a, cfg.lr, s) for a in acts for s in cfg.init_stds]
            res = E.cached(out, NAME, {"cfg": cfg, "activations": acts, "steps": steps, "seed": seed},
                           lambda: train_and_diagonalise(cfg, configs, steps, seed), resume)
            for b, (a, _, s) in enumerate(configs):
                final = float(res["final_loss"][b])
                row = summarize_run(cfg, res["eigenvalues"][b], activation=a, init_std=s, seed=seed,
                                    Q0=float(res["Q0"][b]), final_loss=final,
                                    loss_still_falling=float(res["loss_at_90pct"][b]) > 2 * final,
                                    converged=final <= cfg.converged_loss)
                row["eigenvalues"] = res["eigenvalues"][b]
                rows.append(row)
    # the unconverged runs again with more steps: is the step budget what stops them?
    for r in [r for r in rows if not r["converged"]]:
        steps = cfg.extend_factor * (cfg.sigmoid_steps if r["activation"] == "sigmoid" else cfg.steps)
        config = [(r["activation"], cfg.lr, r["init_std"])]
        res = E.cached(out, NAME, {"cfg": cfg, "extended": config, "steps": steps, "seed": r["seed"]},
                       lambda: train_and_diagonalise(cfg, config, steps, r["seed"]), resume)
        r["extended"] = summarize_run(cfg, res["eigenvalues"][0], steps=steps, final_loss=float(res["final_loss"][0]),
                                      converged=float(res["final_loss"][0]) <= cfg.converged_loss)
    return rows


def plot(rows: list[dict], cfg: Settings):
    plt = E.pyplot()
    fig, axes = plt.subplots(1, len(cfg.activations), figsize=(3.6 * len(cfg.activations), 3.4))
    bins = torch.arange(cfg.zero_threshold, 401 + cfg.bin_width, cfg.bin_width)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for ax, a in zip(axes, cfg.activations):
        for r, c in zip((r for r in rows if r["activation"] == a), colors):
            # an unconverged run is not at a minimum: dashed, and its final loss in the legend
            late = "" if r["converged"] else f", not converged: MSE {r['final_loss']:.1e}"
            ax.hist(r["eigenvalues"].numpy(), bins=bins.numpy(), histtype="step", color=c, lw=1.2,
                    ls="-" if r["converged"] else "--", label=f"Q₀ = {r['Q0']:.3g} ({r['n_near_zero']} near 0{late})")
        ax.set(title=f"σ = {a}", xlabel="Hessian eigenvalue", yscale="log")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("count (|λ| > 1e-3, bins of 4)")
    fig.suptitle("Fig. 9: Hessian eigenvalues at the trained minimum vs Q₀", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv)
    with E.torch_threads(args.threads), E.Stopwatch() as clock:
        rows = run(cfg, args.out, args.resume)
    fig = plot([r for r in rows if r["seed"] == cfg.seed], cfg)
    table, per_config = {}, {}
    for r in rows:
        table.setdefault(r["activation"], []).append({k: v for k, v in r.items() if k not in ("eigenvalues", "activation")})
        c = per_config.setdefault(f"{r['activation']}, std={r['init_std']:g}", {"seeds": 0, "exactly_D_minus_mn": 0,
                                                                              "not_converged_seeds": []})
        c["seeds"] += 1
        c["exactly_D_minus_mn"] += r["n_near_zero"] == r["expected_near_zero_at_zero_loss"]
        if not r["converged"]:
            c["not_converged_seeds"].append(r["seed"])
            c.setdefault("not_converged", []).append({
                "seed": r["seed"], "final_loss": r["final_loss"], "loss_still_falling": r["loss_still_falling"],
                f"converged_with_{cfg.extend_factor}x_steps": r["extended"]["converged"],
                f"final_loss_with_{cfg.extend_factor}x_steps": r["extended"]["final_loss"],
                f"n_near_zero_with_{cfg.extend_factor}x_steps": r["extended"]["n_near_zero"]})
    grows = {}
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        linear = sorted((r for r in rows if r["activation"] == "identity" and r["seed"] == seed), key=lambda r: r["Q0"])
        medians = [r["median_nonzero"] for r in linear if r["median_nonzero"] is not None]
        grows[str(seed)] = len(medians) > 1 and all(x < y for x, y in zip(medians, medians[1:]))
    converged = [r for r in rows if r["converged"]]
    results = {"per_activation": table, "per_config": per_config,
               "linear_median_nonzero_grows_with_Q0": grows,
               "min_n_near_zero": min(r["n_near_zero"] for r in rows),
               "runs": len(rows), "runs_converged": len(converged),
               "runs_with_D_minus_mn_near_zero": sum(r["n_near_zero"] == r["expected_near_zero_at_zero_loss"] for r in rows),
               "converged_runs_with_D_minus_mn_near_zero": sum(
                   r["n_near_zero"] == r["expected_near_zero_at_zero_loss"] for r in converged),
               "unconverged_after_extension": sum(1 for r in rows if "extended" in r and not r["extended"]["converged"]),
               "convergence_definition": f"final MSE <= {cfg.converged_loss:g}; loss_still_falling: the MSE at 90 % of "
                                         "the steps is more than twice the final one; unconverged runs are trained again "
                                         f"for {cfg.extend_factor}x the steps ('extended')"}
    return E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)


def claims(payload: dict) -> list[dict]:
    """Convergence of every run, the D − mn flat directions at the converged ones, and the linear net's order."""
    cfg = payload["settings"]
    runs = [r for rs in payload["per_activation"].values() for r in rs]
    D, zero = runs[0]["n_parameters"], runs[0]["expected_near_zero_at_zero_loss"]
    bad = [f"{a} std {r['init_std']:g} seed {r['seed']}" for a, rs in payload["per_activation"].items()
           for r in rs if not r["converged"]]
    grows = payload["linear_median_nonzero_grows_with_Q0"]
    return [{"claim": f"Fig. 9: every run reaches a minimum in {cfg['steps']}/{cfg['sigmoid_steps']} steps",
             "criterion": f"final MSE ≤ {cfg['converged_loss']:g} for every (σ, Q₀, seed)",
             "holds": not bad,
             "measured": f"{payload['runs_converged']}/{payload['runs']} runs" + (f"; not: {', '.join(bad)}" if bad else "")},
            {"claim": f"Fig. 9: {zero} of {D} Hessian eigenvalues |λ| ≤ {cfg['zero_threshold']:g} (D − mn) at the minima",
             "criterion": "exactly D − mn near-zero eigenvalues at every converged run",
             "holds": payload["converged_runs_with_D_minus_mn_near_zero"] == payload["runs_converged"],
             "measured": f"{payload['converged_runs_with_D_minus_mn_near_zero']}/{payload['runs_converged']} converged runs "
                         f"(all runs: {payload['runs_with_D_minus_mn_near_zero']}/{payload['runs']}; min {payload['min_n_near_zero']})"},
            {"claim": "Fig. 9: linear net, centre of non-zero eigenvalues grows with Q₀",
             "criterion": "median non-zero eigenvalue increases strictly with Q₀, for every seed",
             "holds": all(grows.values()), "measured": f"{sum(grows.values())}/{len(grows)} seeds"}]


if __name__ == "__main__":
    E.run_script(main)
