"""Reports over run directories: a Markdown summary table and one self-contained HTML page.

>>> from alignlab.report import write_report
>>> html_path, md_path = write_report(["runs/a", "runs/b"], "runs")   # doctest: +SKIP

Runs are read through `alignlab.train.rundir`, the one owner of the run-directory format.
They are grouped by (dataset, model, rule); each group's final test accuracy is given as
mean ± sample std over its seeds. Plots are matplotlib PNGs embedded in the page; matplotlib
is imported only when a report is written.

Runs with ``diagnostics.jsonl`` add per-layer plots of the gradient angle to BP and of the
effective rank of the error signals, and two table columns; runs that measured the angle
between feedback and forward weights (``walign/L``: ∠(B, W), for pfa the path alignment
∠(B·R, W)) add a third column, next to the angle to BP, and its per-layer plot. A
``cka.json`` in the output folder (a compare folder) adds a heatmap of each rule's CKA to BP
per layer.
"""

from __future__ import annotations

import datetime
import os
import warnings
from pathlib import Path
from typing import Iterable

from ..files import atomic_write_text
from .cka import CKA_FILE, ModelCka, parse_cka, read_cka
from .groups import Group, group_runs, rule_order, sections
from .plots import PLOTS, Plot, rule_colors
from .render import render_html, render_markdown
from .runs import Run, load_run

DEFAULT_TITLE = "alignlab report"
HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"

__all__ = ["PLOTS", "Group", "ModelCka", "Plot", "Run", "load_run", "load_runs", "write_report"]


def load_runs(run_dirs: Iterable[str | os.PathLike]) -> list[Run]:
    """Every run directory read with `load_run`; a directory given twice is read once."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    runs: list[Run] = []
    seen: set[Path] = set()
    for run_dir in run_dirs:
        run = load_run(run_dir)
        key = run.path.resolve()
        if key in seen:
            warnings.warn(f"{run.path}: given more than once; counted once", stacklevel=2)
            continue
        seen.add(key)
        runs.append(run)
    if not runs:
        raise ValueError("no run directories given")
    return runs


def write_report(run_dirs: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                 title: str | None = None, cka: dict | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` for ``run_dirs`` into ``out_dir``; return both paths.

    A ValueError (one line, naming the path) for an empty list or a path that is not a run
    directory. Both files are written atomically; ``out_dir`` is created when missing.

    The CKA heatmaps come from ``cka`` when given (the content of a ``cka.json``; a ValueError
    when it is not one), else from ``out_dir/cka.json`` when that exists (a warning, and no
    heatmap, when it is unreadable).
    """
    tables: dict[str, ModelCka] = parse_cka(cka) if cka is not None else {}
    runs = load_runs(run_dirs)
    title = title or DEFAULT_TITLE
    generated = datetime.datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")
    groups = group_runs(runs)
    colors = rule_colors(rule_order(runs))
    out = Path(out_dir)
    if cka is None:
        tables = read_cka(out / CKA_FILE)
    out.mkdir(parents=True, exist_ok=True)
    html_path, markdown_path = out / HTML_NAME, out / MARKDOWN_NAME
    atomic_write_text(markdown_path, render_markdown(title, generated, groups, runs))
    atomic_write_text(html_path, render_html(title, generated, groups, sections(groups, tables), runs,
                                              colors))
    return html_path, markdown_path
