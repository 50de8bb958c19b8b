"""ConservationMonitor (symmetry/monitor.py) on a user's module: frozen parameters, the reader's options, a model
changed after it was read, the fused record against the per-block quantities."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import symmetry as S

D = torch.float64


def frozen_mlp():
    """3-6-4-2 MLP whose first layer's weight is frozen (requires_grad=False), with data for an MSE loss."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    model[0].weight.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(16, 3, generator=g, dtype=D), torch.randn(16, 2, generator=g, dtype=D)


def drift_after(model, monitor, x, y, lr, steps=5):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    monitor.record(0)
    for step in range(1, steps + 1):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        monitor.record(step)
    return {k: float(v[-1]) for k, v in monitor.drift().items()}


def test_frozen_parameters_leave_their_blocks_out():
    """Block '0' rescales the frozen weight, which never moves: it is no law of this training (its drift is
    first order in lr: the same at lr and lr/10) and is not watched; describe() and note say so. Every quantity the
    monitor keeps is conserved to O(lr²). Before: '0' was watched, drifting 1.0× as much at lr as at lr/10."""
    drifts = []
    for lr in (0.05, 0.005):
        model, x, y = frozen_mlp()
        monitor = S.ConservationMonitor(model, x)
        drifts.append(drift_after(model, monitor, x, y, lr))
    assert "0" not in drifts[0] and set(drifts[0]) == {"2"}
    assert "frozen" in monitor.note and "'0'" in monitor.note and "0.weight" in monitor.note
    text = monitor.symmetries.describe()
    assert "0.weight: none — frozen (requires_grad=False)" in text and "0.bias: none" in text
    for k in drifts[0]:
        assert drifts[0][k] > 50 * drifts[1][k], k  # second order in lr: 100× for a tenfold smaller step
    model, x, y = frozen_mlp()
    full = S.module_symmetries(model, x)  # the reader alone keeps block '0' (or leaves it out itself)
    assert S.ConservationMonitor(model, symmetries=full).symmetries.keys() == ["2"]


def _models():
    """(name, model, example input, loss): a CNN with BatchNorm and a skip, the GPT (attention heads: GL blocks), an MLP
    with a GL block (two Linears in a row) and a cross-entropy head (translation), all float64."""
    from symmetry.nets import GPT

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0 = nn.Conv2d(3, 5, 3, padding=1)  # its channels' outgoing legs: conv1's input channels
            self.conv1, self.bn1 = nn.Conv2d(5, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.conv3 = nn.Conv2d(8, 6, 3, padding=1)
            self.head = nn.Linear(6, 4)

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(torch.relu(self.conv0(x)))))
            h = h + torch.relu(self.bn2(self.conv2(h)))
            return self.head(torch.relu(self.conv3(h)).mean((2, 3)))

    mlp = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    return [("cnn", Skip().double(), torch.randn(4, 3, 6, 6, generator=g, dtype=D), "cross_entropy"),
            ("gpt", GPT(16, dim=8, heads=2, hidden=12, layers=2).double(), torch.randint(0, 16, (2, 5), generator=g),
             "cross_entropy"),
            ("mlp", mlp.double(), torch.randn(9, 5, generator=g, dtype=D), "cross_entropy")]


@pytest.mark.parametrize("norm", [False, True], ids=["squares", "row-norms"])
@pytest.mark.parametrize("case", range(3), ids=["cnn", "gpt", "mlp"])
def test_the_fused_record_equals_the_blocks_quantities(case, norm, monkeypatch):
    """record is one grouped pass over the parameters (symmetry._fused, no per-block loop); every quantity it
    keeps equals the block's own quantity (ModuleSymmetries.quantities) to round-off, after training steps and
    after the parameters' storage was swapped (as .to() does: rebuilt, never stale). ``norm``: every parameter
    read by rows only goes through the fused vector_norm (the path of large ones)."""
    from symmetry import _fused

    if norm:
        monkeypatch.setattr(_fused, "NORM", 0)
    name, model, x, loss = _models()[case]
    monitor = S.ConservationMonitor(model, x, loss)
    assert monitor._fused is not None and not monitor._fused.plain  # every block fused
    kinds = {step[0] for step in monitor._fused.steps}
    assert ("norm" in kinds) == (norm and name != "gpt") and "square" in kinds
    assert ("sum2" in kinds) == (name == "cnn")  # a convolution's input channels: outer, then inner reduction
    assert ("bmm" in kinds) == (name != "cnn")  # attention heads, two Linears in a row: GL blocks
    kinds = {b.kind for b in monitor.symmetries.blocks}
    assert "scaling" in kinds and (name == "cnn" or "GL" in kinds) and "translation" in kinds
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        if step:
            opt.zero_grad()
            out = model(x)
            out.reshape(-1, out.shape[-1]).logsumexp(1).mean().backward()
            opt.step()
        if step == 2:  # the same Parameter objects with new storage (as .to() gives): the record follows it
            with torch.no_grad():
                for p in model.parameters():
                    p.data = p.data * 1.1
        monitor.record(step)
        want = monitor.symmetries.quantities(model)
        got = {k: v[-1] for k, v in monitor.history.items()}
        assert list(got) == list(want)
        for k in want:
            assert got[k].shape == want[k].shape, k
            torch.testing.assert_close(got[k], want[k].detach(), rtol=1e-12, atol=1e-14 * float(want[k].detach().abs().max()))
    assert monitor._fused is not None  # rebuilt on the new storage
    assert len(monitor.steps) == 3 and float(max(float(d[-1].max()) for d in monitor.drift(None).values())) > 0


