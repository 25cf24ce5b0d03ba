"""The ``alignlab`` command line.

    alignlab train [CONFIG.yaml] [key=value ...]        one run
    alignlab train --resume RUN_DIR                     continue a stopped run
    alignlab compare [CONFIG.yaml] --rules bp,fa,... [--seeds 0,1] [--models mlp,lenet] [key=value ...]
    alignlab report RUN_DIR... [-o OUT_DIR]
    alignlab quickstart [--epochs N] [--data-dir D] [--out-dir O] [key=value ...]
                                                        BP vs FA on Fashion-MNIST via compare, in a minute
    alignlab rules                                      list the learning rules
    alignlab bench [--nets ...] [--rules ...] [--biotorch] [--quick] ...
                                                        benchmarks/speed.py: each rule's step vs BP

Bad input is one line on stderr, ``alignlab: error: ...``, and exit status 2; a diverged run
exits with 1 and keeps its last good checkpoint. Every command but rules and bench needs the lab
extra (pyyaml, tqdm, tensorboardX, matplotlib); without it, it exits with 1 and one line naming
the missing module and ``pip install 'alignlab[lab]'``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from alignlab.data.errors import DatasetError

PROG = "alignlab"

# The lab extra's modules, import name -> distribution; alignlab itself needs only torch and numpy.
LAB_MODULES = {"yaml": "pyyaml", "tqdm": "tqdm", "tensorboardX": "tensorboardX", "matplotlib": "matplotlib"}
LAB_INSTALL = "pip install 'alignlab[lab]'"


def missing_lab_module(err: ModuleNotFoundError) -> str | None:
    """The lab module whose absence raised ``err``; None when it is any other module."""
    top = (err.name or "").partition(".")[0]
    return top if top in LAB_MODULES else None


def run_failures() -> tuple[type[BaseException], ...]:
    """The errors that end a run with status 1: a diverged run, a collective that timed out.

    Imported only once something failed: alignlab.train needs the lab extra, which
    ``alignlab rules`` does not.
    """
    try:
        from alignlab.train.loop import TrainingDiverged
        from alignlab.train.placement import CollectiveTimeout
    except ModuleNotFoundError:  # no lab extra: nothing can have trained
        return ()
    return (TrainingDiverged, CollectiveTimeout)


def positive_int(text: str) -> int:
    """argparse type for an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def name_list(text: str) -> list[str]:
    """argparse type for ``a,b,c``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in name_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def split_config_args(args: list[str]) -> tuple[str | None, list[str]]:
    """The optional leading CONFIG.yaml and the key=value overrides."""
    config = None
    if args and "=" not in args[0]:
        config, args = args[0], args[1:]
    for a in args:
        if "=" not in a:
            raise ValueError(f"expected key=value, got {a!r} (only the first argument may be a config file)")
    return config, args


def cmd_train(args: argparse.Namespace) -> int:
    from alignlab.train import load_config, train

    if args.resume:
        if args.config:
            raise ValueError("--resume takes its config from the run directory; give no config or overrides")
        run_dir = train(resume=args.resume)
    else:
        run_dir = train(load_config(*split_config_args(args.config)))
    print(f"run finished: {run_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from alignlab.train import load_config
    from alignlab.train.compare import compare

    cfg = load_config(*split_config_args(args.config))
    root = compare(cfg, args.rules, args.seeds, args.models, args.name)
    print(f"report: {root / 'report.html'}\ntable:  {root / 'report.md'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from alignlab.report import write_report

    out = Path(args.out) if args.out else Path(args.run_dirs[0]).parent
    html, md = write_report(args.run_dirs, out)
    print(f"report: {html}\ntable:  {md}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    """``alignlab quickstart``: a small bp-vs-fa comparison (`alignlab.quickstart`)."""
    from alignlab.quickstart import run_quickstart

    config, overrides = split_config_args(args.config)
    if config is not None:
        raise ValueError(f"quickstart takes key=value overrides only, got {config!r}")
    root = run_quickstart(epochs=args.epochs, data_dir=args.data_dir, out_dir=args.out_dir, overrides=overrides)
    print(f"report: {root / 'report.html'}\ntable:  {root / 'report.md'}")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from alignlab.rules import available

    for name in available():
        print(name)
    return 0


def speed_script() -> Path:
    """benchmarks/speed.py of the source tree this alignlab was installed from."""
    return Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"


def cmd_bench(argv: Sequence[str]) -> int:
    """``alignlab bench [options]``: run benchmarks/speed.py with those options."""
    script = speed_script()
    if not script.is_file():
        print(f"{PROG}: error: {script} not found; 'alignlab bench' runs the benchmark of a source "
              "checkout (pip install -e .), which a wheel does not ship", file=sys.stderr)
        return 2
    return subprocess.run([sys.executable, str(script), *argv]).returncode


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="*", metavar="[CONFIG.yaml] key=value",
                   help="a YAML config file, then overrides such as rule=fa optim.lr=0.01")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Train networks without weight transport.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one run")
    _add_config_args(train)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    train.set_defaults(handler=cmd_train)

    compare = commands.add_parser("compare", help="one config under several rules and seeds, then a report")
    _add_config_args(compare)
    compare.add_argument("--rules", type=name_list, required=True, help="e.g. bp,fa,dfa,usf,kp")
    compare.add_argument("--seeds", type=int_list, default=[0], help="e.g. 0,1,2 (default 0)")
    compare.add_argument("--models", type=name_list, default=None, help="e.g. mlp,lenet (default: the config's)")
    compare.add_argument("--name", default=None, help="folder under out_dir (default compare-<dataset>)")
    compare.set_defaults(handler=cmd_compare)

    report = commands.add_parser("report", help="HTML + Markdown report of finished runs")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("-o", "--out", default=None, help="output folder (default: the first run's parent)")
    report.set_defaults(handler=cmd_report)

    quick = commands.add_parser("quickstart", help="a one-minute compare: an MLP on Fashion-MNIST with backprop "
                                "and with feedback alignment, then a report")
    quick.add_argument("--epochs", type=positive_int, default=2, metavar="N", help="training epochs per rule (default: 2)")
    quick.add_argument("--data-dir", default=None, metavar="D",
                       help="directory holding the Fashion-MNIST IDX files "
                       "(default: search $ALIGNLAB_DATA, /usr/share/datasets, the user cache)")
    quick.add_argument("--out-dir", default=None, metavar="O",
                       help="runs and report go to O/quickstart-<N>ep (default: runs)")
    quick.add_argument("config", nargs="*", metavar="key=value",
                       help="config overrides, e.g. diagnostics.enabled=false")
    quick.set_defaults(handler=cmd_quickstart)

    rules = commands.add_parser("rules", help="list the available learning rules")
    rules.set_defaults(handler=cmd_rules)
    commands.add_parser("bench", add_help=False,
                        help="speed and memory of every rule against BP: benchmarks/speed.py (its options follow)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # every option after it is the benchmark's own
        return cmd_bench(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow the options (argparse stops collecting them there)
    if extra and hasattr(args, "config") and all("=" in e and not e.startswith("-") for e in extra):
        args.config += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except ModuleNotFoundError as err:
        module = missing_lab_module(err)
        if module is None:
            raise
        dist = "" if LAB_MODULES[module] == module else f" ({LAB_MODULES[module]})"
        print(f"{PROG}: error: no module named {module!r}{dist}: 'alignlab {args.command}' needs the lab extra: "
              f"{LAB_INSTALL}", file=sys.stderr)
        return 1
    except (DatasetError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if not isinstance(err, run_failures()):
            raise
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue with: alignlab train --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
