"""Benchmark: conservation_modern.py's committed run (wall time, peak memory, from its JSON) and, per model at the
run's sizes, one training step with and without ConservationMonitor.record: the monitor's share of a step.

The models and batches are the figure's own (``Task`` of conservation_modern.py: float64, one intra-op thread,
torch.optim.SGD), so the share is the one the committed run paid. Medians over steps (the first two dropped) and
over 3 seeds. Goal (issue 22): the monitor under 1 % of a step.
Usage: python benchmarks/bench_modern.py [--steps 12] [--models resnet resnet_bn vit gpt] [--data PATH]
       [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import torch

import symmetry as S
from bench_monitor import time_record  # benchmarks/ is on sys.path when run as a script
from repro import experiment as E

ROOT = Path(__file__).resolve().parents[1]


def figure_script():
    spec = importlib.util.spec_from_file_location("conservation_modern", ROOT / "conservation_modern.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["conservation_modern"] = module
    spec.loader.exec_module(module)
    return module


def measure(cm, task, steps: int, seed: int) -> dict:
    model = task.build(seed)
    g = torch.Generator().manual_seed(seed)
    x, _ = task.batch(g)
    sym = S.module_symmetries(model, x, "cross_entropy")
    monitor = S.ConservationMonitor(model, symmetries=sym)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    batches = [task.batch(g) for _ in range(steps)]  # drawn before the clock, as the loop drew them before

    def train_step(step: int) -> None:
        x, y = batches[step]
        opt.zero_grad()
        task.loss(model(x), y).backward()
        opt.step()

    return {**time_record(monitor, train_step, steps), "blocks": len(sym.blocks), "laws": sym.law_count()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=E.positive_int, default=12)
    parser.add_argument("--models", nargs="+", choices=("resnet", "resnet_bn", "vit", "gpt"),
                        default=["resnet", "resnet_bn", "vit", "gpt"])
    parser.add_argument("--data", default=None, help=f"CIFAR-10: {E.CIFAR10_FORMS}")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    E.check_data_location(args.data)
    cm = figure_script()
    committed = json.loads((ROOT / "figures" / "conservation_modern.json").read_text(encoding="utf-8"))
    cfg = cm.Settings(data=args.data)
    cifar = cm.load_cifar10(args.data) if any(m != "gpt" for m in args.models) else None
    corpus, vocab, _ = cm.load_corpus(cfg.corpus_chars)
    results = {}
    with E.torch_threads(1):
        for name in args.models:
            task = cm.Task(name, cfg, cifar, corpus, len(vocab))
            repeats = [measure(cm, task, args.steps, seed) for seed in range(3)]
            r = {k: statistics.median(rep[k] for rep in repeats) for k in repeats[0]}
            r["record_over_train_step"] = r["record_median_s"] / r["train_step_median_s"]
            results[name] = {**r, "repeats": repeats}
            print(f"{name}: training step {1e3 * r['train_step_median_s']:.1f} ms, record {1e3 * r['record_median_s']:.2f}"
                  f" ms ({100 * r['record_over_train_step']:.2f} %); {r['blocks']} blocks, {r['laws']} laws", flush=True)
    payload = {"benchmark": "bench_modern", "steps": args.steps, "threads": 1, "dtype": "float64",
               "committed_run": {"wall_time_s": committed["wall_time_s"],
                                 "peak_memory_mb_of_process": committed["peak_memory_mb_of_process"],
                                 "settings_hash": committed["settings_hash"]},
               "models": results, "environment": E.environment()}
    E.write_json(f"{args.out}/bench_modern.json", payload)
    return payload


if __name__ == "__main__":
    main()
