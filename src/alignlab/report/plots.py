"""The report's plots: one list of plot functions, each drawn once per (dataset, model).

A plot function takes a `Section` and the rule colours and returns a matplotlib Figure, or
None when the section has nothing for it to show. To add a plot kind (alignment angles per
layer, effective ranks, ...), write such a function and append a `Plot` to `PLOTS`.

matplotlib is imported inside the functions, with the Agg canvas and no pyplot state, so
that importing alignlab never imports it.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from .groups import (ANGLE, EPOCH_TIME, ERANK_DELTA, TEST_ACC, TEST_LOSS, TRAIN_LOSS, WALIGN, Group,
                     Section, Stat, curve, layer_curves, layer_order)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Colors = Mapping[str, tuple[float, float, float, float]]
PlotFunction = Callable[[Section, Colors], "Figure | None"]


@dataclass(frozen=True)
class Plot:
    """A named plot kind."""

    title: str
    draw: PlotFunction


def rule_colors(rules: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """One colour per rule label, in order, shared by every figure of a report."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors + colormaps["Dark2"].colors
    return {rule: (*palette[index % len(palette)], 1.0) for index, rule in enumerate(rules)}


def figure_png_base64(figure: "Figure") -> str:
    """The figure as a PNG, base64-encoded (ASCII)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def learning_curves(section: Section, colors: Colors) -> "Figure | None":
    """Test accuracy and train loss against epoch: per rule the mean over seeds and a min–max band.

    Test loss stands in for test accuracy when no run has one (regression tasks). Unfinished
    runs in a group that also has finished ones are drawn dashed, on their own, up to the
    epoch they reached.
    """
    from matplotlib.ticker import MaxNLocator

    has_accuracy = any(run.values(TEST_ACC) for group in section.groups for run in group.runs)
    first = (TEST_ACC, "test accuracy (%)", 100.0) if has_accuracy else (TEST_LOSS, "test loss", 1.0)
    panels = [first, (TRAIN_LOSS, "train loss", 1.0)]
    figure, axes = _new_figure(len(panels), width_per_panel=5.0, height=3.6)
    drawn = False
    for ax, (key, label, scale) in zip(axes, panels):
        for group in section.groups:
            drawn |= _draw_group_curves(ax, group, key, scale, colors[group.rule])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if not drawn:
        return None
    labelled = [ax for ax in axes if ax.get_legend_handles_labels()[1]]
    labelled[0].legend(fontsize="small")
    figure.suptitle(_plain(f"{section.title}: learning curves"))
    return figure


def final_accuracy_bars(section: Section, colors: Colors) -> "Figure | None":
    """Final test accuracy per rule: the mean over seeds with the sample std as error bar."""
    return _stat_bars(section, colors, lambda g: g.test_acc, 100.0, "final test accuracy (%)")


def epoch_time_bars(section: Section, colors: Colors) -> "Figure | None":
    """Mean seconds per epoch per rule, with the std over seeds as error bar."""
    return _stat_bars(section, colors, lambda g: g.epoch_time, 1.0, "time per epoch (s)")


def angle_curves(section: Section, colors: Colors) -> "Figure | None":
    """Per rule other than bp (whose angles are all 0), one panel: each layer's angle between
    the rule's weight update and BP's gradient against step, mean over seeds; 90° dashed."""
    groups = [group for group in section.groups if not group.is_bp]
    return _layer_panels(section, groups, ANGLE, "angle to BP (°)",
                         "gradient angle to BP per layer", reference=90.0)


def walign_curves(section: Section, colors: Colors) -> "Figure | None":
    """Per rule other than bp (whose feedback is W), one panel: each layer's angle between its
    feedback matrix and W against step, mean over seeds; 90° dashed. For pfa this is the path
    alignment ∠(B·R, W), for kp the B–W angle; direct rules (dfa) have none."""
    groups = [group for group in section.groups if not group.is_bp]
    return _layer_panels(section, groups, WALIGN, "∠(B, W) (°)",
                         "angle between feedback and forward weights per layer, ∠(B, W) (pfa: ∠(B·R, W))",
                         reference=90.0)


def erank_curves(section: Section, colors: Colors) -> "Figure | None":
    """Per rule (bp included, as the reference), one panel: each layer's effective rank of the
    error signals against step, mean over seeds."""
    return _layer_panels(section, section.groups, ERANK_DELTA, "effective rank of δ",
                         "effective rank of error signals per layer")


def cka_heatmap(section: Section, colors: Colors) -> "Figure | None":
    """CKA of each rule's net against BP's, per layer (the compare folder's cka.json): rules as
    rows, layers as columns in network order, each cell annotated, colour scale 0–1."""
    if section.cka is None:
        return None
    import numpy as np
    from matplotlib.figure import Figure

    rules, layers, matrix = section.cka.grid([group.rule for group in section.groups])
    width = min(40.0, max(6.0, 0.8 * len(layers) + 3.0))
    title = textwrap.fill(_shorten(f"{section.title}: CKA to BP per layer ({section.cka.describe()})",
                                   200), width=int(width * 10))
    figure = Figure(figsize=(width, max(2.4, 0.5 * len(rules) + 1.6) + 0.25 * title.count("\n")),
                    layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(np.array(matrix, dtype=float), vmin=0.0, vmax=1.0, cmap="viridis",
                      aspect="auto", interpolation="nearest")
    fontsize = "small" if len(layers) <= 16 else "xx-small"
    for row, values in enumerate(matrix):
        for column, value in enumerate(values):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            ink = "black" if math.isnan(value) or value >= 0.6 else "white"
            ax.text(column, row, text, ha="center", va="center", color=ink, fontsize=fontsize)
    slanted = len(layers) > 6 or max(map(len, layers)) > 8
    ax.set_xticks(range(len(layers)), [_plain(layer) for layer in layers],
                  rotation=40 if slanted else 0, ha="right" if slanted else "center")
    ax.set_yticks(range(len(rules)), [_plain(rule) for rule in rules])
    ax.set_xlabel("layer")
    figure.colorbar(image, ax=ax, label="CKA to BP")
    figure.suptitle(_plain(title))
    return figure


PLOTS: list[Plot] = [
    Plot("Learning curves", learning_curves),
    Plot("Final test accuracy", final_accuracy_bars),
    Plot("Time per epoch", epoch_time_bars),
    Plot("Gradient angle to BP per layer over training", angle_curves),
    Plot("Feedback-weight angle ∠(B,W) per layer over training", walign_curves),
    Plot("Effective rank of error signals per layer over training", erank_curves),
    Plot("CKA to BP per layer", cka_heatmap),
]

MAX_LEGEND_LAYERS = 12  # more layers than this get a colour bar instead of a legend


def _layer_panels(section: Section, groups: list[Group], metric: str, ylabel: str, what: str,
                  reference: float | None = None) -> "Figure | None":
    """Small multiples, one panel per group with ``metric`` diagnostics: a line per layer
    (mean over the counted runs) against step, layers coloured by depth; None when no group has
    any."""
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    shown = [(group, layer_curves(group.counted, metric)) for group in groups]
    shown = [(group, curves) for group, curves in shown if any(c.steps for c in curves.values())]
    if not shown:
        return None
    layers = layer_order((run for group, _ in shown for run in group.counted), metric)
    depth = _layer_colors(len(layers))
    color_of = dict(zip(layers, depth))
    columns = len(shown) if len(shown) <= 4 else 3
    rows = math.ceil(len(shown) / columns)
    legend_width = 1.8 if len(layers) <= MAX_LEGEND_LAYERS else 1.2
    figure = Figure(figsize=(4.2 * columns + legend_width, 3.0 * rows + 0.5), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False, sharey=True)
    axes = list(grid.flat)
    top = 0.0
    for ax, (group, curves) in zip(axes, shown):
        for layer, line in curves.items():
            ax.plot(line.steps, line.mean, color=color_of[layer], linewidth=1.3,
                    marker="o" if len(line.steps) <= 30 else None, markersize=2.5)
            top = max([top, *(v for v in line.mean if math.isfinite(v))])
        if reference is not None:
            ax.axhline(reference, color="0.35", linestyle="--", linewidth=1.0)
        suffix = " (unfinished)" if group.partial else ""
        ax.set_title(_plain(f"{group.rule}{suffix}, n={len(group.counted)}"), fontsize="medium")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    for row in grid:
        row[0].set_ylabel(ylabel)
    if reference is not None:
        top = max(top, reference)
    axes[0].set_ylim(0.0, top * 1.06 if top > 0 else 1.0)
    if len(layers) <= MAX_LEGEND_LAYERS:
        handles = [Line2D([], [], color=color_of[layer], linewidth=1.5) for layer in layers]
        figure.legend(handles, [_plain(layer) for layer in layers], title="layer",
                      loc="outside right upper", fontsize="small")
    else:
        scale = ScalarMappable(Normalize(-0.5, len(layers) - 0.5), ListedColormap(depth))
        bar = figure.colorbar(scale, ax=axes[:len(shown)], label="layer (network order)")
        bar.set_ticks([0, len(layers) - 1], labels=[_plain(layers[0]), _plain(layers[-1])])
    figure.suptitle(_plain(f"{section.title}: {what} (mean over seeds)"))
    return figure


def _layer_colors(count: int) -> list[tuple[float, float, float, float]]:
    """``count`` colours from dark (first layer) to light (last), viridis without its pale end."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.88 * index / max(1, count - 1)) for index in range(count)]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _draw_group_curves(ax: "Axes", group: Group, key: str, scale: float, color) -> bool:
    """Draw one group's mean line, band and extra unfinished runs; True when anything was drawn."""
    drawn = False
    mean = curve(group.counted, key)
    if mean is not None:
        label = f"{group.rule} (unfinished)" if group.partial else group.rule
        ax.plot(mean.epochs, [v * scale for v in mean.mean], color=color, marker="o",
                markersize=3, label=_plain(label))
        if len(group.counted) > 1:
            ax.fill_between(mean.epochs, [v * scale for v in mean.low],
                            [v * scale for v in mean.high], color=color, alpha=0.2, linewidth=0)
        drawn = True
    if group.partial:
        return drawn
    for run in group.unfinished:
        points = run.values(key)
        if points:
            ax.plot([e for e, _ in points], [v * scale for _, v in points], color=color,
                    linestyle="--", marker="x", markersize=3,
                    label=_plain(f"{group.rule}: {run.name} (unfinished)"))
            drawn = True
    return drawn


def _stat_bars(section: Section, colors: Colors, stat_of: Callable[[Group], Stat],
               scale: float, label: str) -> "Figure | None":
    """A bar per group with a mean, error bars from the std (none for a single seed)."""
    shown = [(group, stat_of(group)) for group in section.groups]
    shown = [(group, stat) for group, stat in shown if stat.mean is not None]
    if not shown:
        return None
    figure, (ax,) = _new_figure(1, width_per_panel=max(4.0, 1.1 * len(shown) + 2), height=3.4)
    positions = list(range(len(shown)))
    heights = [stat.mean * scale for _, stat in shown]
    errors = [(stat.std or 0.0) * scale for _, stat in shown]
    bars = ax.bar(positions, heights, yerr=errors, capsize=4,
                  color=[colors[group.rule] for group, _ in shown],
                  hatch=[("//" if group.partial else None) for group, _ in shown])
    for bar, height, error in zip(bars, heights, errors):
        ax.annotate(f"{height:.2f}", (bar.get_x() + bar.get_width() / 2, height + error),
                    xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize="small")
    ax.set_xticks(positions, [_plain(_bar_label(group, stat)) for group, stat in shown],
                  rotation=20 if len(shown) > 4 else 0, ha="right" if len(shown) > 4 else "center")
    ax.set_ylabel(label)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    figure.suptitle(_plain(f"{section.title}: {label}"))
    return figure


def _bar_label(group: Group, stat: Stat) -> str:
    suffix = " (unfinished)" if group.partial else ""
    return f"{group.rule}{suffix}\nn={stat.n}"


def _new_figure(panels: int, width_per_panel: float, height: float) -> tuple["Figure", list["Axes"]]:
    """A Figure (no pyplot) with ``panels`` axes side by side."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_per_panel * panels, height), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _plain(text: str) -> str:
    """Text that matplotlib shows as typed: ``$`` would otherwise start mathtext."""
    return text.replace("$", r"\$")
