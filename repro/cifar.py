"""The CIFAR-10 model of App. H and what the ensemble notebook does with it: train once, then
evaluate every (mode, num_g, ε) ensemble on cached hidden features.

Model: Conv2d(3→32, 3×3, same) → LeakyReLU → MaxPool 2 → Flatten → Linear(8192→h) → σ → Linear(h→10),
ending in logits (the reference applied softmax before a cross-entropy that applies it again).
The group action acts on the last two linear layers, around σ.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from symmetry._optional import require
from symmetry.activations import Activation, ActivationLike, get_activation
from symmetry.dynamics import ModuleModel, run, wrap_optimizer
from symmetry.ensemble import ENSEMBLE_MODES, GroupActionEnsemble, mean_probability, vote

from .data import to_model_input

Tensor = torch.Tensor


def squared_leaky_relu(slope: float = 0.1, linear: float = 0.01) -> Activation:
    """σ(x) = LeakyReLU_slope(x)² + linear·x, the ensemble experiment's activation (Fig. 10).

    Not elementwise-conservation material (σ' vanishes at x = −linear/(2·slope²)), so no ∫σ/σ'.
    """
    def sigma(z):
        return torch.where(z > 0, z, slope * z) ** 2 + linear * z

    def dsigma(z):
        return torch.where(z > 0, 2 * z, 2 * slope * slope * z) + linear

    return Activation(f"squared_leaky_relu({slope:g})", sigma, dsigma, integral=None)


class CifarNet(nn.Module):
    """App. H's classifier; ``hidden_preactivation`` is the z that the group action transforms."""

    def __init__(self, hidden: int = 16, activation: ActivationLike | None = None):
        super().__init__()
        self.activation = squared_leaky_relu() if activation is None else get_activation(activation)
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.LeakyReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(32 * 16 * 16, hidden))
        self.head = nn.Linear(hidden, 10)

    def hidden_preactivation(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.activation.sigma(self.body(x)))


def make_model(seed: int, hidden: int = 16, activation: ActivationLike | None = None) -> CifarNet:
    """A CifarNet whose initial weights depend only on ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return CifarNet(hidden, activation)


def train_classifier(model: nn.Module, x: Tensor, y: Tensor, epochs: int = 10, batch_size: int = 32,
                     seed: int = 0, progress: bool = True) -> list[float]:
    """Adam (``torch.optim.Adam``, default settings) on the cross-entropy of the logits, shuffled mini-batches
    (one permutation per epoch from ``seed``), run by the dynamics engine; trains ``model`` in place and
    returns the mean loss of each epoch."""
    n_batches = math.ceil(len(x) / batch_size)
    generator = torch.Generator().manual_seed(seed)
    orders: list[Tensor] = []  # one permutation per epoch, drawn in epoch order

    def batch(k: int) -> tuple[Tensor, Tensor]:
        epoch, start = divmod(k, n_batches)
        while len(orders) <= epoch:
            orders.append(torch.randperm(len(x), generator=generator))
        idx = orders[epoch][start * batch_size:(start + 1) * batch_size]
        return x[idx], y[idx]

    net = ModuleModel(model, F.cross_entropy)
    model.train()
    trajectory = run(net, net.parameters(), None, None, wrap_optimizer(torch.optim.Adam), epochs * n_batches,
                     record_every=max(1, epochs * n_batches), batches=batch, progress=progress,
                     description=f"Adam, {epochs} epochs")
    net.load(trajectory.params)
    model.eval()
    sizes = [min(batch_size, len(x) - start * batch_size) for start in range(n_batches)]
    step_loss = trajectory.step_loss.tolist() if trajectory.step_loss is not None else []
    history = []
    for epoch in range(epochs):
        losses = step_loss[epoch * n_batches:(epoch + 1) * n_batches]
        history.append(sum(loss * size for loss, size in zip(losses, sizes)) / len(x))
        if not math.isfinite(history[-1]):
            raise FloatingPointError(f"training loss became {history[-1]} in epoch {epoch + 1}")
    return history


@torch.no_grad()
def ensemble_grid(model: CifarNet, fit_x: Tensor, eval_x: Tensor, eval_y: Tensor, num_gs, epsilons,
                  modes=ENSEMBLE_MODES, seed: int = 0) -> dict:
    """Accuracy (vote and mean-probability readouts) and test loss of every ensemble cell, one trained model.

    The hidden features are computed once; each cell only refits the last two layers' transformation.
    ``fit_x`` supplies num_g batches of h held-out images (so at least max(num_gs)·h of them).
    """
    h = model.head.in_features
    z_fit, z_eval = model.hidden_preactivation(fit_x), model.hidden_preactivation(eval_x)
    if len(z_fit) < max(num_gs) * h:
        raise ValueError(f"fit_x has {len(z_fit)} images; num_g={max(num_gs)} batches of h={h} need {max(num_gs) * h}")
    single_logits = model.head(model.activation.sigma(z_eval))
    result: dict[str, Any] = {"single_accuracy": float((single_logits.argmax(-1) == eval_y).float().mean()),
              "single_loss": float(F.cross_entropy(single_logits, eval_y)),
              "num_gs": list(num_gs), "epsilons": list(epsilons), "modes": {}}
    for mode in modes:
        acc = torch.zeros(len(num_gs), len(epsilons))
        acc_mean = torch.zeros_like(acc)
        loss = torch.zeros_like(acc)
        for i, num_g in enumerate(num_gs):
            batches = z_fit[: num_g * h].reshape(num_g, h, h)
            for j, eps in enumerate(epsilons):
                layer = GroupActionEnsemble(model.activation, mode, epsilon=eps, num_g=num_g, seed=seed).fit(batches)
                logits = model.head(layer(z_eval))  # (num_g, N, 10)
                probability = mean_probability(logits)
                acc[i, j] = (vote(logits) == eval_y).float().mean()
                acc_mean[i, j] = (probability.argmax(-1) == eval_y).float().mean()
                loss[i, j] = F.nll_loss(torch.log(probability.clamp_min(1e-12)), eval_y)
        result["modes"][mode] = {"vote_accuracy": acc, "mean_probability_accuracy": acc_mean, "test_loss": loss}
    return result


class EnsembleClassifier(nn.Module):
    """A CifarNet whose last two layers are replaced by a fitted ensemble; returns log mean probabilities.

    Cross-entropy on this output is the negative log-likelihood of the members' mean probability
    (log_softmax leaves log-probabilities unchanged), so an attack's gradient goes through the whole
    ensemble: the adaptive threat model of the adversarial notebook.
    """

    def __init__(self, model: CifarNet, layer: GroupActionEnsemble):
        super().__init__()
        self.model, self.layer = model, layer

    def member_logits(self, x: Tensor) -> Tensor:
        return self.model.head(self.layer(self.model.hidden_preactivation(x)))  # (num_g, B, 10)

    def forward(self, x: Tensor) -> Tensor:
        return torch.log(mean_probability(self.member_logits(x)).clamp_min(1e-12))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The paper's readout: the mode of the members' argmax."""
        return vote(self.member_logits(x))


