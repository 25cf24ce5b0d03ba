"""How many dimensions does the error feedback need? (Hanut & Kadmon, "Training large neural
networks with low-dimensional error feedback", arXiv 2502.20580.)

The paper's claim: feedback through a rank-r bottleneck that *learns* (ldfa: P by Oja's rule on
the error, Q by a Kolen-Pollack-type rule) matches BP once r is on the order of the task's
output dimension d, while *fixed* random feedback of the same rank does not.

Here: ldfa at r ∈ {1, 2, 5, 10, 20, full}, and fixed random rank-r feedback (ldfa with
learn_p=false, learn_q=false: B = PᵀP B₀, FA through an r-dimensional bottleneck; at full rank
it is FA), next to bp and fa, on two tasks:

* Fashion-MNIST (d = 10 classes), MLP 784-256-256-10, 5 epochs: test accuracy;
* a linear teacher y = xW* (d_in = 100, d = 5 outputs, 10 000 samples), MLP 100-256-256-5,
  20 epochs: test mean squared error.

Both train with SGD (momentum 0.9, lr 0.01, cosine to 0, L2 decay 1e-3), as in ``rule_zoo.py``:
decay is what makes Q track P·W. Seed 0.

    python experiments/feedback_dimension.py        # about 10 min on 2 CPU cores

writes experiments/results/feedback_dimension.{md,json} and feedback_dimension.png.
"""

from __future__ import annotations

from pathlib import Path

from common import Arm, config, final, fmt, machine, new_figure, run_experiment, table

NAME = "feedback_dimension"
RANKS = [1, 2, 5, 10, 20, "full"]
SGD = ["optim.name=sgd", "optim.lr=0.01", "optim.momentum=0.9", "optim.weight_decay=0.001", "optim.schedule=cosine"]
TASKS = {  # label: (config, overrides, output dimension d, metric, higher is better)
    "fashion-mnist": ("fashion-mnist.yaml", ["model.name=mlp", "epochs=5"], 10, "test_acc", True),
    "teacher": ("teacher.yaml", ["data.options.d_out=5", "epochs=20"], 5, "test_loss", False),
}
FIXED = ["rule_options.learn_p=false", "rule_options.learn_q=false"]


def variants() -> dict[str, tuple[str, list[str]]]:
    out = {"bp": ("bp", []), "fa": ("fa", [])}
    out.update({f"ldfa-r{r}": ("ldfa", [f"rule_options.rank={r}"]) for r in RANKS})
    out.update({f"fixed-r{r}": ("ldfa", [f"rule_options.rank={r}", *FIXED]) for r in RANKS if r != "full"})
    return out


def arms(plan) -> list[Arm]:
    quick, out = plan.quick, []
    for task, (path, over, *_rest) in TASKS.items():
        for label, (rule, rule_over) in variants().items():
            extra = ["data.options.n_train=512"] if quick and task == "teacher" else []
            cfg = config(path, *over, *SGD, f"rule={rule}", *rule_over, *extra, quick=quick)
            out.append(Arm(f"{task}-{label}", cfg))
    return out


def summarise(dirs: dict[str, Path]) -> dict:
    out = {}
    for task, (_, _, d, metric, _) in TASKS.items():
        v = {label: final(dirs[f"{task}-{label}"]).get(metric) for label in variants()}
        out[task] = {"d": d, "metric": metric, "values": v,
                     "ldfa": {str(r): v[f"ldfa-r{r}"] for r in RANKS},
                     "fixed": {str(r): v[f"fixed-r{r}"] if r != "full" else v["fa"] for r in RANKS}}
    return out


def _show(task: str, value) -> str:
    return fmt(value, 2, 100) if TASKS[task][3] == "test_acc" else fmt(value, 4)


def claims(s: dict) -> list[str]:
    yes = lambda ok: "**yes**" if ok else "**no**"
    lines = []
    for task, x in s.items():
        d, higher = x["d"], TASKS[task][4]
        bp = x["values"]["bp"]
        if bp is None:
            continue
        # "matches BP": within 1 point of accuracy, or within 10 % of BP's test MSE
        close = (lambda v: v is not None and v >= bp - 0.01) if higher else (lambda v: v is not None and v <= 1.1 * bp)
        better = (lambda a, b: a is not None and b is not None and (a > b if higher else a < b))
        at_d = [r for r in RANKS if r != "full" and r >= d]
        r_d = at_d[0] if at_d else "full"
        lines.append(f"- {task} (d = {d}): ldfa at r = {r_d} matches bp (within "
                     f"{'1 point' if higher else '10 % of its MSE'}): {yes(close(x['ldfa'][str(r_d)]))} "
                     f"({_show(task, x['ldfa'][str(r_d)])} vs {_show(task, bp)}); the smallest r that does: "
                     f"{next((r for r in RANKS if close(x['ldfa'][str(r)])), 'none')}.")
        wins = [r for r in RANKS if r != "full" and better(x["ldfa"][str(r)], x["fixed"][str(r)])]
        lines.append(f"- {task}: learned rank-r feedback beats fixed random rank-r feedback at "
                     f"{len(wins)} of {len(RANKS) - 1} ranks ({', '.join(map(str, wins)) or 'none'}); "
                     f"fixed random feedback matches bp at some r < full: "
                     f"{yes(any(close(x['fixed'][str(r)]) for r in RANKS if r != 'full'))}.")
    return lines


def markdown(s: dict) -> str:
    parts = ["# Feedback dimensionality: ldfa rank r vs fixed random rank-r feedback", "",
             f"{machine()}. Command: `python experiments/feedback_dimension.py`.", ""]
    for task, x in s.items():
        what = "test accuracy %" if x["metric"] == "test_acc" else "test MSE"
        rows = [[str(r), _show(task, x["ldfa"][str(r)]), _show(task, x["fixed"][str(r)])
                 + (" (= fa)" if r == "full" else "")] for r in RANKS]
        parts += [f"## {task} (output dimension d = {x['d']}), {what}", "",
                  f"bp: {_show(task, x['values']['bp'])}, fa: {_show(task, x['values']['fa'])}", "",
                  table(["r", "ldfa (learned P, Q)", "fixed random rank r"], rows), ""]
    parts += ["![accuracy vs r](feedback_dimension.png)", "", "## The paper's claims, checked", ""] + claims(s)
    return "\n".join(parts)


def figures(s: dict) -> dict:
    fig, axes = new_figure(len(s), 4.2, 3.2)
    for ax, (task, x) in zip(axes, s.items()):
        xs = list(range(len(RANKS)))
        scale = 100 if x["metric"] == "test_acc" else 1
        val = lambda v: float("nan") if v is None else scale * v
        ax.plot(xs, [val(x["ldfa"][str(r)]) for r in RANKS], marker="o", label="ldfa (learned)")
        ax.plot(xs, [val(x["fixed"][str(r)]) for r in RANKS], marker="s", label="fixed random rank r")
        ax.axhline(val(x["values"]["bp"]), color="k", ls="--", lw=1, label="bp")
        ax.set_xticks(xs, [str(r) for r in RANKS])
        ax.set_xlabel("feedback rank r")
        ax.set_ylabel("test accuracy %" if scale == 100 else "test MSE")
        if scale == 1:
            ax.set_yscale("log")
        ax.set_title(f"{task} (d = {x['d']})", fontsize=10)
        ax.legend(fontsize=7)
    return {"": fig}  # feedback_dimension.png


def main() -> None:
    run_experiment(__doc__, NAME, NAME, arms, summarise, markdown, figures)


if __name__ == "__main__":
    main()
