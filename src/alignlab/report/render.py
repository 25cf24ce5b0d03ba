"""The report as Markdown (the summary table) and as one self-contained HTML page."""

from __future__ import annotations

import html

from .groups import ANGLE, ERANK_DELTA, TEST_ACC, WALIGN, Group, Section, Stat, epochs_reached
from .plots import PLOTS, Colors, figure_png_base64
from .runs import Run

NA = "n/a"
COLUMNS = ("dataset", "model", "rule", "seeds", "test acc % (mean ± std)", "best test acc %",
           "time/epoch (s)")
# Added to COLUMNS when any run of the report has diagnostics.jsonl; "n/a" for groups without.
DIAGNOSTIC_COLUMNS = ("final angle to BP (°, mean over layers)", "final erank δ (mean over layers)")
# Put after the angle column when any run measured ∠(B, W) (walign/L); "n/a" for groups without.
WALIGN_COLUMN = "final ∠(B,W) (°, mean over layers)"
WALIGN_NOTE = ("∠(B,W) is the angle between each layer's feedback matrix and its forward weight W at the "
               "last measurement, averaged over layers: for pfa the path alignment ∠(B·R, W), for ldfa "
               "∠(PᵀQ, W), for kp (and fa, usf, ...) the B–W angle, 0 for bp; dfa (direct feedback) "
               "has none.")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
