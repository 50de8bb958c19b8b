"""The tables of the README and the documentation pages, written from the committed JSONs.

A page marks each generated table with a pair of HTML comments:

    <!-- report:NAME -->
    ...the table, as render() writes it...
    <!-- /report:NAME -->

``python reproduce.py --report`` rewrites every such block ([`update_pages`][repro.report.update_pages]); the test suite checks that the
committed pages equal what it would write, so a table can only go stale by failing CI. Numbers in prose are
checked against the JSONs by ``tests/test_readme_numbers.py`` instead.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["PAGES", "TABLES", "render", "tally", "update_pages", "verdict"]

# The figure table: every script and notebook that writes a committed figure, in the order of the paper.
SCRIPTS = ("Q_dynamics_elementwise", "Q_distribution", "Q_convergence_elementwise", "Q_convergence_radial",
           "Q_sharpness_1d", "Q_hessian_eigenvalues", "noether_dynamics", "conservation_laws",
           "conservation_under_optimizers", "teleportation", "conservation_modern")
NOTEBOOKS = ("ensemble_CIFAR", "adversarial_CIFAR")
# the pages that hold generated blocks, relative to the repository root
PAGES = ("README.md", "docs/index.md", "docs/results.md", "docs/figures.md", "docs/beyond-gradient-flow.md",
         "docs/optimizers.md", "docs/performance.md", "docs/counting-laws.md", "docs/modern.md", "docs/teleportation.md")
BLOCK = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)


def _json(root: Path, relative: str) -> dict:
    return json.loads((root / relative).read_text(encoding="utf-8"))


def _cell(value: object) -> str:
    """A table cell: pipes escaped (they would split the row), newlines folded."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _what_it_shows(root: Path, name: str) -> str:
    """The first line of a script's docstring, or the first heading of a notebook: each states its figure."""
    if name in NOTEBOOKS:
        cells = _json(root, f"{name}.ipynb")["cells"]
        first = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"]).splitlines()[0]
        return first.lstrip("# ").strip()
    doc = ast.get_docstring(ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))) or ""
    return doc.splitlines()[0].strip() if doc else name


def _job_seconds(name: str, claims: dict) -> tuple[float | None, int]:
    """A figure's job time in the reproduce.py run that wrote ``claims.json`` (its parts' jobs included) and its
    number of parts; None where that run did not time it (a record marked ``from`` came from elsewhere)."""
    record = (claims.get("figure_seconds") or {}).get(name)
    if not record or "from" in record:
        return None, 0
    return float(record["seconds"]), len(record.get("parts") or {})


def figure_table(root: Path) -> str:
    """Script, what it shows, and its time: one kind of time per column. The reproduce.py job (the main job that
    wrote figures/claims.json, a split figure's parts included), or, for what that run did not time (the notebooks),
    the ``wall_time_s`` of its own run; the last row is that reproduce.py run's wall time, where it recorded one."""
    claims = _json(root, "figures/claims.json")
    rows = ["| script | what it shows | reproduce.py job (s) | its own run (s) |", "|---|---|---:|---:|"]
    for name in (*SCRIPTS, *NOTEBOOKS):
        if not (root / "figures" / f"{name}.json").exists():
            continue
        seconds, parts = _job_seconds(name, claims)
        job = "—" if seconds is None else f"{seconds:.0f}" + (f" ({parts} parts)" if parts else "")
        own = f"{float(_json(root, f'figures/{name}.json')['wall_time_s']):.0f}" if seconds is None else "—"
        file = f"{name}.ipynb" if name in NOTEBOOKS else f"{name}.py"
        rows.append(f"| `{file}` | {_cell(_what_it_shows(root, name))} | {job} | {own} |")
    wall = claims.get("wall_seconds")
    bench = root / "benchmarks" / "results" / "bench_reproduce.json"
    if wall is None and bench.exists():  # claims.json made before runs of every figure recorded their wall
        quiet = json.loads(bench.read_text(encoding="utf-8")).get("quiet") or {}
        wall = quiet.get("wall_s") if quiet.get("ok") else None
    rows.append(f"| **`reproduce.py`, wall** | the main job: every script (.py) above | "
                f"**{'—' if wall is None else f'{float(wall):.0f}'}** | — |")
    return "\n".join(rows)


