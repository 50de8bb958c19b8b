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
