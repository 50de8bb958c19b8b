"""Fig. 9 — the Hessian eigenvalues at the minimum depend on the conserved quantity Q₀ (App. G.2).

Setting: F = Uσ(Vᵀ), whitened input, m=10, n=5, h=50 (750 parameters), U, V ~ N(0, s²) for
s ∈ {0.001, 0.3, 0.6, 0.9} (the same draw scaled: four Q₀), Y ~ N(0, 1); GD on the MSE at
η = 0.1 for 4000 steps (8000 for sigmoid), then the full 750×750 Hessian of ‖Y − Uσ(Vᵀ)‖²_F
(``torch.func``, float64) and all its eigenvalues.
Claims: about 700 of the 750 eigenvalues have |λ| ≤ 1e-3 (the flat directions of the minimum; at a
zero-loss minimum H = 2JᵀJ with J the mn × D Jacobian of F, so exactly D − mn = 700 vanish);
for the linear net the centre of the non-zero eigenvalues grows with Q₀; for nonlinear nets Q₀
and the spectrum are related less simply.
Runtime: about 5 s on a 2-core CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import symmetry as S
from symmetry import experiment as E
from symmetry import training as T

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
    dtype: str = "float32"  # training precision; the Hessian is always float64
    seed: int = 0
    device: str = "cpu"


def quick(cfg: Settings) -> Settings:
    return Settings(m=4, n=3, h=6, steps=300, sigmoid_steps=600, dtype=cfg.dtype, seed=cfg.seed, device=cfg.device)


def run(cfg: Settings, out: str, resume: bool) -> list[dict]:
    groups = T.step_budgets(cfg.activations, cfg.steps, cfg.sigmoid_steps)
    rows = []
    for steps, acts in groups.items():
        configs = [(a, cfg.lr, s) for a in acts for s in cfg.init_stds]

        def compute():
            res = T.train_two_layer(cfg.m, cfg.n, cfg.h, configs, steps, seed=cfg.seed, dtype=cfg.dtype,
                                    device=cfg.device, record_every=max(1, steps // 100),
                                    description=f"Fig. 9, {steps} steps")
            eigenvalues = []
            for b, (a, _, _) in enumerate(configs):
                theta = tuple(p[b].double() for p in res["final_params"])
                loss = S.TwoLayerNet(a, reduction="sum").loss_function(None, res["Y"])
                eigenvalues.append(S.hessian_eigenvalues(loss, theta))
            return {"Q0": res["Q"][0], "final_loss": res["loss"][-1], "eigenvalues": torch.stack(eigenvalues)}

        res = E.cached(out, NAME, {"cfg": cfg, "activations": acts, "steps": steps}, compute, resume)
        for b, (a, _, s) in enumerate(configs):
            eig = res["eigenvalues"][b]
            nonzero = eig[eig.abs() > cfg.zero_threshold]
            rows.append({"activation": a, "init_std": s, "Q0": float(res["Q0"][b]),
                         # at a zero-loss minimum H = 2JᵀJ, J the (mn × D) Jacobian of F: rank ≤ mn
                         "expected_near_zero_at_zero_loss": int(eig.numel()) - cfg.m * cfg.n,
                         "final_loss": float(res["final_loss"][b]),
                         "n_near_zero": int((eig.abs() <= cfg.zero_threshold).sum()),
                         "n_negative": int((eig < -cfg.zero_threshold).sum()),
                         "median_nonzero": float(nonzero.median()) if len(nonzero) else None,
                         "max": float(eig.max()), "n_parameters": int(eig.numel()), "eigenvalues": eig})
    return rows


def plot(rows: list[dict], cfg: Settings):
    plt = E.pyplot()
    fig, axes = plt.subplots(1, len(cfg.activations), figsize=(3.6 * len(cfg.activations), 3.4))
    bins = torch.arange(cfg.zero_threshold, 401 + cfg.bin_width, cfg.bin_width)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for ax, a in zip(axes, cfg.activations):
        for r, c in zip((r for r in rows if r["activation"] == a), colors):
            ax.hist(r["eigenvalues"].numpy(), bins=bins.numpy(), histtype="step", color=c, lw=1.2,
                    label=f"Q₀ = {r['Q0']:.3g} ({r['n_near_zero']} near 0)")
        ax.set(title=f"σ = {a}", xlabel="Hessian eigenvalue", yscale="log")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("count (|λ| > 1e-3, bins of 4)")
    fig.suptitle("Fig. 9: Hessian eigenvalues at the trained minimum vs Q₀", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv)
    with E.Stopwatch() as clock:
        rows = run(cfg, args.out, args.resume)
    fig = plot(rows, cfg)
    table = {}
    for r in rows:
        table.setdefault(r["activation"], []).append({k: v for k, v in r.items() if k not in ("eigenvalues", "activation")})
    linear = sorted(table.get("identity", []), key=lambda r: r["Q0"])
    medians = [r["median_nonzero"] for r in linear if r["median_nonzero"] is not None]
    results = {"per_activation": table,
               "linear_median_nonzero_grows_with_Q0": len(medians) > 1 and all(x < y for x, y in zip(medians, medians[1:])),
               "min_n_near_zero": min(r["n_near_zero"] for r in rows),
               "runs_with_D_minus_mn_near_zero": sum(r["n_near_zero"] == r["expected_near_zero_at_zero_loss"] for r in rows),
               "runs": len(rows)}
    return E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)


if __name__ == "__main__":
    E.run_script(main)