# Whose claims each figure's rows test, and at which settings: the headline counts this paper's apart.
CHECK = "conservation_check"  # reproduce.py's own two rows (Q under GF and GD), this paper's Prop. 12 / App. D
GROUPS = (
    ("this paper (Zhao et al., ICLR 2023)",
     (CHECK, "Q_dynamics_elementwise", "Q_distribution", "Q_convergence_elementwise", "Q_convergence_radial",
      "Q_sharpness_1d", "Q_hessian_eigenvalues"),
     "Figs. 3–9 and App. G.1 at the paper's settings; Figs. 10–11 (the notebooks) have no claim rows"),
    ("related papers (Gluch & Urbanke 2021; Marcotte et al. 2023)", ("noether_dynamics", "conservation_laws"),
     "their claims on their models, at settings listed in each script"),
    ("extensions (Kunin et al. 2021; teleportation, Zhao et al. 2022 and 2024; modern architectures)",
     ("conservation_under_optimizers", "teleportation", "conservation_modern"),
     ("other papers' claims at CPU-scaled or chosen settings, the deviations beside each row; only the NeurIPS 2022 "
      "regression rows of teleportation run at that paper's settings")),
)


def _grouped(data: dict) -> list[tuple[str, str, list[dict]]]:
    """(group, its settings, its rows) in the order of ``GROUPS``; needs claims.json's ``claim_figures``."""
    owners = data.get("claim_figures")
    rows = data["claims"]
    if owners is None or len(owners) != len(rows):
        raise ValueError("figures/claims.json has no claim_figures beside its claims: run `python reproduce.py --report`")
    known = {name for _, names, _ in GROUPS for name in names}
    unknown = sorted(set(owners) - known)
    if unknown:
        raise ValueError(f"claim rows of {', '.join(unknown)} belong to no paper: add them to repro.report.GROUPS")
    return [(label, settings, [r for r, o in zip(rows, owners) if o in names]) for label, names, settings in GROUPS]


def claim_count(root: Path) -> str:
    """How many claim rows hold, this paper's apart from the related papers' and the extensions' (the README's
    first screen), with a link to the table."""
    data = _json(root, "figures/claims.json")
    parts = [f"**{label}: {tally(rows)}** ({settings})" for label, settings, rows in _grouped(data)]
    return ("; ".join(parts) + f". In all, {tally(data['claims'])}; every row, its criterion and what was measured: "
            f"[the results page](docs/results.md).")


def tally(rows: list[dict]) -> str:
    """How many rows hold, do not, and could not be measured (holds None), counted apart."""
    held, failed = sum(r["holds"] is True for r in rows), sum(r["holds"] is False for r in rows)
    unmeasured = len(rows) - held - failed
    return f"{held} of {len(rows)} claims hold, {failed} do not" + (f", {unmeasured} not measured" if unmeasured else "")


def verdict(holds: bool | None, markdown: bool = True) -> str:
    """A claim row's ``holds`` as a table prints it: yes, NO, or not measured (the console's narrow column: n/m;
    a Markdown table's NO in bold). The one renderer of a verdict: the pages and ``reproduce.py``'s table."""
    if holds is None:
        return "not measured" if markdown else "n/m"
    return "yes" if holds else "**NO**" if markdown else "NO"


def claim_table(root: Path) -> str:
    """Every claim row of ``figures/claims.json``: the claim, yes/NO, what was measured, the criterion."""
    data = _json(root, "figures/claims.json")
    lines = []
    for label, settings, rows in _grouped(data):
        lines += [f"**{label[0].upper()}{label[1:]}**: {tally(rows)} ({settings}).", "",
                  "| claim | holds | measured | criterion |", "|---|---|---|---|"]
        lines += [f"| {_cell(r['claim'])} | {verdict(r['holds'])} | {_cell(r['measured'])} | "
                  f"{_cell(r['criterion'])} |" for r in rows]
        lines.append("")
    lines.append(f"In all, {tally(data['claims'])} (seed {data['settings']['seed']}).")
    return "\n".join(lines)