def art_classifier(module: nn.Module):
    """An adversarial-robustness-toolbox wrapper; inputs live in [−0.5, 0.5], so attacks clip there."""
    PyTorchClassifier = require("art.estimators.classification", "cifar", "art_classifier").PyTorchClassifier

    return PyTorchClassifier(model=module, loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                             clip_values=(-0.5, 0.5))


def attack(classifier, x: Tensor, method: str, radius: float, step: float | None = None, iterations: int = 1,
           random_start: bool = False, seed: int = 0) -> Tensor:
    """Adversarial images from ART: ``fgsm`` (one signed-gradient step of size ``radius``) or ``pgd``
    (``iterations`` steps of ``step``, projected on the L∞ ball of ``radius``); 0 iterations or radius 0 = x."""
    import numpy as np
    evasion = require("art.attacks.evasion", "cifar", "attack")
    FastGradientMethod, ProjectedGradientDescent = evasion.FastGradientMethod, evasion.ProjectedGradientDescent

    if radius == 0 or iterations == 0:
        return x.clone()
    if method == "fgsm":
        crafted = FastGradientMethod(classifier, norm=np.inf, eps=radius).generate(x.numpy())
    elif method == "pgd":
        np.random.seed(seed)  # ART draws its random start from numpy's global generator
        crafted = ProjectedGradientDescent(classifier, norm=np.inf, eps=radius, eps_step=step, max_iter=iterations,
                                           num_random_init=int(random_start), verbose=False).generate(x.numpy())
    else:
        raise ValueError(f"method={method!r} is not allowed; choose one of fgsm, pgd")
    return torch.from_numpy(crafted)


def experiment_splits(data: dict, n_eval: int, n_fit: int, train_fraction: float = 0.8, seed: int = 0) -> dict:
    """The images both notebooks use: a random ``train_fraction`` of the training split to train on, and from
    the test split (shuffled once: folders are sorted by class) ``n_eval`` images to score and the next
    ``n_fit`` to fit π(g, H) on. Inputs as x/255 − 0.5."""
    if n_eval + n_fit > len(data["test_y"]):
        raise ValueError(f"n_eval + n_fit = {n_eval + n_fit} exceeds the {len(data['test_y'])} test images")
    generator = torch.Generator().manual_seed(seed)
    train_idx = torch.randperm(len(data["train_y"]), generator=generator)[: int(train_fraction * len(data["train_y"]))]
    test_idx = torch.randperm(len(data["test_y"]), generator=generator)
    eval_idx, fit_idx = test_idx[:n_eval], test_idx[n_eval:n_eval + n_fit]
    return {"x_train": to_model_input(data["train_x"][train_idx]), "y_train": data["train_y"][train_idx],
            "x_eval": to_model_input(data["test_x"][eval_idx]), "y_eval": data["test_y"][eval_idx],
            "x_fit": to_model_input(data["test_x"][fit_idx])}
