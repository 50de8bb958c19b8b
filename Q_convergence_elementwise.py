"""Fig. 6 — how fast gradient descent converges depends on the conserved quantity Q₀ (App. F.3).

Setting: the net and data of Fig. 3 (m=5, n=10, h=50, whitened input, Y ~ N(0, 1)), GD at
η = 1e-3 for 400 000 steps (800 000 for sigmoid), from U, V ~ N(0, s²) with s ∈ {0.01, 0.1, 1}:
the same draw scaled, so the three runs differ only in Q₀ (and in the initial loss).
Claim: the number of steps to reach the converged loss level depends on Q₀. Measured:
``steps_to_converge`` = first recorded step with |log L(t) − log L(T)| ≤ 1 % of |log L(0) − log L(T)|.
Runtime: about 1 min on a 2-core CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import symmetry as S
from symmetry import experiment as E
from symmetry import training as T

NAME = "Q_convergence_elementwise"


@dataclass
class Settings:
    m: int = 5  # outputs
    n: int = 10  # inputs (whitened)
    h: int = 50  # hidden width
    lr: float = 1e-3  # GD learning rate (App. F.3)
    init_stds: tuple = (0.01, 0.1, 1.0)  # three initial Q₀
    activations: tuple = S.PAPER_ACTIVATIONS
    steps: int = 400_000
    sigmoid_steps: int = 800_000
    record_every: int = 100  # loss recorded every k steps
    convergence_fraction: float = 0.01  # "converged": within 1 % of the total log-loss decrease
    dtype: str = "float32"
    seed: int = 0
    device: str = "cpu"


def quick(cfg: Settings) -> Settings:
    return Settings(lr=0.05, steps=400, sigmoid_steps=800, record_every=4, dtype=cfg.dtype, seed=cfg.seed,
                    device=cfg.device)


def steps_to_converge(steps: torch.Tensor, loss: torch.Tensor, fraction: float) -> int:
    """First recorded step whose log-loss is within ``fraction`` of the total decrease from its final value."""
    log = torch.log(loss)
    tolerance = fraction * abs(float(log[0] - log[-1]))
    close = (log - log[-1]).abs() <= tolerance
    # first step from which the curve stays converged
    later_bad = torch.flip(torch.cumsum(torch.flip((~close).int(), [0]), 0), [0])
    first = int(torch.nonzero(later_bad == 0)[0])
    return int(steps[first])


def run(cfg: Settings, out: str, resume: bool) -> list[dict]:
    groups = T.step_budgets(cfg.activations, cfg.steps, cfg.sigmoid_steps)
    rows = []
    configs = {steps: [(a, cfg.lr, s) for a in acts for s in cfg.init_stds] for steps, acts in groups.items()}
    # one batch for every budget: sigmoid's extra steps run on after the others stop
    results = E.cached(out, NAME, {"cfg": cfg}, lambda: {str(k): v for k, v in T.train_two_layer_budgets(
        cfg.m, cfg.n, cfg.h, configs, seed=cfg.seed, dtype=cfg.dtype, device=cfg.device,
        record_every=cfg.record_every, description="Fig. 6").items()}, resume)
    for steps, group in configs.items():
        res = results[str(steps)]
        for b, (a, _, s) in enumerate(group):
            loss = res["loss"][:, b]
            rows.append({"activation": a, "init_std": s, "Q0": float(res["Q"][0, b]),
                         "steps_to_converge": steps_to_converge(res["steps"], loss, cfg.convergence_fraction),
                         "initial_loss": float(loss[0]), "final_loss": float(loss[-1]),
                         "Q_drift": float((res["Q"][:, b] - res["Q"][0, b]).abs().max()),
                         "steps": res["steps"], "loss": loss})
    return rows


def plot(rows: list[dict], cfg: Settings):
    plt = E.pyplot()
    fig, axes = plt.subplots(1, len(cfg.activations), figsize=(3.6 * len(cfg.activations), 3.4))
    colors = dict(zip(cfg.init_stds, ["tab:blue", "tab:orange", "tab:green"]))
    for ax, a in zip(axes, cfg.activations):
        for r in (r for r in rows if r["activation"] == a):
            ax.semilogy(r["steps"], r["loss"], color=colors.get(r["init_std"]), lw=1.2,
                        label=f"Q₀ = {r['Q0']:.3g} (std {r['init_std']:g})")
            ax.axvline(r["steps_to_converge"], color=colors.get(r["init_std"]), ls=":", lw=0.8)
        ax.set(title=f"σ = {a}", xlabel="GD step")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("training loss (MSE)")
    fig.suptitle(f"Fig. 6: convergence depends on Q₀ (η = {cfg.lr:g}; dotted: steps to converge)", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv)
    with E.Stopwatch() as clock:
        rows = run(cfg, args.out, args.resume)
    fig = plot(rows, cfg)
    table = {}
    for r in rows:
        table.setdefault(r["activation"], []).append({k: v for k, v in r.items() if k not in ("steps", "loss", "activation")})
    depends = {a: len({r["steps_to_converge"] for r in runs}) > 1 for a, runs in table.items()}
    results = {"per_activation": table, "steps_to_converge_depends_on_Q0": depends,
               "convergence_definition": "first recorded step t after which |log L(t) - log L(T)| <= "
                                         f"{cfg.convergence_fraction:g} * |log L(0) - log L(T)|"}
    return E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)


if __name__ == "__main__":
    E.run_script(main)
