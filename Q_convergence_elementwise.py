"""Fig. 6 — how fast gradient descent converges depends on the conserved quantity Q₀ (App. F.3).

Setting: the net and data of Fig. 3 (m=5, n=10, h=50, whitened input, Y ~ N(0, 1)), GD on the MSE at
η = 1e-3 for 400 000 steps (800 000 for sigmoid), from U, V ~ N(0, s²) with 13 values of s from 0.01
to 1 (log-spaced; the paper's 0.01, 0.1 and 1 among them): the same draw scaled, so the runs of an
activation differ only in Q₀ (and the initial loss). All 52 runs are stepped together in one tensor.
Claim (App. F.3): "the number of steps required for the loss curves to drop to near convergence level
is correlated with Q". Measured: ``steps_to_converge`` = first recorded step with ‖Y − F‖_F ≤ 1e-2
(the paper's loss axis; one level for every run, above every run's float32 floor, 2e-4 – 4e-3), and
Spearman's ρ between |Q₀| and those steps per activation (scipy.stats.spearmanr). The claim holds for
an activation when every run converged and p < 0.05.

The control: in that sweep Q₀ moves only with the init's size, and the initial error moves with it. A
second sweep holds the function (so the initial loss) fixed and moves Q₀ along the symmetry orbit: from
the init at std 0.1, (U, V) ↦ (U/c, V') with σ(V'ᵀ) = c·σ(Vᵀ) on the whitened input (V' = cV for the
homogeneous σ; σ⁻¹(c·σ(Vᵀ)) for tanh and sigmoid, where c·σ stays inside σ's range), which keeps
F = Uσ(Vᵀ) exactly on the data and changes Q₀. The same criterion per activation is one row each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import symmetry as S
from repro import experiment as E
from repro import training as T

NAME = "Q_convergence_elementwise"


@dataclass
class Settings:
    m: int = 5  # outputs
    n: int = 10  # inputs (whitened)
    h: int = 50  # hidden width
    lr: float = 1e-3  # GD learning rate (App. F.3)
    init_stds: tuple = tuple(float(f"{10 ** (k / 6 - 2):.3g}") for k in range(13))  # 13 Q₀, 0.01 … 1
    activations: tuple = S.PAPER_ACTIVATIONS
    steps: int = 400_000
    sigmoid_steps: int = 800_000
    record_every: int = 100  # loss recorded every k steps
    convergence_level: float = 1e-2  # "converged": ‖Y − F‖_F at or below this
    significance: float = 0.05  # p-value of Spearman's ρ for "correlated"
    orbit_init_std: float = 0.1  # the fixed-loss sweep starts from this init …
    orbit_scales: tuple = tuple(float(f"{4 ** (k / 4 - 1):.3g}") for k in range(9))  # … moved by c = 0.25 … 4
    orbit_range_margin: float = 1e-3  # c·σ(Z) must stay this far inside σ's open range (tanh, sigmoid)
    dtype: str = "float32"
    seed: int = 0
    device: str = "cpu"


def quick(cfg: Settings) -> Settings:
    return Settings(lr=0.05, steps=400, sigmoid_steps=800, record_every=4, init_stds=(0.1, 0.2, 0.4, 0.8),
                    convergence_level=1.0, orbit_init_std=0.4, orbit_scales=(0.5, 0.71, 1.0, 1.41, 2.0),
                    dtype=cfg.dtype, seed=cfg.seed, device=cfg.device)


#: σ⁻¹ of the activations whose orbit move needs it (the homogeneous ones move V itself: σ(cZ) = cσ(Z))
INVERSE = {"tanh": (torch.atanh, (-1.0, 1.0)), "sigmoid": (torch.logit, (0.0, 1.0))}


def along_orbit(U: torch.Tensor, V: torch.Tensor, activation: str, c: float,
                margin: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(U/c, V') with σ(V'ᵀ) = c·σ(Vᵀ): the same F = Uσ(Vᵀ) on the whitened input X = I, another Q₀.
    None where c·σ(Vᵀ) leaves σ's range (a move this σ's orbit does not contain from this init)."""
    if activation in ("identity", "relu"):
        return U / c, c * V
    inverse, (low, high) = INVERSE[activation]
    target = c * S.get_activation(activation)(V)
    if float(target.min()) <= low + margin or float(target.max()) >= high - margin:
        return None
    return U / c, inverse(target)


