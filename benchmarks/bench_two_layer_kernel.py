"""Benchmark: would a compiled whole-loop kernel speed up Fig. 3's (and Fig. 6's) GD step, as it does Fig. 7's?

One batched GD step of the elementwise two-layer net (12 configurations: the four activations × three
learning rates, 5×50×10, whitened input, the MSE) by the engine's torch step (dynamics.TwoLayerGD,
its in-place fast path) and by a numba loop written here for the purpose: σ and σ' per entry, then
R = c(US − Y), V += (RᵀU) ⊙ σ'(Z)ᵀ, U += RSᵀ. Both run the same number of steps from the same
init, interleaved, --repeats times; medians per step, and the largest relative difference of the
parameters after the run (the two compute the same thing). Answers the README's "what stands in the
way" for Figs. 3 and 6 (issue 14); the kernel is not used by the figures.
Usage: python benchmarks/bench_two_layer_kernel.py [--steps 20000] [--repeats 3] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import symmetry as S  # noqa: E402
from repro import experiment as E  # noqa: E402

CODES = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3}


def kernel():
    import numba

    @numba.njit(cache=False)
    def two_layer_gd(U, V, Y, c, act, steps):  # pragma: no cover (compiled)
        B, m, h = U.shape
        n = V.shape[1]
        S_ = np.empty((h, n), U.dtype)
        D = np.empty((h, n), U.dtype)
        R = np.empty((m, n), U.dtype)
        one = U.dtype.type(1)
        for _ in range(steps):
            for b in range(B):
                for i in range(h):
                    for j in range(n):
                        z = V[b, j, i]
                        if act[b] == 0:
                            S_[i, j], D[i, j] = z, one
                        elif act[b] == 1:
                            S_[i, j], D[i, j] = (z, one) if z > 0 else (z * 0, z * 0)
                        elif act[b] == 2:
                            t = math.tanh(z)
                            S_[i, j], D[i, j] = t, one - t * t
                        else:
                            s = one / (one + math.exp(-z))
                            S_[i, j], D[i, j] = s, s * (one - s)
                for p in range(m):
                    for j in range(n):
                        f = U[b, p, 0] * S_[0, j]
                        for i in range(1, h):
                            f += U[b, p, i] * S_[i, j]
                        R[p, j] = c[b] * (f - Y[p, j])
                for j in range(n):  # V += (RᵀU) ⊙ σ'(Z)ᵀ with U before its update
                    for i in range(h):
                        g = R[0, j] * U[b, 0, i]
                        for p in range(1, m):
                            g += R[p, j] * U[b, p, i]
                        V[b, j, i] += g * D[i, j]
                for p in range(m):
                    for i in range(h):
                        g = R[p, 0] * S_[i, 0]
                        for j in range(1, n):
                            g += R[p, j] * S_[i, j]
                        U[b, p, i] += g

    return two_layer_gd


def fig3_problem(dtype: torch.dtype):
    """Fig. 3's batch (4 activations × 3 learning rates, m=5, h=50, n=10): (activations, U0, V0, Y, lr, torch stepper)."""
    activations = [a for a in S.PAPER_ACTIVATIONS for _ in range(3)]
    U0, V0 = S.gaussian_init(5, 50, 10, std=0.1, batch=(12,), seed=0, dtype=torch.float64)
    U0, V0 = U0.to(dtype), V0.to(dtype)
    Y = torch.randn(5, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    lr = torch.tensor([0.1, 0.01, 0.001] * 4, dtype=dtype)
    net = S.TwoLayerNet(S.activations.MixedActivation([S.get_activation(a) for a in activations]))
    return activations, U0, V0, Y, lr, S.TwoLayerGD(net, None, Y, lr)


def torch_step_seconds(stepper, U0, V0, steps: int):
    """(seconds per step, final state) of the torch stepper's fast path over ``steps`` steps from (U0, V0)."""
    state = stepper.init_state((U0, V0))
    start = time.perf_counter()
    state = stepper.advance(state, steps)
    return (time.perf_counter() - start) / steps, state


def measure(dtype: torch.dtype, steps: int, repeats: int) -> dict:
    activations, U0, V0, Y, lr, stepper = fig3_problem(dtype)
    codes = np.array([CODES[a] for a in activations], dtype=np.int64)
    c = (-2.0 / 50 * lr).numpy()  # −η·∂/∂F of the mean over the m·n entries, per configuration
    gd = kernel()
    gd(U0.numpy().copy(), V0.numpy().copy(), Y.numpy(), c, codes, 1)  # compile outside the timing
    t_torch, t_kernel = [], []
    for _ in range(repeats):  # interleaved
        seconds, state = torch_step_seconds(stepper, U0, V0, steps)
        t_torch.append(seconds)
        U, V = U0.numpy().copy(), V0.numpy().copy()
        start = time.perf_counter()
        gd(U, V, Y.numpy(), c, codes, steps)
        t_kernel.append((time.perf_counter() - start) / steps)
    difference = max(float(np.abs(a - b.numpy()).max() / np.abs(b.numpy()).max()) for a, b in zip((U, V), state.params))
    out = {"torch_us": 1e6 * statistics.median(t_torch), "kernel_us": 1e6 * statistics.median(t_kernel),
           "kernel_speedup": statistics.median(t_torch) / statistics.median(t_kernel),
           "max_relative_difference": difference, "steps": steps}
    print(f"{dtype}: torch {out['torch_us']:.1f} µs/step, numba {out['kernel_us']:.1f} µs/step "
          f"({out['kernel_speedup']:.2f}x); parameters agree to {difference:.1e} after {steps} steps")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=E.positive_int, default=20_000)
    parser.add_argument("--repeats", type=E.positive_int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with E.torch_threads(1):
        results = {name: measure(dtype, args.steps, args.repeats) for name, dtype in E.DTYPES.items()}
    payload = {"benchmark": "bench_two_layer_kernel", "environment": E.environment(), "repeats": args.repeats,
               "load_average_before": load_before, "load_average_after": os.getloadavg(), **results}
    E.write_json(Path(args.out) / "bench_two_layer_kernel.json", payload)
    return payload


if __name__ == "__main__":
    main()
