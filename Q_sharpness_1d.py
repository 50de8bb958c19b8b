"""App. G.1 (Fig. 1 of the workshop text) — in the 1-D net, Q fixes where gradient flow lands and how sharp it is there.

L(U, V) = ½(Y − UVX)², X = Y = 1. Q = U² − V² is conserved by gradient flow, so each
trajectory ends at the point of the valley UV = 1 with that Q, where the Hessian has
eigenvalues 0 and U² + V² = √(Q² + 4): Q = 0 is the flattest minimum. (Eq. 77 prints
2√(Q²+4), the value for the loss without the ½; both are in the JSON.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import symmetry as S
from repro import experiment as E

NAME = "Q_sharpness_1d"


@dataclass
class Settings:
    Q_values: tuple = tuple(round(-3 + 0.5 * i, 2) for i in range(13))  # one trajectory per Q, −3 … 3
    start_product: float = 0.05  # every trajectory starts at UV = 0.05, i.e. near the saddle at 0
    flow_time: float = 200.0  # GF time; convergence checked in the JSON
    samples: int = 400  # recorded points per trajectory (for the plot)
    seed: int = 0  # unused (deterministic starts); kept for the common CLI
    device: str = "cpu"


def quick(cfg: Settings) -> Settings:
    return Settings(Q_values=(-2.0, -0.5, 0.0, 1.0, 2.5), flow_time=100.0, samples=100, seed=cfg.seed, device=cfg.device)


def start(Q: float, p: float) -> tuple[float, float]:
    """(U, V) with U² − V² = Q and UV = p > 0: U² = (Q + √(Q² + 4p²))/2."""
    u = math.sqrt((Q + math.sqrt(Q * Q + 4 * p * p)) / 2)
    return u, p / u


def run(cfg: Settings) -> list[dict]:
    Y = torch.ones(1, 1, dtype=torch.float64, device=cfg.device)
    rows = []
    for Q in cfg.Q_values:
        u0, v0 = start(Q, cfg.start_product)
        params = tuple(torch.tensor([[x]], dtype=torch.float64, device=cfg.device) for x in (u0, v0))
        # log-spaced: the flow moves fast early and crawls along the valley late
        times = torch.cat([torch.zeros(1), torch.logspace(-3, math.log10(cfg.flow_time), cfg.samples - 1)])
        half = S.TwoLayerNet("identity", reduction="half_sum")
        flow = S.gradient_flow(half, params, None, Y, times, rtol=1e-10, max_evaluations=1_000_000,
                               observables={"U": lambda p: p[0][0, 0], "V": lambda p: p[1][0, 0]})
        end = flow.params
        measured = S.hessian_eigenvalues(half.loss_function(None, Y), end)
        measured_sum = S.hessian_eigenvalues(S.TwoLayerNet("identity", reduction="sum").loss_function(None, Y), end)
        rows.append({
            "Q": Q, "Q_end": float(end[0] ** 2 - end[1] ** 2), "UV_end": float(end[0] * end[1]),
            "lambda_max_measured": float(measured[-1]), "lambda_min_measured": float(measured[0]),
            "lambda_max_formula": math.sqrt(Q * Q + 4),
            "lambda_max_eq77_as_printed": 2 * math.sqrt(Q * Q + 4),
            "lambda_max_measured_unhalved_loss": float(measured_sum[-1]),
            "U": flow.observables["U"], "V": flow.observables["V"],
        })
    return rows


def plot(rows: list[dict], cfg: Settings):
    plt = E.pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2))
    u = torch.linspace(-0.2, 2.4, 300)
    U, V = torch.meshgrid(u, u, indexing="xy")
    ax.contourf(U, V, 0.5 * (1 - U * V) ** 2, levels=30, cmap="Greys", alpha=0.5)
    branch = torch.linspace(0.42, 2.4, 200)
    ax.plot(branch, 1 / branch, "k", lw=1.5, label="minimum UV = 1")
    cmap = plt.get_cmap("coolwarm")
    Qmax = max(abs(r["Q"]) for r in rows) or 1.0
    for r in rows:
        color = cmap(0.5 + 0.5 * r["Q"] / Qmax)
        ax.plot(r["U"], r["V"], color=color, lw=1.2)
        ax.plot(r["U"][-1], r["V"][-1], "o", color=color, ms=4)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-Qmax, Qmax))
    fig.colorbar(mappable, ax=ax, label="Q")
    ax.set(xlim=(-0.2, 2.4), ylim=(-0.2, 2.4), xlabel="U", ylabel="V", aspect="equal",
           title="gradient-flow trajectories, coloured by Q = U² − V²")
    ax.legend(fontsize=8, loc="upper right")
    q = torch.linspace(min(r["Q"] for r in rows), max(r["Q"] for r in rows), 200)
    bx.plot(q, torch.sqrt(q ** 2 + 4), "k", label="√(Q²+4)  (L = ½(1−UV)²)")
    bx.plot(q, 2 * torch.sqrt(q ** 2 + 4), "k--", lw=1, label="2√(Q²+4)  (Eq. 77 as printed; L = (1−UV)²)")
    bx.plot([r["Q"] for r in rows], [r["lambda_max_measured"] for r in rows], "o", color="tab:red",
            label="measured, L = ½(1−UV)²")
    bx.plot([r["Q"] for r in rows], [r["lambda_max_measured_unhalved_loss"] for r in rows], "x", color="tab:blue",
            label="measured, L = (1−UV)²")
    bx.set(xlabel="Q", ylabel="largest Hessian eigenvalue at the end of GF", title="sharpness of the minimum vs Q")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv, dtype=False)  # float64 gradient flow
    with E.torch_threads(args.threads), E.Stopwatch() as clock:
        rows = run(cfg)
    fig = plot(rows, cfg)
    trajectories = [{k: v for k, v in r.items() if k not in ("U", "V")} for r in rows]
    error = max(abs(r["lambda_max_measured"] - r["lambda_max_formula"]) for r in rows)
    results = {"trajectories": trajectories, "max_abs_error_vs_formula": error,
               "claim_lambda_is_sqrt_Q2_plus_4": error < 1e-4,
               "flattest_Q": min(rows, key=lambda r: r["lambda_max_measured"])["Q"],
               "max_abs_UV_minus_1": max(abs(r["UV_end"] - 1) for r in rows),
               "max_abs_Q_drift": max(abs(r["Q_end"] - r["Q"]) for r in rows)}
    return E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)



def claims(payload: dict) -> list[dict]:
    """App. G.1: λ_max = √(Q² + 4) at the end of gradient flow (½ loss), and Q = 0 the flattest."""
    qs = [t["Q"] for t in payload["trajectories"]]
    return [{"claim": "App. G.1: λ_max = √(Q²+4) at the end of GF",
             "criterion": "|measured − formula| < 1e-4 for every Q",
             "holds": bool(payload["claim_lambda_is_sqrt_Q2_plus_4"]),
             "measured": f"max error {payload['max_abs_error_vs_formula']:.1e} over {len(qs)} values of Q"},
            {"claim": "App. G.1: Q = 0 is the flattest minimum",
             "criterion": f"smallest λ_max at Q = 0 among Q ∈ [{min(qs):g}, {max(qs):g}]",
             "holds": payload["flattest_Q"] == 0, "measured": f"flattest Q = {payload['flattest_Q']:g}"}]


if __name__ == "__main__":
    E.run_script(main)
