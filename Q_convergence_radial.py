"""Fig. 7 — radial rescaling nets: a smaller conserved quantity converges faster (App. F.2, Prop. 14–16).

Setting: F = U g(Vᵀ), g(W)_i = W_i/‖W_i‖² on each row of Vᵀ, m=5, n=10, h=5, Y ~ N(0, 1).
Spectral init (Prop. 14): Y = ΦΣΨᵀ, U = ΦŪ, V = ΨV̄, diagonal entries of Ū, V̄ ~ N(μ, μ²) for
μ ∈ {0.01, 0.1, 1, 10}. GD on the MSE at η = 1e-5 for 1 000 000 steps, the four runs batched.
Claim (Prop. 15/16): |σᵢˣ − σᵢʸ| ≤ |σᵢˣ(0) − σᵢʸ| e^{−t/λᵢ} with λᵢ = ūᵢ² + v̄ᵢ² conserved, so a
smaller Q₀ = Tr[UᵀU] + Tr[VᵀV] = Σλᵢ converges faster. GD on the mean over the m·n entries at
rate η is GD on ½‖Y − F‖² at rate 2η/(mn): flow time t = step · 2η/(mn) in the bound.
Runtime: about 1.5 min on a 2-core CPU with the torch step; the compiled step (symmetry.kernels, numba)
is 40–75× faster per step (benchmarks/bench_steps.py). μ = 0.01 is sensitive to round-off (one ulp
at init moves its parameters by 13% within 1000 steps), so its numbers differ between the two steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import symmetry as S
from symmetry import experiment as E
from symmetry import kernels

NAME = "Q_convergence_radial"


@dataclass
class Settings:
    m: int = 5  # outputs
    n: int = 10  # inputs (whitened)
    h: int = 5  # hidden width
    means: tuple = (0.01, 0.1, 1.0, 10.0)  # μ = s of the spectral init: four Q₀
    lr: float = 1e-5  # GD learning rate on the MSE
    steps: int = 1_000_000
    record_every: int = 1000
    target_relative_loss: float = 1e-6  # ‖Y − F‖²/‖Y‖² threshold for steps_to_1e-6
    dtypes: tuple = ("float32", "float64")  # the paper's float32, and float64 to separate round-off
    compiled: bool = True  # numba kernel on CPU (symmetry.kernels); False: the torch step throughout
    seed: int = 0
    device: str = "cpu"


def quick(cfg: Settings) -> Settings:
    return Settings(means=(0.3, 1.0, 3.0), lr=2e-3, steps=400, record_every=4, seed=cfg.seed, device=cfg.device)


def train(cfg: Settings, dtype: str) -> dict:
    Y = torch.randn(cfg.m, cfg.n, generator=torch.Generator().manual_seed(cfg.seed + 1), dtype=torch.float64)
    generator = torch.Generator().manual_seed(cfg.seed)
    inits = [S.spectral_init(Y, cfg.h, mean=mu, std=mu, seed=generator) for mu in cfg.means]
    params64 = tuple(torch.stack(p).to(cfg.device) for p in zip(*inits))  # (B, m, h), (B, n, h)
    Phi, sigma_Y, PsiT = (t.to(cfg.device) for t in torch.linalg.svd(Y.to(cfg.device)))
    net = S.TwoLayerRadialNet(reduction="mean")

    def sigma_X(p):  # diag(Φᵀ F Ψ): the (signed) singular values that Prop. 15 tracks
        F = net(tuple(x.double() for x in p))
        return torch.diagonal(Phi.mT @ F @ PsiT.mT, dim1=-2, dim2=-1)[..., : cfg.h]

    options = dict(record_every=cfg.record_every, progress=True, description=f"Fig. 7 {dtype}",
                   labels=[f"mu={mu:g}" for mu in cfg.means],
                   observables={"sigma_X": sigma_X, "lambda": lambda p: S.radial_lambda(tuple(x.double() for x in p))})
    start = (tuple(p.to(E.DTYPES[dtype]) for p in params64), None, Y.to(cfg.device, E.DTYPES[dtype]), cfg.lr, cfg.steps)
    # the compiled whole-loop step (numba, CPU) where it applies, else the torch step: same arithmetic
    run = (cfg.compiled and kernels.compiled_gradient_descent(net, *start, **options)) or \
        S.gradient_descent(net, *start, **options)
    return {"steps": run.times, "loss": run.loss.double().cpu(), "sigma_X": run.observables["sigma_X"].cpu(),
            "lambda": run.observables["lambda"].cpu(), "sigma_Y": sigma_Y[: cfg.h].cpu(),
            "Y_norm2": float((Y ** 2).sum())}


def analyse(res: dict, cfg: Settings) -> list[dict]:
    rows = []
    flow_time = res["steps"] * 2 * cfg.lr / (cfg.m * cfg.n)  # time of the ½‖Y − F‖² gradient flow
    for b, mu in enumerate(cfg.means):
        lam = res["lambda"][0, b, : cfg.h]
        gap = (res["sigma_X"][:, b] - res["sigma_Y"]).abs()  # (T, h)
        bound = gap[0] * torch.exp(-flow_time[:, None] / lam)
        relative = res["loss"][:, b] * cfg.m * cfg.n / res["Y_norm2"]  # ‖Y − F‖² / ‖Y‖²
        reached = torch.nonzero(relative <= cfg.target_relative_loss)
        rows.append({"mu": mu, "Q0": float(lam.sum()), "lambda": lam,
                     "lambda_drift": float((res["lambda"][:, b] - res["lambda"][0, b]).abs().max() / lam.max()),
                     "steps_to_1e-6": int(res["steps"][reached[0, 0]]) if len(reached) else None,
                     "final_relative_loss": float(relative[-1]),
                     # a violation exceeds the bound by more than 1e-4 relative and 1e-6 absolute (round-off)
                     "bound_violations": int((gap > bound * (1 + 1e-4) + 1e-6).any(dim=1).sum()),
                     "max_excess_over_bound": float((gap - bound).max()),
                     "relative_loss": relative, "gap": gap, "bound": bound, "flow_time": flow_time})
    return rows


def plot(rows: list[dict], steps: torch.Tensor, dtype: str):
    plt = E.pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for r, c in zip(rows, colors):
        ax.semilogy(steps, r["relative_loss"], color=c, label=f"Q₀ = {r['Q0']:.3g} (μ = {r['mu']:g})")
        i = int(torch.argmax(r["gap"][0]))  # the mode with the largest initial gap
        bx.semilogy(steps, r["gap"][:, i].clamp_min(1e-12), color=c, label=f"|σˣ−σʸ|, λ = {float(r['lambda'][i]):.3g}")
        bx.semilogy(steps, r["bound"][:, i].clamp_min(1e-12), "--", color=c, lw=0.8)
    ax.set(xlabel="GD step", ylabel="‖Y − U g(Vᵀ)‖² / ‖Y‖²", title=f"Fig. 7: smaller Q₀ converges faster ({dtype})")
    bx.set(xlabel="GD step", ylabel="singular-value gap", title="Prop. 16: measured (solid) vs bound (dashed)")
    ax.legend(fontsize=7)
    bx.legend(fontsize=7)
    bx.set_ylim(bottom=1e-9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv, dtype=False)  # runs both precisions
    keep = ("mu", "Q0", "lambda", "lambda_drift", "steps_to_1e-6", "final_relative_loss", "bound_violations",
            "max_excess_over_bound")
    per_dtype, fig = {}, None
    with E.torch_threads(args.threads), E.Stopwatch() as clock:
        for dtype in cfg.dtypes:
            res = E.cached(args.out, NAME, {"cfg": cfg, "dtype": dtype}, lambda: train(cfg, dtype), args.resume)
            rows = analyse(res, cfg)
            if fig is None:  # plot the first precision (the paper's float32)
                fig = plot(rows, res["steps"], dtype)
            table = [{k: r[k] for k in keep} for r in rows]
            finishing = [r["steps_to_1e-6"] if r["steps_to_1e-6"] is not None else float("inf")
                         for r in sorted(table, key=lambda r: r["Q0"])]
            per_dtype[dtype] = {"per_Q0": table, "total_bound_violations": sum(r["bound_violations"] for r in table),
                                "smaller_Q0_converges_faster": all(a <= b for a, b in zip(finishing, finishing[1:]))}
    results = {"per_dtype": per_dtype,
               "per_Q0": per_dtype[cfg.dtypes[0]]["per_Q0"],
               "relative_loss_definition": "||Y - F||_F^2 / ||Y||_F^2; steps_to_1e-6 is null if never reached",
               "flow_time_definition": "t = step * 2 * lr / (m * n): GD on the MSE is GD on 1/2||Y-F||^2 at rate 2 lr/(mn)",
               "bound_violation_definition": "recorded steps where some mode's gap exceeds the Prop. 16 bound "
                                             "by more than 1e-4 relative plus 1e-6 absolute"}
    return E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)


if __name__ == "__main__":
    E.run_script(main)
