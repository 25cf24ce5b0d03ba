"""The same config under several rules, seeds and models, then one report.

Runs go to ``out_dir/<name>/<model>-<rule>-s<seed>``. When bp is among the rules, the
folder also gets ``cka.json``: each rule's trained net against BP's, layer by layer. Running the same comparison again
skips finished runs and resumes unfinished ones, so an interrupted comparison continues where
it stopped. A run whose loss diverges is reported as unfinished; the others go on.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

from .. import models as model_zoo
from .. import rules as rule_registry
from . import rundir
from .config import RunConfig, validate
from .loop import TrainingDiverged, train
from .similarity import write_cka


def plan(base: RunConfig, rules: list[str], seeds: list[int], models: list[str] | None, name: str) -> list[RunConfig]:
    """One config per (model, rule, seed); every name is checked before anything runs."""
    models = models or [base.model.name]
    for m in models:
        if m not in model_zoo.names():
            raise ValueError(f"unknown model {m!r}; available models: {', '.join(model_zoo.names())}")
    configs = []
    for model in models:
        for rule in rules:
            for seed in seeds:
                cfg = copy.deepcopy(base)
                cfg.rule, cfg.seed = rule, seed
                if rule != base.rule:
                    cfg.rule_options = {}  # options given in the config belong to its own rule
                if model != base.model.name:
                    cfg.model.name, cfg.model.options = model, {}
                cfg.out_dir, cfg.name = str(Path(base.out_dir) / name), f"{model}-{rule}-s{seed}"
                validate(cfg)
                configs.append(cfg)
    return configs


def compare(base: RunConfig, rules: list[str], seeds: list[int], models: list[str] | None = None,
            name: str | None = None) -> Path:
    """Run every (model, rule, seed); write report.html and report.md; return the folder."""
    for rule in rules:
        rule_registry.get(rule)  # unknown rule: ValueError listing the valid ones
    name = name or f"compare-{base.data.name}"
    configs = plan(base, rules, seeds, models, name)
    run_dirs = []
    for cfg in configs:
        run_dir = Path(cfg.out_dir) / cfg.name
        run_dirs.append(run_dir)
        if rundir.is_done(run_dir):
            print(f"{cfg.name}: finished earlier, kept", file=sys.stderr)
            continue
        try:
            train(resume=run_dir) if (run_dir / rundir.CONFIG).exists() else train(cfg)
        except TrainingDiverged as err:
            print(f"{cfg.name}: {err}", file=sys.stderr)
    from ..report import write_report

    root = Path(base.out_dir) / name
    if "bp" in rules and len(rules) > 1:
        write_cka(run_dirs, root)
    write_report(run_dirs, root, title=f"alignlab compare: {name}")
    return root
