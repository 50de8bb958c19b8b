"""symmetry.monitor: a ConservationMonitor on an all-zero float32 model records finite drifts, takes numpy
and tensor integers as steps and refuses steps that go back or are not integers."""
import math

import pytest
import torch

import symmetry as S

def test_the_monitor_on_an_all_zero_float32_model_and_its_step_numbers():
    import numpy as np

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.Linear(4, 2, bias=False))  # float32
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    # the check's 0/0 in float32 is no NaN, which would be refused as "the graph was misread; please report this model"
    monitor = S.ConservationMonitor(model, torch.randn(5, 3))
    monitor.record(0)
    monitor.record(0)  # the same step again replaces its row
    with torch.no_grad():
        model[0].weight[0, 0] = 1.0
    monitor.record(np.int64(1))  # numpy's integers (a loop over np.arange) are steps too
    monitor.record(torch.tensor(2))
    assert monitor.steps == [0, 1, 2]
    drift = monitor.drift()["0"]
    assert torch.isfinite(drift).all() and drift.tolist() == [0.0, 1.0, 1.0]  # the absolute change from zero
    with pytest.raises(ValueError, match="comes before the last recorded step 2"):
        monitor.record(1)
    for bad in (2.0, -1, True, torch.tensor(True)):
        with pytest.raises(ValueError, match="must be a non-negative integer"):
            monitor.record(bad)
    with pytest.raises(ValueError, match="example_input contains NaN or infinity"):
        S.module_symmetries(model, torch.full((5, 3), math.nan))