def teleportation_claims(root: Path) -> str:
    """teleportation.py's rows of ``figures/claims.json``: each result, its verdict, and in words what caused it
    (the "Cause:" of each row) and whether a NO refutes the paper or comes from a setting that differs."""
    data = _json(root, "figures/claims.json")
    rows = [r for r, o in zip(data["claims"], data.get("claim_figures") or []) if o == "teleportation"]
    lines = ["| claim | holds | measured, cause and setting |", "|---|---|---|"]
    lines += [f"| {_cell(r['claim'])} | {verdict(r['holds'])} | {_cell(r['measured'])} |" for r in rows]
    lines.append("")
    lines.append(f"{tally(rows)}; each row's criterion and deviations from the paper: [the results page](results.md).")
    return "\n".join(lines)


def conservation_check(root: Path) -> str:
    """The check every figure's Q axis rests on (reproduce.py): Q's drift under GF and under GD at two lrs."""
    data = _json(root, "figures/claims.json")
    lrs = data["settings"]["lrs"]
    lines = ["| σ | Q₀ | drift under GF | " + " | ".join(f"drift under GD, lr {lr}" for lr in lrs) + " |",
             "|---|---:|---:|" + "---:|" * len(lrs)]
    for r in data["conservation_check"]:
        gd = " | ".join(f"{r[f'gd_drift_lr{lr}']:.2e}" for lr in lrs)
        lines.append(f"| {r['activation']} | {r['Q0']:.4f} | {r['gf_drift']:.2e} | {gd} |")
    return "\n".join(lines)


def noether_drift_table(root: Path) -> str:
    """Gluch & Urbanke's (quantity, dynamics) table, as ``noether_dynamics.py`` wrote it into its JSON."""
    return _json(root, "figures/noether_dynamics.json")["drift_table_markdown"].strip()


def optimizer_table(root: Path) -> str:
    """What the optimizers conserve: one row per measurement, one column per model (conservation_under_optimizers)."""
    data = _json(root, "figures/conservation_under_optimizers.json")
    s, summary = data["settings"], data["summary"]
    models = [m for m in ("mlp", "cnn") if m in summary]
    titles = {"mlp": "MLP / MNIST", "cnn": "CNN / CIFAR-10"}

    def row(label: str, cell: Callable[[dict], str], prediction: str) -> str:
        return f"| {label} | " + " | ".join(cell(summary[m]) for m in models) + f" | {prediction} |"

    lrs = " / ".join(f"{lr:g}" for lr in s["sgd_lrs"])
    adam = f"Adam lr={s['adam_lr']:g}"  # the run's name in the summary
    return "\n".join([
        "| | " + " | ".join(titles[m] for m in models) + " | prediction |",
        "|---|" + "---|" * len(models) + "---|",
        row("GD: ΔQ_i per step − η²B(∇L, ∇L) (relative)", lambda x: f"{x['gd_identity_error']:.1e}",
            "exactly 0 (Prop. 13's form with biases)"),
        row("mini-batch SGD: ΔQ_i per step − η²B(ĝ, ĝ) of its mini-batch gradient (relative)",
            lambda x: f"{x['minibatch_identity_error']:.1e}", "exactly 0 (Kunin et al.)"),
        row(f"full-batch GD, final max relative drift at lr {lrs}",
            lambda x: " / ".join(f"{v:.1e}" for v in x["sgd_drift_by_lr"]), "grows with η (O(η²) per step)"),
        row("mini-batch SGD, the same", lambda x: " / ".join(f"{v:.1e}" for v in x["minibatch_drift_by_lr"]), ""),
        row("… the drift's exponent p in η^p, least squares: full batch; mini-batch",
            lambda x: f"{x['drift_exponent']['full_batch']['fit']:.2f}; {x['drift_exponent']['minibatch']['fit']:.2f}",
            "2 ± 0.5"),
        row(f"weight decay (lr = {s['decay_lr']:g}, λ = {s['weight_decay']:g}): change of Q over t = "
            f"{summary[models[0]]['decay']['flow_time']:g}",
            lambda x: f"{x['decay']['change_max']:.2g}", "e^{−2λt} plus the finite-lr term"),
        row("… error of Kunin et al.'s prediction (pure e^{−2λt}); their finite-lr term",
            lambda x: f"{x['decay']['kunin_error_max']:.1e} ({x['decay']['pure_decay_error_max']:.1e}); "
                      f"{x['decay']['finite_lr_term_max']:.1e}", "error below a tenth of the term"),
        row(f"momentum {s['momentum']:g} (lr = {s['momentum_lr']:g}): final drift; damped equation, relative error",
            lambda x: f"{x['momentum_kunin']['change_max']:.2g}; {x['momentum_kunin']['kunin_relative_error']:.2g}",
            "with the measured buffers"),
        row(f"Adam (lr = {s['adam_lr']:g}): final drift; over SGD at the smallest lr",
            lambda x: f"{x['final_max_drift'][adam]:.2g}; "
                      f"{x['adam_over_smallest_sgd_drift']:.1e} ×", "none"),
    ])


