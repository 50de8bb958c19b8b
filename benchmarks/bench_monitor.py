"""Benchmark: the cost of ConservationMonitor.record per training step, against the step itself.

Three models, float32, a plain torch.optim.SGD loop, one intra-op thread (the same for the step and the record):
- ``mlp``: nn.Sequential(Linear(784,256), ReLU, Linear(256,128), ReLU, Linear(128,10)) with biases on a random
  full batch of 1000 inputs (MNIST's shape), cross-entropy;
- ``resnet18``: torchvision's, 10 classes, batch 32 of 3×32×32 (CIFAR-sized), cross-entropy, BatchNorm in training;
- ``gpt``: ``symmetry.nets.GPT``, 6 layers, width 128, 4 heads, SwiGLU hidden 344, vocabulary 256,
  batch 8 × 128 tokens, next-token cross-entropy.
Reports the median time of one record() and of one training step without it (medians over steps and 3 seeds),
and beside them, in the same loop (after each record), the read floor: one pass that squares and sums every
parameter, the least a record of quadratic quantities reads. Goals: record under 1 % of a step on resnet18 and the
GPT (issue 21), record at most 1.5 × the floor (issue 37: the record is one fused pass, ``symmetry._fused``).
The record's parts: the fused computation alone and the checks around it (the model's layout, the parameters'
storage), timed after the loop. Runtime: about 4 min on 2 CPU cores.
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

    timed = time_record(monitor, train_step, steps, floor_of=model)
    parts = record_parts(monitor, steps)
    return {**timed, **parts, "monitor_setup_s": setup, "blocks": len(monitor.symmetries.blocks),
            "fused": monitor._fused is not None}


def read_floor(model: nn.Module) -> float:
    """Seconds of one pass that squares and sums every parameter: the least a record of quadratic quantities does
    (it reads every covered weight), whatever the bookkeeping around it."""
    with torch.no_grad():
        start = time.perf_counter()
        total = sum(float(p.square().sum()) for p in model.parameters())
        seconds = time.perf_counter() - start
    assert total > 0
    return seconds


def record_parts(monitor, repeats: int) -> dict:
    """Median seconds of the record's fused computation alone and of its checks (the model's layout and the
    parameters' storage), ``repeats`` times each, interleaved."""
    fused, checks = [], []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            monitor._quantities(None)
            middle = time.perf_counter()
            monitor._layout.same()
            if monitor._fused is not None:
                monitor._live()
            checks.append(time.perf_counter() - middle)
            fused.append(middle - start)
    return {"compute_median_s": statistics.median(fused[2:]), "checks_median_s": statistics.median(checks[2:])}


def time_record(monitor, train_step, steps: int, floor_of: nn.Module | None = None) -> dict:
    """Median seconds of ``train_step(step)`` and of the ``monitor.record(step)`` after it, over ``steps``
    steps, the first two left out (warm-up); with ``floor_of``, also the read floor of that model beside each record
    (side by side: the same load on the machine), after it at even steps and before it at odd ones (each reads the
    weights right after the training step half of the time). bench_modern times its models with this too."""
    record, train, floor = [], [], []
    for step in range(steps):
        start = time.perf_counter()
        train_step(step)
        middle = time.perf_counter()
        train.append(middle - start)
        first = floor_of is not None and step % 2  # the floor first at odd steps: each runs first (after the step,
        if first:                                  # its caches cold) half of the time
            floor.append(read_floor(floor_of))
        start = time.perf_counter()
        monitor.record(step)
        record.append(time.perf_counter() - start)
        if floor_of is not None and not first:
            floor.append(read_floor(floor_of))
    out = {"record_median_s": statistics.median(record[2:]), "train_step_median_s": statistics.median(train[2:])}
    if floor_of is not None:
        out["read_floor_median_s"] = statistics.median(floor[2:])
        out["record_over_read_floor"] = out["record_median_s"] / out["read_floor_median_s"]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])  # -OO strips docstrings
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
                  f"parameters {1e3 * r['read_floor_median_s']:.2f} ms ({100 * r['read_floor_over_train_step']:.2f}%); "
                  f"record / floor {r['record_over_read_floor']:.2f} (computation {1e3 * r['compute_median_s']:.2f} ms, "
                  f"checks {1e3 * r['checks_median_s']:.3f} ms)", flush=True)
    payload = {"benchmark": "bench_monitor", "steps": args.steps, "threads": 1, "models": results,
               "environment": E.environment()}
    E.write_json(f"{args.out}/bench_monitor.json", payload)
    return payload


if __name__ == "__main__":
    main()
