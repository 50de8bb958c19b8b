"""Benchmark: one teleport ascent step against one training step and against the authors' first-order step.

On the ICLR 2024 MNIST net (784-16-10-10, no bias, LeakyReLU(0.1), float64), teleport batch of 200
(the approximate action) and training mini-batches of 20, medians of interleaved repeats:
(a) one training step of the engine (``symmetry.dynamics.run``'s AdaGrad step: forward, backward, update);
(b) one ascent step of ``symmetry.teleport.teleport_to`` (g = exp ξ, objective ‖∇L‖², backtracking off);
(c) the authors' first-order step: g = I + T with T = η ∇_T ‖∇L(g·θ)‖² at T = 0 (double backward), the
    same data-dependent action applied with g = I + T (written here, not copied).
Goal (issue 23): an ascent step under 3 training steps.
Usage: python benchmarks/bench_teleport.py [--repeats 15] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import symmetry as S
from repro import experiment as E
from symmetry import teleport as T

D = torch.float64


def problem():
    from repro.data import load_image_dataset

    d = load_image_dataset("mnist-subset")
    perm = torch.randperm(len(d["y"]), generator=torch.Generator().manual_seed(0))[:2000]
    X, y = d["x"][perm].T.to(D), d["y"][perm]
    dims = (784, 16, 10, 10)
    g = torch.Generator().manual_seed(0)
    W = tuple((2 * torch.rand(dims[i + 1], dims[i], generator=g, dtype=D) - 1) / math.sqrt(dims[i]) for i in range(3))
    return S.MLPClassifier(S.activations.leaky_relu(0.1)), W, (X[:, :20], y[:20]), (X[:, :200], y[:200])


def first_order_step(model, W, batch, lr: float):
    """g = I + T, T = lr · ∂‖∇L(g·θ)‖²/∂T at T = 0: the reference codes' ascent step (one layer sweep)."""
    group = T.NonlinearGL().bind(model, W, batch[0])
    zero = group.algebra_zero(requires_grad=True)
    eye = {k: torch.eye(z.shape[0], dtype=D) + z for k, z in zero.items()}
    moved = tuple(p.requires_grad_(True) if not p.requires_grad else p
                  for p in group.act_params(W, eye, check=False))
    value = T.gradient_norm_squared(lambda p: model.loss(p, *batch), moved)
    grads = torch.autograd.grad(value, list(zero.values()))
    with torch.no_grad():
        step = {k: torch.eye(g.shape[0], dtype=D) + lr * g for k, g in zip(zero, grads)}
        return tuple(p.detach() for p in group.act_params(W, step, check=False))


def measure(repeats: int) -> dict:
    model, W, batch, tbatch = problem()
    stepper = S.AdaGrad(1e-2)
    state = stepper.init_state(W)
    grad = S.dynamics.gradient_fn(model, *batch)

    def train_step():
        nonlocal state
        with torch.no_grad():
            state = stepper.step(state, grad)

    def ascent(steps):
        T.teleport_to(model, W, tbatch, "nonlinear", lr=1e-3, steps=steps, backtrack=False, approximate=True)

    train_step()
    ascent(1)
    first_order_step(model, W, tbatch, 1e-3)  # warm-up
    step_s, ascent_s, first_s = [], [], []
    for _ in range(repeats):  # interleaved: all see the same machine load
        tic = time.perf_counter()
        for _ in range(20):
            train_step()
        step_s.append((time.perf_counter() - tic) / 20)
        tic = time.perf_counter()
        ascent(0)
        setup = time.perf_counter() - tic
        tic = time.perf_counter()
        ascent(5)
        ascent_s.append(max(time.perf_counter() - tic - setup, 0.0) / 5)  # per ascent step, the setup taken out
        tic = time.perf_counter()
        first_order_step(model, W, tbatch, 1e-3)
        first_s.append(time.perf_counter() - tic)
    step, asc, first = (statistics.median(x) for x in (step_s, ascent_s, first_s))
    return {"median_training_step_s": step, "median_ascent_step_s": asc, "median_first_order_step_s": first,
            "ascent_step_in_training_steps": asc / step, "first_order_step_in_training_steps": first / step,
            "goal_ascent_step_under_3_training_steps": bool(asc / step < 3), "repeats": repeats}


def plot(result: dict):
    plt = E.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = ["training step\n(AdaGrad, batch 20)", "ascent step\n(g = exp ξ, batch 200)", "first-order step\n(g = I + T, batch 200)"]
    values = [1.0, result["ascent_step_in_training_steps"], result["first_order_step_in_training_steps"]]
    ax.bar(names, values, color=["tab:gray", "tab:red", "tab:blue"])
    ax.axhline(3, color="k", ls=":", lw=0.8, label="goal: ascent step < 3 training steps")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    ax.set(ylabel="cost in training steps (medians)", title="ICLR 2024 MNIST net 784-16-10-10")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats (medians reported)")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench_teleport.{json,png}")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be a positive integer")
    with E.torch_threads(1):
        result = measure(args.repeats)
    result["environment"] = E.environment()
    E.write_json(f"{args.out}/bench_teleport.json", result)
    E.save_figure(plot(result), args.out, "bench_teleport")
    print(f"one training step {result['median_training_step_s'] * 1e3:.2f} ms; one ascent step = "
          f"{result['ascent_step_in_training_steps']:.1f} training steps; the first-order step = "
          f"{result['first_order_step_in_training_steps']:.1f}")
    return result


if __name__ == "__main__":
    main()
