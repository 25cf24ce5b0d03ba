"""alignlab.report: run directories in, a Markdown table and a self-contained HTML page out."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from alignlab.report import load_run, write_report
from alignlab.report.groups import curve, group_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SRC = str(Path(__file__).resolve().parents[1] / "src")

# Final-epoch test accuracies and per-epoch times of the fake runs (2 rules x 2 seeds).
ACC = {("fa", 0): [0.70, 0.78, 0.81], ("fa", 1): [0.72, 0.80, 0.84],
       ("bp", 0): [0.80, 0.85, 0.87], ("bp", 1): [0.81, 0.86, 0.89]}
TIME = {("fa", 0): [1.0, 1.5, 2.0], ("fa", 1): [1.5, 1.5, 1.5],
        ("bp", 0): [2.0, 2.0, 2.0], ("bp", 1): [3.0, 3.0, 3.0]}
EVIL_NAME = "<script>alert(1)</script>"


def make_run(root: Path, name: str, rule: str, seed: int, accs: list, times: list | None = None,
             done: bool = True, model: str = "lenet", tail: str = "") -> Path:
    """A run directory as the training loop writes it, with made-up metrics."""
    run_dir = root / name.replace("/", "_").replace("<", "(").replace(">", ")")
    run_dir.mkdir(parents=True)
    config = {"rule": rule, "rule_options": {}, "seed": seed, "epochs": 3, "batch_size": 128,
              "data": {"name": "fashion-mnist", "batch_size": 128},
              "model": {"name": model, "norm": "none"},
              "optim": {"name": "adam", "lr": 0.001}, "name": name}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    meta = {"alignlab_version": "0.1.0", "git_commit": None, "torch_version": "2.13.0",
            "started": "2025-01-01T12:00:00+00:00", "device": "cpu"}
    (run_dir / "meta.json").write_text(json.dumps(meta))
    times = times or [1.0] * len(accs)
    lines = []
    for epoch, (acc, seconds) in enumerate(zip(accs, times), start=1):
        lines.append({"epoch": epoch, "step": 469 * epoch, "train_loss": 1.0 / epoch + seed * 0.01,
                      "train_acc": None, "test_loss": 0.9 / epoch, "test_acc": acc,
                      "epoch_time": seconds, "lr": 0.001, "angle/fc1": 45.0 - epoch,
                      "erank/fc1": 12.5})
    lines[-1]["cka"] = [[1.0, 0.5], [0.5, 1.0]]  # a later issue's non-scalar key
    text = "".join(json.dumps(line) + "\n" for line in lines) + tail
    (run_dir / "metrics.jsonl").write_text(text)
    if done:
        (run_dir / "summary.json").write_text(json.dumps({"status": "done", "final": lines[-1]}))
    return run_dir


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    """Four finished runs (fa given first), one crashed fa run, and their report."""
    root = tmp_path_factory.mktemp("runs")
    dirs = [make_run(root, f"lenet-{rule}-s{seed}", rule, seed, ACC[rule, seed], TIME[rule, seed])
            for rule in ("fa", "bp") for seed in (0, 1)]
    crashed = make_run(root, EVIL_NAME, "fa", 2, [0.65, 0.75], done=False,
                       tail='{"epoch": 3, "step": 14')
    with pytest.warns(UserWarning, match="metrics.jsonl:3"):
        html_path, md_path = write_report(dirs + [crashed], root / "report", title="FA vs <BP>")
    return {"root": root, "dirs": dirs, "crashed": crashed, "html": html_path, "md": md_path,
            "html_text": html_path.read_text(), "md_text": md_path.read_text()}


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the Markdown summary table, as cell lists."""
    rows = [line for line in markdown.splitlines() if line.startswith("| fashion-mnist |")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def mean_and_sample_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_markdown_table_has_mean_std_best_and_time_per_group(lab):
    rows = table_rows(lab["md_text"])
    assert [row[:3] for row in rows] == [["fashion-mnist", "lenet", "bp"],
                                         ["fashion-mnist", "lenet", "fa"]]  # bp first
    bp, fa = rows
    # bp: finals 87 and 89 -> mean 88, sample std sqrt(((87-88)^2 + (89-88)^2) / 1) = 1.414
    assert bp[3:] == ["2", "88.00 ± 1.41", "89.00", "2.50"]
    # fa: finals 81 and 84 -> mean 82.5, std sqrt(2 * 1.5^2) = 2.121; the crashed run is left out
    assert fa[3:] == ["2 (+1 unfinished)", "82.50 ± 2.12", "84.00", "1.50"]
    for (rule, row) in (("bp", bp), ("fa", fa)):
        mean, std = mean_and_sample_std([ACC[rule, s][-1] * 100 for s in (0, 1)])
        assert row[4] == f"{mean:.2f} ± {std:.2f}"
    header = next(line for line in lab["md_text"].splitlines() if line.startswith("| dataset"))
    assert header == ("| dataset | model | rule | seeds | test acc % (mean ± std) | best test acc % "
                      "| time/epoch (s) |")


def test_unfinished_runs_are_listed_and_marked(lab):
    line = next(line for line in lab["md_text"].splitlines() if line.startswith("Unfinished runs"))
    assert line.startswith("Unfinished runs (1,")
    assert "2 epochs" in line and str(lab["crashed"]) in line
    assert "lenet-fa-s0" not in line
    assert '<tr class="unfinished"><td>&lt;script&gt;' in lab["html_text"]


def test_html_is_one_self_contained_page(lab):
    html = lab["html_text"]
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "data:image/png;base64," in html
    assert 'src="http' not in html and "<link" not in html and "url(" not in html
    assert "<script" not in html
    assert "<title>FA vs &lt;BP&gt;</title>" in html
    assert "Generated " in html
    assert '<td class="num">88.00 ± 1.41</td>' in html


def test_every_embedded_png_decodes(lab):
    images = re.findall(r'src="data:image/png;base64,([^"]*)"', lab["html_text"])
    assert len(images) == 3  # learning curves, accuracy bars, time bars for one dataset/model
    for encoded in images:
        data = base64.b64decode(encoded, validate=True)
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_config_text_is_escaped(lab):
    html = lab["html_text"]
    assert EVIL_NAME not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\\<script\\>alert(1)\\</script\\>" in lab["md_text"]


def test_output_is_exactly_the_two_files_and_can_be_rewritten(lab, tmp_path):
    assert sorted(p.name for p in lab["html"].parent.iterdir()) == ["report.html", "report.md"]
    out = tmp_path / "new" / "deeper"
    html_path, md_path = write_report(lab["dirs"][:1], out)
    assert (html_path, md_path) == (out / "report.html", out / "report.md")
    first = md_path.read_text()
    write_report(lab["dirs"][2:3], out)
    assert md_path.read_text() != first and "| bp |" in md_path.read_text()
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert md_path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0o600


def test_one_seed_has_no_std_and_rules_keep_first_seen_order_after_bp(tmp_path):
    dirs = [make_run(tmp_path, f"r-{rule}", rule, 0, [0.5, 0.6]) for rule in ("dfa", "kp", "bp")]
    _, md_path = write_report(dirs, tmp_path / "out")
    rows = table_rows(md_path.read_text())
    assert [row[2] for row in rows] == ["bp", "dfa", "kp"]
    assert all(row[3:5] == ["1", "60.00 ± n/a"] for row in rows)
    assert "Unfinished runs: none." in md_path.read_text()


def test_group_with_only_unfinished_runs_is_marked(tmp_path):
    run = make_run(tmp_path, "crashed", "usf", 0, [0.4], done=False)
    _, md_path = write_report([run], tmp_path / "out")
    (row,) = table_rows(md_path.read_text())
    assert row[2:5] == ["usf", "1 (unfinished)", "40.00 ± n/a"]


def test_run_without_any_accuracy_reads_as_na(tmp_path):
    run = make_run(tmp_path, "diverged", "fa", 0, [0.1], done=False)
    (run / "metrics.jsonl").write_text("")  # diverged before its first epoch ended
    _, md_path = write_report([run], tmp_path / "out")
    (row,) = table_rows(md_path.read_text())
    assert row[3:] == ["1 (unfinished)", "n/a", "n/a", "n/a"]


def test_curve_averages_each_epoch_over_seeds_with_min_max_band(lab):
    runs = [load_run(d) for d in lab["dirs"]]
    fa = next(g for g in group_runs(runs) if g.rule == "fa")
    acc = curve(fa.counted, "test_acc")
    assert acc.epochs == [1, 2, 3]
    assert acc.mean == pytest.approx([0.71, 0.79, 0.825])
    assert acc.low == pytest.approx([0.70, 0.78, 0.81])
    assert acc.high == pytest.approx([0.72, 0.80, 0.84])
    assert curve(fa.counted, "no-such-key") is None


def test_load_run_reads_every_file(lab):
    run = load_run(lab["dirs"][0])
    assert run.done and run.name == "lenet-fa-s0" and run.rule == "fa" and run.seed == 0
    assert (run.dataset, run.model) == ("fashion-mnist", "lenet")
    assert run.meta["torch_version"] == "2.13.0"
    assert [line["epoch"] for line in run.metrics] == [1, 2, 3]


def test_half_written_last_metrics_line_is_skipped_with_a_warning(lab):
    with pytest.warns(UserWarning, match=r"metrics\.jsonl:3: skipping"):
        run = load_run(lab["crashed"])
    assert not run.done
    assert [line["test_acc"] for line in run.metrics] == [0.65, 0.75]


@pytest.mark.parametrize("missing", ["config.yaml", "metrics.jsonl"])
def test_directory_without_a_run_file_is_a_one_line_value_error(tmp_path, missing):
    run = make_run(tmp_path, "r", "fa", 0, [0.5])
    (run / missing).unlink()
    with pytest.raises(ValueError) as error:
        load_run(run)
    message = str(error.value)
    assert str(run) in message and missing in message and "\n" not in message


def test_missing_path_and_file_path_are_value_errors(tmp_path):
    for path in (tmp_path / "nowhere", tmp_path / "file.txt"):
        if path.name == "file.txt":
            path.write_text("x")
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_run(path)


def test_report_with_one_bad_path_fails_and_writes_nothing(lab, tmp_path):
    bad = tmp_path / "not-a-run"
    bad.mkdir()
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        write_report(lab["dirs"] + [bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_reads_what_the_run_directory_writer_writes(tmp_path):
    from alignlab.train import rundir

    run_dir = tmp_path / "r"
    config = {"rule": "fa", "seed": 0, "data": {"name": "teacher"}, "model": {"name": "mlp"}}
    rundir.create(run_dir, config, device="cpu")
    rundir.rewrite_lines(run_dir / rundir.METRICS, [{"epoch": 1, "test_acc": 0.5, "train_loss": math.nan}])
    rundir.append_line(run_dir / rundir.DIAGNOSTICS, {"step": 0, "epoch": 0, "angle/fc": 30.0})
    run = load_run(run_dir)
    assert isinstance(run, rundir.RunFiles) and not run.done and not rundir.is_done(run_dir)
    assert (run.dataset, run.model, run.rule) == ("teacher", "mlp", "fa") and run.meta["device"] == "cpu"
    assert run.metrics == [{"epoch": 1, "test_acc": 0.5, "train_loss": None}]  # NaN written as null
    assert run.diagnostic_measurements("angle") == {0: {"fc": 30.0}}
    rundir.write_summary(run_dir, {"test_acc": 0.5})
    assert load_run(run_dir).done and rundir.is_done(run_dir)


def test_empty_list_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no run directories"):
        write_report([], tmp_path)


def test_importing_alignlab_report_does_not_import_matplotlib():
    code = "import sys, alignlab, alignlab.report; print('matplotlib' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "False"


def test_regression_runs_plot_test_loss_and_skip_accuracy_bars(tmp_path, recwarn):
    dirs = [make_run(tmp_path, f"t-{rule}", rule, 0, [None, None]) for rule in ("bp", "fa")]
    html_path, md_path = write_report(dirs, tmp_path / "out")
    html = html_path.read_text()
    assert re.findall(r'<img alt="([^:"]*):', html) == ["Learning curves", "Time per epoch"]
    assert [row[4] for row in table_rows(md_path.read_text())] == ["n/a", "n/a"]
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_rule_options_make_their_own_row(tmp_path):
    plain = make_run(tmp_path, "fa", "fa", 0, [0.5])
    normed = make_run(tmp_path, "fa-norm", "fa", 0, [0.7])
    config = yaml.safe_load((normed / "config.yaml").read_text())
    config["rule_options"] = {"match_norm": True}
    (normed / "config.yaml").write_text(yaml.safe_dump(config))
    _, md_path = write_report([plain, normed], tmp_path / "out")
    rows = table_rows(md_path.read_text())
    assert [(row[2], row[4]) for row in rows] == [("fa", "50.00 ± n/a"),
                                                 ("fa (match_norm=True)", "70.00 ± n/a")]


def test_layer_rules_make_their_own_row(tmp_path):
    plain = make_run(tmp_path, "fa", "fa", 0, [0.5])
    mapped = make_run(tmp_path, "fa-map", "fa", 0, [0.6])
    config = yaml.safe_load((mapped / "config.yaml").read_text())
    config["layer_rules"] = {"features.*": "kp"}
    (mapped / "config.yaml").write_text(yaml.safe_dump(config))
    _, md_path = write_report([plain, mapped], tmp_path / "out")
    assert [row[2] for row in table_rows(md_path.read_text())] == ["fa", "fa (features.*: kp)"]


# --- diagnostics.jsonl and cka.json -----------------------------------------------------------

LAYERS = ["features.3", "classifier"]  # network order; sorted order would put classifier first
STEPS = [0, 469, 938]
# Per (rule, seed): per measurement, the angle to BP and the effective rank of δ of each layer.
ANGLES = {("fa", 0): [[88.0, 80.0], [70.0, 55.0], [60.0, 40.0]],
          ("fa", 1): [[86.0, 84.0], [72.0, 45.0], [62.0, 30.0]],
          ("bp", 0): [[0.0, 0.0]] * 3, ("bp", 1): [[0.0, 0.0]] * 3}
ERANKS = {("fa", 0): [[9.0, 6.0], [6.0, 4.0], [5.0, 3.0]],
          ("fa", 1): [[9.0, 7.0], [8.0, 3.0], [7.0, 2.0]],
          ("bp", 0): [[10.0, 8.0], [9.0, 5.0], [9.0, 4.0]],
          ("bp", 1): [[10.0, 8.0], [9.0, 6.0], [8.0, 5.0]]}
CKA = {"probe": "first 512 test images <i>", "debiased": True,
       "values": {"lenet": {"fa": {"features.3": 0.71, "classifier": 0.42},
                            "bp": {"features.3": 1.0, "classifier": 1.0}},
                  "mlp": {"fa": {"0": 0.9}}}}
DIAG_TITLES = ["Learning curves", "Final test accuracy", "Time per epoch",
               "Gradient angle to BP per layer over training",
               "Feedback-weight angle ∠(B,W) per layer over training",
               "Effective rank of error signals per layer over training", "CKA to BP per layer"]
WALIGN_HEADER = "final ∠(B,W) (°, mean over layers)"


def diagnostics_line(rule: str, step: int, angles: list, eranks: list) -> dict:
    """One measurement as alignlab.diagnostics.probe orders it: all layers of one key kind, then the next."""
    line = {"step": step, "epoch": step // 469}
    line.update({f"angle/{layer}": a for layer, a in zip(LAYERS, angles)})
    line.update({f"delta_angle/{layer}": a / 2 for layer, a in zip(LAYERS, angles)})
    if rule == "fa":  # bp has no feedback matrix
        line.update({f"walign/{layer}": 80.0 for layer in LAYERS})
        line.update({f"wnorm/{layer}": 1.1 for layer in LAYERS})
    for kind in ("delta", "act", "dw"):
        for rank, factor in (("erank", 1.0), ("srank", 0.5), ("pr", 0.7)):
            line.update({f"{rank}/{kind}/{layer}": e * factor * (1.0 if kind == "delta" else 3.0)
                         for layer, e in zip(LAYERS, eranks)})
    return line


def write_diagnostics(run_dir: Path, rule: str, seed: int, tail: str = "") -> None:
    lines = [json.dumps(diagnostics_line(rule, step, a, e))
             for step, a, e in zip(STEPS, ANGLES[rule, seed], ERANKS[rule, seed])]
    if (rule, seed) == ("fa", 0):  # a resumed run measured step 938 twice: the later line counts
        lines.insert(2, json.dumps(diagnostics_line(rule, 938, [5.0, 5.0], [1.0, 1.0])))
    if (rule, seed) == ("fa", 1):  # garbage in the middle and a half-written last line
        lines[2:2] = ["not json at all", "[1, 2, 3]"]
        tail = tail or '{"step": 1407, "epoch": 3, "angle/features.3": 1'
    (run_dir / "diagnostics.jsonl").write_text("\n".join(lines) + "\n" + tail)


@pytest.fixture(scope="module")
def diag_lab(tmp_path_factory) -> dict:
    """A compare folder: bp and fa x 2 seeds with diagnostics, an old dfa run without, cka.json."""
    root = tmp_path_factory.mktemp("compare")
    dirs = []
    for rule in ("bp", "fa"):
        for seed in (0, 1):
            run_dir = make_run(root, f"lenet-{rule}-s{seed}", rule, seed, ACC[rule, seed])
            write_diagnostics(run_dir, rule, seed)
            dirs.append(run_dir)
    dirs.append(make_run(root, "lenet-dfa-s0", "dfa", 0, [0.6, 0.7, 0.75]))
    (root / "cka.json").write_text(json.dumps(CKA))
    with pytest.warns(UserWarning) as caught:
        html_path, md_path = write_report(dirs, root)
    return {"root": root, "dirs": dirs, "warnings": [str(w.message) for w in caught],
            "html_text": html_path.read_text(), "md_text": md_path.read_text()}


def figure_titles(html: str) -> list[str]:
    return re.findall(r'<img alt="([^:"]*):', html)


def test_table_gains_final_angle_walign_and_erank_columns(diag_lab):
    header = next(line for line in diag_lab["md_text"].splitlines() if line.startswith("| dataset"))
    assert header.endswith("| time/epoch (s) | final angle to BP (°, mean over layers) "
                           f"| {WALIGN_HEADER} | final erank δ (mean over layers) |")
    rows = {row[2]: row for row in table_rows(diag_lab["md_text"])}
    assert list(rows) == ["bp", "fa", "dfa"]
    # fa: seed 0 ends at (60 + 40) / 2 = 50 (its earlier duplicate of step 938 is replaced),
    # seed 1 at (62 + 30) / 2 = 46 (its half-written step 1407 is skipped): mean 48.
    # erank δ: (5 + 3) / 2 = 4 and (7 + 2) / 2 = 4.5: mean 4.25.
    # ∠(B, W): 80 in every fa line.
    assert rows["fa"][7:] == ["48.00", "80.00", "4.25"]
    # bp: angles all 0, no walign in these lines; erank δ (9 + 4) / 2 = 6.5 and (8 + 5) / 2 = 6.5
    assert rows["bp"][7:] == ["0.00", "n/a", "6.50"]
    assert rows["dfa"][7:] == ["n/a", "n/a", "n/a"]  # an older run with no diagnostics.jsonl
    assert rows["dfa"][4] == "75.00 ± n/a"
    for rule in ("fa", "bp"):
        finals = [sum(ANGLES[rule, s][-1]) / len(LAYERS) for s in (0, 1)]
        assert float(rows[rule][7]) == pytest.approx(sum(finals) / 2)
    assert '<td class="num">48.00</td><td class="num">80.00</td><td class="num">4.25</td>' in diag_lab["html_text"]


def test_malformed_diagnostics_lines_are_skipped_with_warnings(diag_lab):
    messages = diag_lab["warnings"]
    assert [m for m in messages if "diagnostics.jsonl:3: skipping" in m]
    assert [m for m in messages if "diagnostics.jsonl:4: skipping" in m]
    assert [m for m in messages if "diagnostics.jsonl:6: skipping" in m]  # half-written last line
    assert len(messages) == 3
    with pytest.warns(UserWarning, match="diagnostics.jsonl"):
        run = load_run(diag_lab["dirs"][3])  # fa seed 1
    assert [line["step"] for line in run.diagnostics] == STEPS


def test_new_figures_are_embedded_in_order(diag_lab):
    html = diag_lab["html_text"]
    assert figure_titles(html) == DIAG_TITLES
    images = re.findall(r'src="data:image/png;base64,([^"]*)"', html)
    assert len(images) == 7  # 3 as before + angles, ∠(B, W), eranks, CKA
    for encoded in images:
        assert base64.b64decode(encoded, validate=True).startswith(PNG_MAGIC)
    assert "<i>" not in html and "<script" not in html


def test_layer_order_is_first_seen_and_curves_average_seeds_per_step(diag_lab):
    from alignlab.report.groups import layer_curves, layer_order

    runs = [load_run(d) for d in diag_lab["dirs"][:3]]  # bp x 2, fa seed 0 (the clean fa run)
    assert runs[2].diagnostic_layers("angle") == LAYERS
    assert runs[2].diagnostic_layers("erank/delta") == LAYERS
    assert runs[2].diagnostic_layers("walign") == LAYERS and runs[0].diagnostic_layers("walign") == []
    assert layer_order(runs, "angle") == LAYERS
    bp = layer_curves(runs[:2], "erank/delta")
    assert list(bp) == LAYERS
    assert bp["features.3"].steps == STEPS  # the step-0 measurement before training included
    assert bp["features.3"].mean == pytest.approx([10.0, 9.0, 8.5])
    assert bp["classifier"].mean == pytest.approx([8.0, 5.5, 4.5])
    assert runs[2].diagnostic_measurements("angle")[938] == {"features.3": 60.0, "classifier": 40.0}


def section_figures(diag_lab):
    from alignlab.report.cka import parse_cka
    from alignlab.report.groups import sections
    from alignlab.report.plots import angle_curves, cka_heatmap, erank_curves, rule_colors

    with pytest.warns(UserWarning):
        runs = [load_run(d) for d in diag_lab["dirs"]]
    (section,) = sections(group_runs(runs), parse_cka(CKA))
    colors = rule_colors(["bp", "fa", "dfa"])
    return section, angle_curves(section, colors), erank_curves(section, colors), cka_heatmap(section, colors)


def visible_axes(figure):
    return [ax for ax in figure.axes if ax.get_visible() and ax.get_title()]


def test_angle_and_erank_panels_one_per_rule_with_a_line_per_layer(diag_lab):
    _, angles, eranks, _ = section_figures(diag_lab)
    # angles: bp is left out (all 0) and dfa has no diagnostics: one panel, for fa
    (fa,) = visible_axes(angles)
    assert fa.get_title() == "fa, n=2"
    *layer_lines, ninety = fa.get_lines()
    assert len(layer_lines) == len(LAYERS)
    assert list(layer_lines[0].get_xdata()) == STEPS
    # features.3 over the fa seeds: (88 + 86) / 2, (70 + 72) / 2, (60 + 62) / 2
    assert list(layer_lines[0].get_ydata()) == pytest.approx([87.0, 71.0, 61.0])
    assert list(layer_lines[1].get_ydata()) == pytest.approx([82.0, 50.0, 35.0])
    assert list(ninety.get_ydata()) == [90, 90] and ninety.get_linestyle() == "--"
    assert fa.get_ylim()[0] == 0 and fa.get_ylim()[1] > 90
    legend_labels = [t.get_text() for t in angles.legends[0].get_texts()]
    assert legend_labels == LAYERS
    # eranks: bp kept as the reference
    assert [ax.get_title() for ax in visible_axes(eranks)] == ["bp, n=2", "fa, n=2"]
    fa_erank = visible_axes(eranks)[1].get_lines()
    assert list(fa_erank[1].get_ydata()) == pytest.approx([6.5, 3.5, 2.5])


def test_cka_heatmap_rules_by_layers_annotated_on_a_0_to_1_scale(diag_lab):
    section, _, _, heatmap = section_figures(diag_lab)
    assert section.cka.grid(["bp", "fa", "dfa"])[:2] == (["bp", "fa"], LAYERS)
    ax = heatmap.axes[0]
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["bp", "fa"]
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
    assert [t.get_text() for t in ax.texts] == ["1.00", "1.00", "0.71", "0.42"]


def test_cka_grid_orders_rules_and_marks_missing_layers():
    from alignlab.report.cka import parse_cka

    table = parse_cka({"values": {"m": {"kp": {"a": 0.5, "b": "x"}, "fa": {"a": 0.2, "c": 0.3}},
                                  "empty": {"fa": {}}}})
    assert list(table) == ["m"]
    rules, layers, matrix = table["m"].grid(["bp", "fa"])
    assert (rules, layers) == (["fa", "kp"], ["a", "c"])
    assert matrix[0] == [0.2, 0.3] and matrix[1][0] == 0.5 and math.isnan(matrix[1][1])
    with pytest.raises(ValueError, match="values"):
        parse_cka({"probe": "x"})


def test_cka_argument_overrides_the_file_and_bad_files_are_ignored(diag_lab, tmp_path):
    bp = diag_lab["dirs"][:1]  # bp alone: its angles are all 0, so no angle figure either
    html_path, _ = write_report(bp, diag_lab["root"], cka={})  # overrides the file: no heatmap
    assert figure_titles(html_path.read_text()) == DIAG_TITLES[:3] + DIAG_TITLES[5:6]
    dirs = diag_lab["dirs"][2:3]  # fa seed 0
    (tmp_path / "cka.json").write_text('{"values": {"lenet": ')
    with pytest.warns(UserWarning, match=r"cka\.json: ignoring"):
        html_path, _ = write_report(dirs, tmp_path)
    assert figure_titles(html_path.read_text()) == DIAG_TITLES[:6]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the unreadable cka.json is not even read
        html_path, _ = write_report(dirs, tmp_path, cka=CKA)
    assert figure_titles(html_path.read_text()) == DIAG_TITLES
    with pytest.raises(ValueError, match="values"):
        write_report(dirs, tmp_path / "bad", cka={"lenet": {"fa": {"0": 1.0}}})


# --- path alignment: ∠(B, W) per layer (walign/L), for pfa ∠(B·R, W) ----------------------------

# Per (rule, seed): per measurement, ∠(B, W) of each layer as alignlab.diagnostics.probe writes
# it (bp: B = W, so 0; dfa, a direct rule, has none).
WALIGNS = {("pfa", 0): [[90.0, 88.0], [40.0, 30.0], [20.0, 10.0]],
           ("pfa", 1): [[91.0, 89.0], [44.0, 36.0], [24.0, 14.0]],
           ("kp", 0): [[89.0, 90.0], [10.0, 8.0], [4.0, 2.0]],
           ("bp", 0): [[0.0, 0.0]] * 3}


def walign_lines(rule: str, seed: int) -> list[dict]:
    lines = []
    for index, step in enumerate(STEPS):
        line = {"step": step, "epoch": step // 469}
        line.update({f"angle/{layer}": 0.0 if rule == "bp" else 70.0 - 10 * index + i
                     for i, layer in enumerate(LAYERS)})
        if (rule, seed) in WALIGNS:
            line.update({f"walign/{layer}": a for layer, a in zip(LAYERS, WALIGNS[rule, seed][index])})
            line.update({f"wnorm/{layer}": 1.0 for layer in LAYERS})
        line.update({f"erank/delta/{layer}": 5.0 for layer in LAYERS})
        lines.append(line)
    return lines


@pytest.fixture(scope="module")
def path_lab(tmp_path_factory) -> dict:
    """bp, pfa x 2 seeds, kp and dfa, all with diagnostics; all but dfa measured ∠(B, W)."""
    root = tmp_path_factory.mktemp("path")
    dirs = []
    for rule, seed in (("bp", 0), ("pfa", 0), ("pfa", 1), ("kp", 0), ("dfa", 0)):
        run_dir = make_run(root, f"lenet-{rule}-s{seed}", rule, seed, [0.5, 0.6, 0.7])
        text = "".join(json.dumps(line) + "\n" for line in walign_lines(rule, seed))
        (run_dir / "diagnostics.jsonl").write_text(text)
        dirs.append(run_dir)
    html_path, md_path = write_report(dirs, root / "report")
    return {"dirs": dirs, "html_text": html_path.read_text(), "md_text": md_path.read_text()}


def test_path_alignment_column_sits_next_to_the_update_angle(path_lab):
    header = next(line for line in path_lab["md_text"].splitlines() if line.startswith("| dataset"))
    assert header.endswith(f"| final angle to BP (°, mean over layers) | {WALIGN_HEADER} "
                           "| final erank δ (mean over layers) |")
    rows = {row[2]: row for row in table_rows(path_lab["md_text"])}
    assert list(rows) == ["bp", "pfa", "kp", "dfa"]
    # pfa: last measurement (20 + 10) / 2 = 15 and (24 + 14) / 2 = 19, mean 17; angle (50 + 51) / 2
    assert rows["pfa"][7:] == ["50.50", "17.00", "5.00"]
    assert rows["kp"][8] == "3.00"  # (4 + 2) / 2
    assert rows["bp"][7:9] == ["0.00", "0.00"]
    assert rows["dfa"][7:] == ["50.50", "n/a", "5.00"]  # a direct rule: no ∠(B, W)
    for seeds, row in (((0, 1), rows["pfa"]), ((0,), rows["kp"])):
        rule = row[2]
        finals = [sum(WALIGNS[rule, s][-1]) / len(LAYERS) for s in seeds]
        assert float(row[8]) == pytest.approx(sum(finals) / len(finals))
    assert '<td class="num">50.50</td><td class="num">17.00</td><td class="num">5.00</td>' in path_lab["html_text"]


def test_report_says_what_the_path_alignment_column_is(path_lab):
    note = next(line for line in path_lab["md_text"].splitlines() if line.startswith("∠(B,W) is"))
    assert "for pfa the path alignment ∠(B·R, W)" in note and "for kp" in note and "B–W angle" in note
    assert "for pfa the path alignment ∠(B·R, W)" in path_lab["html_text"]


def test_path_alignment_panels_one_per_rule_with_a_line_per_layer(path_lab):
    from alignlab.report.groups import sections
    from alignlab.report.plots import rule_colors, walign_curves

    assert figure_titles(path_lab["html_text"]) == DIAG_TITLES[:6]  # no cka.json here
    runs = [load_run(d) for d in path_lab["dirs"]]
    (section,) = sections(group_runs(runs))
    figure = walign_curves(section, rule_colors(["bp", "pfa", "kp", "dfa"]))
    panels = visible_axes(figure)
    assert [ax.get_title() for ax in panels] == ["pfa, n=2", "kp, n=1"]  # bp (B = W) and dfa left out
    *layers, ninety = panels[0].get_lines()
    assert list(layers[0].get_xdata()) == STEPS
    assert list(layers[0].get_ydata()) == pytest.approx([90.5, 42.0, 22.0])  # mean over the two seeds
    assert list(layers[1].get_ydata()) == pytest.approx([88.5, 33.0, 12.0])
    assert list(ninety.get_ydata()) == [90, 90] and ninety.get_linestyle() == "--"
    assert [t.get_text() for t in figure.legends[0].get_texts()] == LAYERS
    assert "∠(B·R, W)" in figure.get_suptitle()


def test_no_walign_measured_means_no_column_note_or_panel(path_lab, tmp_path):
    html_path, md_path = write_report(path_lab["dirs"][4:], tmp_path)  # dfa alone
    markdown = md_path.read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| dataset"))
    assert header.endswith("| final angle to BP (°, mean over layers) | final erank δ (mean over layers) |")
    assert "∠(B,W)" not in markdown and "∠(B,W)" not in html_path.read_text()
    assert figure_titles(html_path.read_text()) == DIAG_TITLES[:4] + DIAG_TITLES[5:6]
