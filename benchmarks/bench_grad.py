"""Benchmark: the engine's gradient paths, per call and in an ODE solve, on Gluch & Urbanke's small problems.

The engine takes ``model.loss_and_grad``: a closed form where the model has one (the MLP's is
backpropagation written out, the same operations as autograd, bit for bit), else plain reverse-mode
autograd (``Model.loss_and_grad``), which falls back to ``torch.func.grad`` only inside a torch.func
transform. This measures, on the float64 problems of ``noether.small_problems`` (one thread; they are
overhead-bound), medians of interleaved repeats of
1. the per-call cost of (a) ``model.loss_and_grad`` (``backprop``; the MLP problems only), (b)
   ``Model.loss_and_grad`` (autograd) and (c) ``torch.func.grad`` of the same summed loss;
2. the drift table's ReLU ND solve (DOP853, rtol 1e-12, t = 3) with the MLP's written-out gradient
   and with autograd forced: the same evaluations and the same numbers, and the seconds each took.
Usage: python benchmarks/bench_grad.py [--calls 2000] [--repeats 3] [--ode-repeats 1] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch

from repro import experiment as E
from symmetry import noether as N
from symmetry.models import MLP, Model, torch_threads


def per_call(calls: int, repeats: int) -> dict:
    rows = {}
    for name in ("relu", "linear", "swish"):
        model, params, X, Y, _, _ = N.small_problems(0)[name]

        def total(p):
            loss = model.loss(p, X, Y)
            return loss.sum(), loss

        func_grad = torch.func.grad(total, has_aux=True)
        paths = {"autograd": lambda: Model.loss_and_grad(model, params, X, Y), "torch_func": lambda: func_grad(params)}
        if isinstance(model, MLP):
            paths["backprop"] = lambda: model.loss_and_grad(params, X, Y)
            for a, b in zip(paths["backprop"]()[1], paths["autograd"]()[1]):
                assert torch.equal(a, b)  # bit for bit
        for a, b in zip(paths["autograd"]()[1], paths["torch_func"]()[0]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)  # the same gradient
        times: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(repeats):
            for key, f in paths.items():
                started = time.perf_counter()
                for _ in range(calls):
                    f()
                times[key].append((time.perf_counter() - started) / calls * 1e6)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows[name] = {f"{k}_us_per_call": round(v, 1) for k, v in med.items()}
        rows[name]["torch_func_over_autograd"] = round(med["torch_func"] / med["autograd"], 2)
        if "backprop" in med:
            rows[name]["autograd_over_backprop"] = round(med["autograd"] / med["backprop"], 2)
        rows[name]["repeats_us"] = {k: [round(x, 1) for x in v] for k, v in times.items()}
        print(f"{name:7s} " + "   ".join(f"{k} {v:8.1f} µs" for k, v in med.items()))
    return rows


def ode_solve(repeats: int, horizon: float = 3.0) -> dict:
    """The drift table's ReLU ND solve with each gradient path; evaluations counted."""
    model, params, X, Y, _, quantities = N.small_problems(0)["relu"]
    paths = {"backprop": MLP.loss_and_grad, "autograd": Model.loss_and_grad}
    seconds: dict[str, list[float]] = {k: [] for k in paths}
    evaluations, drift = {}, {}
    for _ in range(repeats):
        for key, method in paths.items():
            count = [0]

            def counted(self, *args, method=method):
                count[0] += 1
                return method(self, *args)

            with mock.patch.object(MLP, "loss_and_grad", counted):
                started = time.perf_counter()
                r = N.measure(model, params, X, Y, quantities, "nd", horizon, points=61)
                seconds[key].append(time.perf_counter() - started)
            evaluations[key], drift[key] = count[0], r["balance_charge"]["relative_drift"]
    assert evaluations["backprop"] == evaluations["autograd"] and drift["backprop"] == drift["autograd"]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"ReLU ND solve to t = {horizon:g}: {evaluations['backprop']} gradient evaluations, "
          + "   ".join(f"{k} {v:.2f} s ({v / evaluations[k] * 1e6:.0f} µs per evaluation)" for k, v in med.items()))
    return {"problem": "relu", "dynamics": "nd", "horizon": horizon, "evaluations": evaluations["backprop"],
            "relative_drift_balance_charge": drift["backprop"],
            **{f"{k}_s": round(v, 2) for k, v in med.items()},
            **{f"{k}_us_per_evaluation": round(v / evaluations[k] * 1e6, 1) for k, v in med.items()},
            "repeats_s": {k: [round(x, 2) for x in v] for k, v in seconds.items()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=E.positive_int, default=2000, help="gradient calls per timing")
    parser.add_argument("--repeats", type=E.positive_int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--ode-repeats", type=E.positive_int, default=1, help="repeats of each ODE solve (~10-20 s each)")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench_grad.json")
    args = parser.parse_args(argv)
    with torch_threads(1):
        rows = per_call(args.calls, args.repeats)
        ode = ode_solve(args.ode_repeats)
    result = {"calls": args.calls, "problems": rows, "ode_solve": ode, "environment": E.environment()}
    E.write_json(f"{args.out}/bench_grad.json", result)
    return result


if __name__ == "__main__":
    main()
