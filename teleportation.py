"""Symmetry teleportation (Zhao, Dehmamy, Walters & Yu, NeurIPS 2022), and this paper's Q made actionable.

(1) The NeurIPS 2022 headline: teleporting once early (to the largest ‖∇L‖² on the orbit) speeds up
GD and AdaGrad on a multi-layer regression (LeakyReLU 5-6-7-8, 4 samples: the paper's settings) and
SGD and AdaGrad on MNIST (the offline 5000-image subset; the architecture, learning rates and teleport
settings that the paper does not publish are chosen here and listed under settings.unpublished).
Measured: loss against steps and against wall-clock seconds (the teleport's cost included), and
steps and seconds to a target loss, mean ± std over seeds.
(2) The two-layer net of Figs. 6 and 9 (m=5, n=10, h=50, whitened input): teleport at
initialisation to the largest ‖∇L‖², and at the minimum to the smallest λ_max; on the 1-D valley
(App. G.1, L = ½(1 − UV)²) minimising sharpness must land at Q = 0 where λ_max = √(0 + 4) = 2.
Group elements are g = exp(ξ) (symmetry/teleport.py); the LeakyReLU nets use the data-dependent action
of Prop. 8, exact only on the teleport batch (k ≤ every hidden width).
Runtime: about 2 min on a 2-core CPU (shared); wall-clock numbers depend on the machine's load.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch

import symmetry as S
from symmetry import experiment as E
from symmetry import teleport as T

NAME = "teleportation"
D = torch.float64


@dataclass
class Settings:
    # (1a) multi-layer regression: the NeurIPS 2022 code's settings (SPEC-extensions A2.2)
    reg_dims: tuple = (5, 6, 7, 8)  # W1 6×5, W2 7×6, W3 8×7, no biases; 4 samples; U[0, 1) entries
    reg_samples: int = 4
    reg_steps: int = 300
    reg_seeds: tuple = (0, 12345, 49380, 111105, 197520)  # added to --seed; n²·12345, n = 0…4
    reg_gd: tuple = (1e-4, 1e-7, 8)  # (lr, teleport lr, ascent steps)
    reg_adagrad: tuple = (1e-1, 1e-5, 2)
    reg_teleport_step: int = 5
    reg_max_ratio: float = 10.0  # chosen: ‖∇L‖² may grow at most 10× in a teleport (without it, 2 of 5 GD runs diverge)
    reg_targets: tuple = (5.0, 2.0)  # target loss for GD, AdaGrad (chosen: reached by every baseline run)
    # (1b) MNIST: the paper's batch 20, teleport after epoch 1 on 4 mini-batches; the rest chosen
    mnist_train: int = 2000
    mnist_hidden: tuple = (32, 32)  # paper: 512, 512 (runtime); teleport batch 20 ≤ 32 keeps Prop. 8 exact on it
    mnist_batch: int = 20
    mnist_steps: int = 600
    mnist_seeds: tuple = (0, 1, 2)  # added to --seed
    mnist_sgd: tuple = (0.05, 1e-3, 10)
    mnist_adagrad: tuple = (0.01, 1e-3, 10)
    mnist_teleport_batches: int = 4
    mnist_record_every: int = 25
    mnist_target: float = 0.45
    objective_limit: float = 100.0  # ‖∇L‖² cap of the ICLR 2024 code
    # (2) two-layer net of Figs. 6/9 and the 1-D valley
    m: int = 5
    n: int = 10
    h: int = 50
    init_std: float = 0.1
    fig6_lr: float = 0.05
    fig6_steps: int = 3000
    fig6_target: float = 1e-3
    fig6_teleport: tuple = (1.0, 20)  # (teleport lr, ascent steps) at init: largest ‖∇L‖², at most 10× (reg_max_ratio)
    fig6_Q_shifts: tuple = (-8.0, -4.0, -1.0, 1.0, 4.0)  # teleport targets Q₀ + shift (chosen)
    fig6_Q_lr: float = 0.01
    fig6_Q_steps: int = 100
    sharp_teleport: tuple = (0.5, 30)  # at the minimum: smallest λ_max
    valley_Q: tuple = (-2.0, -1.0, 1.0, 2.0)
    valley_teleport: tuple = (0.2, 60)
    seed: int = 0
    device: str = "cpu"
    unpublished: dict = field(default_factory=lambda: {
        "regression targets": "chosen: losses every run without teleport reaches within 300 steps",
        "regression cap": "chosen: a teleport may raise ‖∇L‖² at most 10× (max_ratio); the paper's teleport lr "
                          "without a cap made 2 of 5 GD runs diverge at step 9 with our exact action",
        "mnist": "paper: 48k/12k split, widths 512/512, 80 epochs, lr not published; here 2000 training images, "
                 "widths 32/32, 600 SGD steps, SGD lr 0.05, AdaGrad lr 0.01, teleport lr 1e-3 × 10 ascent steps, "
                 "‖∇L‖² capped at 100 (ICLR 2024 code), target training loss 0.45",
        "two-layer": "Fig. 6 runs 400k steps at lr 1e-3; here lr 0.05, 3000 steps, init std 0.1, float64"})


def quick(cfg: Settings) -> Settings:
    return Settings(reg_seeds=(0, 12345), reg_steps=60, mnist_train=200, mnist_steps=40, mnist_seeds=(0, 1),
                    mnist_record_every=5, mnist_target=2.0, mnist_teleport_batches=2, fig6_steps=200, fig6_target=0.5,
                    fig6_teleport=(1.0, 3), sharp_teleport=(0.5, 3),
                    fig6_Q_shifts=(-4.0, 4.0), fig6_Q_steps=10, valley_Q=(2.0,), valley_teleport=(0.2, 40),
                    seed=cfg.seed, device=cfg.device)


def first_reach(record: T.TrainRecord, target: float) -> tuple[float, float]:
    """(steps, seconds) at the first record with loss ≤ target; (nan, nan) if never."""
    for s, loss, sec in zip(record.steps, record.loss, record.seconds):
        if loss <= target:
            return float(s), sec
    return math.nan, math.nan


def mean_std(values: list[float]) -> dict:
    ok = [v for v in values if math.isfinite(v)]
    return {"mean": statistics.fmean(ok) if ok else math.nan, "std": statistics.stdev(ok) if len(ok) > 1 else 0.0,
            "reached": len(ok), "runs": len(values), "values": values}


def run_seeds(cfg: Settings, offsets: tuple) -> list[int]:
    """The repeated runs' seeds, derived from --seed (at seed 0 the offsets themselves)."""
    return [cfg.seed + offset for offset in offsets]


