"""The runs that ``pfa_vs_rest.py`` and ``representations.py`` share.

One setting for every rule, so that they differ only in their backward pass: Fashion-MNIST,
5 epochs of SGD (momentum 0.9, lr 0.01, cosine to 0, L2 weight decay 1e-3 on matrices and
kernels, batch 128) — SGD with decay because that is how Kolen-Pollack (Akrout et al. 2019) and
Product FA (Li & Benna 2024, the authors' code) align their feedback: B (or B·R) and W receive
the same update and decay, so their difference shrinks. Runs go to
``runs/experiments/rules/<model>-<rule>-s<seed>``; a script finding a run finished by the other
keeps it.
"""

from __future__ import annotations

from common import Arm, config, run_experiment

MODELS = ("mlp", "lenet")  # mlp: 784-256-256-10 ReLU; lenet: LeNet-5
SEEDS = (0, 1)
EPOCHS = 5
FOLDER = "rules"


def arms(rules: list[str], quick: bool) -> list[Arm]:
    out = []
    for model in MODELS:
        for rule in rules:
            for seed in SEEDS[:1] if quick else SEEDS:
                cfg = config("fashion-mnist.yaml", f"model.name={model}", f"rule={rule}", f"seed={seed}",
                             f"epochs={EPOCHS}", "optim.name=sgd", "optim.lr=0.01", "optim.momentum=0.9",
                             "optim.weight_decay=0.001", "optim.schedule=cosine", quick=quick)
                out.append(Arm(f"{model}-{rule}-s{seed}", cfg))
    return out


def main(doc: str, name: str, rules: list[str], summarise, markdown, figures) -> None:
    """Train (or keep) the shared runs of ``rules``, then write ``name``'s results."""
    run_experiment(doc, name, FOLDER, lambda plan: arms(rules, plan.quick), summarise, markdown, figures,
                   epochs=EPOCHS, seeds=list(SEEDS))