.meta, .note { color: #555; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.unfinished td { color: #a33; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
"""


def percent(fraction: float | None) -> str:
    """A fraction as a percentage with two decimals, or ``n/a``."""
    return NA if fraction is None else f"{fraction * 100:.2f}"


def mean_pm_std(stat: Stat, scale: float = 1.0) -> str:
    """``mean ± std`` with two decimals; ``± n/a`` for a single value; ``n/a`` for none."""
    if stat.mean is None:
        return NA
    std = NA if stat.std is None else f"{stat.std * scale:.2f}"
    return f"{stat.mean * scale:.2f} ± {std}"


def seeds_cell(group: Group) -> str:
    """How many runs the row's numbers come from, and how many unfinished runs it left out."""
    if group.partial:
        return f"{len(group.runs)} (unfinished)"
    extra = len(group.unfinished)
    return f"{len(group.finished)}" + (f" (+{extra} unfinished)" if extra else "")


def with_diagnostics(groups: list[Group]) -> bool:
    """True when the table gets the diagnostics columns: some group has diagnostics."""
    return any(group.has_diagnostics for group in groups)


def with_walign(groups: list[Group]) -> bool:
    """True when the table gets the ∠(B, W) column: some run measured ``walign/L``."""
    return any(group.has_diagnostic(WALIGN) for group in groups)


def table_columns(groups: list[Group]) -> tuple[str, ...]:
    """The summary table's header: ``COLUMNS``, plus ``DIAGNOSTIC_COLUMNS`` when there are any,
    with ``WALIGN_COLUMN`` after the angle column when some run has it."""
    if not with_diagnostics(groups):
        return COLUMNS
    angle, erank = DIAGNOSTIC_COLUMNS
    return COLUMNS + ((angle, WALIGN_COLUMN, erank) if with_walign(groups) else (angle, erank))


def mean_or_na(stat: Stat) -> str:
    """The mean with two decimals, or ``n/a``."""
    return NA if stat.mean is None else f"{stat.mean:.2f}"


def table_rows(groups: list[Group]) -> list[list[str]]:
    """The summary table's cells, one row per group, in the order of `table_columns`.

    The diagnostics cells are each counted run's last measurement averaged over its layers,
    then averaged over the runs.
    """
    diagnostics, walign = with_diagnostics(groups), with_walign(groups)
    rows = []
    for group in groups:
        time = group.epoch_time
        extra = ([mean_or_na(group.final_diagnostic(ANGLE)),
                  *([mean_or_na(group.final_diagnostic(WALIGN))] if walign else []),
                  mean_or_na(group.final_diagnostic(ERANK_DELTA))] if diagnostics else [])
        rows.append([
            group.dataset,
            group.model,
            group.rule,
            seeds_cell(group),
            mean_pm_std(group.test_acc, 100.0),
            percent(group.best_test_acc),
            NA if time.mean is None else f"{time.mean:.2f}",
            *extra,
        ])
    return rows


def describe_unfinished(run: Run) -> str:
    """``name (path, N epochs)`` for the list of unfinished runs."""
    epochs = epochs_reached(run)
    return f"{run.name} ({run.path}, {epochs} epoch{'s' if epochs != 1 else ''})"


def unfinished_line(runs: list[Run]) -> str:
    """The sentence listing the unfinished runs (without a finished summary.json)."""
    unfinished = [describe_unfinished(run) for run in runs if not run.done]
    if not unfinished:
        return "Unfinished runs: none."
    return f"Unfinished runs ({len(unfinished)}, no summary.json): " + "; ".join(unfinished) + "."


# --- Markdown -------------------------------------------------------------------------------


def markdown_cell(text: str) -> str:
    """Text that stays inside one Markdown table cell and shows as typed.

    Whitespace runs become one space; ``\\``, ``|``, ``<`` and ``>`` are backslash-escaped, so
    a name cannot end the cell or open an HTML tag in a Markdown viewer.
    """
    text = " ".join(str(text).split())
    for char in "\\|<>":
        text = text.replace(char, "\\" + char)
    return text


def render_markdown(title: str, generated: str, groups: list[Group], runs: list[Run]) -> str:
    """The Markdown report: title, generation time, summary table, unfinished runs."""
    lines = [f"# {markdown_cell(title)}", "", f"Generated {generated} from {len(runs)} run(s).", ""]
    columns = table_columns(groups)
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" if i < 4 else "---:" for i in range(len(columns))) + "|")
    for row in table_rows(groups):
        lines.append("| " + " | ".join(markdown_cell(cell) for cell in row) + " |")
    if with_diagnostics(groups) and with_walign(groups):
        lines += ["", markdown_cell(WALIGN_NOTE)]
    lines += ["", markdown_cell(unfinished_line(runs)), ""]
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------------


def html_table(header: tuple[str, ...] | list[str], rows: list[list[str]], numeric_from: int,
               row_classes: list[str] | None = None) -> str:
    """An HTML table, every cell escaped; columns from ``numeric_from`` on are right-aligned."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{html.escape(cell)}</td>' if column >= numeric_from
            else f"<td>{html.escape(cell)}</td>"
            for column, cell in enumerate(row))
        css = row_classes[index] if row_classes else ""
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def runs_table(runs: list[Run]) -> str:
    """Every run: name, what it ran, how far it got, and where it came from."""
    header = ["run", "dataset", "model", "rule", "seed", "status", "epochs", "final test acc %",
              "git commit", "started", "path"]
    rows = [[
        run.name, run.dataset, run.model, run.rule_label, str(run.seed),
        "done" if run.done else "unfinished", str(epochs_reached(run)), percent(run.final(TEST_ACC)),
        str(run.meta.get("git_commit") or NA)[:12], str(run.meta.get("started") or NA), str(run.path),
    ] for run in runs]
    classes = ["" if run.done else "unfinished" for run in runs]
    return html_table(header, rows, numeric_from=99, row_classes=classes)


def section_html(section: Section, colors: Colors) -> str:
    """A heading and the section's figures, each an embedded PNG."""
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    for plot in PLOTS:
        figure = plot.draw(section, colors)
        if figure is None:
            continue
        alt = html.escape(f"{plot.title}: {section.title}")
        parts.append(
            f'<figure><img alt="{alt}" src="data:image/png;base64,{figure_png_base64(figure)}">'
            f"<figcaption>{alt}</figcaption></figure>")
    return "\n".join(parts)


def render_html(title: str, generated: str, groups: list[Group], parts: list[Section],
                runs: list[Run], colors: Colors) -> str:
    """The whole report as one HTML page with no external resources."""
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">Generated {html.escape(generated)} from {len(runs)} run(s). Test accuracy '
        "is each run's last epoch, as mean ± sample std over seeds; unfinished runs count only "
        "where a rule has no finished run."
        + (" Angles to BP and effective ranks of the error signals are each run's last "
           "diagnostics measurement averaged over layers, then over seeds." if with_diagnostics(groups)
           else "")
        + (" " + html.escape(WALIGN_NOTE) if with_diagnostics(groups) and with_walign(groups) else "")
        + "</p>",
        "<h2>Summary</h2>",
        html_table(table_columns(groups), table_rows(groups), numeric_from=3,
                   row_classes=["unfinished" if group.partial else "" for group in groups]),
        f'<p class="note">{html.escape(unfinished_line(runs))}</p>',
        *(section_html(part, colors) for part in parts),
        "<h2>Runs</h2>",
        runs_table(runs),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )
