"""benchmarks/speed.py: the --quick logic in-process on a tiny MLP (a few seconds), its MAC
counts against hand counts, its compiled rows (aot_eager, a few seconds);
benchmarks/gpu_check.sh --dry-run end to end (about 50 s)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("alignlab_bench_speed", SPEED)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def tiny(speed, **kw):
    args = dict(nets=["mlp"], rules=["fa", "dfa"], rounds=2, warmup=1, batch=8, memory=False, quick=True)
    args.update(kw)
    return speed.Settings(**args)


def test_quick_run_structure_and_ratios(speed, tmp_path):
    report = speed.run_benchmark(tiny(speed), log=lambda *a: None)
    assert report["quick"] and report["torch"] and report["machine"]["cpu"]
    assert report["machine"]["torch_threads"] >= 1
    entry = report["nets"]["mlp"]
    assert entry["rounds"] == 2 and entry["reference"] == "torch"
    results = entry["results"]
    assert list(results) == ["torch", "fa", "dfa"]
    for label, r in results.items():
        assert len(r["ratios"]) == 2 and len(r["ms_per_round"]) == 2
        for value in [r["median_ms"], r["median_ratio"], *r["ratios"], *r["ratio_iqr"]]:
            assert math.isfinite(value) and value > 0, (label, value)
        assert math.isfinite(r["final_loss"])
    assert results["torch"]["ratios"] == [1.0, 1.0]
    assert results["fa"]["speed_target"] == 1.03 and isinstance(results["fa"]["speed_holds"], bool)
    assert results["dfa"]["speed_target"] == 0.85

    js, md = speed.write_outputs(report, tmp_path)
    assert js.name == "speed-quick.json"
    assert json.loads(js.read_text())["nets"]["mlp"]["results"]["fa"]["ratios"] == results["fa"]["ratios"]
    text = md.read_text()
    assert "| rule | ms/step | time ratio to BP" in text and "| fa |" in text and "| dfa |" in text
    assert "MAC ratio to BP = limit" in text


def test_speed_targets_are_the_issues_table_per_net(speed):
    assert speed.speed_target("mlp", "ldfa", 0.8) == 0.85 and speed.speed_target("lenet", "ldfa", 1.07) == 1.00
    assert speed.speed_target("resnet20", "dfa", 0.8) == 0.85 and speed.speed_target("lenet", "dfa", 0.74) == 0.97
    assert speed.speed_target("mlp", "brsf", 1.0) == 1.05 and speed.speed_target("lenet", "kp", 1.0) == 1.10
    assert speed.speed_target("mlp", "pfa", 11.2) == pytest.approx(1.1 * 11.2)  # within 10 % of its MAC ratio
    assert speed.speed_target("mlp", "pfa", None) is None  # MACs not counted: nothing to judge against
    assert speed.speed_target("vit", "fa", 1.0) is None and speed.speed_target("mlp", "wm", 1.4) is None


def test_rejudge_applies_todays_targets_to_a_saved_run(speed, tmp_path):
    report = speed.run_benchmark(tiny(speed, rules=["fa", "brsf"]), log=lambda *a: None)
    r = report["nets"]["mlp"]["results"]
    measured = {k: v["median_ratio"] for k, v in r.items()}
    r["brsf"]["speed_target"], r["brsf"]["speed_holds"] = 9.9, None  # as an old run would hold it
    js, _ = speed.write_outputs(report, tmp_path, "speed-old")
    speed.main(["--rejudge", str(js)])
    again = json.loads(js.read_text())["nets"]["mlp"]["results"]
    assert again["brsf"]["speed_target"] == 1.05 and again["brsf"]["speed_holds"] == (measured["brsf"] <= 1.05)
    assert {k: v["median_ratio"] for k, v in again.items()} == measured
    assert "≤ 1.05×" in (tmp_path / "speed-old.md").read_text() and "`--rejudge`" in (tmp_path / "speed-old.md").read_text()


def test_quick_compile_rows_have_both_ratios(speed, tmp_path):
    """--quick --compile on the tiny MLP with fa and dfa, backend aot_eager (inductor would spend
    most of a minute compiling): compiled plain BP and one compiled row per rule, timed in the
    same rounds as the eager rows, each with its ratio to eager BP and to compiled BP."""
    settings = tiny(speed, compile_nets=["mlp"], compile_backend="aot_eager")
    report = speed.run_benchmark(settings, log=lambda *a: None)
    comp = report["compile"]
    assert comp["backend"] == comp["asked_backend"] == "aot_eager" and comp["nets"] == ["mlp"]
    assert comp["rules"] == ["fa", "dfa"]
    entry = report["nets"]["mlp"]
    assert entry["compiled_reference"] == "torch+compile"
    results = entry["results"]
    assert list(results) == ["torch", "fa", "dfa", "torch+compile", "fa+compile", "dfa+compile"]
    eager_bp, compiled_bp = results["torch"], results["torch+compile"]
    assert compiled_bp["kind"] == "compiled" and compiled_bp["twin"] == "torch"
    assert compiled_bp["ratios_compiled"] == [1.0, 1.0] and compiled_bp["speed_target"] is None
    for label in ("torch+compile", "fa+compile", "dfa+compile"):
        r = results[label]
        assert "error" not in r, (label, r)
        twin = label.removesuffix("+compile")
        assert r["twin"] == twin and r["backend"] == "aot_eager"
        for value in [r["median_ms"], r["median_ratio"], r["median_ratio_compiled"], *r["ratios"],
                      *r["ratios_compiled"], *r["ratio_iqr_compiled"]]:
            assert math.isfinite(value) and value > 0, (label, value)
        # both ratios are per round, against the eager and the compiled reference of that round
        assert r["ratios"] == [a / b for a, b in zip(r["ms_per_round"], eager_bp["ms_per_round"])]
        assert r["ratios_compiled"] == [a / b for a, b in zip(r["ms_per_round"], compiled_bp["ms_per_round"])]
        assert isinstance(r["fullgraph"], bool) and r["graphs"] >= 1 and r["graph_breaks"] >= 0
        assert r["fullgraph"] == ("fullgraph_error" not in r)
        if r["fullgraph"]:
            assert r["graph_breaks"] == 0
        assert r["compile_s"] > 0 and r["first_step_s"] > 0 and r["warmup_steps"] >= 3
        assert math.isfinite(r["final_loss"])
        # MACs: the eager twin's count; memory: not measured
        assert r["macs"] == results[twin]["macs"] > 0 and r["macs_counted_on"] == twin
        assert r["mac_ratio"] == results[twin].get("mac_ratio", 1.0)
        assert "memory" not in r
    assert results["fa+compile"]["speed_target"] == 1.03 and not results["fa+compile"]["speed_target_strict"]
    dfa = results["dfa+compile"]
    assert dfa["speed_target"] == 1.0 and dfa["speed_target_strict"]
    assert dfa["speed_holds"] == (dfa["median_ratio_compiled"] < 1.0)
    assert math.isclose(dfa["time_over_limit_compiled"], dfa["median_ratio_compiled"] - dfa["mac_ratio"])

    _, md = speed.write_outputs(report, tmp_path)
    text = md.read_text()
    assert "Compiled rows (mlp; backend aot_eager)" in text
    assert "Compiled (torch.compile, backend aot_eager; timed in the same rounds)" in text
    assert "| model | ms/step | time ratio to BP (IQR) | time ratio to compiled BP (IQR) |" in text
    assert "| BP (plain PyTorch) + compile |" in text and "| fa+compile |" in text and "| dfa+compile |" in text
    rows = [line for line in text.splitlines() if line.startswith(("| fa+compile", "| dfa+compile"))]
    assert len(rows) == 2 and all(line.endswith("| not measured |") for line in rows)
    for line, r in zip(rows, (results["fa+compile"], dfa)):
        assert ("| yes |" if r["fullgraph"] else f"graph breaks: {r['graph_breaks']}") in line
        assert f"{r['median_ratio']:.3f}" in line and f"{r['median_ratio_compiled']:.3f}" in line
    if not dfa["speed_holds"]:
        assert "Target missed: dfa+compile: time ratio to compiled BP" in text


def test_a_row_that_breaks_the_graph_compiles_without_fullgraph(speed, monkeypatch):
    """fullgraph=True first; where dynamo refuses it, the row compiles without and counts its
    graph breaks, with dynamo's reason and the line of code it names."""
    import torch

    class Breaks(torch.nn.Module):
        def forward(self, x):
            x = x * 1
            torch._dynamo.graph_break()
            return x * 1

    build = speed.make_candidate

    def with_a_break(settings, label, *args, **kwargs):
        c = build(settings, label, *args, **kwargs)
        if label == "fa":
            c.model = torch.nn.Sequential(c.model, Breaks())
        return c

    monkeypatch.setattr(speed, "make_candidate", with_a_break)
    settings = tiny(speed, rules=["fa"], compile_nets=["mlp"], compile_backend="aot_eager", macs=False)
    report = speed.run_benchmark(settings, log=lambda *a: None)
    results = report["nets"]["mlp"]["results"]
    assert results["torch+compile"]["fullgraph"] is True and results["torch+compile"]["graph_breaks"] == 0
    fa = results["fa+compile"]
    assert fa["fullgraph"] is False and fa["graphs"] >= 2 and fa["graph_breaks"] == fa["graphs"] - 1, fa
    assert fa["fullgraph_error"].startswith("Unsupported: ") and "test_bench.py:" in fa["fullgraph_error"]
    assert fa["fullgraph_attempt_s"] > 0 and math.isfinite(fa["median_ratio_compiled"])
    text = speed.to_markdown(report)
    n = fa["graph_breaks"]
    assert f"| **no**: graph breaks: {n} |" in text
    assert f"Not fullgraph: fa+compile: graph breaks: {n} ({n + 1} graphs)" in text
    # the count is torch._dynamo.explain's (which resets dynamo, so it cannot run mid-benchmark)
    base, x, _ = speed.net_and_data(settings, "mlp")
    twin = with_a_break(settings, "fa", base, x, None)
    try:
        explained = torch._dynamo.explain(speed._own_forward(twin.model, "explained"))(x)
    finally:
        torch._dynamo.reset()
    assert (explained.graph_count, explained.graph_break_count) == (fa["graphs"], n)


def test_compiled_rows_do_not_share_dynamo_state(speed):
    """Each compiled row compiles a forward with a code object of its own. Compiling the modules
    themselves, one whose autograd Function fails under tracing (as dfa's did) makes dynamo mark
    Sequential.forward "skip", and a later fullgraph=True compile of a plain Sequential then
    raises "found no compiled frames" (torch 2.13); with one code object per row it compiles."""
    import torch

    captured = {"error": None}

    class Fails(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            if captured["error"] is None:
                raise RuntimeError("never captured")
            return g * captured["error"]

    class Breaks(torch.nn.Module):
        def forward(self, x):
            return Fails.apply(x)

    torch.manual_seed(0)
    broken = torch.nn.Sequential(torch.nn.Linear(4, 4), Breaks(), torch.nn.Linear(4, 4))
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    x = torch.randn(2, 4)
    try:
        torch.compile(speed._own_forward(broken, "broken"), backend="aot_eager")(x)
        full = torch.compile(speed._own_forward(plain, "plain"), backend="aot_eager", fullgraph=True)
        assert torch.allclose(full(x), plain(x))
    finally:
        torch._dynamo.reset()


def test_compile_options_and_defaults(speed, capsys):
    """A full run compiles mlp and lenet (the nets timed among them); --quick none; --compile
    alone every net timed; bad names are one-line errors."""
    s = lambda *argv: speed.settings_from(speed.parse_args(list(argv)))
    assert s().compile_nets == ["mlp", "lenet"] and s().compile_backend == "inductor"
    assert s().compile_rules is None
    assert s("--quick").compile_nets == []
    assert s("--quick", "--compile").compile_nets == ["mlp", "lenet", "resnet20"]
    assert s("--compile", "lenet").compile_nets == ["lenet"]
    assert s("--nets", "resnet20,vit").compile_nets == []
    assert s("--no-compile").compile_nets == []
    assert s("--compile-rules", "dfa,fa").compile_rules == ["dfa", "fa"]
    assert s("--compile-backend", "aot_eager").compile_backend == "aot_eager"
    settings = speed.Settings(nets=["mlp"], rules=["fa", "dfa", "usf"], compile_nets=["mlp"], compile_rules=["usf", "fa"])
    assert speed.candidate_labels(settings, "mlp") == ["torch", "fa", "dfa", "usf", "torch+compile", "fa+compile",
                                                       "usf+compile"]
    assert speed.candidate_labels(settings, "lenet") == ["torch", "fa", "dfa", "usf"]
    for argv in (["--compile", "vgg"], ["--nets", "mlp", "--compile", "lenet"], ["--compile-rules", "nope"]):
        with pytest.raises(SystemExit) as exc:
            s(*argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("speed.py: error: "), argv


def test_compile_backend_falls_back_when_it_does_not_work(speed, monkeypatch):
    """Inductor on a CPU needs a C++ compiler: when it cannot compile here, aot_eager, and why."""
    monkeypatch.setattr(speed, "probe_compile_backend",
                        lambda backend, device: "CppCompileError: no C++ compiler" if backend == "inductor" else None)
    settings, info = speed.resolve_compile_backend(tiny(speed, compile_nets=["mlp"]), log=lambda *a: None)
    assert settings.compile_backend == info["backend"] == "aot_eager" and info["asked_backend"] == "inductor"
    assert info["fallback_reason"] == "CppCompileError: no C++ compiler" and "error" not in info
    monkeypatch.setattr(speed, "probe_compile_backend", lambda backend, device: "RuntimeError: nothing compiles")
    _, info = speed.resolve_compile_backend(tiny(speed, compile_nets=["mlp"]), log=lambda *a: None)
    assert "error" in info


def test_macs_of_one_linear_layer_by_hand(speed):
    """Linear 4→3 at batch 2: forward 24 MACs, input gradient 24, weight gradient 24, whether
    PyTorch's own backward runs or fa's custom autograd Function's."""
    import torch

    import alignlab

    for rule in (None, "fa"):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 3)
        if rule:
            alignlab.convert(layer, rule=rule)
        x = torch.randn(2, 4, requires_grad=True)
        counted = speed.count_macs(lambda: layer(x).sum().backward())
        assert counted["macs"] == 24 + 24 + 24, (rule, counted)
        assert counted["macs_by_op"] == {"addmm": 24, "mm": 48}, (rule, counted)


def test_macs_per_step_on_the_mlp_by_hand(speed):
    """The counted MACs of a training step of the --quick MLP (64-32-32-10, batch 8): bp's (and
    plain PyTorch's) = forward + input gradients of layers 2..L + weight gradients; dfa skips
    the backward matmuls through W, so it counts fewer."""
    import torch

    settings = tiny(speed, rules=["bp", "dfa"])
    report = speed.run_benchmark(settings, log=lambda *a: None)
    results = report["nets"]["mlp"]["results"]
    base, _, _ = speed.net_and_data(settings, "mlp")
    shapes = [(m.in_features, m.out_features) for m in base.modules() if isinstance(m, torch.nn.Linear)]
    assert shapes == [(64, 32), (32, 32), (32, 10)]
    n = settings.batch
    forward = sum(n * i * o for i, o in shapes)
    input_grads = sum(n * i * o for i, o in shapes[1:])  # layer 1's input (the data) needs none
    weight_grads = sum(n * i * o for i, o in shapes)
    by_hand = forward + input_grads + weight_grads
    assert by_hand == 8 * 8128
    assert results["torch"]["macs"] == by_hand
    assert results["bp"]["macs"] == by_hand and results["bp"]["mac_ratio"] == 1.0
    dfa = results["dfa"]
    assert forward + weight_grads <= dfa["macs"] < by_hand
    assert dfa["mac_ratio"] == dfa["macs"] / by_hand < 1
    assert math.isclose(dfa["time_over_limit"], dfa["median_ratio"] - dfa["mac_ratio"])
    assert "FlopCounterMode" in report["macs_measure"]


def test_attention_macs_are_counted_on_the_cpu(speed):
    """torch's flop registry knows only CUDA's fused attention; the benchmark adds CPU's."""
    import torch
    import torch.nn.functional as F

    q, k, v = (torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3))
    counted = speed.count_macs(lambda: F.scaled_dot_product_attention(q, k, v))
    assert counted["macs"] == 2 * 5 * 5 * (4 + 4)  # QKᵀ and (scores)·V, each head