#: bench_reproduce.py's wall-time rows: (label, key of a condition); a results file shows the rows it has
WALL_ROWS = (("main job, reproduce.py wall", "wall_s"), ("paper figures (Figs. 3–9, G.1) alone, reproduce.py wall",
                                                        "paper_wall_s"),
             ("main paper, reproduce.py wall", "main_s"), ("everything, reproduce.py wall", "all_s"))


def benchmark_table(results: dict) -> str:
    """bench_reproduce.py's results: quiet and busy job time per figure, and the reproduce.py wall times.

    A condition the run left out (``--conditions``) shows "not measured" in its column."""
    quiet, busy = results["quiet"] or {}, results["busy"] or {}

    def cell(x: float | None) -> str:
        return "—" if x is None else f"{x:.1f}"

    def ratio(q: float | None, b: float | None) -> str:
        return "—" if not q or b is None else f"{b / q:.2f}"

    missing = [name for name, c in (("quiet", results["quiet"]), ("one core busy", results["busy"])) if c is None]
    lines = ["| figure | quiet: job (s) | one core busy: job (s) | busy / quiet |", "|---|---:|---:|---:|"]
    names = (quiet or busy).get("figures_s", {})
    for name in names:
        q, b = quiet.get("figures_s", {}).get(name), busy.get("figures_s", {}).get(name)
        lines.append(f"| `{name}` | {cell(q)} | {cell(b)} | {ratio(q, b)} |")
    for label, key in WALL_ROWS:
        q, b = quiet.get(key), busy.get(key)
        if q or b:
            lines.append(f"| **{label}** | **{cell(q)}** | **{cell(b)}** | **{ratio(q, b)}** |")
    if missing:
        lines += ["", f"Not measured in this run: {' and '.join(missing)} (`--conditions`)."]
    return "\n".join(lines)


def reproduce_benchmark(root: Path) -> str:
    """The committed ``benchmarks/results/bench_reproduce.json`` as [`benchmark_table`][repro.report.benchmark_table] writes it."""
    return benchmark_table(_json(root, "benchmarks/results/bench_reproduce.json"))


def law_counts(root: Path) -> str:
    """conservation_laws.py: the paper's laws against ALGO 2's count, per model, and ALGO 1's polynomials."""
    data = _json(root, "figures/conservation_laws.json")
    lines = ["| model | D | the paper's laws | independent | laws found (ALGO 2) | complete? | ALGO 1, degree 2 |",
             "|---|---:|---|---:|---:|---|---|"]
    for r in data["paper_models"]:
        poly = r.get("polynomial")
        algo1 = f"{poly['count']} polynomials, {poly['independent']} independent" if poly else "—"
        lines.append(f"| {_cell(r['description'])} | {r['D']} | {_cell(r['paper_laws'])} | {r['paper_independent']} | "
                     f"{r['laws_found']} | {'yes' if r['paper_complete'] else '**no**'} | {algo1} |")
    for r in data["region_models"]:
        counts = sorted({g["laws"] for g in r["regions"]})
        points = sum(g["points"] for g in r["regions"])
        found = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}, by activation region"
        extra = [g for g in r["regions"] if g["laws"] > r["paper_independent"]]
        complete = ("yes" if not extra else "in general position, yes; more where two neurons share a sign pattern"
                    if all(g["neurons_share_pattern"] for g in extra) else "locally no: extra laws on some regions")
        lines.append(f"| {_cell(r['description'])} | {r['D']} | Eq. 48 per neuron | {r['paper_independent']} | "
                     f"{found} ({points} points) | {complete} | — |")
    return "\n".join(lines)


