"""Benchmark: the Fig. 3 workload at 1/100 of the paper's steps, two ways, on this machine, in one run.

(a) the authors' approach: one configuration at a time, a plain torch.optim.SGD loop with
    autograd, loss and Q (Eq. 48) recorded every step;
(b) this repository: all configurations stacked in one tensor (sigmoid's extra steps run on after
    the others stop), closed-form gradients in a preallocated step, loss and Q̃ recorded every 100
    steps (as Q_dynamics_elementwise.py does).
Both in float32 from the same init, each timed 3 times interleaved (medians). Prints the wall
times and the ratio, and writes a JSON.
Target (issue): (b) at least 30× faster than (a) on a 2-core CPU.
Usage: python benchmarks/bench_gd.py [--fraction 0.01] [--repeats 3] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import symmetry as S
from repro import experiment as E
from repro import training as T

M, N, H, STD = 5, 10, 50, 0.1
LRS = (0.1, 0.01, 0.001)


def steps_for(activation: str, fraction: float) -> int:
    return round((800_000 if activation == "sigmoid" else 400_000) * fraction)


def plain_sgd(activation: str, lr: float, steps: int, U0, V0, Y) -> list[float]:
    """One configuration, torch.optim.SGD, autograd, loss and Q every step (.item() each step).

    Plain torch, as the authors' scripts are: none of this library's input checks in the loop.
    """
    act = S.get_activation(activation)
    U, V = U0.clone().requires_grad_(True), V0.clone().requires_grad_(True)
    opt = torch.optim.SGD([U, V], lr=lr)
    losses, Qs = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((Y - U @ act.sigma(V.T)) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        with torch.no_grad():
            Qs.append((0.5 * (U * U).sum() - act.integral(V).sum()).item())
    return losses


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.01, help="fraction of the paper's step counts")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench_gd.json")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be a positive integer")
    torch.manual_seed(0)
    U1, V1 = S.gaussian_init(M, H, N, std=1.0, seed=0)
    Y = torch.randn(M, N, generator=torch.Generator().manual_seed(1))

    def time_plain() -> float:
        started = time.perf_counter()
        for a in S.PAPER_ACTIVATIONS:
            for lr in LRS:
                plain_sgd(a, lr, steps_for(a, args.fraction), STD * U1, STD * V1, Y)
        return time.perf_counter() - started

    def time_batched() -> float:
        started = time.perf_counter()
        groups = T.step_budgets(S.PAPER_ACTIVATIONS, steps_for("identity", args.fraction),
                                steps_for("sigmoid", args.fraction))
        T.train_two_layer_budgets(M, N, H, {steps: [(a, lr, STD) for a in acts for lr in LRS]
                                            for steps, acts in groups.items()},
                                  seed=0, dtype="float32", record_every=100, description="batched")
        return time.perf_counter() - started

    # interleaved repeats, medians: a burst of load on the machine moves one repeat, not the result
    plains, batcheds = [], []
    for _ in range(args.repeats):
        plains.append(time_plain())
        batcheds.append(time_batched())
    plain, batched = statistics.median(plains), statistics.median(batcheds)

    result = {"workload": f"Fig. 3 at {args.fraction:g} of the paper's steps: 12 configurations, "
                          f"{sum(steps_for(a, args.fraction) for a in S.PAPER_ACTIVATIONS) * len(LRS)} steps in all",
              "plain_sgd_seconds": round(plain, 3), "batched_seconds": round(batched, 3),
              "repeats": {"plain_sgd_seconds": [round(x, 3) for x in plains],
                          "batched_seconds": [round(x, 3) for x in batcheds]},
              "speedup": round(plain / batched, 1), "environment": E.environment()}
    print(f"{result['workload']}\n(a) plain torch.optim.SGD, one configuration at a time: {plain:.2f} s\n"
          f"(b) batched, closed-form gradients:                     {batched:.2f} s\nspeed-up: {plain / batched:.1f}x")
    E.write_json(f"{args.out}/bench_gd.json", result)
    return result


if __name__ == "__main__":
    main()