def starting_points(cfg: Settings, activations) -> list[dict]:
    """The runs of one step budget, per activation: its init-scale sweep (the same draw times each std),
    then its fixed-loss sweep (the std-``orbit_init_std`` init moved along the orbit by each c in range).
    One activation's runs sit side by side in the batch, so the fused stepper takes each activation's
    block as a slice (preallocated buffers) instead of gathering the batch every step."""
    U0, V0 = S.gaussian_init(cfg.m, cfg.h, cfg.n, std=1.0, seed=cfg.seed, dtype=torch.float64)
    U, V = cfg.orbit_init_std * U0, cfg.orbit_init_std * V0
    runs = []
    for a in activations:
        runs += [{"activation": a, "design": "init_scale", "init_std": s, "orbit_scale": None, "U": s * U0,
                  "V": s * V0} for s in cfg.init_stds]
        F = U @ S.get_activation(a)(V.mT)
        for c in cfg.orbit_scales:
            moved = along_orbit(U, V, a, c, cfg.orbit_range_margin)
            if moved is None:
                continue
            change = float((moved[0] @ S.get_activation(a)(moved[1].mT) - F).abs().max() / F.abs().max())
            if change > 1e-12:  # the move must keep the function: checked, not assumed
                raise RuntimeError(f"the orbit move c={c:g} changed F by {change:.2g} ({a})")
            runs.append({"activation": a, "design": "fixed_loss", "init_std": cfg.orbit_init_std, "orbit_scale": c,
                         "U": moved[0], "V": moved[1], "function_change": change})
    return runs


def steps_to_converge(steps: torch.Tensor, error: torch.Tensor, level: float) -> int | None:
    """First recorded step with ‖Y − F‖_F ≤ ``level`` (None if the run never gets there)."""
    reached = torch.nonzero(error <= level)
    return int(steps[reached[0, 0]]) if len(reached) else None


def run(cfg: Settings, out: str, resume: bool) -> list[dict]:
    groups = T.step_budgets(cfg.activations, cfg.steps, cfg.sigmoid_steps)
    points = {steps: starting_points(cfg, acts) for steps, acts in groups.items()}
    configs = {steps: [(r["activation"], cfg.lr, r["init_std"]) for r in runs] for steps, runs in points.items()}
    starts = {steps: (torch.stack([r["U"] for r in runs]), torch.stack([r["V"] for r in runs]))
              for steps, runs in points.items()}
    # one batch for every budget and both sweeps: sigmoid's extra steps run on after the others stop
    results = E.cached(out, NAME, {"cfg": cfg}, lambda: {str(k): v for k, v in T.train_two_layer_budgets(
        cfg.m, cfg.n, cfg.h, configs, seed=cfg.seed, dtype=cfg.dtype, device=cfg.device,
        record_every=cfg.record_every, description="Fig. 6", starts=starts).items()}, resume)
    rows = []
    for steps, runs in points.items():
        res = results[str(steps)]
        for b, point in enumerate(runs):
            loss = res["loss"][:, b]
            error = torch.sqrt(loss * cfg.m * cfg.n)  # ‖Y − F‖_F, the paper's axis
            rows.append({**{k: point[k] for k in ("activation", "design", "init_std", "orbit_scale")},
                         "Q0": float(res["Q"][0, b]),
                         "steps_to_converge": steps_to_converge(res["steps"], error, cfg.convergence_level),
                         "initial_error": float(error[0]), "final_error": float(error[-1]),
                         "initial_loss": float(loss[0]), "final_loss": float(loss[-1]),
                         "Q_drift": float((res["Q"][:, b] - res["Q"][0, b]).abs().max()),
                         "steps": res["steps"], "error": error})
    return rows


