"""Measure what the defects of the authors' CIFAR notebooks cost, on one seed (README "Deviations" table).

1. Softmax applied twice (model ends in Softmax, then cross-entropy): test accuracy of the same model
   trained that way and trained on logits (ours).
2. π(g, H) through an explicit pseudo-inverse in float32 at ε = 20: how many ensemble logits are NaN or
   infinite, against our regularised least-squares solve.
3. FGSM clamped to [0, 1] and applied twice (reference) against once, clamped to [−0.5, 0.5] (ours):
   accuracy of the single model at strength 0.012.
Usage: python benchmarks/reference_defects.py [--data PATH] [--epochs 10]   (about 2 min on a 2-core CPU)
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from repro import experiment as E
from repro.cifar import art_classifier, attack, experiment_splits, make_model, train_classifier
from repro.data import load_cifar10
from symmetry.ensemble import GroupActionEnsemble

H, NUM_G, EPSILON = 16, 120, 20.0


class DoubleSoftmax(nn.Module):
    """The reference's output: probabilities, which its cross-entropy then softmaxes again."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=-1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="CIFAR-10: an ImageFolder tree, its .tar.gz or torchvision's CIFAR-10 "
                        "folder (default: data/ in the repository; see repro.data.load_cifar10)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = load_cifar10(args.data)
    splits = experiment_splits(data, n_eval=1000, n_fit=NUM_G * H)  # the notebooks' images
    x, y, x_eval, y_eval, x_fit = (splits[k] for k in ("x_train", "y_train", "x_eval", "y_eval", "x_fit"))

    ours = make_model(0, hidden=H)
    train_classifier(ours, x, y, epochs=args.epochs, seed=0)
    reference = make_model(0, hidden=H)
    train_classifier(DoubleSoftmax(reference), x, y, epochs=args.epochs, seed=0)
    with torch.no_grad():
        acc = {name: float((m(x_eval).argmax(-1) == y_eval).float().mean()) for name, m in
               (("logits", ours), ("softmax_twice", reference))}

        z_fit = ours.hidden_preactivation(x_fit).reshape(NUM_G, H, H)
        z_eval = ours.hidden_preactivation(x_eval)
        layer = GroupActionEnsemble(ours.activation, "group", EPSILON, NUM_G).fit(z_fit)
        ours_logits = ours.head(layer(z_eval))
        # the reference's π: an explicit pseudo-inverse in float32 of the same σ(gH)
        g = layer.g.float()
        sigma = ours.activation.sigma
        pi_pinv = sigma(z_fit.mT.float()) @ torch.linalg.pinv(sigma(g @ z_fit.mT.float()))
        pinv_logits = ours.head(sigma(z_eval.unsqueeze(0) @ g.mT) @ pi_pinv.mT)
    nonfinite = {"least_squares_float64": int((~torch.isfinite(ours_logits)).sum()),
                 "pinv_float32": int((~torch.isfinite(pinv_logits)).sum()), "of": ours_logits.numel()}

    classifier = art_classifier(ours)
    once = attack(classifier, x_eval, "fgsm", 0.012)
    twice_01 = attack(classifier, attack(classifier, x_eval, "fgsm", 0.012), "fgsm", 0.012).clamp(0, 1)
    with torch.no_grad():
        fgsm = {"once_clip_to_input_range": float((ours(once).argmax(-1) == y_eval).float().mean()),
                "twice_clamp_0_1": float((ours(twice_01).argmax(-1) == y_eval).float().mean())}
    result = {"single_model_accuracy": acc, "nonfinite_ensemble_logits_at_eps_20": nonfinite,
              "fgsm_0.012_accuracy": fgsm, "wall_time_s": round(time.perf_counter() - started, 1),
              "environment": E.environment()}
    print(result["single_model_accuracy"], result["nonfinite_ensemble_logits_at_eps_20"], result["fgsm_0.012_accuracy"])
    E.write_json(f"{args.out}/reference_defects.json", result)
    return result


if __name__ == "__main__":
    main()