def compare(model, make, data, optimizer: str, opt: tuple, target: float, seeds, steps: int, schedule, **kw) -> dict:
    """Each seed with and without teleport; a warm-up run first so that timings exclude first-call costs."""
    lr, tlr, tsteps = opt
    T.train(model, make(seeds[0]), data(seeds[0]), optimizer, lr, 3, schedule=T.TeleportSchedule(at=(1,)),
            group="nonlinear", teleport_lr=tlr, teleport_steps=1, **kw)
    runs = {"without": [], "with": []}
    for seed in seeds:
        for key, sch in (("without", None), ("with", schedule)):
            try:
                rec = T.train(model, make(seed), data(seed), optimizer, lr, steps, schedule=sch, group="nonlinear",
                              objective="grad_norm", teleport_lr=tlr, teleport_steps=tsteps, seed=seed, **kw)
            except S.DivergenceError:
                rec = None  # counted: it never reaches the target
            runs[key].append(rec)
    out = {}
    for key, all_recs in runs.items():
        recs = [r for r in all_recs if r is not None]
        reach = [first_reach(r, target) if r is not None else (math.nan, math.nan) for r in all_recs]
        out[key] = {"steps_to_target": mean_std([a for a, _ in reach]),
                    "seconds_to_target": mean_std([b for _, b in reach]),
                    "final_loss": mean_std([r.loss[-1] for r in recs]), "diverged": len(all_recs) - len(recs),
                    "steps": recs[0].steps, "loss": [r.loss for r in recs], "seconds": [r.seconds for r in recs]}
    runs = {k: [r for r in v if r is not None] for k, v in runs.items()}
    tele = [t for r in runs["with"] for t in r.teleports]
    step_seconds = [r.seconds[-1] / steps for r in runs["without"]]
    out["teleports"] = {
        "count": len(tele),
        "max_relative_loss_change_on_teleport_batch": max(t["report"]["relative_loss_change"] for t in tele),
        "objective_ratio": mean_std([t["report"]["objective_after"] / t["report"]["objective_before"] for t in tele]),
        "seconds_per_teleport": mean_std([t["report"]["seconds"] for t in tele]),
        "seconds_per_step": mean_std(step_seconds),
        "relative_change_of_evaluated_loss": mean_std([abs(t["eval_loss_after"] - t["eval_loss_before"]) / t["eval_loss_before"]
                                                        for t in tele if "eval_loss_after" in t])}
    out["teleports"]["teleport_cost_in_steps"] = (out["teleports"]["seconds_per_teleport"]["mean"]
                                                  / out["teleports"]["seconds_per_step"]["mean"])
    out["target_loss"] = target
    w, wo = out["with"], out["without"]
    out["speedup_steps"] = wo["steps_to_target"]["mean"] / w["steps_to_target"]["mean"]
    out["speedup_seconds"] = wo["seconds_to_target"]["mean"] / w["seconds_to_target"]["mean"]
    return out


