"""Benchmark: the cost of ConservationMonitor.record per training step, against the step itself.

Three models, float32, a plain torch.optim.SGD loop, one intra-op thread (the same for the step and the record):
- ``mlp``: nn.Sequential(Linear(784,256), ReLU, Linear(256,128), ReLU, Linear(128,10)) with biases on a random
  full batch of 1000 inputs (MNIST's shape), cross-entropy;
- ``resnet18``: torchvision's, 10 classes, batch 32 of 3×32×32 (CIFAR-sized), cross-entropy, BatchNorm in training;
- ``gpt``: ``symmetry.nets.GPT``, 6 layers, width 128, 4 heads, SwiGLU hidden 344, vocabulary 256,
  batch 8 × 128 tokens, next-token cross-entropy.
Reports the median time of one record() and of one training step without it (medians over steps and 3 seeds).
Goal (issue 21): record under 1 % of a step on resnet18 and the GPT. Runtime: about 4 min on 2 CPU cores.
Usage: python benchmarks/bench_monitor.py [--steps 20] [--models mlp resnet18 gpt] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import symmetry as S
from repro import experiment as E
from symmetry.nets import GPT

MODELS = ("mlp", "resnet18", "gpt")


def build(name: str, seed: int):
    """(model, input, target, loss name) for one benchmark model."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
        return model, torch.rand(1000, 784, generator=g), torch.randint(0, 10, (1000,), generator=g)
    if name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(num_classes=10)
        return model, torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    model = GPT(256, dim=128, heads=4, hidden=344, layers=6)
    tokens = torch.randint(0, 256, (8, 129), generator=g)
    return model, tokens[:, :-1], tokens[:, 1:]


def measure(name: str, steps: int, seed: int) -> dict:
    model, x, y = build(name, seed)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    monitor = S.ConservationMonitor(model, x[:8], "cross_entropy")
    setup = time.perf_counter() - start

    def train_step(step: int) -> None:
        opt.zero_grad()
        out = model(x)
        nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
        opt.step()

    return {**time_record(monitor, train_step, steps), "monitor_setup_s": setup,
            "blocks": len(monitor.symmetries.blocks), "read_floor_median_s": read_floor(model, steps)}


def read_floor(model: nn.Module, repeats: int) -> float:
    """Median seconds of one pass that squares and sums every parameter: the least a record of quadratic
    quantities does (it reads every covered weight), whatever the bookkeeping around it."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            total = sum(float(p.square().sum()) for p in model.parameters())
            times.append(time.perf_counter() - start)
    assert total > 0
    return statistics.median(times[2:])


def time_record(monitor, train_step, steps: int) -> dict:
    """Median seconds of ``train_step(step)`` and of the ``monitor.record(step)`` after it, over ``steps``
    steps, the first two left out (warm-up); bench_modern times its models with this too."""
    record, train = [], []
    for step in range(steps):
        start = time.perf_counter()
        train_step(step)
        middle = time.perf_counter()
        monitor.record(step)
        end = time.perf_counter()
        train.append(middle - start)
        record.append(end - middle)
    return {"record_median_s": statistics.median(record[2:]), "train_step_median_s": statistics.median(train[2:])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    results = {}
    with E.torch_threads(1):
        for name in args.models:
            repeats = [measure(name, args.steps, seed) for seed in range(3)]
            r = {k: statistics.median(rep[k] for rep in repeats) for k in repeats[0]}
            r["record_over_train_step"] = r["record_median_s"] / r["train_step_median_s"]
            r["read_floor_over_train_step"] = r["read_floor_median_s"] / r["train_step_median_s"]
            results[name] = {**r, "repeats": repeats}
            print(f"{name}: record {1e3 * r['record_median_s']:.2f} ms per step; training step "
                  f"{1e3 * r['train_step_median_s']:.1f} ms ({100 * r['record_over_train_step']:.2f}%); "
                  f"{r['blocks']} blocks, monitor set up in {r['monitor_setup_s']:.2f} s; one pass over the "
                  f"parameters {1e3 * r['read_floor_median_s']:.2f} ms ({100 * r['read_floor_over_train_step']:.2f}%)",
                  flush=True)
    payload = {"benchmark": "bench_monitor", "steps": args.steps, "threads": 1, "models": results,
               "environment": E.environment()}
    E.write_json(f"{args.out}/bench_monitor.json", payload)
    return payload


if __name__ == "__main__":
    main()
