"""alignlab.report: run directories in, a Markdown table and a self-contained HTML page out."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import sys
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