def run_regression(cfg: Settings) -> dict:
    model = S.MLP(S.activations.leaky_relu(0.1), reduction="half_sum")
    dims = cfg.reg_dims

    def draws(seed):
        g = torch.Generator().manual_seed(seed)
        W = tuple(torch.rand(dims[i + 1], dims[i], generator=g, dtype=D) for i in range(len(dims) - 1))
        return W, (torch.rand(dims[0], cfg.reg_samples, generator=g, dtype=D),
                   torch.rand(dims[-1], cfg.reg_samples, generator=g, dtype=D))

    schedule = T.TeleportSchedule(at=(cfg.reg_teleport_step,))
    res = {}
    for name, opt, target in (("gd", cfg.reg_gd, cfg.reg_targets[0]), ("adagrad", cfg.reg_adagrad, cfg.reg_targets[1])):
        res[name] = compare(model, lambda s: draws(s)[0], lambda s: draws(s)[1], name, opt, target,
                            run_seeds(cfg, cfg.reg_seeds), cfg.reg_steps, schedule, max_ratio=cfg.reg_max_ratio)
    return res


def run_mnist(cfg: Settings) -> dict:
    from symmetry.data import load_image_dataset

    data = load_image_dataset("mnist-subset")
    pick = torch.randperm(len(data["y"]), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.mnist_train]
    X, y = data["x"][pick].T.to(D), data["y"][pick]  # (784, N): samples are columns
    dims = (X.shape[0], *cfg.mnist_hidden, 10)
    model = S.MLPClassifier(S.activations.leaky_relu(0.1))

    def init(seed):  # U(−1/√fan_in, 1/√fan_in), as the ICLR 2024 code
        g = torch.Generator().manual_seed(seed)
        return tuple((2 * torch.rand(dims[i + 1], dims[i], generator=g, dtype=D) - 1) / math.sqrt(dims[i])
                     for i in range(len(dims) - 1))

    epoch = cfg.mnist_train // cfg.mnist_batch
    schedule = T.TeleportSchedule(at=(epoch,), batches=cfg.mnist_teleport_batches)
    res = {"dataset": data["name"], "epoch_steps": epoch}
    for name, opt in (("sgd", cfg.mnist_sgd), ("adagrad", cfg.mnist_adagrad)):
        res[name] = compare(model, init, lambda s: (X, y), name, opt, cfg.mnist_target, run_seeds(cfg, cfg.mnist_seeds),
                            cfg.mnist_steps,
                            schedule, batch_size=cfg.mnist_batch, teleport_batch_size=cfg.mnist_batch,
                            record_every=cfg.mnist_record_every, objective_limit=cfg.objective_limit)
    return res