def law_benchmark(root: Path) -> str:
    """bench_laws.py: the reference's random architectures, timed, against the reference's own seconds."""
    data = _json(root, "benchmarks/results/bench_laws.json")
    reference = data["reference_seconds"]
    lines = ["| set | all match | median per architecture | max (its widths, D) | the reference (SageMath) |",
             "|---|---|---:|---|---:|"]
    for key, label in (("linear", "50 linear"), ("relu", "50 ReLU"), ("relu_every_pair", "50 ReLU, every pair bracketed")):
        r = data[key]
        slow = r["slowest"]
        ref = f"{reference[key]:g} s" if key in reference else ""
        lines.append(f"| {label} | {'yes' if r['all_match'] else '**no**'} | {r['median_s']:.3g} s | {r['max_s']:.3g} s "
                     f"({tuple(slow['widths'])}, D = {slow['D']}) | {ref} |")
    return "\n".join(lines)


def module_law_benchmark(root: Path) -> str:
    """bench_laws.py's module series: ReLU MLPs with biases counted through the module route, each in a fresh
    process: wall and CPU time, the load average, the measured peak and the estimate made before allocating."""
    series = _json(root, "benchmarks/results/bench_laws.json")["modules"]["series"]
    lines = ["| widths | D | laws (hidden neurons) | wall | CPU | load avg. | peak | estimate |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {tuple(r['widths'])} | {r['D']} | {r['laws']} ({r['hidden_neurons']}) | {r['seconds']:.2f} s | "
              f"{r['cpu_seconds']:.2f} s | {r['load_average_1min']:.1f} | {r['peak_mb']:.1f} MB | {r['estimate_mb']:.1f} MB |"
              for r in series]
    return "\n".join(lines)


def adversarial_paired(root: Path) -> str:
    """Fig. 11 under transferred FGSM: the group ensemble against the single model, paired over seeds (each seed's
    ensemble is built on that seed's model), so a "beats" needs every seed's difference above zero."""
    data = _json(root, "figures/adversarial_CIFAR.json")
    radii = [a["radius"] for a in data["settings"]["attacks"]["fgsm"]]
    summary = data["summary"]["transfer"]["fgsm"]
    lines = ["| FGSM strength | single model | group ensemble | group − single, per seed | beats on every seed |",
             "|---:|---:|---:|---|---|"]
    for i, radius in enumerate(radii):
        diffs = [run["transfer"]["fgsm"]["group"][i] - run["transfer"]["fgsm"]["original"][i] for run in data["runs"]]
        single, group = summary["original"], summary["group"]
        lines.append(f"| {radius:g} | {single['mean'][i]:.3f} ± {single['std'][i]:.3f} | {group['mean'][i]:.3f} ± "
                     f"{group['std'][i]:.3f} | {', '.join(f'{d:+.3f}' for d in diffs)} | "
                     f"{'yes' if all(d > 0 for d in diffs) else 'no'} |")
    return "\n".join(lines)


