"""Benchmark: module_symmetries (fx trace, walk, and the check of every block) on the models people train.

torchvision's resnet18 (10 classes, a batch of 8 CIFAR-sized images, cross-entropy) and a 6-layer
``symmetry.nets.GPT`` (width 128, 4 heads, SwiGLU hidden 344, vocabulary 256, 8 × 128 tokens, cross-entropy),
in float32 and float64; one intra-op thread and the machine's default. Median of 3 runs each (the first call also
pays torch.fx's one-off imports: reported apart). Goal (issue 21): under 2 s on the 2-core CPU.
Runtime: about 1 min. Usage: python benchmarks/bench_graph.py [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import symmetry as S
from repro import experiment as E
from symmetry.nets import GPT


def models(dtype):
    import torchvision

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    yield "resnet18", torchvision.models.resnet18(num_classes=10).to(dtype), torch.randn(8, 3, 32, 32, generator=g).to(dtype)
    yield "gpt6", GPT(256, dim=128, heads=4, hidden=344, layers=6).to(dtype), torch.randint(0, 256, (8, 128), generator=g)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    results: dict = {}
    first = None
    for threads in (1, torch.get_num_threads()):
        with E.torch_threads(threads):
            for dtype in (torch.float32, torch.float64):
                for name, model, x in models(dtype):
                    times = []
                    for _ in range(args.repeats + (first is None)):
                        start = time.perf_counter()
                        sym = S.module_symmetries(model, x, "cross_entropy")
                        times.append(time.perf_counter() - start)
                    if first is None:
                        first = times.pop(0)
                    key = f"{name}/{str(dtype).removeprefix('torch.')}/{threads}_threads"
                    results[key] = {"median_s": statistics.median(times), "runs_s": times,
                                    "blocks": len(sym.blocks), "parameters": sum(p.numel() for p in model.parameters())}
                    print(f"{key}: {statistics.median(times):.2f} s, {len(sym.blocks)} blocks", flush=True)
    payload = {"benchmark": "bench_graph", "first_call_s": first, "results": results, "environment": E.environment()}
    E.write_json(f"{args.out}/bench_graph.json", payload)
    return payload


if __name__ == "__main__":
    main()