def test_memory_figures_and_target(speed):
    settings = tiny(speed)
    mem = {label: speed.memory_worker(settings, "mlp", label) for label in ("torch", "fa")}
    assert mem["torch"]["feedback_bytes"] == 0
    # the tiny MLP's three Linear layers: B shaped like each W, float32
    sizes = [(32, 64), (32, 32), (10, 32)]
    assert mem["fa"]["feedback_bytes"] == 4 * sum(a * b for a, b in sizes)
    assert all(m["peak_bytes"] > 0 for m in mem.values())
    results = {"torch": {"kind": "reference"}, "fa": {"kind": "alignlab"}}
    speed.memory_verdicts(mem, results)
    if mem["torch"]["start_bytes"] is not None:  # Linux: peaks are compared over each process's start
        training = {k: m["peak_bytes"] - m["start_bytes"] for k, m in mem.items()}
        assert results["fa"]["memory"]["delta_vs_bp_bytes"] == training["fa"] - training["torch"]
    assert isinstance(results["fa"]["memory"]["holds"], bool)


def test_feedback_bytes_counts_only_feedback(speed):
    import torch

    import alignlab

    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    assert speed.feedback_bytes(net) == 0
    alignlab.convert(net, rule="frsf")
    assert speed.feedback_bytes(net) == 4 * (5 * 3 + 3 * 2)


