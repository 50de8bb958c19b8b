"""Models in the engine (symmetry.dynamics.module_model): the one gradient path nests under autograd and
torch.func; an nn.Module runs through the loop as with torch.optim."""
import torch

import symmetry as S

from conftest import randn


def test_loss_and_grad_nests_under_autograd_and_torch_func():
    """The one gradient path: differentiable again (Hessian-vector product) by autograd and by torch.func."""
    net = S.MLP("tanh")
    params, X, Y = (randn(4, 3, seed=1), randn(2, 4, seed=2)), randn(3, 5, seed=3), randn(2, 5, seed=4)
    v = (randn(4, 3, seed=5), randn(2, 4, seed=6))
    leaves = tuple(p.clone().requires_grad_(True) for p in params)
    _, grads = net.loss_and_grad(leaves, X, Y)
    hvp_autograd = torch.autograd.grad(sum((g * u).sum() for g, u in zip(grads, v)), leaves)
    _, hvp_func = S.models.jvp(lambda *p: net.loss_and_grad(p, X, Y)[1], params, v)
    for a, b in zip(hvp_autograd, hvp_func):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- modules

def test_a_module_runs_through_the_loop_as_with_torch_optim():
    """nn.Sequential with biases, full batch and mini-batches: the loop = a plain torch.optim loop."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    X, Y = randn(12, 4, seed=1), randn(12, 2, seed=2)
    model = S.ModuleModel(module)
    start = model.parameters()
    batches = lambda k: (X[4 * (k % 3): 4 * (k % 3) + 4], Y[4 * (k % 3): 4 * (k % 3) + 4])  # noqa: E731
    for data in (None, batches):
        run = S.run(module if data is None else model, start, X, Y, S.Adam(0.01), 30, record_every=10, batches=data,
                    observables={"bias": lambda s: s[1]})
        reference = [p.detach().clone().requires_grad_(True) for p in start]
        opt = torch.optim.Adam(reference, lr=0.01)
        losses = []
        for k in range(30):
            x, y = (X, Y) if data is None else batches(k)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(torch.func.functional_call(module, dict(zip(model.names, reference)),
                                                                           (x,)), y)
            loss.backward()
            losses.append(loss.detach())
            opt.step()
        for a, b in zip(run.params, reference):
            torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)
        assert run.observables["bias"].shape == (4, 6) and run.times.tolist() == [0, 10, 20, 30]
        if data is not None:
            torch.testing.assert_close(run.step_loss, torch.stack(losses), rtol=1e-12, atol=0)
    model.load(run.params)
    torch.testing.assert_close(module[2].bias.detach(), run.params[3])