def correlation(runs: list[dict], significance: float) -> dict:
    """Spearman's ρ between |Q₀| and steps to converge over one activation's runs (converged ones)."""
    from scipy.stats import spearmanr

    done = [r for r in runs if r["steps_to_converge"] is not None]
    result = {"runs": len(runs), "converged": len(done),
              "not_converged_Q0": [r["Q0"] for r in runs if r["steps_to_converge"] is None]}
    if len(done) >= 3 and len({r["steps_to_converge"] for r in done}) > 1:
        test = spearmanr([abs(r["Q0"]) for r in done], [r["steps_to_converge"] for r in done])
        result.update(spearman_rho=float(test.statistic), p_value=float(test.pvalue))
    else:
        result.update(spearman_rho=None, p_value=None)
    result["correlated"] = (result["converged"] == result["runs"] and result["p_value"] is not None
                            and result["p_value"] < significance)
    return result


DESIGNS = {"init_scale": "init-scale sweep (Q₀ and the initial loss move together)",
           "fixed_loss": "along the orbit at a fixed initial loss"}


def plot(rows: list[dict], cfg: Settings):
    plt = E.pyplot()
    acts = list(cfg.activations)
    fig, axes = plt.subplots(2, len(acts) + 1, figsize=(3.4 * (len(acts) + 1), 6.6))
    cmap = plt.get_cmap("viridis")
    levels = {"init_scale": ("init_std", cfg.init_stds), "fixed_loss": ("orbit_scale", cfg.orbit_scales)}
    for line, (design, (key, values)) in zip(axes, levels.items()):
        shade = {v: cmap(k / max(1, len(values) - 1)) for k, v in enumerate(values)}
        for ax, a in zip(line, acts):
            runs = [r for r in rows if r["activation"] == a and r["design"] == design]
            for k, r in enumerate(runs):
                label = (f"Q₀ = {r['Q0']:.3g} ({'first' if k == 0 else 'last'} of {len(runs)}; colour bar)"
                         if k in (0, len(runs) - 1) else None)
                ax.semilogy(r["steps"], r["error"], color=shade[r[key]], lw=0.9, label=label)
            ax.axhline(cfg.convergence_level, color="grey", ls=":", lw=0.8)
            ax.set(title=f"σ = {a}", xlabel="GD step")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
            ax.legend(fontsize=6)
            steps = sorted((abs(r["Q0"]), r["steps_to_converge"]) for r in runs if r["steps_to_converge"] is not None)
            # along the orbit |Q₀| is not monotone in c (Q₀ changes sign): points, not a line
            line[-1].loglog(*zip(*steps), "o-" if design == "init_scale" else "o", ms=3, label=a) if steps else None
        # every curve's colour: its init std (top) or orbit scale c (bottom), one tick per value
        mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, max(1, len(values) - 1)))
        bar = fig.colorbar(mappable, ax=line[len(acts) - 1], pad=0.02, fraction=0.08)
        ticks = list(range(0, len(values), max(1, (len(values) + 5) // 6)))
        bar.set_ticks(ticks, labels=[f"{values[t]:g}" for t in ticks], fontsize=7)
        bar.set_label("init std" if design == "init_scale" else "orbit scale c", fontsize=8)
        line[0].set_ylabel(f"{DESIGNS[design]}\n‖Y − Uσ(Vᵀ)‖_F", fontsize=8)
        line[-1].set(xlabel="|Q₀|", ylabel=f"steps to ‖Y − F‖_F ≤ {cfg.convergence_level:g}", title="steps vs |Q₀|")
        line[-1].legend(fontsize=7)
    fig.suptitle(f"Fig. 6: convergence vs Q₀ (η = {cfg.lr:g}). Top: init std {cfg.init_stds[0]:g} → "
                 f"{cfg.init_stds[-1]:g}; bottom: the std-{cfg.orbit_init_std:g} init moved along the orbit, "
                 f"c = {cfg.orbit_scales[0]:g} → {cfg.orbit_scales[-1]:g} (colour)", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv)
    with E.torch_threads(args.threads), E.Stopwatch() as clock:
        rows = run(cfg, args.out, args.resume)
    fig = plot(rows, cfg)
    tables: dict[str, dict[str, list]] = {d: {} for d in DESIGNS}
    for r in rows:
        drop = ("steps", "error", "activation", "design") + (("orbit_scale",) if r["design"] == "init_scale" else ())
        tables[r["design"]].setdefault(r["activation"], []).append({k: v for k, v in r.items() if k not in drop})
    results = {"per_activation": tables["init_scale"], "per_activation_fixed_loss": tables["fixed_loss"],
               "correlation": {a: correlation(runs, cfg.significance) for a, runs in tables["init_scale"].items()},
               "correlation_fixed_loss": {a: correlation(runs, cfg.significance)
                                          for a, runs in tables["fixed_loss"].items()},
               "fixed_loss_design": f"the std-{cfg.orbit_init_std:g} init moved to (U/c, V') with "
                                    "sigma(V'^T) = c sigma(V^T) on X = I: F and so the initial loss unchanged; "
                                    "c outside sigma's range are left out",
               "convergence_definition": f"first recorded step with ||Y - F||_F <= {cfg.convergence_level:g}; "
                                         "null if never reached",
               "loss_axis": "||Y - F||_F (the paper's Fig. 6 axis); initial_loss/final_loss are the MSE we train on"}
    return E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)


def p_text(rho: float, p: float, n: int) -> str:
    """A p-value as text: scipy's t approximation gives 0 at |ρ| = 1, where the exact permutation p is 2/n!."""
    if p == 0 and abs(rho) == 1:
        return f"p ≈ {2 / math.factorial(n):.1g} (exact: 2/{n}!)"
    return f"p = {p:.2g}"


def claims(payload: dict) -> list[dict]:
    """Per activation and design: steps to converge correlated with Q₀ (every run converged, p < 0.05). In the
    init-scale sweep |Q₀| and the initial error move together (their ρ is in the row): only the fixed-loss rows
    separate Q₀ from the initial loss."""
    from scipy.stats import spearmanr

    rows = []
    level = payload["settings"]["convergence_level"]
    for design, name in (("init_scale", "Fig. 6"), ("fixed_loss", "Fig. 6 at a fixed initial loss")):
        suffix = "" if design == "init_scale" else "_fixed_loss"
        for a, c in payload["correlation" + suffix].items():
            runs = payload["per_activation" + suffix][a]
            rho = ("ρ n/a" if c["spearman_rho"] is None else
                   f"ρ = {c['spearman_rho']:+.2f}, {p_text(c['spearman_rho'], c['p_value'], c['converged'])}")
            missing = "" if c["converged"] == c["runs"] else f"; {c['runs'] - c['converged']} never converged"
            start = [r["initial_error"] for r in runs]
            Q0 = [r["Q0"] for r in runs]
            together = ""
            if design == "init_scale":
                both = spearmanr([abs(q) for q in Q0], start).statistic
                together = (f"; |Q₀| and the initial ‖Y − F‖_F move together (ρ = {both:+.2f}): this sweep does "
                            "not separate Q₀ from the initial loss, the fixed-loss rows do")
            rows.append({"claim": f"{name}: steps to converge correlated with Q₀ ({a})",
                         "criterion": f"{DESIGNS[design]}: all runs reach ‖Y − F‖_F ≤ {level:g}; Spearman "
                                      f"ρ(|Q₀|, steps) has p < {payload['settings']['significance']:g}",
                         "holds": bool(c["correlated"]),
                         "measured": f"{rho} over {c['converged']}/{c['runs']} runs{missing}; Q₀ {min(Q0):.3g} … "
                                     f"{max(Q0):.3g}, initial ‖Y − F‖_F {min(start):.4g} … {max(start):.4g}"
                                     + together})
    return rows


if __name__ == "__main__":
    E.run_script(main)