def lambda_max(model, data, params) -> float:
    return T.lambda_max(model.loss_function(*data), params)


def _gd_steps(model, start, Y, cfg: Settings) -> dict:
    """GD from ``start``: steps to the target loss (nan if never or diverged), final loss, the curve."""
    try:
        run = S.gradient_descent(model, start, None, Y, cfg.fig6_lr, cfg.fig6_steps, record_every=10)
    except S.DivergenceError as error:
        return {"steps_to_target": math.nan, "final_loss": math.nan, "diverged": str(error), "steps": [], "loss": []}
    reached = (run.loss <= cfg.fig6_target).nonzero()
    return {"steps_to_target": float(run.times[reached[0, 0]]) if len(reached) else math.nan,
            "final_loss": float(run.loss[-1]), "steps": run.times, "loss": run.loss, "end": run.params}


def run_two_layer(cfg: Settings) -> dict:
    out = {}
    for activation, group in (("identity", "gl"), ("tanh", "nonlinear")):
        model = S.TwoLayerNet(activation)
        U0, V0 = S.gaussian_init(cfg.m, cfg.h, cfg.n, std=cfg.init_std, seed=cfg.seed, dtype=D)
        Y = torch.randn(cfg.m, cfg.n, generator=torch.Generator().manual_seed(cfg.seed + 1), dtype=D)
        data = (None, Y)
        Q = lambda p, a=activation: S.conserved_Q(p, a)  # noqa: E731  (Eq. 48)
        Q0 = float(Q((U0, V0)))
        row = {"group": group, "Q0_before": Q0, "without": _gd_steps(model, (U0, V0), Y, cfg)}
        # teleport at init to chosen Q₀ (conserved_target), GD from each: which Q₀ converges fastest
        row["Q0_scan"] = []
        for shift in cfg.fig6_Q_shifts:
            moved, rep = T.teleport(model, (U0, V0), data, group, T.conserved_target(Q, Q0 + shift), lr=cfg.fig6_Q_lr,
                                    steps=cfg.fig6_Q_steps)
            res = _gd_steps(model, moved, Y, cfg)
            res.pop("end", None)
            row["Q0_scan"].append({"Q0_target": Q0 + shift, "Q0_reached": float(Q(moved)),
                                   "relative_loss_change": rep.relative_loss_change, **res})
        # teleport at init to the largest ‖∇L‖² (NeurIPS 2022), at most max_ratio × the start
        lr_t, steps_t = cfg.fig6_teleport
        tele, report = T.teleport(model, (U0, V0), data, group, "grad_norm", lr=lr_t, steps=steps_t,
                                  max_ratio=cfg.reg_max_ratio)
        row.update(Q0_after=float(Q(tele)), init_teleport=report.to_dict(), **{"with": _gd_steps(model, tele, Y, cfg)})
        row["with"].pop("end", None)
        end = row["without"].pop("end", None)
        if end is None:
            out[activation] = row
            continue
        lr_s, steps_s = cfg.sharp_teleport
        flat, rep = T.teleport(model, end, data, group, "sharpness", lr=lr_s, steps=steps_s)
        row["minimum_teleport"] = {"lambda_max_before": lambda_max(model, data, end),
                                   "lambda_max_after": lambda_max(model, data, flat),
                                   "Q_before": float(Q(end)), "Q_after": float(Q(flat)),
                                   "loss_before": rep.loss_before, "loss_after": rep.loss_after,
                                   "relative_loss_change": rep.relative_loss_change, "report": rep.to_dict()}
        out[activation] = row
    return out


def run_valley(cfg: Settings) -> list[dict]:
    net, data = S.TwoLayerNet("identity", reduction="half_sum"), (None, torch.ones(1, 1, dtype=D))
    rows = []
    for Q in cfg.valley_Q:
        u = math.sqrt((Q + math.sqrt(Q * Q + 4)) / 2)  # on the valley UV = 1 with U² − V² = Q
        start = (torch.tensor([[u]], dtype=D), torch.tensor([[1 / u]], dtype=D))
        lr, steps = cfg.valley_teleport
        end, rep = T.teleport(net, start, data, "gl", "sharpness", lr=lr, steps=steps)
        rows.append({"Q_before": Q, "Q_after": float(end[0] ** 2 - end[1] ** 2),
                     "lambda_max_before": lambda_max(net, data, start), "lambda_max_after": lambda_max(net, data, end),
                     "relative_loss_change": rep.relative_loss_change, "loss_after": rep.loss_after})
    return rows