def test_read_options_are_those_of_module_symmetries():
    """Every keyword option of module_symmetries (leaves=, check=, seed=, …) reaches the read; an unknown one and
    options beside symmetries= are refused by name."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=D)
    monitor = S.ConservationMonitor(model, x, leaves=("2",))
    assert monitor.symmetries.keys() == S.module_symmetries(model, x, leaves=("2",)).keys() == []
    assert S.ConservationMonitor(model, x).symmetries.keys() == ["0", "2.0"]
    assert S.ConservationMonitor(model, x, check=False, seed=3).symmetries.keys() == ["0", "2.0"]
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['leafs'\].*leaves"):
        S.ConservationMonitor(model, x, leafs=("2",))
    with pytest.raises(ValueError, match=r"\['example_input', 'leaves'\] are for reading"):
        S.ConservationMonitor(model, x, symmetries=S.module_symmetries(model, x), leaves=("2",))


@pytest.mark.parametrize("change", ["eval", "swap", "freeze"])
def test_a_model_changed_after_the_read_warns_once(change):
    """Read in train mode and trained in eval mode, a ReLU swapped for a Tanh, a weight frozen after the read: the
    blocks may no longer be symmetries; record warns once, naming what changed (before: nothing)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).double()
    x = torch.randn(8, 3, dtype=D)
    monitor = S.ConservationMonitor(model, x)
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        monitor.record(0)  # unchanged: silent
    if change == "eval":
        model.eval()
    elif change == "swap":
        model[2] = nn.Tanh()
    else:
        model[3].weight.requires_grad_(False)
    with pytest.warns(S.monitor.ModelChangedWarning) as caught:
        monitor.record(1)
        monitor.record(2)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert {"eval": "read in train mode and is now in eval mode", "swap": "replaced, added or removed in ['Sequential']",
            "freeze": "frozen or unfrozen"}[change] in text


def monitor_table(payload: dict) -> str:
    """The table docs/performance.md shows, from benchmarks/results/bench_monitor.json (seconds and ratios as the
    JSON has them, to 3 significant digits: tests/test_readme_numbers.py finds each in the JSON)."""
    lines = ["| model | blocks | training step (s) | record (s) | read floor (s) | record / floor | computation (s) |"
             " checks (s) | record / step |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in payload["models"].items():
        lines.append(f"| {name} | {r['blocks']} | {r['train_step_median_s']:.3g} | {r['record_median_s']:.3g} | "
                     f"{r['read_floor_median_s']:.3g} | {r['record_over_read_floor']:.2f} | {r['compute_median_s']:.3g} | "
                     f"{r['checks_median_s']:.3g} | {r['record_over_train_step']:.3g} |")
    return "\n".join(lines)


def test_the_performance_page_shows_the_committed_monitor_benchmark():
    """docs/performance.md's monitor table is benchmarks/results/bench_monitor.json, number for number."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    payload = json.loads((root / "benchmarks" / "results" / "bench_monitor.json").read_text())
    assert {"resnet18", "gpt"} <= set(payload["models"]) and "record_over_read_floor" in payload["models"]["gpt"]
    assert monitor_table(payload) in (root / "docs" / "performance.md").read_text()


def test_a_block_without_a_strided_pattern_is_computed_by_its_own_quantity():
    """A leg whose entries are no strided pattern (rows listed out of order) cannot be a view: that block alone
    goes through its own quantity, beside the fused ones, and the record is still the blocks' quantities."""
    import dataclasses

    from symmetry.groups.blocks import Leg

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.randn(8, 3, dtype=D)
    sym = S.module_symmetries(model, x)
    first = sym.blocks[0]
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    legs = tuple(Leg(leg.param, leg.index[order], leg.exponent, None) for leg in first.legs)
    scrambled = dataclasses.replace(sym, blocks=(dataclasses.replace(first, legs=legs), *sym.blocks[1:]))
    monitor = S.ConservationMonitor(model, symmetries=scrambled)
    assert [b.name for b in monitor._fused.plain] == [first.name]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        if step:
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        monitor.record(step)
    want = scrambled.quantities(model)
    for k, v in monitor.history.items():
        torch.testing.assert_close(v[-1], want[k].detach(), rtol=1e-12, atol=0)