def test_missing_biotorch_is_one_line(speed, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "biotorch", None)  # import biotorch now raises ImportError
    monkeypatch.setitem(sys.modules, "biotorch.module.biomodule", None)
    with pytest.raises(SystemExit) as exc:
        speed.require_biotorch()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install --no-deps biotorch==0.0.16" in err


def test_bad_net_or_rule_is_one_line(speed, capsys):
    for argv in (["--nets", "vgg"], ["--rules", "fa,nope"]):
        with pytest.raises(SystemExit) as exc:
            speed.settings_from(speed.parse_args(argv))
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("speed.py: error: unknown")


def test_alignlab_bench_runs_the_benchmark_script():
    """`alignlab bench ...` hands every option to benchmarks/speed.py and returns its status."""
    import subprocess

    run = lambda *a: subprocess.run([sys.executable, "-m", "alignlab.cli", "bench", *a], capture_output=True, text=True)
    shown = run("--help")
    assert shown.returncode == 0 and "--biotorch" in shown.stdout and "--rounds" in shown.stdout
    bad = run("--nets", "vgg")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "vgg" in bad.stderr


def test_alignlab_bench_without_the_source_tree_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    from alignlab import cli

    monkeypatch.setattr(cli, "speed_script", lambda: tmp_path / "benchmarks" / "speed.py")
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alignlab: error: ") and "speed.py not found" in err[0]


