"""The training loop: run files, determinism, resume after a kill, divergence, compare."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import alignlab
from alignlab.cli import main
from alignlab.data import write_idx
from alignlab.train import TrainingDiverged, load_config, train
from alignlab.train import loop
from alignlab.train.checkpoint import load_checkpoint
from helpers import fake_fashion, read_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return fake_fashion(tmp_path_factory.mktemp("fashion"), n_train=512)


def overrides(data_dir, out_dir, *extra):
    return [f"data.data_dir={data_dir}", f"out_dir={out_dir}", "progress=false", "epochs=3", "batch_size=64",
            "model.options.width=32", "model.options.depth=1", "rule=fa", *extra]


def test_a_run_writes_its_files_and_learns(small_data, tmp_path):
    run_dir = train(load_config(None, overrides(small_data, tmp_path, "name=r", "rule=frsf")))
    assert run_dir == tmp_path / "r"
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "meta.json", "metrics.jsonl", "checkpoint.pt", "summary.json", "tb"} <= names
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    metrics = read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and metrics[-1]["step"] == 3 * 8
    assert metrics[-1]["test_acc"] > 0.5  # chance: 0.1
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["torch_version"] == torch.__version__ and "alignlab_version" in meta
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["final"]["epoch"] == 3
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["epoch"] == 3 and any(".feedback.R" in k for k in state["model"])  # feedback tensors saved


def test_same_seed_same_metrics_bit_for_bit(small_data, tmp_path):
    a = train(load_config(None, overrides(small_data, tmp_path, "name=a", "rule=brsf")))
    b = train(load_config(None, overrides(small_data, tmp_path, "name=b", "rule=brsf")))
    c = train(load_config(None, overrides(small_data, tmp_path, "name=c", "rule=brsf", "seed=1")))
    assert read_metrics(a) == read_metrics(b)
    assert read_metrics(a) != read_metrics(c)


def test_existing_run_dir_is_never_overwritten(small_data, tmp_path):
    cfg = load_config(None, overrides(small_data, tmp_path, "name=r", "epochs=1"))
    run_dir = train(cfg)
    before = (run_dir / "metrics.jsonl").read_bytes()
    with pytest.raises(ValueError, match="already exists; resume it with --resume"):
        train(cfg)
    assert (run_dir / "metrics.jsonl").read_bytes() == before


def test_run_failing_on_bad_data_leaves_nothing_in_the_way(tmp_path, capsys):
    data_dir = fake_fashion(tmp_path / "data", n_train=128)
    labels = data_dir / "train-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    labels.write_bytes(good[:-6])  # corrupt
    args = ["train", *overrides(data_dir, tmp_path / "runs", "name=r", "epochs=1")]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("alignlab: error: ") and "train-labels-idx1-ubyte.gz" in err[0]
    assert not (tmp_path / "runs" / "r").exists()
    labels.write_bytes(good)  # fixed: the same command now runs
    assert main(args) == 0
    assert (tmp_path / "runs" / "r" / "summary.json").is_file()


def test_error_before_the_first_checkpoint_removes_only_what_the_run_made(small_data, tmp_path, monkeypatch):
    real_epoch = loop.train_epoch

    def fail_in(bad_epoch):
        def train_epoch(cfg, s, epoch, *args):
            if epoch == bad_epoch:
                raise RuntimeError("boom")
            return real_epoch(cfg, s, epoch, *args)
        return train_epoch

    cfg = load_config(None, overrides(small_data, tmp_path, "name=r", "epochs=2"))
    (tmp_path / "r").mkdir()  # an empty folder made beforehand stays, empty
    monkeypatch.setattr(loop, "train_epoch", fail_in(1))
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    assert list((tmp_path / "r").iterdir()) == []
    monkeypatch.setattr(loop, "train_epoch", fail_in(2))  # after epoch 1's checkpoint: kept for --resume
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    with pytest.raises(ValueError, match="already exists"):
        train(cfg)
    monkeypatch.setattr(loop, "train_epoch", real_epoch)
    train(resume=tmp_path / "r")
    assert [m["epoch"] for m in read_metrics(tmp_path / "r")] == [1, 2]


@pytest.mark.parametrize("rule", alignlab.rules.available())
def test_resume_after_interruption_gives_identical_metrics(small_data, tmp_path, monkeypatch, rule):
    extra = (f"rule={rule}", "optim.schedule=cosine", "data.augment=false")
    full = train(load_config(None, overrides(small_data, tmp_path, "name=full", *extra)))

    real_evaluate = loop.evaluate

    def crash_in_epoch_2(cfg, s):
        if read_metrics(tmp_path / "cut"):
            raise KeyboardInterrupt  # stops in epoch 2, after epoch 1's checkpoint
        return real_evaluate(cfg, s)

    monkeypatch.setattr(loop, "evaluate", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, overrides(small_data, tmp_path, "name=cut", *extra)))
    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    assert len(read_metrics(tmp_path / "cut")) == 1 and not (tmp_path / "cut" / "summary.json").exists()
    train(resume=tmp_path / "cut")
    assert read_metrics(tmp_path / "cut") == read_metrics(full)


def test_resume_after_kill_9(tmp_path):
    data_dir = fake_fashion(tmp_path / "data", n_train=4096)
    args = overrides(data_dir, tmp_path, "name=k", "epochs=4")
    cmd = [sys.executable, "-m", "alignlab", "train", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "k" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "k" / "summary.json").exists()
    assert main(["train", "--resume", str(tmp_path / "k")]) == 0
    full = train(load_config(None, overrides(data_dir, tmp_path, "name=full", "epochs=4")))
    assert read_metrics(tmp_path / "k") == read_metrics(full)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small_data, tmp_path, monkeypatch, capsys):
    real_batches = loop.data.batches

    def poisoned(*args, epoch=0, **kwargs):
        for x, y in real_batches(*args, epoch=epoch, **kwargs):
            yield (x * float("nan") if epoch == 2 else x), y

    monkeypatch.setattr(loop.data, "batches", poisoned)
    args = overrides(small_data, tmp_path, "name=n")
    assert main(["train", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("alignlab: error: loss is nan at epoch 2; stopped")
    state = load_checkpoint(tmp_path / "n" / "checkpoint.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(read_metrics(tmp_path / "n")) == 1
    with pytest.raises(TrainingDiverged):
        train(resume=tmp_path / "n")


def test_cli_bad_config_key_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["train", f"out_dir={tmp_path}", "optim.lrr=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("alignlab: error: unknown config key 'optim.lrr'; valid keys under 'optim': "
                   "name, lr, momentum, weight_decay, schedule, decay_schedule")
    assert list(tmp_path.iterdir()) == []


def test_compare_runs_every_rule_and_seed_then_reports(small_data, tmp_path, capsys):
    args = ["compare", *overrides(small_data, tmp_path, "epochs=1"), "--rules", "bp,dfa", "--seeds", "0,1",
            "--name", "cmp"]
    assert main(args) == 0
    root = tmp_path / "cmp"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["mlp-bp-s0", "mlp-bp-s1", "mlp-dfa-s0", "mlp-dfa-s1"]
    assert (root / "report.html").is_file() and "| bp" in (root / "report.md").read_text()
    cka = json.loads((root / "cka.json").read_text())
    layers = cka["values"]["mlp"]["dfa"]
    assert list(cka["values"]["mlp"]) == ["dfa"] and len(layers) == 2  # hidden and output layer
    assert all(-0.2 < v <= 1.0 + 1e-6 for v in layers.values())
    assert main(args) == 0  # again: finished runs are kept, not redone
    assert capsys.readouterr().err.count("finished earlier, kept") == 4
    assert main(["compare", "--rules", "bp,nope", *overrides(small_data, tmp_path)]) == 2
    assert "unknown rule 'nope'" in capsys.readouterr().err


def test_written_files_get_the_usual_permissions(tmp_path):
    from alignlab.files import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644


def test_layer_rules_reach_the_model_and_the_run_name(small_data, tmp_path):
    cfg = load_config(None, overrides(small_data, tmp_path, "rule=dfa",
                                      "layer_rules={conv*: kp, fc1: {rule: fa, init: xavier}}"))
    cfg.model.name, cfg.model.options = "lenet", {}
    net = loop.build(cfg).net
    got = {name: feedback.rule_name for name, _, feedback in alignlab.converted_layers(net)}
    assert got == {"conv1": "kp", "conv2": "kp", "fc1": "fa", "fc2": "dfa", "head": "dfa"}
    assert net.fc1.feedback.init == "xavier"
    assert cfg.run_name().endswith("-kp+fa+dfa-s0")


def test_decay_schedule_sets_each_epochs_decay_and_resumes_identically(small_data, tmp_path, monkeypatch):
    extra = ("optim.name=adamw", "optim.weight_decay=0.5", "optim.decay_schedule=[1, 0.02]", "epochs=3")
    full = train(load_config(None, overrides(small_data, tmp_path, "name=full", *extra)))
    groups = load_checkpoint(full / "checkpoint.pt")["optimizer"]["param_groups"]
    assert sorted(g["weight_decay"] for g in groups) == pytest.approx([0.0, 0.01])
    real_evaluate = loop.evaluate

    def crash_in_epoch_2(cfg, s):
        if read_metrics(tmp_path / "cut"):
            raise KeyboardInterrupt
        return real_evaluate(cfg, s)

    monkeypatch.setattr(loop, "evaluate", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, overrides(small_data, tmp_path, "name=cut", *extra)))
    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    train(resume=tmp_path / "cut")
    assert read_metrics(tmp_path / "cut") == read_metrics(full)
    plain = train(load_config(None, overrides(small_data, tmp_path, "name=plain", *extra[:2], "epochs=3")))
    assert read_metrics(plain) != read_metrics(full)  # the schedule changed the run


def test_train_subset_trains_on_the_first_samples_and_names_bad_values(small_data, tmp_path):
    run_dir = train(load_config(None, overrides(small_data, tmp_path, "name=sub", "epochs=1", "data.train_subset=128")))
    assert read_metrics(run_dir)[-1]["step"] == 2  # 128 samples at batch 64; the full set would give 8
    from alignlab.train.loop import build

    s = build(load_config(None, overrides(small_data, tmp_path, "data.train_subset=100")))
    full = build(load_config(None, overrides(small_data, tmp_path)))
    assert torch.equal(s.dataset.train_x, full.dataset.train_x[:100]) and len(s.dataset.test_x) == len(full.dataset.test_x)
    for bad in ("513", "-1"):
        with pytest.raises(ValueError, match=r"train_subset must be an integer in 1\.\.512"):
            build(load_config(None, overrides(small_data, tmp_path, f"data.train_subset={bad}")))


def test_eval_every_skips_test_passes_but_never_the_last(small_data, tmp_path):
    run_dir = train(load_config(None, overrides(small_data, tmp_path, "name=ev", "epochs=5", "eval_every=2")))
    metrics = read_metrics(run_dir)
    assert [m["epoch"] for m in metrics if "test_acc" in m] == [2, 4, 5]
    assert all("train_loss" in m for m in metrics)
    every = train(load_config(None, overrides(small_data, tmp_path, "name=all", "epochs=5")))
    assert [m["test_acc"] for m in read_metrics(every)[1::2]] == [m["test_acc"] for m in metrics[1::2]]
    with pytest.raises(ValueError, match="'eval_every' must be >= 1"):
        load_config(None, overrides(small_data, tmp_path, "eval_every=0"))


def test_channels_last_trains_the_same_run_in_nhwc(small_data, tmp_path):
    extra = ["model.name=lenet", "model.options={}", "epochs=2", "rule=brsf"]
    nchw = train(load_config(None, overrides(small_data, tmp_path, "name=nchw", *extra)))
    nhwc = train(load_config(None, overrides(small_data, tmp_path, "name=nhwc", "channels_last=true", *extra)))
    a, b = read_metrics(nchw), read_metrics(nhwc)
    for ma, mb in zip(a, b):
        assert ma["test_acc"] == pytest.approx(mb["test_acc"], abs=2 / 256)  # float rounding may flip an argmax
        assert ma["train_loss"] == pytest.approx(mb["train_loss"], rel=1e-3)
    wa, wb = (load_checkpoint(d / "checkpoint.pt")["model"] for d in (nchw, nhwc))
    for key in wa:
        if wa[key].is_floating_point():
            torch.testing.assert_close(wa[key], wb[key], atol=1e-4, rtol=1e-3, msg=key)
        else:  # brsf's draw counters: no extra draw for the other memory order
            assert torch.equal(wa[key], wb[key]) or key.endswith("drawn_for"), key
    s = loop.build(load_config(None, overrides(small_data, tmp_path, "channels_last=true", *extra)))
    assert s.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