def run(cfg: Settings) -> dict:
    with E.torch_threads(1):  # tiny tensor ops: one intra-op thread
        return {"regression": run_regression(cfg), "mnist": run_mnist(cfg), "two_layer": run_two_layer(cfg),
                "valley": run_valley(cfg)}


def _band(ax, steps, runs, color, label, x_runs=None):
    """Geometric mean over seeds, band = × / ÷ the geometric std (the losses span decades)."""
    y = torch.log(torch.tensor(runs, dtype=D))
    mean, std = y.mean(0), y.std(0) if len(runs) > 1 else torch.zeros_like(y[0])
    x = torch.tensor(steps, dtype=D) if x_runs is None else torch.tensor(x_runs, dtype=D).mean(0)
    ax.semilogy(x, mean.exp(), color=color, label=label)
    ax.fill_between(x, (mean - std).exp(), (mean + std).exp(), color=color, alpha=0.2)


def plot(res: dict, cfg: Settings):
    plt = E.pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    colors = {("gd", "without"): "tab:blue", ("gd", "with"): "tab:orange", ("sgd", "without"): "tab:blue",
              ("sgd", "with"): "tab:orange", ("adagrad", "without"): "tab:green", ("adagrad", "with"): "tab:red"}
    for row, (task, opts) in enumerate((("regression", ("gd", "adagrad")), ("mnist", ("sgd", "adagrad")))):
        for opt in opts:
            r = res[task][opt]
            for key in ("without", "with"):
                label = f"{opt.upper() if opt != 'adagrad' else 'AdaGrad'} {key} teleport"
                _band(axes[row, 0], r[key]["steps"], r[key]["loss"], colors[(opt, key)], label)
                _band(axes[row, 1], r[key]["steps"], r[key]["loss"], colors[(opt, key)], label, r[key]["seconds"])
            for ax in axes[row, :2]:
                ax.axhline(r["target_loss"], color=colors[(opt, "without")], ls=":", lw=0.8)
        axes[row, 0].set(xlabel="step", ylabel=f"{task} training loss", title=f"{task}: loss vs steps (geometric mean, ×/÷ std)")
        axes[row, 1].set(xlabel="wall-clock seconds (teleports included)", title=f"{task}: loss vs time")
        axes[row, 0].legend(fontsize=7)
    for col, act in ((2, "identity"), (3, "tanh")):
        r = res["two_layer"][act]
        ax = axes[0, col]
        for key, color in (("without", "tab:blue"), ("with", "tab:orange")):
            ax.semilogy(r[key]["steps"], r[key]["loss"], color=color,
                        label=f"{key} teleport at init (Q₀ = {r['Q0_before' if key == 'without' else 'Q0_after']:.3g})")
        ax.axhline(cfg.fig6_target, color="k", ls=":", lw=0.8)
        mt = r.get("minimum_teleport", {"lambda_max_before": math.nan, "lambda_max_after": math.nan})
        ax.plot([], [], " ", label=f"teleport at the minimum: λ_max {mt['lambda_max_before']:.3g} → {mt['lambda_max_after']:.3g}")
        ax.set(xlabel="GD step", ylabel="training loss (MSE)", title=f"Fig. 6/9 net, σ = {act}")
        ax.legend(fontsize=7)
    ax = axes[1, 2]
    q = torch.linspace(-2.5, 2.5, 200)
    ax.plot(q, torch.sqrt(q ** 2 + 4), "k", label="λ_max = √(Q² + 4) on the valley")
    for v in res["valley"]:
        ax.annotate("", (v["Q_after"], v["lambda_max_after"]), (v["Q_before"], v["lambda_max_before"]),
                    arrowprops={"arrowstyle": "->", "color": "tab:red"})
        ax.plot(v["Q_before"], v["lambda_max_before"], "o", color="tab:blue")
    ax.plot([v["Q_after"] for v in res["valley"]], [v["lambda_max_after"] for v in res["valley"]], "*", color="tab:red",
            ms=12, label="after teleport to min sharpness")
    ax.set(xlabel="Q = U² − V²", ylabel="λ_max", title="1-D valley (App. G.1): teleport lands at Q = 0")
    ax.legend(fontsize=7)
    ax = axes[1, 3]
    names, cost = [], []
    for task, opts in (("regression", ("gd", "adagrad")), ("mnist", ("sgd", "adagrad"))):
        for opt in opts:
            names.append(f"{task}\n{opt}")
            cost.append(res[task][opt]["teleports"]["teleport_cost_in_steps"])
    ax.bar(names, cost, color="tab:gray")
    ax.set(ylabel="one teleport / one training step (seconds)", title="cost of a teleport", yscale="log")
    fig.tight_layout()
    return fig