GPU_CHECK = SPEED.parent / "gpu_check.sh"


def _gpu_check(*args, timeout=170):
    import subprocess

    return subprocess.run(["bash", str(GPU_CHECK), "--python", sys.executable, *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_dry_run_writes_a_passing_summary(tmp_path):
    """benchmarks/gpu_check.sh --dry-run: the GPU check's every step, on the CPU at tiny sizes
    (about 50 s here), into one folder with a summary of what passed."""
    import alignlab

    out = tmp_path / "gpu"
    run = _gpu_check("--dry-run", "--out", str(out))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# gpu_check.sh: PASS") and "Overall: PASS (5 of 5 steps passed)" in summary
    for step in ("env", "rules", "precision", "contract", "speed"):
        assert f"| {step} | PASS |" in summary, step
        assert (out / f"{step}.log").is_file(), step
    rules = json.loads((out / "rules.json").read_text())
    assert rules["device"] == "cpu" and rules["backend"] == "aot_eager"
    assert {(r["net"], r["check"]) for r in rules["results"]} == {
        (net, check) for net in ("cnn", "transformer") for check in ("bf16", "compile")}
    assert all(r["passed"] for r in rules["results"])
    report = json.loads((out / "speed" / "speed-quick.json").read_text())
    assert list(report["nets"]) == ["resnet20", "vit"]
    for net, entry in report["nets"].items():
        assert entry["rounds"] == 1
        results = entry["results"]
        assert set(results) == {"torch", *alignlab.rules.available()}, net
        for label, r in results.items():
            assert "error" not in r and r["macs"] > 0, (net, label, r)
        # dfa skips the input gradients through W (the attention's own backward stays)
        assert results["dfa"]["macs"] < results["bp"]["macs"] == results["torch"]["macs"], net
    assert "## Speed" in summary and "### vit" in summary


def test_gpu_check_bad_argument_and_no_cuda_are_one_line_errors(tmp_path):
    bad = _gpu_check("--frobnicate", timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "gpu_check.sh: error: unknown argument '--frobnicate' (see --help)"]
    import torch

    if not torch.cuda.is_available():
        full = _gpu_check("--out", str(tmp_path / "full"), timeout=120)
        assert full.returncode == 2, full.stdout + full.stderr
        err = full.stderr.strip().splitlines()
        assert len(err) == 1 and "no CUDA device" in err[0] and "--dry-run" in err[0]
        assert not (tmp_path / "full").exists()


def test_phases_quick_splits_every_step_and_states_the_bound(tmp_path):
    spec = importlib.util.spec_from_file_location("alignlab_bench_phases", SPEED.parent / "phases.py")
    phases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(phases)
    phases.main(["--quick", "--rules", "ldfa,ldfa:learn_p=false,fa", "--out-dir", str(tmp_path)])
    r = json.loads((tmp_path / "phases-quick.json").read_text())
    for width, e in r["widths"].items():
        assert set(e["phases_ms"]) == {"torch", "ldfa", "ldfa:learn_p=false", "fa"}
        for label, p in e["phases_ms"].items():
            assert set(p) == {"forward", "backward", "optimizer"} and all(v > 0 for v in p.values())
            assert e["total_ms"][label] == pytest.approx(sum(p.values()))
        assert 0 < e["shared_share"] < 1
    assert 0 < r["widths"]["32"]["bound_without_that_mm"] < 1 and "bound_without_that_mm" not in r["widths"]["8"]
    assert "at best" in (tmp_path / "phases-quick.md").read_text()
    assert phases.rule_spec("ldfa:learn_p=false:rank=5:normalize=unit") == (
        "ldfa", {"learn_p": False, "rank": 5, "normalize": "unit"})
    with pytest.raises(SystemExit, match="'rank' in 'ldfa:rank' is not key=value"):
        phases.rule_spec("ldfa:rank")


def test_oja_routes_quick_times_both_routes_and_names_the_pick(tmp_path):
    spec = importlib.util.spec_from_file_location("alignlab_bench_oja_routes", SPEED.parent / "oja_routes.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--out-dir", str(tmp_path)])
    r = json.loads((tmp_path / "oja_routes-quick.json").read_text())
    assert [c["picked"] for c in r["cases"]] == ["moments", "rows"]  # 6 units at r = 3; 300 units at r = 2
    for c in r["cases"]:
        assert set(c["ms"]) == {"moments", "rows"} and all(v > 0 for v in c["ms"].values())
        assert c["faster"] == min(c["ms"], key=c["ms"].get)
    from alignlab.rules import ldfa
    assert ldfa.OJA_ROUTE is None  # the forced route is undone
    assert "Picked the slower route in" in (tmp_path / "oja_routes-quick.md").read_text()


def test_gpu_rules_relative_error_has_a_floor_for_gradients_that_vanish():
    """gpu_rules.rel_err: a gradient that is zero in exact arithmetic (ldfa's P at r = N_out:
    Oja's step PC(I − PᵀP) vanishes for square orthogonal P) is judged against 1e-4 of the net's
    largest gradient, not against its own rounding; a real error in a small gradient still fails."""
    import torch

    from alignlab.rules.ldfa import oja_step

    spec = importlib.util.spec_from_file_location("alignlab_bench_gpu_rules", SPEED.parent / "gpu_rules.py")
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    g = torch.Generator().manual_seed(0)
    P = torch.linalg.qr(torch.randn(3, 3, generator=g))[0].mT.contiguous()
    step = oja_step(P, torch.randn(32, 3, generator=g), "batch")
    assert 0 < step.norm() < 1e-5  # rounding alone
    weight = torch.randn(4, 4, generator=g)
    want = {"w": weight, "P": step}
    noise = {"w": weight, "P": step + 1e-7 * torch.randn(3, 3, generator=g)}
    assert noise["P"].sub(step).norm() > step.norm()  # off by more than itself ...
    err, _ = rules.rel_err(noise, want)
    assert err < 2e-3  # ... and within the floor
    small = {"w": weight, "P": torch.full((3, 3), 1e-2)}
    err, where = rules.rel_err({"w": weight, "P": 2 * small["P"]}, small)
    assert where == "P" and err == pytest.approx(1.0)  # a 100 % error of a small gradient fails
    err, where = rules.rel_err({"w": weight.double(), "P": step}, want)
    assert err == math.inf and where.startswith("w: torch.float64")


def test_gpu_syncs_quick_runs_on_the_cpu_and_names_where(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("alignlab_bench_gpu_syncs", SPEED.parent / "gpu_syncs.py")
    syncs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(syncs)
    syncs.main(["--device", "cpu", "--quick", "--nets", "mlp", "--rules", "fa,brsf", "--batch", "4",
                "--steps", "1", "--rounds", "1", "--profile", "brsf", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "syncs.json").read_text())
    assert set(r["nets"]["mlp"]) == {"torch", "fa", "brsf"}
    assert all(row["syncs"] == {} and row["ratio"] > 0 for row in r["nets"]["mlp"].values())  # a CPU never waits
    text = (tmp_path / "syncs.md").read_text()
    assert "| brsf |" in text and "### mlp, brsf: torch.profiler" in text
    import traceback
    stack = traceback.StackSummary.from_list([("/x/site-packages/torch/nn/modules/module.py", 1, "f", ""),
                                              ("/x/src/alignlab/rules/brsf.py", 238, "redraw_if_moved", ""),
                                              ("/usr/lib/python3.12/warnings.py", 110, "_showwarnmsg", "")])
    assert syncs.where(stack) == "rules/brsf.py:238 (redraw_if_moved)"
    assert syncs.where(stack[:1]) == "module.py:1 (f)" and syncs.where(stack[2:]) == "warnings.py:110 (_showwarnmsg)"
    for bad, message in ((["--nets", "vgg"], "--nets: vgg not valid; choose from mlp, lenet, resnet20, vit"),
                         (["--rules", "fa,xyz"], "--rules: xyz not valid; choose from "),
                         (["--rules", "fa", "--profile", "dfa"], "--profile: dfa not valid; choose from fa")):
        with pytest.raises(SystemExit) as exit_info:
            syncs.main(["--device", "cpu", *bad])
        assert exit_info.value.code == 2 and f"gpu_syncs.py: error: {message}" in capsys.readouterr().err
