"""Benchmark: the per-step costs that reproduce.py's time is made of, measured side by side in one process.

(a) Fig. 7: one batched GD step of the radial net (4 configurations, 5×10×5) and of Prop. 14's decoupled
    per-mode system (4 × 5 modes) by the engine's torch GD step (closed-form gradients) and by the compiled
    kernels (symmetry.kernels), float32 and float64;
(b) Fig. 3/6: one batched step of the elementwise net (12 configurations, 5×50×10, dynamics.TwoLayerGD)
    with 1 and 2 torch threads, quiet and with one core kept busy by a spinning process started here;
(c) Fig. 7's round-off sensitivity: after 1000 steps from Fig. 7's init in float64, the largest relative
    parameter difference per configuration between torch and kernel, and between the kernel from the
    init and from the init moved by one ulp: if the two are alike, the figure's numbers for that
    configuration are set by round-off, whichever code computes them.
Ratios are of medians of --repeats interleaved timings, so a busy machine slows both sides alike.
Usage: python benchmarks/bench_steps.py [--repeats 5] [--quick] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

import symmetry as S
from repro import experiment as E
from symmetry import dynamics as D
from symmetry import kernels as K


def fig7_problem(dtype):
    Y = torch.randn(5, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    inits = [S.spectral_init(Y, 5, mean=mu, std=mu, seed=generator) for mu in (0.01, 0.1, 1.0, 10.0)]
    params = tuple(torch.stack(p).to(dtype) for p in zip(*inits))
    return params, Y.to(dtype)


def per_step(fn, steps: int, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(steps)
        times.append((time.perf_counter() - start) / steps)
    return times


def torch_gd(model, params, Y, lr):
    """The engine's torch GD step on the model's closed-form gradient: ``advance(n)`` and the current state."""
    stepper, holder = D.GD(lr), {}
    holder["state"] = stepper.init_state(params)

    def advance(n):
        state = holder["state"]
        for _ in range(n):
            state = stepper.step(state, lambda p: model.loss_and_grad(p, None, Y))
        holder["state"] = state

    return advance, holder


def fig7_modes(dtype):
    """Prop. 14's per-mode system of Fig. 7's shape: (ū, v̄) of shape (4, 1, 5), targets σʸ (1, 5)."""
    g = torch.Generator().manual_seed(2)
    u, v = (1 + 0.5 * torch.randn(4, 1, 5, generator=g, dtype=torch.float64) for _ in range(2))
    return (u.to(dtype), v.to(dtype)), (1 + torch.rand(1, 5, generator=g, dtype=torch.float64)).to(dtype)


def fig7_steps(steps: int, repeats: int) -> dict:
    models = {"radial": (S.TwoLayerRadialNet(reduction="mean"), fig7_problem),
              "modes": (S.SpectralModes(1 / 50), fig7_modes)}
    out = {}
    for kind, (model, problem) in models.items():
        for name, dtype in E.DTYPES.items():
            params, Y = problem(dtype)
            torch_loop, _ = torch_gd(model, params, Y, 1e-5)
            fast_params = tuple(p.clone() for p in params)
            kernel = K.compiled_stepper(model, fast_params, None, Y, 1e-5)
            kernel.advance(1)  # compile (or load from numba's cache) outside the timing
            t_torch, t_kernel = [], []
            for _ in range(repeats):  # interleaved
                t_torch += per_step(torch_loop, max(steps // 50, 200), 1)
                t_kernel += per_step(kernel.advance, steps, 1)
            key = name if kind == "radial" else f"modes_{name}"
            out[key] = {"torch_us": 1e6 * statistics.median(t_torch), "kernel_us": 1e6 * statistics.median(t_kernel),
                        "speedup": statistics.median(t_torch) / statistics.median(t_kernel)}
            print(f"Fig. 7 {kind} step {name}: torch {out[key]['torch_us']:.1f} µs, kernel "
                  f"{out[key]['kernel_us']:.3f} µs -> {out[key]['speedup']:.0f}x")
    return out


def fig3_steps(steps: int, repeats: int) -> dict:
    configs = [(a, lr, 0.1) for a in S.PAPER_ACTIVATIONS for lr in (0.1, 0.01, 0.001)]
    net = S.TwoLayerNet([a for a, _, _ in configs])
    U, V = S.gaussian_init(5, 50, 10, std=0.1, batch=(len(configs),), seed=0, dtype=torch.float32)
    Y = torch.randn(5, 10, generator=torch.Generator().manual_seed(1))
    lr = torch.tensor([lr for _, lr, _ in configs])  # one per configuration
    stepper = D.TwoLayerGD(net, None, Y, lr)
    holder = {"state": stepper.init_state((U, V))}

    def loop(n):
        state = holder["state"]
        for _ in range(n):
            state = stepper.step(state)
        holder["state"] = state

    out = {}
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            times = {1: [], 2: []}
            for _ in range(repeats):
                for threads in (1, 2):
                    with E.torch_threads(threads):
                        times[threads] += per_step(loop, steps, 1)
        finally:
            if spinner is not None:
                spinner.terminate()
                spinner.wait()
        key = "one_core_busy" if busy else "quiet"
        out[key] = {f"{t}_threads_us": 1e6 * statistics.median(v) for t, v in times.items()}
        out[key]["two_over_one"] = statistics.median(times[2]) / statistics.median(times[1])
        print(f"Fig. 3 step ({key}): 1 thread {out[key]['1_threads_us']:.1f} µs, 2 threads "
              f"{out[key]['2_threads_us']:.1f} µs -> 2/1 = {out[key]['two_over_one']:.2f}")
    return out


def roundoff(steps: int = 1000) -> dict:
    net = S.TwoLayerRadialNet(reduction="mean")
    params, Y = fig7_problem(torch.float64)
    torch_loop, holder = torch_gd(net, params, Y, 1e-5)
    torch_loop(steps)
    reference = holder["state"].params
    fast = tuple(p.clone() for p in params)
    K.compiled_stepper(net, fast, None, Y, 1e-5).advance(steps)
    nudged = tuple(p.clone() for p in params)
    nudged[1][0, 0, 0] = torch.nextafter(nudged[1][0, 0, 0], torch.tensor(1.0, dtype=torch.float64))
    K.compiled_stepper(net, nudged, None, Y, 1e-5).advance(steps)

    def rel(a, b):
        return [max(float((x[c] - y[c]).abs().max() / x[c].abs().max()) for x, y in zip(a, b)) for c in range(4)]

    out = {"mu": [0.01, 0.1, 1.0, 10.0], "steps": steps, "torch_vs_kernel": rel(reference, fast),
           "kernel_vs_kernel_one_ulp_apart": rel(fast, nudged)}
    print(f"after {steps} float64 steps, max relative difference per μ {out['mu']}:\n"
          f"  torch vs kernel:           {['%.1e' % x for x in out['torch_vs_kernel']]}\n"
          f"  kernel vs kernel 1 ulp off: {['%.1e' % x for x in out['kernel_vs_kernel_one_ulp_apart']]}")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=E.positive_int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke test)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    steps, repeats = (2000, 1) if args.quick else (100_000, args.repeats)
    with E.torch_threads(1):
        fig7 = fig7_steps(steps, repeats)
        sensitivity = roundoff()
    fig3 = fig3_steps(max(steps // 200, 200), repeats)
    results = {"benchmark": "bench_steps", "environment": E.environment(), "repeats": repeats,
               "load_average_after": os.getloadavg(),  # a busy machine slows both sides of each ratio
               "fig7_step": fig7, "fig3_step": fig3, "fig7_roundoff_sensitivity": sensitivity}
    E.write_json(f"{args.out}/bench_steps{'_quick' if args.quick else ''}.json", results)
    return results


if __name__ == "__main__":
    main()
