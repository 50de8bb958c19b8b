"""Benchmark: the cost of ConservationMonitor.record per training step on the issue's MLP.

nn.Sequential(Linear(784,256), ReLU(), Linear(256,128), ReLU(), Linear(128,10)) with biases, float32,
a plain torch.optim.SGD loop on a random full batch of 1000 inputs (MNIST's shape); one intra-op thread.
Reports the median time of one record() and of one training step without it (medians of 3 repeats).
Runtime: about 10 s. Usage: python benchmarks/bench_monitor.py [--steps 100] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import symmetry as S
from symmetry import experiment as E


def measure(steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    x, y = torch.rand(1000, 784), torch.randint(0, 10, (1000,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = S.ConservationMonitor(model)
    record, train = [], []
    for step in range(steps):
        start = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        middle = time.perf_counter()
        monitor.record(step)
        end = time.perf_counter()
        train.append(middle - start)
        record.append(end - middle)
    return {"record_median_s": statistics.median(record[5:]), "train_step_median_s": statistics.median(train[5:])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    with E.torch_threads(1):
        repeats = [measure(args.steps, seed) for seed in range(3)]
    result = {k: statistics.median(r[k] for r in repeats) for k in repeats[0]}
    result["record_over_train_step"] = result["record_median_s"] / result["train_step_median_s"]
    payload = {"benchmark": "bench_monitor", "steps": args.steps, "repeats": repeats, **result,
               "environment": E.environment()}
    E.write_json(f"{args.out}/bench_monitor.json", payload)
    print(f"record: {1e3 * result['record_median_s']:.2f} ms per step; training step: "
          f"{1e3 * result['train_step_median_s']:.1f} ms ({100 * result['record_over_train_step']:.1f}%)")
    return payload


if __name__ == "__main__":
    main()
