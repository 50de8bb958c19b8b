"""Benchmark: the cost of one teleport against one training step (issue 15), medians of interleaved repeats.

Two settings of teleportation.py: the NeurIPS 2022 regression (LeakyReLU 5-6-7-8, 4 samples, the
data-dependent action of Prop. 8; GD teleport = 8 ascent steps, AdaGrad teleport = 2) and the MNIST
net (784-32-32-10, a teleport on a 20-sample batch = 10 ascent steps). A training step is one
``torch.optim`` step of the same run (forward, backward, update), timed the same way. The teleports
run with backtracking off and a teleport lr small enough that no step is refused, so every repeat
does exactly its ascent steps (the cost per ascent step does not depend on the lr).
Runtime: about 30 s on a 2-core CPU.
Usage: python benchmarks/bench_teleport.py [--repeats 15] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import symmetry as S
from symmetry import experiment as E
from symmetry import teleport as T

D = torch.float64


def regression():
    g = torch.Generator().manual_seed(0)
    dims = (5, 6, 7, 8)
    W = tuple(torch.rand(dims[i + 1], dims[i], generator=g, dtype=D) for i in range(3))
    data = (torch.rand(5, 4, generator=g, dtype=D), torch.rand(8, 4, generator=g, dtype=D))
    return S.MLP(S.activations.leaky_relu(0.1), reduction="half_sum"), W, data, data


def mnist():
    from symmetry.data import load_image_dataset

    d = load_image_dataset("mnist-subset")
    X, y = d["x"][:2000].T.to(D), d["y"][:2000]
    dims = (784, 32, 32, 10)
    g = torch.Generator().manual_seed(0)
    W = tuple((2 * torch.rand(dims[i + 1], dims[i], generator=g, dtype=D) - 1) / math.sqrt(dims[i]) for i in range(3))
    batch = (X[:, :20], y[:20])
    return S.MLPClassifier(S.activations.leaky_relu(0.1)), W, batch, batch


CASES = {  # name: (problem, optimizer, lr, teleport lr, ascent steps)
    "regression/gd": (regression, "gd", 1e-4, 1e-9, 8),
    "regression/adagrad": (regression, "adagrad", 1e-1, 1e-7, 2),
    "mnist/sgd": (mnist, "sgd", 0.05, 1e-3, 10),
}


def measure(name: str, repeats: int) -> dict:
    make, optimizer, lr, tlr, tsteps = CASES[name]
    model, W, batch, tbatch = make()
    stepper = T.OptimizerStepper(lambda p, b: model.loss(p, *b), W, optimizer, lr)
    stepper.step(batch)  # warm-up
    T.teleport(model, W, tbatch, "nonlinear", lr=tlr, steps=1, backtrack=False)
    step_s, tele_s = [], []
    for _ in range(repeats):  # interleaved: both see the same machine load
        tic = time.perf_counter()
        for _ in range(10):
            stepper.step(batch)
        step_s.append((time.perf_counter() - tic) / 10)
        tic = time.perf_counter()
        _, report = T.teleport(model, tuple(p.detach() for p in stepper.params), tbatch, "nonlinear", lr=tlr,
                               steps=tsteps, backtrack=False)
        tele_s.append(time.perf_counter() - tic)
    step, tele = statistics.median(step_s), statistics.median(tele_s)
    return {"ascent_steps": tsteps, "median_step_s": step, "median_teleport_s": tele,
            "teleport_in_steps": tele / step, "per_ascent_step_in_steps": tele / step / tsteps,
            "last_relative_loss_change": report.relative_loss_change}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats (medians reported)")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench_teleport.json")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be a positive integer")
    with E.torch_threads(1):
        result = {name: measure(name, args.repeats) for name in CASES}
    result["environment"] = E.environment()
    E.write_json(f"{args.out}/bench_teleport.json", result)
    for name in CASES:
        r = result[name]
        print(f"{name}: one teleport ({r['ascent_steps']} ascent steps) = {r['median_teleport_s'] * 1e3:.1f} ms "
              f"= {r['teleport_in_steps']:.0f} training steps ({r['median_step_s'] * 1e3:.2f} ms each); "
              f"{r['per_ascent_step_in_steps']:.1f} steps per ascent step")
    return result


if __name__ == "__main__":
    main()
