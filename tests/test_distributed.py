"""DDP on CPU (gloo): two processes on the same global batches train exactly what one does."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import alignlab

from alignlab.train import load_config, train
from alignlab.train.checkpoint import load_checkpoint
from helpers import fake_fashion, read_metrics

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure(out: subprocess.CompletedProcess) -> str:
    """What the ranks printed (a rank's C++ abort message comes before torchrun's report)."""
    err = out.stderr
    return f"stdout: {out.stdout[-1500:]}\nstderr: {err if len(err) < 8000 else err[:5000] + ' ... ' + err[-2500:]}"


def overrides(data_dir, out_dir, rule, *extra):
    return [f"data.data_dir={data_dir}", f"out_dir={out_dir}", "progress=false", "epochs=2", "batch_size=64",
            "model.name=lenet", f"rule={rule}", "device=cpu", "optim.name=sgd", "optim.lr=0.01",
            "diagnostics.enabled=false", *extra]


def _worker(rank, world, port, args, interrupt_epoch, dump_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from alignlab.train import loop

    built = []
    real_build, real_evaluate = loop.build, loop.evaluate
    loop.build = lambda cfg, place=None: built.append(real_build(cfg, place)) or built[-1]

    def evaluate(cfg, s):  # stops the run in epoch ``interrupt_epoch``, after the last checkpoint
        evaluate.calls += 1
        if evaluate.calls == interrupt_epoch:
            raise KeyboardInterrupt
        return real_evaluate(cfg, s)

    evaluate.calls = 0
    loop.evaluate = evaluate
    try:
        train(resume=args[1]) if args[0] == "--resume" else train(load_config(None, args))
    except KeyboardInterrupt:
        pass
    if dump_dir:  # what this rank holds at the end: weights and feedback tensors
        torch.save(built[-1].net.state_dict(), Path(dump_dir) / f"rank{rank}.pt")


def run_ddp(args, world=2, interrupt_epoch=0, dump_dir=None):
    mp.start_processes(_worker, args=(world, free_port(), args, interrupt_epoch, dump_dir), nprocs=world,
                       start_method="spawn", join=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fake_fashion(tmp_path_factory.mktemp("fashion"), n_train=384, n_test=100)


@pytest.mark.parametrize("rule", alignlab.rules.available())
def test_two_processes_train_what_one_does(data_dir, tmp_path, rule):
    one = train(load_config(None, overrides(data_dir, tmp_path, rule, "name=one")))
    run_ddp(overrides(data_dir, tmp_path, rule, "name=two"), dump_dir=tmp_path)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in r0:  # the ranks never drift: identical weights and feedback tensors
        assert torch.equal(r0[key], r1[key]), key
    if not alignlab.rules.get(rule).data_parallel_exact:  # e.g. ldfa: each rank's own batch statistics
        return
    a = load_checkpoint(one / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("drawn_for"):  # brsf's exact fingerprint of W: the weights agree to rounding only
            continue
        if a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key
    ma, mb = read_metrics(one), read_metrics(tmp_path / "two")
    assert [m["test_acc"] for m in ma] == [m["test_acc"] for m in mb]
    assert json.loads((tmp_path / "two" / "meta.json").read_text())["processes"] == 2


def test_interrupted_two_process_run_resumes(data_dir, tmp_path):
    args = overrides(data_dir, tmp_path, "brsf", "name=cut", "epochs=3")
    run_ddp(args, interrupt_epoch=2)
    assert len(read_metrics(tmp_path / "cut")) == 1
    run_ddp(["--resume", str(tmp_path / "cut")])
    full = train(load_config(None, overrides(data_dir, tmp_path, "brsf", "name=full", "epochs=3")))
    got, want = read_metrics(tmp_path / "cut"), read_metrics(full)
    assert [m["epoch"] for m in got] == [1, 2, 3]
    for g, w in zip(got, want):
        assert g["test_acc"] == w["test_acc"]
        assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-4)


@pytest.mark.parametrize("rule", alignlab.rules.available())
def test_torchrun_command_line_trains_every_rule_with_diagnostics(data_dir, tmp_path, rule):
    """The CLI's default measures diagnostics on rank 0 alone; no rule may make the ranks'
    collectives disagree (dfa once built a buffer on rank 0 only, and DDP's broadcast hung)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
           "-m", "alignlab", "train", *overrides(data_dir, tmp_path, rule, "name=tr", "epochs=1",
                                                 "diagnostics.enabled=true", "diagnostics.probe_size=64",
                                                 "ddp_timeout=60")]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, failure(out)
    assert (tmp_path / "tr" / "summary.json").is_file()
    assert (tmp_path / "tr" / "diagnostics.jsonl").read_text().count("\n") == 2  # step 0 and epoch 1
    assert out.stdout.count("run finished") == 2  # each process reports; only rank 0 wrote files


def _stuck_worker(rank, port, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from alignlab.train.placement import finish, place, stuck_collectives_named

    p = place("cpu", "fp32", timeout=2)
    if rank == 0:
        tic = time.monotonic()
        try:
            with stuck_collectives_named(p):
                p.all_sum(1.0)  # rank 1 never joins
        except Exception as err:  # noqa: BLE001 - the test reads what it was
            (Path(out_dir) / "error.txt").write_text(f"{type(err).__name__}|{time.monotonic() - tic:.1f}|{err}")
    else:
        time.sleep(6)
    finish(p)


def test_a_stuck_collective_is_a_one_line_error_naming_the_rank(tmp_path):
    mp.start_processes(_stuck_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    kind, seconds, message = (tmp_path / "error.txt").read_text().split("|", 2)
    assert kind == "CollectiveTimeout" and float(seconds) < 5
    assert message.startswith("rank 0 of 2: a collective") and "ddp_timeout=2 s" in message and "\n" not in message
