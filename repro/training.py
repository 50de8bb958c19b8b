"""Training of the paper's synthetic experiments (Figs. 3, 6, 9) on the dynamics engine.

GD on F = Uσ(Vᵀ) with whitened input and the mean squared error, many configurations (activation,
learning rate, init scale) in one batched run of [`symmetry.dynamics.gradient_descent`][]
(the fused [`TwoLayerGD`][symmetry.dynamics.TwoLayerGD] stepper), with Q (Eq. 48) and Q̃ (App. D.2)
recorded in float64.
"""
from __future__ import annotations

import torch

from symmetry.conserved import conserved_Q, normalized_Q
from symmetry.dynamics import Trajectory, gradient_descent
from symmetry.init import gaussian_init
from symmetry.models import TwoLayerNet

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def step_budgets(activations, steps: int, sigmoid_steps: int) -> dict[int, list[str]]:
    """Activations grouped by step budget: the paper trains sigmoid nets twice as long (Figs. 3, 6, 9)."""
    groups: dict[int, list[str]] = {}
    for a in activations:
        groups.setdefault(sigmoid_steps if a == "sigmoid" else steps, []).append(a)
    return groups


def _two_layer_start(m: int, n: int, h: int, configs: list[tuple[str, float, float]], seed: int, dtype: str,
                     device: str, start: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, tuple[torch.Tensor, ...]]:
    """(init in float64, target Y, init in the training dtype): one standard-normal draw (``seed``)
    times each configuration's init_std, or the float64 batch ``start`` = (U, V) of shapes (B, m, h),
    (B, n, h) given by the caller; and Y ~ N(0, 1) (``seed + 1``)."""
    if start is None:
        U0, V0 = gaussian_init(m, h, n, std=1.0, seed=seed, dtype=torch.float64)
        std = torch.tensor([s for _, _, s in configs], dtype=torch.float64).reshape(-1, 1, 1)
        start = (std * U0, std * V0)
    else:
        shapes = ((len(configs), m, h), (len(configs), n, h))
        if len(start) != 2 or any(tuple(p.shape) != want or p.dtype != torch.float64
                                  for p, want in zip(start, shapes)):
            raise ValueError(f"start must be a float64 pair (U, V) of shapes {shapes[0]} and {shapes[1]}, one per "
                             f"configuration; got {[(tuple(p.shape), p.dtype) for p in start]}")
    init64 = (start[0].to(device), start[1].to(device))
    Y = torch.randn(m, n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return init64, Y, tuple(p.to(DTYPES[dtype]) for p in init64)


def _two_layer_run(configs: list[tuple[str, float, float]], params, init64, Y: torch.Tensor, steps: int, *,
                   dtype: str, record_every: int, description: str) -> Trajectory:
    """Batched GD of the configurations from ``params``, with Q and Q̃ (against ``init64``) in float64.
    η is held in the parameters' dtype (a float64 run steps with η in float64, not rounded to float32)."""
    net = TwoLayerNet([a for a, _, _ in configs])

    def as64(p):
        return tuple(x.double() for x in p)

    return gradient_descent(
        net, params, None, Y.to(params[0]), torch.tensor([lr for _, lr, _ in configs], dtype=params[0].dtype), steps,
        record_every=record_every, progress=True, description=description,
        labels=[f"{a}, lr={lr:g}, std={s:g}, {dtype}" for a, lr, s in configs],
        observables={"Q": lambda s: conserved_Q(as64(s.params), net.activation),
                     "Q_tilde": lambda s: normalized_Q(as64(s.params), net.activation, init64)})


def train_two_layer(m: int, n: int, h: int, configs: list[tuple[str, float, float]], steps: int, *, seed: int,
                    dtype: str = "float32", device: str = "cpu", record_every: int = 100,
                    description: str = "gradient descent") -> dict:
    """The synthetic experiment of Figs. 3, 6, 9: GD on F = Uσ(Vᵀ) (whitened input, MSE) for a list
    of configurations (activation, lr, init_std), all stepped together in one batched tensor.

    Every configuration starts from the same standard-normal draw (``seed``) times its init_std
    and fits the same target Y ~ N(0, 1) (``seed + 1``), so configurations differ only in what
    they name. Q (Eq. 48) and Q̃ (App. D.2) are evaluated in float64 every ``record_every`` steps.
    Returns tensors ``steps`` (T,), ``loss`` (T, B), ``Q``, ``Q_tilde`` (T, B), ``final_params``, ``Y``.
    """
    init64, Y, params = _two_layer_start(m, n, h, configs, seed, dtype, device)
    run = _two_layer_run(configs, params, init64, Y, steps, dtype=dtype, record_every=record_every,
                         description=description)
    return {"steps": run.times, "loss": run.loss.double().cpu(), "Q": run.observables["Q"].cpu(),
            "Q_tilde": run.observables["Q_tilde"].cpu(), "final_params": tuple(p.cpu() for p in run.params), "Y": Y}


def train_two_layer_budgets(m: int, n: int, h: int, groups: dict[int, list[tuple[str, float, float]]], *,
                            seed: int, dtype: str = "float32", device: str = "cpu", record_every: int = 100,
                            description: str = "gradient descent",
                            starts: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[int, dict]:
    """[`train_two_layer`][] for configurations with different step budgets ({steps: configs}),
    in one batch: every configuration runs together up to the smallest budget, then those with
    more steps continue (sigmoid nets train twice as long in Figs. 3 and 6). The loop's cost is
    per step, not per configuration, so this saves the steps the groups would repeat apart.
    Returns, per budget, exactly what ``train_two_layer(…, configs, steps)`` returns; budgets must
    be multiples of ``record_every`` so that the records fall where a single run puts them.
    ``starts`` ({steps: (U, V)}, float64, one row per configuration of that budget) replaces the scaled
    draw as the initialisation (Fig. 6's sweep along an orbit at a fixed initial loss).
    """
    budgets = sorted(groups)
    if any(b % record_every for b in budgets):
        raise ValueError(f"every step budget {budgets} must be a multiple of record_every={record_every}")
    if starts is not None and set(starts) != set(groups):
        raise ValueError(f"starts must have the step budgets of groups as keys, {budgets}; got {sorted(starts)}")
    configs = [c for b in budgets for c in groups[b]]
    budget_of = torch.tensor([b for b in budgets for _ in groups[b]])
    given = None if starts is None else (torch.cat([starts[b][0] for b in budgets]),
                                         torch.cat([starts[b][1] for b in budgets]))
    init64, Y, params = _two_layer_start(m, n, h, configs, seed, dtype, device, given)
    active = torch.arange(len(configs))
    phases, done = [], 0  # (configurations stepped, their trajectory, steps before it)
    for budget in budgets:
        keep = budget_of[active] >= budget
        active, params = active[keep], tuple(p[keep] for p in params)
        run = _two_layer_run([configs[i] for i in active.tolist()], params, tuple(p[active] for p in init64), Y,
                             budget - done, dtype=dtype, record_every=record_every,
                             description=f"{description} ({done}–{budget})")
        phases.append((active.tolist(), run, done))
        params, done = run.params, budget
    results = {}
    for budget in budgets:
        index = (budget_of == budget).nonzero().reshape(-1).tolist()
        parts, last = [], None
        for k, (stepped, run, start) in enumerate(phases):
            if start >= budget:
                break
            columns = [stepped.index(i) for i in index]
            first = 0 if k == 0 else 1  # a later phase's step 0 repeats the previous phase's last record
            parts.append((run.times[first:] + start, run.loss.double().cpu()[first:, columns],
                          run.observables["Q"].cpu()[first:, columns],
                          run.observables["Q_tilde"].cpu()[first:, columns]))
            last = tuple(p[columns].cpu() for p in run.params)
        steps, loss, Q, Q_tilde = (torch.cat(x) for x in zip(*parts, strict=True))
        results[budget] = {"steps": steps, "loss": loss, "Q": Q, "Q_tilde": Q_tilde, "final_params": last, "Y": Y}
    return results
