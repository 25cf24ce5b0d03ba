"""Rank collapse in feedback alignment, and two remedies (Boeshertz, Pascanu & Clopath,
"Overcoming Rank Collapse in Feedback Alignment", arXiv 2606.11123).

The paper's claim: with fixed random feedback (FA) the error signals δ_l that reach the hidden
layers have a lower effective rank than BP's, which confines the weight updates to a small
subspace; orthogonalised updates (Muon) and hidden activity normalisation (batch norm) raise
both that rank and the accuracy.

Here: a deep MLP (6 × 256, ReLU) and LeNet-5 on Fashion-MNIST, each trained with
bp, fa, fa+muon, fa+norm and fa+muon+norm (norm = batch norm after every hidden layer; muon =
``torch.optim.Muon`` on the hidden weight matrices/kernels, AdamW elsewhere; the others Adam),
same seeds, data order and learning rate (1e-3). The effective rank (Roy & Vetterli 2007,
exp of the entropy of the normalised singular values) of every layer's error signal is
measured on a fixed probe of 256 training images seven times per epoch.

    python experiments/rank_collapse.py        # about 12 min on 2 CPU cores

writes experiments/results/rank_collapse.{md,json} and rank_collapse-<model>.png.
"""

from __future__ import annotations

from pathlib import Path

from common import (Arm, config, curves_and_accuracy, diagnostics, final, fmt, layers, machine,
                    mean, run_experiment, table)

NAME = "rank_collapse"
MODELS = {"mlp6": ("mlp", ["model.options={depth: 6, width: 256}"]), "lenet": ("lenet", [])}
VARIANTS = {  # label: (rule, overrides)
    "bp": ("bp", []),
    "fa": ("fa", []),
    "fa+muon": ("fa", ["optim.name=muon"]),
    "fa+norm": ("fa", ["model.norm=batch"]),
    "fa+muon+norm": ("fa", ["optim.name=muon", "model.norm=batch"]),
}
EPOCHS, SEEDS, EVERY = 5, (0, 1), 67  # 469 = 7 × 67 steps per epoch: 7 measurements per epoch


def arms(quick: bool) -> list[Arm]:
    out = []
    for model_label, (model, model_over) in MODELS.items():
        for label, (rule, over) in VARIANTS.items():
            for seed in SEEDS[:1] if quick else SEEDS:
                cfg = config("fashion-mnist.yaml", f"model.name={model}", *model_over, f"rule={rule}", *over,
                             f"seed={seed}", f"epochs={EPOCHS}", f"diagnostics.every={EVERY}", quick=quick)
                out.append(Arm(f"{model_label}-{label}-s{seed}", cfg))
    return out


def hidden_erank(entry: dict, names: list[str]) -> float:
    """Mean effective rank of δ over the hidden layers (all but the output layer)."""
    return mean([entry[f"erank/delta/{n}"] for n in names[:-1]])


def summarise(dirs: dict[str, Path]) -> dict:
    """{model: {variant: {acc, erank_start, erank_end, per_layer_end, curve}}}, means over seeds."""
    out: dict = {}
    for model_label in MODELS:
        out[model_label] = {}
        for label in VARIANTS:
            runs = [d for k, d in dirs.items() if k.startswith(f"{model_label}-{label}-s")]
            diags = [diagnostics(d) for d in runs]
            diags = [d for d in diags if d]
            if not diags:
                continue
            names = layers(diags[0], "erank/delta")
            steps = [e["step"] for e in diags[0]]
            curve = {n: [mean([d[i][f"erank/delta/{n}"] for d in diags if i < len(d)]) for i in range(len(steps))]
                     for n in names}
            out[model_label][label] = {
                "test_acc": mean([final(d).get("test_acc", float("nan")) for d in runs]),
                "test_acc_seeds": [final(d).get("test_acc") for d in runs],
                "erank_hidden_start": mean([hidden_erank(d[0], names) for d in diags]),
                "erank_hidden_end": mean([hidden_erank(d[-1], names) for d in diags]),
                "erank_end": {n: curve[n][-1] for n in names},
                "steps": steps, "erank_curve": curve, "layers": names,
            }
    return out


def claims(s: dict) -> list[str]:
    """The paper's three claims, checked on the final measurements."""
    lines = []
    for model, v in s.items():
        if not {"bp", "fa"} <= v.keys():
            continue
        e = {k: x["erank_hidden_end"] for k, x in v.items()}
        a = {k: x["test_acc"] for k, x in v.items()}
        yes = lambda ok: "**yes**" if ok else "**no**"
        lines.append(f"- {model}: FA's hidden error rank below BP's at the end: {yes(e['fa'] < e['bp'])} "
                     f"({e['fa']:.1f} vs {e['bp']:.1f}).")
        for fix in ("fa+muon", "fa+norm", "fa+muon+norm"):
            if fix in v:
                lines.append(f"- {model}: {fix} raises the rank over fa: {yes(e[fix] > e['fa'])} "
                             f"({e[fix]:.1f}); raises accuracy: {yes(a[fix] > a['fa'])} "
                             f"({100 * a[fix]:.2f} % vs {100 * a['fa']:.2f} %).")
    return lines


def markdown(s: dict) -> str:
    parts = [f"# Rank collapse: {', '.join(MODELS)} on Fashion-MNIST, {EPOCHS} epochs, seeds {list(SEEDS)}",
             "", f"{machine()}. Command: `python experiments/rank_collapse.py`.", "",
             "Test accuracy (mean over seeds) and effective rank of the error signal δ at each layer's "
             "output on a fixed probe of 256 training images (mean over seeds; *hidden* = mean over all "
             "layers but the output layer), at step 0 and after the last epoch.", ""]
    for model, v in s.items():
        names = next(iter(v.values()))["layers"] if v else []
        rows = [[k, fmt(x["test_acc"], 2, 100), fmt(x["erank_hidden_start"]), fmt(x["erank_hidden_end"])]
                + [fmt(x["erank_end"][n]) for n in names] for k, x in v.items()]
        parts += [f"## {model}", "", table(["arm", "test acc %", "erank δ hidden, start", "erank δ hidden, end"]
                                           + [f"end: {n}" for n in names], rows), "",
                  f"![erank over training](rank_collapse-{model}.png)", ""]
    parts += ["## The paper's claims, checked", ""] + claims(s)
    return "\n".join(parts)


def figures(s: dict) -> dict:
    figs = {}
    for model, v in s.items():
        if not v:
            continue
        names = next(iter(v.values()))["layers"][:-1]
        fig = curves_and_accuracy(v, names, "steps", "erank_curve", lambda n: f"erank of δ at {n}", "step", rows=2)
        fig.suptitle(f"{model}: bp vs fa and its remedies (Fashion-MNIST)")
        figs[model] = fig
    return figs


def main() -> None:
    run_experiment(__doc__, NAME, NAME, arms, summarise, markdown, figures, epochs=EPOCHS, seeds=list(SEEDS))


if __name__ == "__main__":
    main()