def summarize(res: dict) -> dict:
    """What the claims read: per task and optimiser, steps and seconds to target with and without."""
    table = {}
    for task, opts in (("regression", ("gd", "adagrad")), ("mnist", ("sgd", "adagrad"))):
        for opt in opts:
            r = res[task][opt]
            table[f"{task}/{opt}"] = {
                "target_loss": r["target_loss"],
                **{f"{k}_{key}": r[key][f"{k}_to_target"] for key in ("without", "with") for k in ("steps", "seconds")},
                "final_loss_without": r["without"]["final_loss"], "final_loss_with": r["with"]["final_loss"],
                "speedup_steps": r["speedup_steps"], "speedup_seconds": r["speedup_seconds"], **r["teleports"]}
    return table


def _strip(res: dict) -> dict:
    """The JSON keeps per-run curves, as lists."""
    return E.to_jsonable(res)


def _f(x, spec: str) -> str:
    """A JSON number (null = not reached / not finite) formatted for a claim row."""
    return "n/a" if x is None else format(x, spec)


def claims(payload: dict) -> list[dict]:
    rows = []
    table = payload["summary"]
    for key, paper in (("regression/gd", "A-4"), ("regression/adagrad", "A-4"), ("mnist/sgd", "A-6"),
                       ("mnist/adagrad", "A-6/A-11")):
        t = table[key]
        w, wo = t["steps_with"], t["steps_without"]
        sw, swo = t["seconds_with"], t["seconds_without"]
        all_reached = w["reached"] == w["runs"] and wo["reached"] == wo["runs"]
        rows.append({
            "claim": f"teleportation speeds up {key} in steps (NeurIPS 2022, {paper})",
            "criterion": f"every run reaches loss {t['target_loss']:g}; mean steps with teleport < mean steps without",
            "holds": bool(all_reached and w["mean"] is not None and wo["mean"] is not None and w["mean"] < wo["mean"]),
            "measured": f"{_f(w['mean'], '.1f')} ± {_f(w['std'], '.1f')} vs {_f(wo['mean'], '.1f')} ± {_f(wo['std'], '.1f')} steps "
                        f"({w['reached']}/{w['runs']} and {wo['reached']}/{wo['runs']} reached)"})
        rows.append({
            "claim": f"teleportation speeds up {key} in wall-clock time, teleport cost included (NeurIPS 2022, {paper})",
            "criterion": f"every run reaches loss {t['target_loss']:g}; mean seconds with teleport < mean seconds without",
            "holds": bool(all_reached and sw["mean"] is not None and swo["mean"] is not None and sw["mean"] < swo["mean"]),
            "measured": f"{_f(sw['mean'], '.3f')} ± {_f(sw['std'], '.3f')} s vs {_f(swo['mean'], '.3f')} ± "
                        f"{_f(swo['std'], '.3f')} s; one teleport = {_f(t['teleport_cost_in_steps'], '.0f')} steps"})
    worst = max(t["max_relative_loss_change_on_teleport_batch"] for t in table.values())
    rows.append({"claim": "a teleport keeps the loss on its batch (exact action g = exp ξ, inputs recomputed)",
                 "criterion": "max relative loss change on the teleport batch ≤ 1e-9 (float64), every teleport",
                 "holds": bool(worst <= 1e-9), "measured": f"max {worst:.2g}"})
    for act, r in payload["two_layer"].items():
        wi, wo = r["with"]["steps_to_target"], r["without"]["steps_to_target"]
        rows.append({"claim": f"Fig. 6 net (σ = {act}): teleporting at init to the largest ‖∇L‖² converges in fewer steps",
                     "criterion": "GD steps to the target loss with teleport < without (both reach it)",
                     "holds": bool(wi is not None and wo is not None and wi < wo),
                     "measured": f"{_f(wi, 'g')} vs {_f(wo, 'g')} steps; Q₀ {r['Q0_before']:.3g} → {r['Q0_after']:.3g}"})
        scan = [q for q in r["Q0_scan"] if q["steps_to_target"] is not None]
        best = min(scan, key=lambda q: q["steps_to_target"]) if scan else None
        rows.append({"claim": f"Fig. 6 net (σ = {act}): Q₀ decides convergence speed, so teleporting at init to the "
                              f"fastest Q₀ tried converges in fewer steps",
                     "criterion": f"min over teleports to Q₀ + {[q['Q0_target'] - r['Q0_before'] for q in r['Q0_scan']]} of "
                                  f"GD steps to the target < steps without teleport; every teleport ΔL/L ≤ 1e-9",
                     "holds": bool(best is not None and wo is not None and best["steps_to_target"] < wo
                                   and max(q["relative_loss_change"] for q in r["Q0_scan"]) <= 1e-9),
                     "measured": ("none reached the target" if best is None else
                                  f"{best['steps_to_target']:g} steps at Q₀ = {best['Q0_reached']:.3g} vs {_f(wo, 'g')} at "
                                  f"Q₀ = {r['Q0_before']:.3g}; all: " +
                                  ", ".join(f"{q['Q0_reached']:.3g}→{_f(q['steps_to_target'], 'g')}" for q in r["Q0_scan"]))})
        if "minimum_teleport" not in r:
            continue
        m = r["minimum_teleport"]
        rows.append({"claim": f"Fig. 9 net (σ = {act}): teleporting at the minimum lowers λ_max at the same loss",
                     "criterion": "λ_max after < before and relative loss change ≤ 1e-9",
                     "holds": bool(m["lambda_max_after"] < m["lambda_max_before"] and m["relative_loss_change"] <= 1e-9),
                     "measured": f"λ_max {m['lambda_max_before']:.4g} → {m['lambda_max_after']:.4g}, "
                                 f"ΔL/L = {m['relative_loss_change']:.2g}"})
    v = payload["valley"]
    dq, dl = max(abs(r["Q_after"]) for r in v), max(abs(r["lambda_max_after"] - 2) for r in v)
    rows.append({"claim": "1-D valley (App. G.1): teleporting to minimum sharpness lands at Q = 0, λ_max = √(0+4) = 2",
                 "criterion": "every start: |Q after| < 1e-3 and |λ_max − 2| < 1e-6",
                 "holds": bool(dq < 1e-3 and dl < 1e-6),
                 "measured": f"max |Q| = {dq:.2g}, max |λ_max − 2| = {dl:.2g} from Q ∈ {[r['Q_before'] for r in v]}"})
    return rows


def main(argv: list[str] | None = None) -> dict:
    args, cfg = E.settings_from_cli(__doc__, Settings, quick, argv, dtype=False)  # float64 throughout
    with E.torch_threads(args.threads), E.Stopwatch() as clock:
        res = run(cfg)
    fig = plot(res, cfg)
    results = {**_strip(res), "summary": E.to_jsonable(summarize(res))}
    payload = E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)
    payload = {**payload, "claims": claims(payload)}
    E.write_json(f"{args.out}/{NAME}.json", payload)
    return payload


if __name__ == "__main__":
    E.run_script(main)
