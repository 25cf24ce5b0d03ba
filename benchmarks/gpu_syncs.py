"""Host-device synchronisations in one training step, per rule, on a CUDA device.

A synchronisation (``int(t)``, ``bool(t)``, ``torch.equal``, ``.item()`` on a GPU tensor) makes
the CPU wait until the GPU has run everything queued so far, so the kernels after it are
launched late. What that costs depends on the queue: on a launch-bound step (ResNet-20 at batch
256 on an H200) the queue is short and a wait costs little (results/gpu/2026-12-01-syncs); on a
GPU-bound step the GPU idles while the host launches what follows. This script turns on ``torch.cuda.set_sync_debug_mode("warn")`` for
one SGD step of each rule (after warm-up steps) and records where in alignlab each
synchronisation happened (the innermost ``alignlab`` frame of the Python stack), then times the
steps (mean of ``--steps`` after a sync, interleaved by rule, ``--rounds`` rounds).

    python benchmarks/gpu_syncs.py [--nets resnet20,vit] [--rules fa,brsf] [--profile ldfa] [--out DIR]

Writes ``syncs.md`` and ``syncs.json`` in ``--out`` (default: print only). On a CPU there is
nothing to synchronise: ``--device cpu`` runs the same code and reports no synchronisations.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the same nets, batches and step functions as the speed benchmark)

import alignlab  # noqa: E402


def where(stack) -> str:
    """The innermost alignlab frame of ``stack`` as 'file:line (function)', else the innermost frame."""
    for frame in reversed(stack):
        if "/alignlab/" in frame.filename.replace("\\", "/"):
            name = frame.filename.replace("\\", "/").split("/alignlab/", 1)[1]
            return f"{name}:{frame.lineno} ({frame.name})"
    frames = [f for f in stack if Path(f.filename).name not in ("warnings.py", "gpu_syncs.py")] or stack
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def syncs_in_step(step, device: str) -> collections.Counter:
    """Where each host-device synchronisation of one call of ``step`` happened."""
    found: collections.Counter = collections.Counter()
    if not device.startswith("cuda"):
        step()
        return found
    previous = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            found[where(traceback.extract_stack()[:-1])] += 1
        else:
            previous(message, category, filename, lineno, file, line)

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = previous
    torch.cuda.synchronize()
    return found


def profile(step, label: str, net: str, device: str, top: int = 25) -> list[str]:
    """torch.profiler over 5 calls of ``step``: the top ops by self device time (CPU time on a
    CPU), with their call counts, as markdown lines."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    speed._sync(device)
    with torch_profile(activities=activities) as prof:
        for _ in range(5):
            step()
        speed._sync(device)
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60)
    return [f"### {net}, {label}: torch.profiler, 5 steps, top {top} by {key}", "", "```", table, "```"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_syncs.py", description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="resnet20,vit")
    parser.add_argument("--rules", default=",".join(alignlab.rules.available()))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--profile", default="", help="rules whose step torch.profiler breaks down (top ops)")
    parser.add_argument("--quick", action="store_true", help="the speed benchmark's tiny nets (for tests)")
    args = parser.parse_args(argv)
    rules = [r for r in args.rules.split(",") if r]
    nets, profiled = [n for n in args.nets.split(",") if n], [r for r in args.profile.split(",") if r]
    known = alignlab.rules.available()
    for what, names, valid in (("--nets", nets, list(speed.NETS)), ("--rules", rules, known),
                               ("--profile", profiled, rules)):
        bad = [n for n in names if n not in valid]
        if bad or not (names or what == "--profile"):
            parser.error(f"{what}: {', '.join(bad) or 'none given'} not valid; choose from {', '.join(valid)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is visible; use --device cpu")
    settings = speed.Settings(nets=nets, rules=rules, batch=args.batch, device=args.device,
                              quick=args.quick)
    report: dict = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
                    "torch": torch.__version__, "batch": args.batch, "nets": {}}
    lines = [f"# Host-device synchronisations per training step ({report['device']}, torch {torch.__version__}, "
             f"batch {args.batch})", "", "Command: `python benchmarks/gpu_syncs.py "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`", ""]
    for net in settings.nets:
        base, x, y = speed.net_and_data(settings, net)
        labels = [speed.REFERENCE, *rules]
        cands = {label: speed.make_candidate(settings, label, base, x, y) for label in labels}
        rows = {}
        for label, cand in cands.items():
            for _ in range(3):
                cand.step()
            rows[label] = {"syncs": syncs_in_step(cand.step, args.device), "ms": []}
        for _ in range(args.rounds):
            for label, cand in cands.items():
                speed._sync(args.device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    cand.step()
                speed._sync(args.device)
                rows[label]["ms"].append((time.perf_counter() - t0) * 1000 / args.steps)
        ref = statistics.median(rows[speed.REFERENCE]["ms"])
        lines += [f"## {net}", "", "| rule | ms/step (median of rounds) | ratio to BP | syncs/step | where |",
                  "|---|---:|---:|---:|---|"]
        report["nets"][net] = {}
        for label, row in rows.items():
            ms = statistics.median(row["ms"])
            places = "; ".join(f"{k} ×{v}" for k, v in row["syncs"].most_common())
            lines.append(f"| {label} | {ms:.2f} | {ms / ref:.3f} | {sum(row['syncs'].values())} | {places} |")
            report["nets"][net][label] = {"ms": row["ms"], "ratio": ms / ref, "syncs": dict(row["syncs"])}
        lines.append("")
        for label in profiled:
            lines += profile(cands[label].step, label, net, args.device) + [""]
        del cands
        print("\n".join(lines[-len(rows) - 4:]), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "syncs.md").write_text("\n".join(lines) + "\n")
        (out / "syncs.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
