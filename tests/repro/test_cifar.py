"""CIFAR training through the dynamics engine equals a plain torch.optim.Adam mini-batch loop."""
import torch
import torch.nn.functional as F

from repro.cifar import make_model, train_classifier


def plain_adam_loop(model, x, y, epochs, batch_size, seed):
    opt = torch.optim.Adam(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(x))
    return history


def test_train_classifier_is_the_plain_adam_loop():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 3, 32, 32, generator=g) - 0.5, torch.randint(0, 10, (40,), generator=g)
    engine, plain = make_model(1, hidden=4), make_model(1, hidden=4)
    history = train_classifier(engine, x, y, epochs=2, batch_size=16, seed=3, progress=False)
    expected = plain_adam_loop(plain, x, y, 2, 16, 3)
    assert history == expected and history[1] < history[0]
    for a, b in zip(engine.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not engine.training
