"""Representational alignment with BP, layer by layer (Lance & Kieu, arXiv 2605.08564).

The claim: nets trained with the sign-symmetric rules (uSF, frSF) converge to BP-like
representations, while plain FA's stay apart.

Here: fa, usf, frsf, kp and pfa nets and BP's (same architecture, seed, initial weights and
data order; the setting of ``rule_zoo.py``: MLP 784-256-256-10 and LeNet-5 on Fashion-MNIST,
5 epochs, seeds 0 and 1) are compared with the debiased minibatch linear CKA (Nguyen, Raghu &
Kornblith 2021) of every layer's output on the first 1000 test images, then averaged over seeds.

    python experiments/representations.py        # about 15 min on 2 CPU cores (less when
                                                 # pfa_vs_rest.py has trained the shared runs)

writes experiments/results/representations.{md,json} and representations-<model>.png.
"""

from __future__ import annotations

from pathlib import Path

import rule_zoo
from common import final, fmt, machine, mean, new_figure, table

from alignlab.train.similarity import cka_to_bp

NAME = "representations"
RULES = ["bp", "fa", "usf", "frsf", "kp", "pfa"]
SIGN = ("usf", "frsf")


def summarise(dirs: dict[str, Path]) -> dict:
    """{model: {rule: {cka {layer}, cka_hidden, test_acc}}}; hidden = mean over all but the output layer."""
    cka = cka_to_bp(list(dirs.values()))["values"]
    out: dict = {}
    for model, per_rule in cka.items():
        out[model] = {}
        for rule in RULES:
            if rule not in per_rule:
                continue
            values = per_rule[rule]
            names = list(values)
            runs = [d for k, d in dirs.items() if k.startswith(f"{model}-{rule}-s")]
            out[model][rule] = {"cka": values, "cka_hidden": mean([values[l] for l in names[:-1]]),
                                "test_acc": mean([final(r).get("test_acc", float("nan")) for r in runs]),
                                "layers": names}
    return out


def claims(s: dict) -> list[str]:
    yes = lambda ok: "**yes**" if ok else "**no**"
    lines = []
    for model, v in s.items():
        if "fa" not in v:
            continue
        h = {r: x["cka_hidden"] for r, x in v.items()}
        for r in SIGN:
            if r in v:
                lines.append(f"- {model}: {r} more BP-like than fa (mean hidden-layer CKA): {yes(h[r] > h['fa'])} "
                             f"({h[r]:.3f} vs {h['fa']:.3f}).")
        order = sorted(h, key=h.get, reverse=True)
        lines.append(f"- {model}: ranking by hidden-layer CKA to BP: " + " > ".join(f"{r} ({h[r]:.3f})" for r in order) + ".")
    return lines


def markdown(s: dict) -> str:
    parts = [f"# Representational alignment with BP: {', '.join(rule_zoo.MODELS)} on Fashion-MNIST, "
             f"{rule_zoo.EPOCHS} epochs, seeds {list(rule_zoo.SEEDS)}", "",
             f"{machine()}. Command: `python experiments/representations.py`.", "",
             "Debiased minibatch CKA (1 = the same representation up to rotation and scale) between each "
             "layer's output in the rule's trained net and in BP's, on the first 1000 test images; means over seeds.", ""]
    for model, v in s.items():
        names = next(iter(v.values()))["layers"] if v else []
        rows = [[r, fmt(x["test_acc"], 2, 100), fmt(x["cka_hidden"], 3)] + [fmt(x["cka"][l], 3) for l in names]
                for r, x in v.items()]
        parts += [f"## {model}", "", table(["rule", "test acc %", "CKA hidden mean"] + names, rows), "",
                  f"![CKA to BP](representations-{model}.png)", ""]
    parts += ["## The claim, checked", ""] + claims(s)
    return "\n".join(parts)


def figures(s: dict) -> dict:
    figs = {}
    for model, v in s.items():
        if not v:
            continue
        names = next(iter(v.values()))["layers"]
        fig, (ax,) = new_figure(1, 5.0, 3.4)
        for i, (rule, x) in enumerate(v.items()):
            ax.plot(names, [x["cka"][l] for l in names], marker="o", label=rule, color=f"C{i + 1}")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("CKA to BP's layer")
        ax.set_title(f"{model}: CKA to BP per layer (Fashion-MNIST)", fontsize=10)
        ax.legend(fontsize=8)
        figs[model] = fig
    return figs


def main() -> None:
    rule_zoo.main(__doc__, NAME, RULES, summarise, markdown, figures)


if __name__ == "__main__":
    main()
