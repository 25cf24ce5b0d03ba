"""Layer-by-layer CKA of each rule's trained net against BP's (same model and seed).

Activations of every converted layer on held-out probe inputs (the first ``n_probe`` test
inputs) are compared with the minibatch debiased CKA of Nguyen, Raghu & Kornblith (2021),
then averaged over seeds. Lance & Kieu (2026) compare rules this way.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from .. import data
from ..diagnostics.hooks import layer_outputs
from ..diagnostics.similarity import MinibatchCKA
from . import rundir
from ..files import atomic_write_text
from ..report.cka import CKA_FILE
from .checkpoint import load_checkpoint
from .config import config_from_dict
from .loop import build


def load_trained(run_dir: Path):
    """(config, Setup) of a finished run, with its final weights loaded."""
    cfg = config_from_dict(rundir.read_config(run_dir))
    s = build(cfg)
    s.net.load_state_dict(load_checkpoint(Path(run_dir) / rundir.CHECKPOINT)["model"])
    s.net.eval()
    return cfg, s


@torch.no_grad()
def layer_cka(a, b, dataset: data.Dataset, n_probe: int, batch: int) -> dict[str, float]:
    """{layer: debiased minibatch CKA} between two nets of the same architecture."""
    n = min(n_probe, len(dataset.test_y))
    batch = min(batch, n)
    acc: dict[str, MinibatchCKA] = {}
    for x, _ in data.batches(dataset.test_x[:n], dataset.test_y[:n], batch_size=batch,
                             mean=dataset.mean, std=dataset.std, drop_last=True):
        with layer_outputs(a) as out_a, layer_outputs(b) as out_b:
            a(x), b(x)
        for name in out_a:  # network order
            if name in out_b:
                acc.setdefault(name, MinibatchCKA()).update(out_a[name], out_b[name])
    return {name: m.value() for name, m in acc.items()}


def cka_to_bp(run_dirs: list[Path], n_probe: int = 1000, batch: int = 250) -> dict:
    """CKA of every finished non-BP run against the finished BP run of its model and seed."""
    runs = [(d, config_from_dict(rundir.read_config(d))) for d in run_dirs if rundir.is_done(d)]
    bp = {(c.model.name, c.seed): d for d, c in runs if c.rule_label() == "bp"}
    per_rule: dict = defaultdict(lambda: defaultdict(list))
    for d, c in runs:
        if c.rule_label() == "bp" or (c.model.name, c.seed) not in bp:
            continue
        _, ref = load_trained(bp[(c.model.name, c.seed)])
        _, other = load_trained(d)
        per_rule[c.model.name][c.rule_label()].append(layer_cka(other.net, ref.net, ref.dataset, n_probe, batch))
    values = {
        model: {rule: {layer: sum(r[layer] for r in results) / len(results) for layer in results[0]}
                for rule, results in rules.items()}
        for model, rules in per_rule.items()
    }
    return {"probe": f"the first {n_probe} test inputs (or all, if fewer), minibatches of {batch}",
            "debiased": True, "values": values}


def write_cka(run_dirs: list[Path], out_dir: Path) -> dict:
    result = cka_to_bp(run_dirs)
    atomic_write_text(Path(out_dir) / CKA_FILE, json.dumps(result, indent=1) + "\n")
    return result