def modern_table(root: Path) -> str:
    """conservation_modern.py: per model, each law family and control: its relative error after the run's steps under
    SGD (smallest and largest lr, the fitted exponent in lr), Adam, and weight decay (the error of Thm 2.1's
    prediction against the change)."""
    data = _json(root, "figures/conservation_modern.json")
    titles = {"resnet": "ResNet-18, no BN", "resnet_bn": "ResNet-18, BN", "vit": "ViT", "gpt": "GPT"}
    lines = ["| model | quantity | SGD, smallest lr | SGD, largest lr | exponent in lr | Adam | weight decay: "
             "prediction error (change) |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, s in data["summary"].items():
        lo, hi = s["lrs"][0], s["lrs"][-1]
        for kind, values, exponents in (("law", s["law_final_by_lr"], s["law_exponent"]),
                                        ("control", s["control_final_by_lr"], s["control_exponent"])):
            for q, v in values.items():
                exponent = exponents.get(q)
                adam = (s.get("adam_final") if kind == "law" else s.get("adam_control_final")) or {}
                decay = (s.get("decay") or {}).get(q) if kind == "law" else None
                decayed = f"{decay['prediction_error']:.1e} ({decay['change']:.2g})" if decay else "—"
                lines.append(f"| {titles.get(name, name)} | {_cell(q)}{' (control)' if kind == 'control' else ''} | "
                             f"{v[0]:.1e} (lr {lo:g}) | {v[-1]:.1e} (lr {hi:g}) | "
                             f"{'—' if exponent is None else f'{exponent:.2f}'} | "
                             f"{f'{adam[q]:.2g}' if q in adam else '—'} | {decayed} |")
    return "\n".join(lines)


def modern_sizes(root: Path) -> str:
    """conservation_modern.py's committed run: what each model was, at which sizes, and its optimizers."""
    data = _json(root, "figures/conservation_modern.json")
    cfg = data["settings"]
    titles = {"resnet": "ResNet-18, no BN", "resnet_bn": "ResNet-18, BN", "vit": "ViT", "gpt": "GPT"}
    lines = ["| model | sizes of this run | optimizers |", "|---|---|---|"]
    for name, r in data["runs"].items():
        sizes = "; ".join(f"{k}: {v}" for k, v in r["sizes"].items())
        if name == "gpt":
            c = r["corpus"]
            sizes += f"; corpus: {c['characters']} characters of {', '.join(c['files'][:3])}, … (vocabulary {c['vocabulary']})"
        optimizers = "; ".join(r["runs"])
        lines.append(f"| {titles.get(name, name)} | {_cell(sizes)} | {_cell(optimizers)} |")
    lines.append("")
    lines.append(f"float64 throughout; seed {cfg['seed']}; {'the papers’ sizes (--full)' if cfg.get('full') else 'CPU sizes'}"
                 f"{' (--quick)' if cfg.get('quick') else ''}; {data['wall_time_s']:.0f} s wall.")
    return "\n".join(lines)


def modern_benchmark(root: Path) -> str:
    """bench_modern.py: per model of conservation_modern.py, at the committed run's sizes, one training step with and
    without ConservationMonitor.record (float64, one thread), and the committed run's wall time and peak memory."""
    data = _json(root, "benchmarks/results/bench_modern.json")
    titles = {"resnet": "ResNet-18, no BN", "resnet_bn": "ResNet-18, BN", "vit": "ViT", "gpt": "GPT"}
    lines = ["| model | laws (blocks) | training step | record | record / step |", "|---|---:|---:|---:|---:|"]
    for name, r in data["models"].items():
        lines.append(f"| {titles.get(name, name)} | {r['laws']} ({r['blocks']}) | {1e3 * r['train_step_median_s']:.1f} ms | "
                     f"{1e3 * r['record_median_s']:.2f} ms | {100 * r['record_over_train_step']:.2f} % |")
    run = data["committed_run"]
    lines.append("")
    lines.append(f"The committed run: {run['wall_time_s']:.0f} s wall, peak memory {run['peak_memory_mb_of_process']:.0f} MB "
                 f"(settings {run['settings_hash']}).")
    return "\n".join(lines)


TABLES: dict[str, Callable[[Path], str]] = {
    "figures": figure_table, "claim-count": claim_count, "claims": claim_table, "teleportation": teleportation_claims,
    "conservation-check": conservation_check, "noether-drift": noether_drift_table,
    "optimizers": optimizer_table, "reproduce-benchmark": reproduce_benchmark, "law-counts": law_counts,
    "law-benchmark": law_benchmark, "module-law-benchmark": module_law_benchmark,
    "adversarial-paired": adversarial_paired, "modern": modern_table, "modern-sizes": modern_sizes,
    "modern-benchmark": modern_benchmark,
}


def render(name: str, root: str | Path = ".") -> str:
    """The block ``name`` (a key of `TABLES`) as the committed JSONs under ``root`` give it."""
    if name not in TABLES:
        raise ValueError(f"report block {name!r}: choose from {', '.join(TABLES)}")
    return TABLES[name](Path(root))


def update_pages(root: str | Path = ".", write: bool = True) -> list[str]:
    """Rewrite every generated block of `PAGES` from the JSONs; return the pages that changed (with
    ``write=False``, the pages that would change: the test suite's check). A page whose blocks name an unknown
    table raises, so a typo cannot leave a block unchecked."""
    root = Path(root)
    changed = []
    for page in PAGES:
        path = root / page
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        fresh = BLOCK.sub(lambda m: f"{m.group(1)}{render(m.group('name'), root)}\n{m.group(4)}", text)
        if fresh != text:
            changed.append(page)
            if write:
                tmp = path.with_name(f".{path.name}.report-tmp")
                tmp.write_text(fresh, encoding="utf-8")
                tmp.replace(path)  # atomic: a page is the old one or the new one
    return changed
