"""ConservationMonitor beyond one process: DistributedDataParallel and FSDP (``fully_shard``) on two CPU processes
(gloo). Each rank trains on its own half of a batch; the quantities the monitor records must equal those of one
process training on the whole batch (DDP and FSDP average the two halves' gradients: the same step)."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import symmetry as S

STEPS, LR = 4, 0.1
# each test starts two processes (torch.distributed, gloo): CI's separate slow step runs them (pytest -m slow)
pytestmark = pytest.mark.slow


def model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4), nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.randn(8, 2, generator=g, dtype=torch.float64)
    return model, x, y


def train(model, monitor, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    monitor.record(0)
    for step in range(1, STEPS + 1):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        monitor.record(step)
    return {k: torch.stack(v) for k, v in monitor.history.items()}


def single_process():
    model, x, y = model_and_data()
    sym = S.module_symmetries(model, x)
    return train(model, S.ConservationMonitor(model, symmetries=sym), x, y)


def worker(rank: int, world: int, init: str, mode: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model, x, y = model_and_data()
        sym = S.module_symmetries(model, x)  # on the whole model, before it is wrapped or sharded
        if mode == "ddp":
            wrapped = nn.parallel.DistributedDataParallel(model)
        elif mode == "one-rank":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
            monitor = S.ConservationMonitor(model, symmetries=sym)
            monitor.record(0)  # every rank: fine (the default timeout leaves a slow rank time to arrive)
            monitor.timeout = 1.0
            if rank == 0:  # the usual logging pattern, wrong on a sharded model: one line, before any collective
                try:
                    monitor.record(1)
                except RuntimeError as error:
                    with open(out, "w") as f:
                        f.write(str(error))
            dist.barrier()  # both ranks still agree on the collectives: nothing was started by the refused record
            return
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
            wrapped = model
        half = slice(rank * 4, (rank + 1) * 4)
        if mode == "fsdp-read":  # the monitor reads the sharded model itself: the read gathers its parameters
            monitor = S.ConservationMonitor(wrapped, x)
            assert monitor.symmetries.keys() == sym.keys()
        else:
            monitor = S.ConservationMonitor(wrapped, symmetries=sym)
        history = train(wrapped, monitor, x[half], y[half])
        if mode == "fsdp":  # the parameters really are shards: each rank holds part of every weight
            assert any(type(p).__name__ == "DTensor" for p in model.parameters())
        if rank == 0:
            torch.save(history, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["ddp", "fsdp", "fsdp-read"])
def test_monitor_on_two_processes_equals_one(mode, tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    if mode.startswith("fsdp"):
        pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) needs torch ≥ 2.6")
    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    out = str(tmp_path / "history.pt")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(2, init, mode, out), nprocs=2, join=True)
    got, want = torch.load(out), single_process()
    assert set(got) == set(want)
    for k in want:
        assert float((want[k][-1] - want[k][0]).abs().max()) > 1e-8, k  # the quantities moved (finite lr)
        assert torch.allclose(got[k], want[k], rtol=0, atol=1e-12), k


def test_a_record_on_one_rank_of_a_sharded_model_fails_in_one_line(tmp_path):
    """Recording on rank 0 only (the usual logging pattern) on an FSDP model: a record gathers the parameters, a
    collective; the monitor waits for the other ranks through the store (no collective) and fails with one line
    naming what to do, and the ranks' collectives stay matched (before: a gloo collective mismatch aborted the job)."""
    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    out = str(tmp_path / "error.txt")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(2, init, "one-rank", out), nprocs=2, join=True)
    message = open(out).read()
    assert "\n" not in message and "1 of the 2 ranks did not call it within timeout=1 s" in message
    assert "call record on every rank" in message
