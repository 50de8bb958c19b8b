"""Benchmark: the engine's gradient path against torch.func.grad, per call, on Gluch & Urbanke's small problems.

The engine takes ``model.loss_and_grad``: a closed form where the model has one, else plain reverse-mode
autograd (``Model.loss_and_grad``), which falls back to ``torch.func.grad`` only inside a torch.func
transform. This measures why: the per-call cost of (a) ``Model.loss_and_grad`` (autograd) and (b)
``torch.func.grad`` of the same summed loss, on the float64 MLP problems of ``noether.small_problems``
(one thread; the problems are overhead-bound). Medians of interleaved repeats.
Usage: python benchmarks/bench_grad.py [--calls 2000] [--repeats 3] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from symmetry import experiment as E
from symmetry import noether as N
from symmetry.models import Model, torch_threads


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="gradient calls per timing")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench_grad.json")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.repeats < 1:
        parser.error("--calls and --repeats must be positive integers")
    rows = {}
    with torch_threads(1):
        for name in ("relu", "linear", "swish"):
            model, params, X, Y, _, _ = N.small_problems(0)[name]

            def autograd_path():
                return Model.loss_and_grad(model, params, X, Y)

            def total(p):
                loss = model.loss(p, X, Y)
                return loss.sum(), loss

            func_grad = torch.func.grad(total, has_aux=True)

            def func_path():
                return func_grad(params)

            for a, b in zip(autograd_path()[1], func_path()[0]):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)  # the same gradient
            times = {"autograd": [], "torch_func": []}
            for _ in range(args.repeats):
                for key, f in (("autograd", autograd_path), ("torch_func", func_path)):
                    started = time.perf_counter()
                    for _ in range(args.calls):
                        f()
                    times[key].append((time.perf_counter() - started) / args.calls * 1e6)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows[name] = {"autograd_us_per_call": round(med["autograd"], 1),
                          "torch_func_us_per_call": round(med["torch_func"], 1),
                          "ratio": round(med["torch_func"] / med["autograd"], 2),
                          "repeats_us": {k: [round(x, 1) for x in v] for k, v in times.items()}}
            print(f"{name:7s} autograd {med['autograd']:8.1f} µs   torch.func.grad {med['torch_func']:8.1f} µs   "
                  f"ratio {med['torch_func'] / med['autograd']:.2f}")
    result = {"calls": args.calls, "problems": rows, "environment": E.environment()}
    E.write_json(f"{args.out}/bench_grad.json", result)
    return result


if __name__ == "__main__":
    main()
